"""The dashboard: its data against a seeded database, its access rules over HTTP, and the page in headless
Chromium (Debian's package driven by Playwright), with a screenshot kept under test-artifacts/."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import ROOT, make_settings
from fitgen import write_activity
from sqlalchemy import select
from starlette.testclient import TestClient

from ingest.service import ingest_path
from recommender.dashboard_data import dashboard_data
from recommender.feedback import record_done
from stridecare.clock import write_clock_file
from stridecare.db.models import Athlete, Prompt, Run
from stridecare.domain.flags import SPIKE_FLAGS
from stridecare.runtime import Runtime
from stridecare_app.web import dashboard as dashboard_module
from stridecare_app.web.app import create_app

TZ = "Europe/Berlin"
NOW = datetime(2026, 3, 18, 11, 0, tzinfo=UTC)  # a Wednesday; the last run was on the Saturday before
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"


@dataclass
class Seeded:
    rt: Runtime
    athlete_id: int
    token: str
    spike_run_id: int
    run_ids: list[int]


def seed(tmp_path: Path, name: str = "anna") -> Seeded:
    """Eleven easy 30-minute runs every third day from 9 February, then a 75-minute run on 14 March (a spike)."""
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, NOW)
    rt = Runtime.open(make_settings(tmp_path, clock_file=clock))
    with rt.db.transaction() as s:
        s.add(Athlete(name=name, timezone=TZ, console=False))
    starts = [datetime(2026, 2, 9, 6, 30, tzinfo=UTC) + timedelta(days=3 * i) for i in range(12)]
    durations = [1800] * 11 + [4500]
    for i, (start, duration) in enumerate(zip(starts, durations, strict=True)):
        path = tmp_path / f"{name}-{i}.fit"
        write_activity(path, start=start, duration_s=duration, speed_mps=3.0, cadence_rpm=85, sample_interval_s=5)
        # Ingested an hour after each run ends, as a watch sync would: every run is fresh and gets its prompt.
        report = ingest_path(rt.db, rt.settings, name, path, start + timedelta(seconds=duration + 3600))
        assert report.status == "ingested", report
    with rt.db.transaction() as s:
        athlete = s.scalars(select(Athlete).where(Athlete.name == name)).one()
        runs = list(s.scalars(select(Run).where(Run.athlete_id == athlete.id).order_by(Run.start_time)))
        spike = runs[-1]
        assert spike.load is not None and SPIKE_FLAGS.intersection(spike.load.flags), spike.load.flags
        # The athlete ticked off the prompts of two runs.
        for run in runs[-4:-2]:
            prompt = s.scalars(select(Prompt).where(Prompt.run_id == run.id)).one()
            record_done(s, prompt.id, run.start_time + timedelta(hours=3))
        return Seeded(rt, athlete.id, athlete.dashboard_token, spike.id, [r.id for r in runs])


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    data = seed(tmp_path)
    yield data
    data.rt.close()


def _data(seeded: Seeded, days: int = 42) -> dict[str, object]:
    with seeded.rt.db.transaction() as s:
        athlete = s.get(Athlete, seeded.athlete_id)
        assert athlete is not None
        return dashboard_data(s, seeded.rt.settings, athlete, NOW, days=days)


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
    assert [r["id"] for r in recent] == list(reversed(seeded.run_ids))[:10]
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
    client = TestClient(create_app(seeded.rt))  # the test client's peer is "testclient": not loopback
    assert client.get("/dashboard/anna").status_code == 403
    assert client.get("/dashboard/anna?t=wrong").status_code == 403
    assert client.get(f"/dashboard/anna?t={seeded.token[:-1]}").status_code == 403
    ok = client.get(f"/dashboard/anna?t={seeded.token}")
    assert ok.status_code == 200
    assert ok.text.count('<rect class="day') == 42
    assert f'class="flag-marker" data-run-id="{seeded.spike_run_id}"' in ok.text
    # The token in the address must not be cached or sent on to other sites.
    assert ok.headers["cache-control"] == "no-store"
    assert ok.headers["referrer-policy"] == "no-referrer"
    assert "script-src" not in ok.headers["content-security-policy"]
    assert "<script" not in ok.text


def test_loopback_is_allowed_without_token_unless_proxied(seeded: Seeded) -> None:
    local = TestClient(create_app(seeded.rt), client=("127.0.0.1", 50000))
    assert local.get("/dashboard/anna").status_code == 200
    # A reverse proxy on this machine connects from loopback on behalf of someone else.
    assert local.get("/dashboard/anna", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403
    assert local.get("/dashboard/anna", headers={"Forwarded": "for=203.0.113.9"}).status_code == 403
    v6 = TestClient(create_app(seeded.rt), client=("::1", 50000))
    assert v6.get("/dashboard/anna").status_code == 200


def test_unknown_athlete_is_404_and_names_are_not_echoed(seeded: Seeded) -> None:
    local = TestClient(create_app(seeded.rt), client=("127.0.0.1", 50000))
    assert local.get("/dashboard/nobody").status_code == 404
    remote = TestClient(create_app(seeded.rt))
    response = remote.get(f"/dashboard/%3Cscript%3E?t={seeded.token}")
    assert response.status_code == 404
    assert "<script>" not in response.text


def test_token_is_compared_in_constant_time(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = dashboard_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(dashboard_module.hmac, "compare_digest", spy)
    client = TestClient(create_app(seeded.rt))
    assert client.get("/dashboard/anna?t=guess").status_code == 403
    assert client.get(f"/dashboard/anna?t={seeded.token}").status_code == 200
    assert calls == [(b"guess", seeded.token.encode()), (seeded.token.encode(), seeded.token.encode())]


def test_athlete_names_are_escaped_in_the_page(tmp_path: Path) -> None:
    rt = Runtime.open(make_settings(tmp_path))
    try:
        with rt.db.transaction() as s:
            s.add(Athlete(name="eve", display_name="<b>Eve</b>", timezone="UTC"))
        page = TestClient(create_app(rt), client=("127.0.0.1", 1)).get("/dashboard/eve")
        assert page.status_code == 200
        assert "&lt;b&gt;Eve&lt;/b&gt;" in page.text and "<b>Eve</b>" not in page.text
        assert page.text.count('<rect class="day') == 42  # no runs: every day drawn, at zero
        assert "flag-marker" not in page.text.split('<g id="flags">')[1].split("</g>")[0]
    finally:
        rt.close()


# -- a real browser -------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dashboard_in_headless_chromium(seeded: Seeded) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (scripts/services.sh installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(seeded.rt), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM),
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                # With the token, as the link in the digest email carries it.
                response = page.goto(f"http://127.0.0.1:{port}/dashboard/anna?t={seeded.token}")
                assert response is not None and response.status == 200
                days = page.locator("svg#load-chart rect.day")
                assert days.count() == 42
                assert days.first.get_attribute("data-day") == "2026-02-05"
                assert days.last.get_attribute("data-day") == "2026-03-18"
                # Bars are drawn: the spike day's bar is the tallest and has a visible box.
                spike_bar = page.locator('rect.day[data-day="2026-03-14"]')
                box = spike_bar.bounding_box()
                assert box is not None and box["height"] > 20 and box["width"] > 3
                heights = [float(h) for h in days.evaluate_all("els => els.map(e => e.getAttribute('height'))")]
                assert max(heights) == float(spike_bar.get_attribute("height") or 0)
                marker = page.locator(f'.flag-marker[data-run-id="{seeded.spike_run_id}"]')
                assert marker.count() == 1
                assert marker.get_attribute("data-day") == "2026-03-14"
                assert re.search(r"spike_(high|caution)", marker.locator("title").text_content() or "")
                assert page.locator(".flag-marker").count() >= 1
                marker_box = marker.bounding_box()
                assert (
                    marker_box is not None
                    and abs((marker_box["x"] + marker_box["width"] / 2) - (box["x"] + box["width"] / 2)) < 2
                ), "the marker sits over its day's bar"
                for line in ("#acute-line", "#chronic-line"):
                    points = page.locator(line).get_attribute("points") or ""
                    assert len(points.split()) == 42
                assert page.locator("table#weeks tbody tr").count() == 7
                assert page.locator('table#runs tr[data-run-id] .prompt[data-done="yes"]').count() == 2
                assert page.locator("table#adherence tbody tr").count() >= 1
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
