"""A coach's roster: the admin's home page lists every athlete by what needs attention, each with its reasons
and a link to the dashboard, filtered by group; on SQLite and PostgreSQL, and in Chromium at 390 and 1280 px.
Also the web app manifest and its icons (add to the home screen)."""

from __future__ import annotations

import json
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_settings
from harness import wait_for
from sqlalchemy.orm import Session
from typer.testing import CliRunner
from webclient import admin, browser

from recommender.roster import roster
from stridecare.clock import write_clock_file
from stridecare.db.models import Athlete, FeelScore, Prompt, Run, RunLoad, Shoe
from stridecare.runtime import Runtime
from stridecare_app.cli.main import app
from stridecare_app.web.app import create_app
from stridecare_app.web.auth import login_url

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
TODAY = date(2026, 12, 7)
CHROMIUM = Path("/usr/bin/chromium")


def _run(s: Session, athlete: Athlete, start: datetime, flags: list[str] | None = None, shoe: int | None = None) -> Run:
    run = Run(
        athlete_id=athlete.id,
        source="test",
        source_key=f"{athlete.name}-{start.isoformat()}",
        sport="running",
        start_time=start,
        elapsed_s=1800.0,
        timer_s=1800.0,
        distance_m=5400.0,
        steps=5100.0,
        cadence_source="recorded",
        shoe_id=shoe,
    )
    s.add(run)
    s.flush()
    reasons = {f: f"today's load was 2.1 × your 28-day daily average ({f})" for f in flags or []}
    s.add(
        RunLoad(
            run_id=run.id,
            load=3000.0,
            stimulus_sum=1.0,
            downhill_impact=0.0,
            peak_force_bw=2.5,
            flags=flags or [],
            facts={"flag_reasons": reasons},
        )
    )
    return run


def _prompt(s: Session, athlete: Athlete, day: date, key: str, done: bool, kind: str = "post_run") -> None:
    due = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=8)
    s.add(
        Prompt(
            athlete_id=athlete.id,
            kind=kind,
            dedupe_key=key,
            local_day=day,
            routines=["roll_out"],
            reasons=[],
            facts={},
            created_at=due,
            due_at=due,
            done_at=due + timedelta(hours=1) if done else None,
        )
    )


def seed_roster(rt: Runtime) -> None:
    """Six athletes, one reason each (and one with nothing to say), in the reverse of the expected order."""
    with rt.db.transaction() as s:
        people = {
            n: Athlete(name=n, display_name=n.capitalize(), timezone="UTC", group_name=g)
            for n, g in (
                ("ada", "club"),
                ("ben", "juniors"),
                ("cy", "club"),
                ("dee", None),
                ("eve", "juniors"),
                ("fay", "club"),
            )
        }
        s.add_all(people.values())
        s.flush()
        # ada: nothing to say (a run yesterday, every routine done).
        _run(s, people["ada"], NOW - timedelta(days=1))
        _prompt(s, people["ada"], TODAY - timedelta(days=3), "a1", True)
        # ben: a shoe due (its alert was sent), the pair still in use.
        shoe = Shoe(athlete_id=people["ben"].id, name="Pegasus 41", remind_at_km=700)
        s.add(shoe)
        s.flush()
        _run(s, people["ben"], NOW - timedelta(days=2), shoe=shoe.id)
        s.add(
            Prompt(
                athlete_id=people["ben"].id,
                kind="shoe",
                dedupe_key=f"shoe:{shoe.id}:700",
                local_day=TODAY - timedelta(days=1),
                facts={"shoe": {"due": "712 km of the 700 km set"}},
            )
        )
        # cy: no data for 12 days.
        _run(s, people["cy"], NOW - timedelta(days=12))
        # dee: three routines not ticked off in two weeks.
        _run(s, people["dee"], NOW - timedelta(days=1))
        for i in range(3):
            _prompt(s, people["dee"], TODAY - timedelta(days=3 + i), f"d{i}", False)
        # eve: a load flag three days ago, and a high score given that day.
        _run(s, people["eve"], NOW - timedelta(days=3), flags=["spike_caution"])
        s.add(FeelScore(athlete_id=people["eve"].id, day=TODAY - timedelta(days=3), score=5, location="heel"))
        # fay: a discomfort score of 7 yesterday (and a run today).
        _run(s, people["fay"], NOW - timedelta(hours=3))
        s.add(FeelScore(athlete_id=people["fay"].id, day=TODAY - timedelta(days=1), score=7, location="achilles"))


def test_the_roster_orders_by_what_needs_attention_with_reasons(any_rt: Runtime) -> None:
    seed_roster(any_rt)
    with any_rt.db.read() as s:
        rows = roster(s, NOW)
        club = roster(s, NOW, "club")
    # eve has a flag (8) and a score of 5 that day (16: the rule fires on her latest score).
    assert [r["name"] for r in rows] == ["eve", "fay", "dee", "cy", "ben", "ada"]
    reasons = {r["name"]: [x["kind"] for x in r["reasons"]] for r in rows}
    assert reasons == {
        "eve": ["feel", "flag"],
        "fay": ["feel"],
        "dee": ["missed"],
        "cy": ["stale"],
        "ben": ["shoe"],
        "ada": [],
    }
    text = {r["name"]: " | ".join(x["text"] for x in r["reasons"]) for r in rows}
    assert "7/10 (Achilles)" in text["fay"]
    # The high score on the day of the flag is shown beside the flag.
    assert "Single-run spike" in text["eve"] or "spike" in text["eve"].lower()
    assert "(feet 5/10 (heel) that day)" in text["eve"]
    assert "3 of 3 routines" in text["dee"]
    assert "No data for 12 days" in text["cy"]
    assert "Pegasus 41: 712 km of the 700 km set" in text["ben"]
    assert [r["name"] for r in club] == ["fay", "cy", "ada"]


def _env(rt: Runtime, clock: Path) -> dict[str, str]:
    return {
        "STRIDECARE_DATA_HOME": str(rt.settings.data_home),
        "STRIDECARE_ENCRYPTION_KEYS": rt.settings.encryption_keys[0].get_secret_value(),
        "STRIDECARE_CLOCK_FILE": str(clock),
    }


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[tuple[Runtime, Path]]:
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, NOW)
    rt = Runtime.open(make_settings(tmp_path, clock_file=clock))
    seed_roster(rt)
    try:
        yield rt, clock
    finally:
        rt.close()


def test_the_home_page_is_the_roster_and_filters_by_group_set_on_the_command_line(
    seeded: tuple[Runtime, Path],
) -> None:
    rt, clock = seeded
    set_group = CliRunner().invoke(app, ["athlete", "set", "ada", "--group", "juniors"], env=_env(rt, clock))
    assert set_group.exit_code == 0, set_group.output
    too_long = CliRunner().invoke(app, ["athlete", "set", "ada", "--group", "x" * 65], env=_env(rt, clock))
    assert too_long.exit_code == 2 and "64 printable" in too_long.output
    web = create_app(rt)
    assert browser(web, follow_redirects=False).get("/").status_code == 303  # the admin's page only
    client = admin(web, rt)
    page = client.get("/").text
    table = page.split('id="roster"', 1)[1].split("</table>", 1)[0]
    order = [chunk.split('"', 1)[0] for chunk in table.split('<tr data-athlete="')[1:]]
    assert order == ["eve", "fay", "dee", "cy", "ben", "ada"]
    assert '<a href="/dashboard/fay">Fay</a>' in table
    juniors = client.get("/?group=juniors").text.split('id="roster"', 1)[1].split("</table>", 1)[0]
    assert [c.split('"', 1)[0] for c in juniors.split('<tr data-athlete="')[1:]] == ["eve", "ben", "ada"]
    assert 'data-group="club"' in page
    cleared = CliRunner().invoke(app, ["athlete", "set", "ada", "--group", ""], env=_env(rt, clock))
    assert cleared.exit_code == 0
    assert 'data-athlete="ada"' not in client.get("/?group=juniors").text.split('id="roster"', 1)[1]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    # The image data inflates to one filter byte and three bytes per pixel per row.
    idat = data.index(b"IDAT")
    (size,) = struct.unpack(">I", data[idat - 4 : idat])
    assert len(zlib.decompress(data[idat + 4 : idat + 4 + size])) == height * (1 + 3 * width)
    return width, height


def test_the_manifest_and_icons_let_a_phone_keep_the_dashboard(seeded: tuple[Runtime, Path]) -> None:
    rt, _ = seeded
    web = create_app(rt)
    client = browser(web)
    answer = client.get("/manifest.webmanifest")
    assert answer.headers["content-type"].startswith("application/manifest+json")
    manifest = json.loads(answer.text)
    assert manifest["display"] == "standalone" and manifest["start_url"] == "/"
    for icon in manifest["icons"]:
        got = client.get(icon["src"])
        assert got.status_code == 200 and got.headers["content-type"] == icon["type"]
        if icon["type"] == "image/png":
            n = int(icon["sizes"].split("x")[0])
            assert _png_size(got.content) == (n, n)
    assert _png_size(client.get("/apple-touch-icon.png").content) == (180, 180)
    # Another origin is never a start page.
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil", "/a b"):
        assert json.loads(client.get("/manifest.webmanifest", params={"start": evil}).text)["start_url"] == "/"
    # The athlete's dashboard, opened with its secret link, names itself as the app's start page.
    with rt.db.read() as s:
        token = s.query(Athlete.dashboard_token).filter(Athlete.name == "fay").scalar()
    page = client.get("/dashboard/fay", params={"t": token}).text
    href = page.split('<link rel="manifest" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    start = json.loads(client.get(href).text)["start_url"]
    assert start == f"/dashboard/fay?t={token}"
    assert "manifest-src 'self'" in client.get("/dashboard/fay", params={"t": token}).headers["content-security-policy"]


# -- in Chromium -----------------------------------------------------------------------------------------

SMALLEST_TEXT = """() => {
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let smallest = [1e9, ''];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el) continue;
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    const size = parseFloat(getComputedStyle(el).fontSize);
    if (size < smallest[0]) smallest = [size, el.tagName + ': ' + node.textContent.trim().slice(0, 60)];
  }
  return smallest;
}"""


@pytest.fixture
def site(seeded: tuple[Runtime, Path]) -> Iterator[tuple[Runtime, str]]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    import uvicorn

    rt, _ = seeded
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(create_app(rt), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=15, interval=0.05, what="uvicorn to start")
    yield rt, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.parametrize("width", [1280, 390])
def test_the_roster_in_chromium_at_desk_and_phone_width(site: tuple[Runtime, str], width: int, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    rt, base = site
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"])
        try:
            page = chromium.new_page(viewport={"width": width, "height": 900 if width > 600 else 844})
            refused: list[str] = []
            page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
            link = login_url(rt.settings, rt.now()).removeprefix(rt.settings.effective_public_url)
            page.goto(f"{base}{link}")
            page.locator("form#login-link button").click()
            page.wait_for_url(f"{base}/")
            rows = page.locator("table#roster tbody tr")
            assert rows.count() == 6
            first = rows.nth(0)
            assert first.get_attribute("data-athlete") == "eve"
            assert first.locator('.reason[data-kind="flag"]').is_visible()
            assert "that day" in (first.locator('.reason[data-kind="flag"]').text_content() or "")
            scroll, inner = page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
            assert scroll <= inner, f"the roster scrolls sideways at {width} px: {scroll} > {inner}"
            size, where = page.evaluate(SMALLEST_TEXT)
            assert size >= 12.0, f"text of {size:.1f} px at {width} px ({where})"
            page.screenshot(path=str(tmp_path / f"roster-{width}.png"), full_page=True)
            # The manifest the page names is served (Chromium reports a manifest the policy refused on the console).
            href = page.locator("link[rel=manifest]").get_attribute("href")
            manifest = json.loads(page.request.get(f"{base}{href}").text())
            assert manifest["short_name"] == "stridecare"
            # Filter by group, then follow an athlete's link to the dashboard.
            page.locator('nav#groups a[data-group="juniors"]').click()
            page.wait_for_url(f"{base}/?group=juniors")
            assert page.locator("table#roster tbody tr").count() == 2
            page.locator('table#roster a[href="/dashboard/eve"]').click()
            page.wait_for_url(f"{base}/dashboard/eve")
            assert page.locator("h1").text_content() == "Eve"
            assert not [m for m in refused if "manifest" in m], refused
        finally:
            chromium.close()
