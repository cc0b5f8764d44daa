"""Charts a runner can read on a phone: values on a tap (no hover), flag markers that never overlap however long
the range, one explanation per kind of flag, and a pace chart that leaves stops out.

The geometry is checked as data (any number of flags, bars by day, week and month); the pages are checked in a
real headless Chromium (Debian's package) at 390 px with a touch screen and at 1280 px, against a seeded
installation: an athlete whose distance grows run after run (a flag on most runs for weeks), a run with two
pauses written by tests/fitgen.py, and — when ../shared/corpus is present — a real Garmin run with stops."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import make_settings
from factories import ingest_planned
from fitgen import write_activity
from harness import wait_for
from sqlalchemy import select
from test_browser import ARGS, CHROMIUM, _check

from recommender.dashboard_data import flag_kinds
from recommender.run_detail import STOPPED_BELOW_MPS, flag_summary, moving_stretches
from stridecare.clock import write_clock_file
from stridecare.db.models import Athlete, Run
from stridecare.domain.flags import acwr_flag, spike_flag
from stridecare.runtime import Runtime
from stridecare_app.web.app import create_app
from stridecare_app.web.charts import DESK, PHONE, PHONE_SMALL, Frame, line_chart, load_chart

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "fit"
# A real Garmin run (MANIFEST.tsv: garmin, running, 62.9 min timer) with fifteen stops while the watch ran:
# its pace chart spanned 0:00–36:00 min/km when standing samples were drawn.
GARMIN_WITH_STOPS = CORPUS / "dtcooper__python-fitparse" / "tests" / "files" / "compressed-speed-distance.fit"
TZ = "Europe/Berlin"
FIRST_RUN = datetime(2026, 1, 5, 6, 30, tzinfo=UTC)
RUNS = 40  # every second day: eleven weeks, distance up 5 % a run from the fifth week on
NOW = FIRST_RUN + timedelta(days=2 * RUNS)


# -- geometry, as data ----------------------------------------------------------------------------------------


def _chart_data(unit: str, starts: list[date], flagged_days: list[date]) -> dict[str, Any]:
    bins = [
        {
            "start": s.isoformat(),
            "end": s.isoformat(),
            "days": 1,
            "load": 1000.0,
            "per_day": 1000.0,
            "acute": 900.0,
            "chronic": 800.0,
            "distance_m": 5000.0,
            "steps": 5000,
        }
        for s in starts
    ]
    days = [{"day": s.isoformat()} for s in starts]
    flags = [
        {"run_id": i, "day": d.isoformat(), "flags": [{"name": "ramp", "reason": "r", "summary": "r"}]}
        for i, d in enumerate(flagged_days, start=1)
    ]
    return {"bin": unit, "bins": bins, "days": days, "flags": flags, "totals": {"runs": len(flags)}}


def _assert_markers_apart(chart: dict[str, Any], frame: Frame, flags: int) -> None:
    markers = chart["markers"]
    for a, b in itertools.pairwise(markers):
        assert a["x"] + a["width"] < b["x"], (a, b)  # side by side in one lane, never touching
    for m in markers:
        assert frame.left - 0.01 <= m["x"] and m["x"] + m["width"] <= frame.width - frame.right + 0.01
    # Every flagged run is in exactly one marker, in order: "3" or "3–7".
    covered: list[int] = []
    for m in markers:
        first, _, last = m["label"].partition("–")
        covered += list(range(int(first), int(last or first) + 1))
        assert len(m["run_ids"].split()) == m["count"] == int(last or first) - int(first) + 1
    assert covered == list(range(1, flags + 1))


@pytest.mark.parametrize("frame", [PHONE, DESK], ids=["phone", "desk"])
@pytest.mark.parametrize(
    ("unit", "bins", "step_days"),
    [("day", 42, 1), ("week", 53, 7), ("month", 40, 30)],
    ids=["6 weeks by day", "a year by week", "all by month"],
)
def test_flag_markers_never_overlap(frame: Frame, unit: str, bins: int, step_days: int) -> None:
    starts = [date(2023, 1, 2) + timedelta(days=step_days * i) for i in range(bins)]
    # A flag on most bars and two on some: the worst case for a lane of markers.
    flagged = [s for i, s in enumerate(starts) if i % 4 != 3] + starts[::5]
    flagged.sort()
    chart = load_chart(_chart_data(unit, starts, flagged), frame)
    _assert_markers_apart(chart, frame, len(flagged))
    assert all(b["flagged"] for i, b in enumerate(chart["bars"]) if i % 4 != 3)


def test_a_lone_flag_sits_over_its_bar() -> None:
    starts = [date(2026, 2, 1) + timedelta(days=i) for i in range(42)]
    chart = load_chart(_chart_data("day", starts, [starts[20], starts[30]]), PHONE)
    markers = chart["markers"]
    assert [m["label"] for m in markers] == ["1", "2"]
    assert [m["cx"] for m in markers] == [chart["bars"][20]["cx"], chart["bars"][30]["cx"]]


def test_every_bar_carries_its_values_for_a_tap() -> None:
    starts = [date(2026, 1, 5) + timedelta(weeks=i) for i in range(53)]
    data = _chart_data("week", starts, [starts[10]])
    data["bins"][10].update(load=12345.0, days=7, per_day=1763.6)
    chart = load_chart(data, PHONE)
    tip = chart["bars"][10]["tip"]
    text = " | ".join(line["text"] for line in tip["lines"])
    assert text == (
        "week of 16 Mar 2026 | 12,345 ref. steps, 1,764/day | acute 900, chronic 800 /day | flag 1 (see the list below)"
    )
    # Kept inside the drawing, whichever bar: the first and the last too.
    for bar in (chart["bars"][0], chart["bars"][-1]):
        assert bar["tip"]["x"] >= 0 and bar["tip"]["x"] + bar["tip"]["width"] <= PHONE.width
    assert all(b["hit_width"] > b["width"] for b in chart["bars"])  # the whole column takes the tap


@pytest.mark.parametrize(("value", "invert"), [(170.0, False), (333.0, True), (360.0, True)])
def test_an_even_line_is_drawn_above_the_x_axis_not_on_it(value: float, invert: bool) -> None:
    xs = [float(m) for m in range(41)]
    chart = line_chart(xs, [value] * 41, PHONE_SMALL, invert=invert, min_span=20.0, value_text="{:.0f}".format)
    ys = {float(p.split(",")[1]) for seg in chart["segments"] for p in seg.split()}
    assert len(ys) == 1 and ys.pop() < chart["baseline"] - 5
    assert chart["points"][0]["tip"]["lines"][0]["text"] == f"{value:.0f} at 0.0 min"


def test_a_flag_list_line_keeps_the_numbers_and_the_advice_comes_once_per_kind() -> None:
    t0 = datetime(2026, 3, 1, 7, tzinfo=UTC)
    from stridecare.domain.history import RunSummary

    history = [RunSummary(start_time=t0 - timedelta(days=d), distance_m=5000.0) for d in (2, 5, 8)]
    spike = spike_flag(7000.0, t0, history)
    acwr = acwr_flag(1.62)
    assert spike is not None and acwr is not None
    assert flag_summary(spike.reason) == "7.0 km is 1.40× your longest run of the last 30 days (5.0 km)"
    assert flag_summary(acwr.reason) == "Your acute load is 1.62× your chronic load, above 1.50×"
    runs = [
        {"flags": [{"name": spike.name, "reason": spike.reason}, {"name": acwr.name, "reason": acwr.reason}]},
        {"flags": [{"name": spike.name, "reason": spike.reason}]},
        {"flags": [{"name": acwr.name, "reason": acwr.reason}]},
    ]
    kinds = flag_kinds(runs)
    assert [(k["name"], k["runs"]) for k in kinds] == [(spike.name, 2), (acwr.name, 2)]
    assert all("onsider" in k["explanation"] for k in kinds)


def test_a_standing_stop_with_the_watch_running_is_left_out() -> None:
    # One sample a second: 300 s running at 3 m/s, 120 s standing (watch running), 300 s running, a 2 s dip.
    speeds: list[float | None] = [*[3.0] * 300, *[0.2] * 120, *[3.0] * 150, *[0.5] * 2, *[3.0] * 150]
    t = [float(i) for i in range(len(speeds))]
    stretches, stopped = moving_stretches(t, speeds, [True] * len(speeds))
    assert [len(s) for s in stretches] == [300, 300]  # the 2 s dip is noise, not a stop
    assert stopped == pytest.approx(122.0)
    assert sum(dt for s in stretches for _, dt in s) == pytest.approx(len(speeds) - 1 - 122 - 1, abs=2)
    assert STOPPED_BELOW_MPS * 3.6 < 5.0  # slower than a walk: a walk break stays in the chart


# -- the pages in Chromium -------------------------------------------------------------------------------------


class Site:
    def __init__(self, rt: Runtime, base: str, paused_run: int, garmin_run: int | None) -> None:
        self.rt, self.base, self.paused_run, self.garmin_run = rt, base, paused_run, garmin_run


def _ingest(rt: Runtime, folder: Path, name: str, i: int, start: datetime, duration: int, **kw: Any) -> None:
    path = folder / f"{name}-{i}.fit"
    write_activity(path, start=start, duration_s=duration, speed_mps=3.0, cadence_rpm=85, sample_interval_s=10, **kw)
    report = ingest_planned(rt.db, rt.settings, name, path, start + timedelta(seconds=duration + 3600))
    assert report.status == "ingested", report


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (scripts/services.sh installs it)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    import threading

    import uvicorn
    from channel_settings import channel_settings

    root = tmp_path_factory.mktemp("phone")
    clock = root / "clock.txt"
    write_clock_file(clock, NOW)
    rt = Runtime.open(make_settings(root, clock_file=clock))
    with rt.db.transaction() as s:
        for name in ("rosa", "gary"):
            s.add(Athlete(name=name, timezone=TZ, channel_settings=channel_settings(console=False)))
    for i in range(RUNS):
        minutes = 30 if i < 16 else 30 * 1.05 ** (i - 15)
        _ingest(rt, root, "rosa", i, FIRST_RUN + timedelta(days=2 * i), round(minutes * 60))
    # The last run of the week: two pauses of the watch, four and two minutes.
    _ingest(rt, root, "rosa", RUNS, NOW - timedelta(hours=5), 2400, pauses=[(900, 240), (1800, 120)])
    garmin = None
    if GARMIN_WITH_STOPS.is_file():
        report = ingest_planned(rt.db, rt.settings, "gary", GARMIN_WITH_STOPS, NOW)
        assert report.status == "ingested", report
        garmin = int(report.runs[0]["id"])
    with rt.db.read() as s:
        rosa = s.scalars(select(Athlete).where(Athlete.name == "rosa")).one()
        paused = s.scalars(select(Run.id).where(Run.athlete_id == rosa.id).order_by(Run.start_time.desc())).first()
    assert paused is not None
    server = uvicorn.Server(
        uvicorn.Config(create_app(rt), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=15, interval=0.05, what="uvicorn to start")
    port = int(server.servers[0].sockets[0].getsockname()[1])
    yield Site(rt, f"http://127.0.0.1:{port}", paused, garmin)
    server.should_exit = True
    thread.join(timeout=10)
    rt.close()


@pytest.fixture(scope="module")
def chromium(site: Site) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("phone-screens")
    print(f"\nscreenshots in {folder}")
    return folder


def _page(chromium: Any, width: int) -> Any:
    """A fresh page; at 390 px a phone with a touch screen. Pages are opened with the athlete's private link."""
    phone = width < 600
    context = chromium.new_context(
        viewport={"width": width, "height": 844 if phone else 900}, has_touch=phone, is_mobile=phone
    )
    return context.new_page()


def _url(site: Site, athlete: str, path: str = "", **query: str) -> str:
    with site.rt.db.read() as s:
        token = s.scalars(select(Athlete.dashboard_token).where(Athlete.name == athlete)).one()
    return f"{site.base}/dashboard/{athlete}{path}?{urlencode({**query, 't': token})}"


def _tap(page: Any, locator: Any, width: int, fx: float = 0.5, fy: float = 0.5) -> None:
    """A finger's tap at 390 px (a touch, no hover before it), a click at a desk."""
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
    if width < 600:
        page.touchscreen.tap(x, y)
    else:
        page.mouse.click(x, y)


def _boxes_apart(boxes: list[dict[str, float]]) -> bool:
    ordered = sorted(boxes, key=lambda b: b["x"])
    return all(a["x"] + a["width"] <= b["x"] for a, b in itertools.pairwise(ordered))


@pytest.mark.parametrize("width", [390, 1280])
def test_dashboard_markers_flags_and_values_on_tap(site: Site, chromium: Any, shots: Path, width: int) -> None:
    page = _page(chromium, width)
    svg = "svg#load-chart-phone" if width < 600 else "svg#load-chart"
    for key in ("6w", "1y", "all"):
        page.goto(_url(site, "rosa", range=key))
        chart = page.locator(svg)
        listed = page.locator("#flag-list > li")
        assert listed.count() >= 15, key  # a flag on most runs for weeks
        markers = chart.locator(".flag-marker")
        boxes = [markers.nth(i).bounding_box() for i in range(markers.count())]
        assert boxes and all(b is not None for b in boxes)
        assert _boxes_apart(boxes), f"{key} at {width}px: markers overlap: {boxes}"
        labels = [markers.nth(i).locator("text").text_content() or "" for i in range(markers.count())]
        numbers = []
        for label in labels:
            first, _, last = label.partition("–")
            numbers += list(range(int(first), int(last or first) + 1))
        assert numbers == list(range(1, listed.count() + 1)), labels
        # One explanation per kind of flag, however many runs raised it; list lines keep their numbers only.
        kinds = page.locator("#flag-kinds > li")
        names = [kinds.nth(i).get_attribute("data-flag") for i in range(kinds.count())]
        assert len(names) == len(set(names)) >= 1
        assert "onsider" not in (page.locator("#flag-list").text_content() or "")
        assert re.search(
            r"\d+\.\d km in the last 14 days is \d\.\d\d×", page.locator("#flag-list").text_content() or ""
        )
        _check(page, f"phone-charts-dashboard-{key}", width, shots)

    # Values on a tap: the bar's label shows, with no hover before it; a tap elsewhere hides it.
    page.goto(_url(site, "rosa", range="6w"))
    chart = page.locator(svg)
    pick = chart.locator(".pick").nth(30)
    tip = pick.locator(".tip")
    assert not tip.is_visible()
    _tap(page, pick.locator("rect.hit"), width, fy=0.8)
    assert tip.is_visible()
    text = " ".join(tip.locator("text").all_text_contents())
    day = date.fromisoformat(pick.get_attribute("data-start") or "")
    assert f"{day.day} {day:%b %Y}" in text and "ref. steps" in text and "acute" in text
    assert chart.locator(".pick .tip:visible").count() == 1
    _check(page, "phone-charts-dashboard-tapped", width, shots)
    _tap(page, page.locator("h1"), width)
    assert not tip.is_visible()
    # Without a pointer at all: the chart's values as a table, one row a bar.
    page.locator("#load-values summary").click()
    assert page.locator("#load-values tbody tr").count() == chart.locator("rect.bar").count()
    page.context.close()


@pytest.mark.parametrize("width", [390, 1280])
def test_run_page_pace_without_pauses_and_values_on_tap(site: Site, chromium: Any, shots: Path, width: int) -> None:
    page = _page(chromium, width)
    page.goto(_url(site, "rosa", f"/runs/{site.paused_run}"))
    suffix = "-phone" if width < 600 else ""
    pace = page.locator(f"svg#pace-chart{suffix}")
    assert pace.is_visible()
    # The two pauses break the line; the minutes are moving minutes: 40, not 46.
    assert pace.locator("polyline.series").count() == 3
    assert "2 stops, 6:00 in all" in (page.locator("#stops-note").text_content() or "")
    last = pace.locator(".pick").last
    assert "at 39." in (last.get_attribute("aria-label") or "") or "at 40." in (last.get_attribute("aria-label") or "")
    point = pace.locator(".pick").nth(20)
    _tap(page, point.locator("rect.hit"), width)
    tip = point.locator(".tip")
    assert tip.is_visible() and re.fullmatch(r"5:33 /km at \d+\.\d min", tip.locator("text").text_content() or "")
    _check(page, "phone-charts-run-paused", width, shots)
    # Keys and screen readers get the same values as a table, the stops in it too.
    page.locator("#run-values summary").click()
    assert page.locator("#run-values tr.stop").count() == 2
    assert page.locator("#run-values tbody tr").count() > 40
    page.context.close()


def _pace_axis(svg: Any) -> list[int]:
    """The pace ticks of a chart in seconds per km (the y labels, "m:ss")."""
    out = []
    for text in svg.locator('text.tick[text-anchor="end"]').all_text_contents():
        minutes, seconds = text.split(":")
        out.append(int(minutes) * 60 + int(seconds))
    return out


@pytest.mark.parametrize("width", [390, 1280])
def test_a_real_garmin_run_with_stops_draws_its_running_pace(
    site: Site, chromium: Any, shots: Path, width: int
) -> None:
    if site.garmin_run is None:
        pytest.skip(f"corpus file {GARMIN_WITH_STOPS} is absent (../shared/corpus is not mounted)")
    page = _page(chromium, width)
    page.goto(_url(site, "gary", f"/runs/{site.garmin_run}"))
    suffix = "-phone" if width < 600 else ""
    ticks = _pace_axis(page.locator(f"svg#pace-chart{suffix}"))
    # Standing samples drawn, the axis ran 0:00–36:00; running and walking only, it stays within 3:00–15:00.
    assert min(ticks) >= 180 and max(ticks) <= 900, ticks
    note = page.locator("#stops-note").text_content() or ""
    assert re.search(r"\d+ stops, \d+:\d\d in all", note), note
    axis = f"{min(ticks) // 60}:{min(ticks) % 60:02d}–{max(ticks) // 60}:{max(ticks) % 60:02d}"
    print(f"garmin run at {width}px: pace axis {axis}; {note}")
    _check(page, "phone-charts-run-garmin", width, shots)
    page.context.close()
