"""The dashboard and the run page: their data against a seeded database (ranges, bins, archive, run detail,
why a run got no prompt) and their access rules over HTTP. The pages in a real browser: tests/test_browser.py."""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import make_settings
from dashboard_seed import NOW, TZ, Seeded, seed
from sqlalchemy import select
from webclient import admin, browser

from recommender.dashboard_data import dashboard_data
from recommender.run_detail import run_detail
from stridecare.db.models import Athlete, Prompt, Run
from stridecare.domain.flags import SPIKE_FLAGS
from stridecare.runtime import Runtime
from stridecare_app.web.app import create_app
from stridecare_app.web.charts import nice_ticks

REMOTE = ("203.0.113.9", 40000)


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    data = seed(tmp_path)
    yield data
    data.rt.close()


def _data(seeded: Seeded, days: int | None = 42, range_key: str | None = None, name: str = "anna") -> dict[str, Any]:
    with seeded.rt.db.transaction() as s:
        athlete = s.scalars(select(Athlete).where(Athlete.name == name)).one()
        return dashboard_data(s, seeded.rt.settings, athlete, NOW, days=days, range_key=range_key)


# -- the data -------------------------------------------------------------------------------------------------


def test_daily_series_covers_every_day_and_matches_the_runs(seeded: Seeded) -> None:
    data = _data(seeded)
    days = data["days"]
    assert isinstance(days, list)
    assert len(days) == 42
    today = date(2026, 3, 18)
    assert [d["day"] for d in days] == [(today - timedelta(days=41 - i)).isoformat() for i in range(42)]
    with seeded.rt.db.transaction() as s:
        runs = list(s.scalars(select(Run).where(Run.athlete_id == seeded.athlete_id)))
        first = today - timedelta(days=41)
        in_window = [r for r in runs if r.start_time.astimezone(ZoneInfo(TZ)).date() >= first]
        expected_load = sum(r.load.load for r in in_window if r.load)
        expected_km = sum(r.distance_m for r in in_window) / 1000
        expected_steps = sum(r.steps for r in in_window)
    assert sum(d["load"] for d in days) == pytest.approx(expected_load, abs=0.1 * len(in_window))
    assert sum(d["distance_m"] for d in days) / 1000 == pytest.approx(expected_km, abs=0.01)
    assert sum(d["steps"] for d in days) == pytest.approx(expected_steps, abs=len(in_window))
    # Rest days after the last run: no load, and both averages decay rather than stopping at the last value.
    tail = days[-4:]
    assert all(d["load"] == 0 for d in tail)
    assert tail[0]["acute"] > tail[-1]["acute"] > 0
    assert tail[0]["chronic"] > tail[-1]["chronic"] > 0
    # Days before the first run are zeros, not missing.
    assert days[0]["load"] == days[0]["acute"] == 0


def test_flags_weeks_recent_runs_and_adherence(seeded: Seeded) -> None:
    data = _data(seeded)
    flagged = {f["run_id"]: f for f in data["flags"]}  # type: ignore[attr-defined]
    assert seeded.spike_run_id in flagged
    spike = flagged[seeded.spike_run_id]
    assert spike["day"] == "2026-03-14"
    assert any(f["name"] in SPIKE_FLAGS and "longest" in f["reason"] for f in spike["flags"])

    weeks = data["weeks"]
    assert isinstance(weeks, list)
    assert weeks[0]["week_start"] == "2026-02-02" and weeks[-1]["week"] == "2026-W12"
    with seeded.rt.db.transaction() as s:
        runs = list(s.scalars(select(Run).where(Run.athlete_id == seeded.athlete_id)))
    assert sum(w["runs"] for w in weeks) == len(runs)  # every seeded run falls in the weeks shown
    assert sum(w["distance_m"] for w in weeks) == pytest.approx(sum(r.distance_m for r in runs), abs=1)
    assert sum(w["steps"] for w in weeks) == pytest.approx(sum(r.steps for r in runs), abs=len(runs))
    by_week = {w["week"]: w for w in weeks}
    assert by_week["2026-W10"]["runs"] == 3  # 2, 5 and 8 March
    assert by_week["2026-W11"]["runs"] == 2  # 11 and 14 March (the spike)

    recent = data["recent_runs"]
    assert isinstance(recent, list)
    assert [r["id"] for r in recent] == list(reversed(seeded.run_ids))  # every run of the range, newest first
    done = {r["id"]: [p["done"] for p in r["prompts"]] for r in recent}
    assert done[seeded.run_ids[-3]] == [True] and done[seeded.run_ids[-4]] == [True]
    assert done[seeded.run_ids[-1]] == [False]

    adherence = {a["routine"]: a for a in data["adherence"]}  # type: ignore[attr-defined]
    with seeded.rt.db.transaction() as s:
        prompts = list(
            s.scalars(
                select(Prompt).where(Prompt.athlete_id == seeded.athlete_id, Prompt.local_day >= date(2026, 2, 19))
            )
        )
    for routine, row in adherence.items():
        asked = [p for p in prompts if routine in p.routines]
        assert row["prompted"] == len(asked)
        assert row["done"] == sum(1 for p in asked if p.done_at is not None)
        assert row["rate"] == pytest.approx(row["done"] / row["prompted"], abs=0.001)
    assert sum(a["done"] for a in adherence.values()) >= 2


def test_window_length_is_a_parameter(seeded: Seeded) -> None:
    assert len(_data(seeded, days=7)["days"]) == 7  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        _data(seeded, days=0)


# -- HTTP -----------------------------------------------------------------------------------------------------


def test_remote_requests_need_the_secret_token(seeded: Seeded) -> None:
    client = browser(create_app(seeded.rt), peer=REMOTE)
    assert client.get("/dashboard/anna").status_code == 403
    assert client.get("/dashboard/anna?t=wrong").status_code == 403
    assert client.get(f"/dashboard/anna?t={seeded.token[:-1]}").status_code == 403
    ok = client.get(f"/dashboard/anna?t={seeded.token}")
    assert ok.status_code == 200
    assert _bars(ok.text, "load-chart") == 42 and _bars(ok.text, "load-chart-phone") == 42
    assert f'class="flag-marker" data-run-id="{seeded.spike_run_id}"' in ok.text
    # Every link on the page carries the token on: the reader has no other way in.
    links = re.findall(r'href="(/dashboard/[^"]*)"', ok.text)
    assert links and all(f"t={seeded.token}" in link for link in links)
    # The token in the address must not be cached or sent on to other sites.
    assert ok.headers["cache-control"] == "no-store"
    assert ok.headers["referrer-policy"] == "no-referrer"
    assert "script-src" not in ok.headers["content-security-policy"]
    assert "<script" not in ok.text


def test_loopback_opens_nothing_the_admin_session_opens_every_athlete(seeded: Seeded) -> None:
    app = create_app(seeded.rt)
    # This machine's address is no authority: a reverse proxy or a tunnel on it connects for anyone.
    for peer in (("127.0.0.1", 50000), ("::1", 50000)):
        assert browser(app, peer=peer).get("/dashboard/anna").status_code == 403
    session = admin(app, seeded.rt, peer=("203.0.113.9", 40000))  # from anywhere, once logged in
    page = session.get("/dashboard/anna")
    assert page.status_code == 200 and '<a href="/">' in page.text  # the way back to all athletes
    assert "t=" not in " ".join(re.findall(r'href="(/dashboard/[^"]*)"', page.text))  # no token to copy along


def test_unknown_and_forbidden_athletes_answer_alike_and_names_are_not_echoed(seeded: Seeded) -> None:
    app = create_app(seeded.rt)
    stranger = browser(app, peer=REMOTE)
    unknown = stranger.get(f"/dashboard/nobody?t={seeded.token}")
    forbidden = stranger.get("/dashboard/anna?t=wrong")
    assert unknown.status_code == forbidden.status_code == 403 and unknown.text == forbidden.text
    response = stranger.get(f"/dashboard/%3Cscript%3E?t={seeded.token}")
    assert response.status_code == 403 and "<script>" not in response.text
    # The admin, who may see everyone, is told the truth.
    assert admin(app, seeded.rt).get("/dashboard/nobody").status_code == 404


def test_token_is_compared_in_constant_time(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    # The stdlib function itself: the dashboard looks it up on ``hmac`` at each request.
    monkeypatch.setattr(hmac, "compare_digest", spy)
    client = browser(create_app(seeded.rt), peer=REMOTE)
    assert client.get("/dashboard/anna?t=guess").status_code == 403
    assert client.get(f"/dashboard/anna?t={seeded.token}").status_code == 200
    assert calls == [(b"guess", seeded.token.encode()), (seeded.token.encode(), seeded.token.encode())]


def test_athlete_names_are_escaped_in_the_page(tmp_path: Path) -> None:
    rt = Runtime.open(make_settings(tmp_path))
    try:
        with rt.db.transaction() as s:
            s.add(Athlete(name="eve", display_name="<b>Eve</b>", timezone="UTC"))
        page = admin(create_app(rt), rt).get("/dashboard/eve")
        assert page.status_code == 200
        assert "&lt;b&gt;Eve&lt;/b&gt;" in page.text and "<b>Eve</b>" not in page.text
        assert _bars(page.text, "load-chart") == 42  # no runs: every day drawn, at zero
        assert "data-run-id" not in page.text.split("<svg", 1)[1]
        assert "No runs yet" in page.text
    finally:
        rt.close()


def _bars(html: str, svg_id: str) -> int:
    svg = html.split(f'<svg id="{svg_id}"', 1)[1].split("</svg>", 1)[0]
    return svg.count('<rect class="bar')


@pytest.fixture
def archived(tmp_path: Path) -> Iterator[Seeded]:
    data = seed(tmp_path, archive=True)
    yield data
    data.rt.close()


# -- ranges and bins ------------------------------------------------------------------------------------------


def test_ranges_bin_long_periods_into_weeks_and_months(seeded: Seeded) -> None:
    six_weeks = _data(seeded, days=None, range_key="6w")
    assert six_weeks["bin"] == "day" and len(six_weeks["bins"]) == 42
    half_year = _data(seeded, days=None, range_key="6m")
    assert len(half_year["days"]) == 183 and half_year["bin"] == "week"
    bins = half_year["bins"]
    assert all(date.fromisoformat(b["start"]).weekday() == 0 for b in bins[1:])
    assert sum(b["days"] for b in bins) == 183
    # Bars are a mean per day, so that they share the acute/chronic axis; their totals still add up.
    assert sum(b["load"] for b in bins) == pytest.approx(sum(d["load"] for d in half_year["days"]), abs=1)
    for b in bins:
        assert b["per_day"] == pytest.approx(b["load"] / b["days"], abs=0.1)
    year = _data(seeded, days=None, range_key="1y")
    assert len(year["days"]) == 365 and year["totals"]["runs"] == 12
    everything = _data(seeded, days=None, range_key="all")
    assert everything["first_day"] == "2026-02-05"  # six weeks back: the first run is more recent
    with pytest.raises(ValueError):
        _data(seeded, days=None, range_key="decade")


def test_an_imported_archive_opens_on_its_runs_with_a_readable_axis(archived: Seeded) -> None:
    # Five runs nearly two years old: the default range is "all", drawn by month, and the runs are listed.
    data = _data(archived, days=None, name="archie")
    assert data["range"] == "all" and data["bin"] == "month"
    assert data["first_day"] == "2024-05-06" and data["totals"]["runs"] == 5
    assert len(data["recent_runs"]) == 5 and data["flags"] == []
    client = admin(create_app(archived.rt), archived.rt)
    page = client.get("/dashboard/archie").text
    assert 'aria-current="page" data-range="all"' in page
    # The six-week view of the same athlete is empty, and says so; its axis is whole, distinct, rising numbers.
    empty = client.get("/dashboard/archie?range=6w").text
    assert "No runs in this range" in empty
    svg = empty.split('<svg id="load-chart"', 1)[1].split("</svg>", 1)[0]
    ticks = re.findall(r'<text class="tick" x="[\d.]+" y="[\d.]+" text-anchor="end">([\d,]+)</text>', svg)
    values = [int(t.replace(",", "")) for t in ticks]
    assert values == sorted(set(values)) and values[0] == 0 and len(values) >= 3, ticks
    assert "ref. steps per day" in svg
    assert client.get("/dashboard/archie?range=bogus").status_code == 400


def test_nice_ticks_are_whole_and_cover_the_value() -> None:
    assert nice_ticks(1000) == [0, 250, 500, 750, 1000]
    for value in (0.4, 3, 17, 999, 1001, 9124, 123456):
        ticks = nice_ticks(value)
        assert ticks[0] == 0 and ticks[-1] >= value and len(ticks) <= 6
        assert all(t == int(t) for t in ticks) and len(set(ticks)) == len(ticks)


def test_shoes_are_listed_with_their_distance(seeded: Seeded) -> None:
    data = _data(seeded)
    with seeded.rt.db.transaction() as s:
        km = sum(r.distance_m for r in s.scalars(select(Run).where(Run.athlete_id == seeded.athlete_id))) / 1000
    [shoe] = data["shoes"]
    assert shoe["name"] == "Trail Pegasus 41" and shoe["runs"] == 12 and shoe["default"]
    assert shoe["distance_km"] == pytest.approx(km, abs=0.01)
    page = admin(create_app(seeded.rt), seeded.rt).get("/dashboard/anna").text
    assert f"{km:.1f} km" in page.split('id="shoes"', 1)[1]


def test_flag_reasons_are_on_the_page_not_only_in_tooltips(seeded: Seeded) -> None:
    page = admin(create_app(seeded.rt), seeded.rt).get("/dashboard/anna").text
    flags = _data(seeded)["flags"]
    spike = next(f for f in flags if f["run_id"] == seeded.spike_run_id)
    first = spike["flags"][0]
    listed = page.split('<ol class="flags" id="flag-list">', 1)[1].split("</ol>", 1)[0]
    # The run's numbers in the list; the advice once per kind of flag, under it (tests/test_phone_charts.py).
    assert first["summary"] in listed and "longest" in first["summary"]
    kinds = page.split('id="flag-kinds">', 1)[1].split("</ul>", 1)[0]
    assert "consider" in kinds and "consider" not in listed
    # The marker on the chart links to its explanation (a tap works where a hover cannot).
    number = next(i for i, f in enumerate(flags, start=1) if f["run_id"] == seeded.spike_run_id)
    assert f'href="#flag-{number}"' in page and f'id="flag-{number}"' in page


# -- a page per run -------------------------------------------------------------------------------------------


def _detail(seeded: Seeded, run_id: int, name: str = "anna") -> dict[str, Any]:
    with seeded.rt.db.transaction() as s:
        athlete = s.scalars(select(Athlete).where(Athlete.name == name)).one()
        detail = run_detail(s, seeded.rt.settings, athlete, run_id)
    assert detail is not None
    return detail


def test_run_detail_has_pace_cadence_steps_load_comparison_and_the_prompt(seeded: Seeded) -> None:
    detail = _detail(seeded, seeded.spike_run_id)
    assert detail["distance_km"] == pytest.approx(13.5, abs=0.1)  # 75 min at 3 m/s
    assert detail["pace"] == "5:33 /km"  # 1000 m / 3 m/s = 333 s
    assert detail["cadence_spm"] == 170  # 85 strides per minute
    assert detail["running_steps"] + detail["walking_steps"] == pytest.approx(detail["steps"], abs=2)
    assert detail["running_steps"] > 0.9 * detail["steps"]
    assert detail["heart_rate_bpm"] is None
    with seeded.rt.db.transaction() as s:
        run = s.get(Run, seeded.spike_run_id)
        assert run is not None and run.load is not None
        assert detail["load"] == pytest.approx(run.load.load, abs=0.1)
        earlier = [
            r.load.load
            for r in s.scalars(select(Run).where(Run.athlete_id == seeded.athlete_id))
            if r.load is not None and run.start_time - timedelta(days=28) <= r.start_time < run.start_time
        ]
        prompt = s.scalars(select(Prompt).where(Prompt.run_id == run.id)).one()
        reasons, routines = list(prompt.reasons), list(prompt.routines)
    comparison = detail["comparison"]
    assert comparison["runs"] == len(earlier) and comparison["ratio"] > 2
    assert "more than the median" in comparison["text"]
    assert SPIKE_FLAGS.intersection(f["name"] for f in detail["flags"])
    assert all(f["reason"] and f["reason"] != f["name"] for f in detail["flags"])
    [shown] = detail["prompts"]
    assert shown["reasons"] == reasons and [r["key"] for r in shown["routines"]] == routines
    assert detail["no_prompt_reason"] is None
    series = detail["series"]
    assert 50 <= len(series["t_min"]) <= 200
    assert all(p is None or 320 < p < 345 for p in series["pace_s_per_km"])


def test_a_run_without_a_prompt_says_why(archived: Seeded) -> None:
    detail = _detail(archived, archived.archive_run_ids[0], name="archie")
    assert detail["prompts"] == []
    assert "freshness window" in detail["no_prompt_reason"]
    page = admin(create_app(archived.rt), archived.rt).get(f"/dashboard/archie/runs/{archived.archive_run_ids[0]}")
    assert page.status_code == 200
    assert "freshness window" in page.text.split('id="no-prompt"', 1)[1]


def test_run_page_access_follows_the_dashboard(archived: Seeded) -> None:
    remote = browser(create_app(archived.rt), peer=REMOTE)
    url = f"/dashboard/anna/runs/{archived.spike_run_id}"
    assert remote.get(url).status_code == 403
    ok = remote.get(f"{url}?t={archived.token}")
    assert ok.status_code == 200 and ok.headers["cache-control"] == "no-store"
    assert f'href="/dashboard/anna?t={archived.token}"' in ok.text  # the way back keeps the token
    assert "5:33 /km" in ok.text and "170 spm" in ok.text and "ref. steps" in ok.text
    # Another athlete's run is not found through this athlete's link, and neither is a run that does not exist.
    assert remote.get(f"/dashboard/anna/runs/{archived.archive_run_ids[0]}?t={archived.token}").status_code == 404
    assert remote.get(f"/dashboard/anna/runs/999999?t={archived.token}").status_code == 404
    assert remote.get(f"/dashboard/anna/runs/abc?t={archived.token}").status_code == 404


def test_the_runs_list_says_why_a_run_got_no_prompt(archived: Seeded) -> None:
    data = _data(archived, days=None, name="archie")
    assert all("freshness window" in (r["no_prompt_reason"] or "") for r in data["recent_runs"])
    assert all(r["no_prompt_reason"] is None for r in _data(archived)["recent_runs"])  # anna's all got one
    page = admin(create_app(archived.rt), archived.rt).get("/dashboard/archie").text
    assert page.count('<details class="flag-why no-prompt">') == 5
