"""render_prompt: the disclaimer is always there, HTML is escaped, the payload holds our recommendation."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from delivery.render import DEFAULT_DISCLAIMER, RenderedPrompt, render_prompt

CREATED = dt.datetime(2026, 5, 4, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
ROUTINES = [
    {
        "key": "roll_out",
        "title": "Roll out your soles",
        "instructions": "Roll each sole over a firm ball from toes to heel; pause on tender spots.",
        "dose": "1 min per foot",
    },
    {
        "key": "toe_spread",
        "title": "Toe spread",
        "instructions": "Fingers between the toes, gently make a fist.",
        "dose": "10 × 5 s per foot",
    },
]
FLAGS = [{"name": "load_spike", "reason": "This week's load is 1.4 × your four-week average."}]
RUN = {
    "date": dt.date(2026, 5, 3),
    "distance_km": 21.0975,
    "duration": dt.timedelta(hours=1, minutes=52),
    "load": 412.44,
}


def render(**overrides: Any) -> RenderedPrompt:
    values: dict[str, Any] = {
        "prompt_id": "41",
        "athlete_name": "Ada",
        "kind": "post_run",
        "routines": ROUTINES,
        "reasons": ["Long run: 21.1 km", "Steep downhill"],
        "flags": FLAGS,
        "run": RUN,
        "done_url": "https://care.example.org/done/41?sig=abc&x=1",
        "unsubscribe_url": "https://care.example.org/unsubscribe/tok",
        "created_at": CREATED,
    }
    values.update(overrides)
    return render_prompt(**values)


@pytest.mark.parametrize("kind", ["post_run", "weekly_balance"])
def test_disclaimer_is_in_every_rendering(kind: str) -> None:
    subject, text, html, payload = render(kind=kind, run=RUN if kind == "post_run" else None)
    for body in (text, html):
        assert "not medical advice" in body
        assert "pain, swelling or numbness" in body
        assert "clinician" in body
    assert payload["data"]["disclaimer"] == DEFAULT_DISCLAIMER
    assert subject.startswith("Ada: ")


def test_caller_may_reword_but_not_drop_the_disclaimer() -> None:
    custom = "General wellness advice only, not medical advice. Pain, swelling or numbness: see a clinician."
    assert custom in render(disclaimer=custom).text
    with pytest.raises(ValueError, match="disclaimer"):
        render(disclaimer="  ")


def test_hostile_athlete_name_is_escaped_in_html_and_kept_off_header_lines() -> None:
    hostile = '<script>alert("x")</script> & <img src=x onerror=alert(1)>\r\nBcc: victim@example.test'
    routine = {**ROUTINES[0], "title": "<b>bold</b> roll"}
    subject, text, html, _ = render(athlete_name=hostile, routines=[routine])

    assert "<script>" not in html
    assert "<img" not in html
    assert "&lt;script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt; roll" in html
    assert "\n" not in subject
    assert "\r" not in subject
    # The text body is not HTML: it shows the characters as they are, but on one line.
    assert "&lt;" not in text
    assert "\nBcc:" not in text


def test_links_are_in_both_bodies_and_escaped_in_html() -> None:
    _, text, html, _ = render()
    assert "https://care.example.org/done/41?sig=abc&x=1" in text
    assert 'href="https://care.example.org/done/41?sig=abc&amp;x=1"' in html
    assert 'href="https://care.example.org/unsubscribe/tok"' in html
    with pytest.raises(ValueError, match="done_url"):
        render(done_url="javascript:alert(1)")
    with pytest.raises(ValueError, match="unsubscribe_url"):
        render(unsubscribe_url='https://x.example/"onmouseover="alert(1)')


def test_text_body_lists_routines_reasons_and_run() -> None:
    _, text, _, _ = render()
    assert "1. Roll out your soles (1 min per foot)" in text
    assert "2. Toe spread (10 × 5 s per foot)" in text
    assert "- Long run: 21.1 km" in text
    assert "four-week average" in text
    assert "21.1 km, 1:52:00" in text


def test_payload_carries_our_recommendation_only() -> None:
    _, _, _, payload = render()
    assert json.loads(json.dumps(payload)) == payload  # plain JSON, nothing a webhook cannot carry
    assert payload["type"] == "prompt.created"
    assert payload["timestamp"] == "2026-05-04T07:30:00+00:00"
    data = payload["data"]
    assert set(data) == {
        "prompt_id",
        "kind",
        "routines",
        "reasons",
        "flags",
        "run",
        "figures",
        "done_url",
        "created_at",
        "created_at_local",
        "timezone",
        "disclaimer",
    }
    assert data["prompt_id"] == "41"
    assert data["kind"] == "post_run"
    assert data["routines"] == [
        {"key": "roll_out", "title": "Roll out your soles", "dose": "1 min per foot"},
        {"key": "toe_spread", "title": "Toe spread", "dose": "10 × 5 s per foot"},
    ]
    assert data["reasons"] == ["Long run: 21.1 km", "Steep downhill"]
    assert data["flags"] == FLAGS
    assert data["run"] == {
        "id": None,
        "start_time": None,
        "start_time_local": None,
        "sport": None,
        "date": "2026-05-03",
        "distance_km": 21.1,
        "duration_s": 6720,
        "load": 412.4,
    }
    assert data["created_at"] == "2026-05-04T07:30:00+00:00"
    assert data["done_url"] == "https://care.example.org/done/41?sig=abc&x=1"


def test_run_summary_ignores_extra_source_fields() -> None:
    # Whatever else the caller's run dict holds (e.g. Strava fields), only our summary numbers go out.
    run = {**RUN, "strava_id": 123456789, "map_polyline": "abc", "name": "Morning Run"}
    _, text, html, payload = render(run=run)
    dumped = json.dumps(payload)
    assert "123456789" not in dumped
    assert "polyline" not in dumped
    assert "Morning Run" not in dumped + text + html


def test_planner_fact_names_are_understood() -> None:
    facts = {
        "id": 9,
        "start_time": "2026-05-03T06:10:00+00:00",
        "sport": "running",
        "distance_km": 10.0,
        "timer_s": 3000,
        "steps": 9000,
        "load": 120,
    }
    subject, text, _, payload = render(run=facts)
    assert payload["data"]["run"] == {
        "id": 9,
        "start_time": "2026-05-03T06:10:00Z",
        "start_time_local": "2026-05-03T06:10:00+00:00",
        "sport": "running",
        "date": "2026-05-03",
        "distance_km": 10.0,
        "duration_s": 3000,
        "load": 120.0,
    }
    assert "10.0 km, 50:00" in text
    assert "10.0 km run" in subject
    flag = {"name": "spike", "level": "high", "reason": "Load spike.", "internal": 1.93}
    assert render(flags=[flag]).payload["data"]["flags"] == [
        {"name": "spike", "reason": "Load spike.", "level": "high"}
    ]


def test_weekly_prompt_without_run() -> None:
    subject, text, _, payload = render(kind="weekly_balance", run=None, reasons=[], flags=[])
    assert subject == "Ada: your weekly balance check"
    assert "weekly balance check" in text
    assert payload["data"]["run"] is None
    assert "Why these today" not in text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"created_at": dt.datetime(2026, 5, 4, 9, 30)}, "timezone-aware"),
        ({"kind": "daily"}, "kind"),
        ({"routines": []}, "routine"),
        ({"routines": [{"key": "x", "title": "y"}]}, "missing"),
    ],
)
def test_invalid_input_is_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render(**overrides)
