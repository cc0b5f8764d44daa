"""The pages in a real headless Chromium (Debian's package, driven by Playwright) at a desk's 1280 px and a
phone's 390 px: the home page, the dashboard over two ranges, an imported archive, a run page and the digest
preview. On each: no horizontal scroll, no visible text under 12 px (SVG text measured as drawn, after the SVG's
scaling), and a screenshot, kept in a folder the test prints (and copied to $STRIDECARE_TEST_SCREENS when set)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_seed import Seeded, seed
from harness import wait_for
from sqlalchemy import select

from recommender.digest import CHART_FONT_PT, CHART_SCALE, CHART_WIDTH_PX, preview_digest
from stridecare.db.models import Athlete
from stridecare_app.web.app import create_app
from stridecare_app.web.auth import login_url

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WIDTHS = (1280, 390)
MIN_FONT_PX = 12.0
# Where to copy the screenshots too (STRIDECARE_TEST_* variables survive the test environment).
SCREENS_COPY = os.environ.get("STRIDECARE_TEST_SCREENS")

# The smallest visible text on the page, as drawn: computed font size, times the SVG's scale for SVG text.
# Text inside display:none (the other chart), a closed <details> or an SVG <title> (a tooltip) has no box.
SMALLEST_TEXT = """() => {
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let smallest = [1e9, ''];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el || el.closest('title')) continue;
    const box = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (box.width === 0 || box.height === 0 || style.visibility === 'hidden') continue;
    let size = parseFloat(style.fontSize);
    if (el instanceof SVGElement) {
      const m = el.getScreenCTM();
      size *= Math.hypot(m.a, m.b);
    }
    if (size < smallest[0]) smallest = [size, el.tagName + ': ' + node.textContent.trim().slice(0, 60)];
  }
  return smallest;
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("screens")
    yield folder
    print(f"\nscreenshots in {folder}")
    target = SCREENS_COPY
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for png in folder.glob("*.png"):
            shutil.copy(png, Path(target) / png.name)
        print(f"copied to {target}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Seeded, str]]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    import uvicorn

    root = tmp_path_factory.mktemp("site")
    inboxes = {name: root / "inboxes" / name for name in ("anna", "archie")}
    for folder in inboxes.values():
        folder.mkdir(parents=True)
    data = seed(
        root,
        archive=True,
        strava_client_id="12345",
        inboxes=[f"{name}={folder}" for name, folder in inboxes.items()],
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(data.rt), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=15, interval=0.05, what="uvicorn to start")
    yield data, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    data.rt.close()


@pytest.fixture(scope="module")
def browser(site: tuple[Seeded, str]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


def _check(page: Any, name: str, width: int, shots: Path) -> dict[str, Any]:
    """Layout checks every page must pass at ``width``; returns what was measured."""
    scroll_width = page.evaluate("document.scrollingElement.scrollWidth")
    inner_width = page.evaluate("innerWidth")
    size, where = page.evaluate(SMALLEST_TEXT)
    page.screenshot(path=str(shots / f"{name}-{width}.png"), full_page=True)
    assert scroll_width <= inner_width, f"{name} at {width} px scrolls sideways: {scroll_width} > {inner_width}"
    assert size >= MIN_FONT_PX, f"{name} at {width} px: text of {size:.1f} px ({where})"
    return {"scroll_width": scroll_width, "min_font_px": size}


def _open(browser: Any, url: str, width: int) -> Any:
    page = browser.new_page(viewport={"width": width, "height": 900 if width > 600 else 844})
    response = page.goto(url)
    assert response is not None and response.status == 200, url
    return page


@pytest.mark.parametrize("width", WIDTHS)
def test_dashboard_at_desk_and_phone_width(site: tuple[Seeded, str], browser: Any, shots: Path, width: int) -> None:
    data, base = site
    # With the token, as the link in the digest email carries it.
    page = _open(browser, f"{base}/dashboard/anna?t={data.token}", width)
    chart = page.locator("svg#load-chart" if width > 600 else "svg#load-chart-phone")
    other = page.locator("svg#load-chart-phone" if width > 600 else "svg#load-chart")
    assert chart.is_visible() and not other.is_visible()
    bars = chart.locator("rect.bar")
    assert bars.count() == 42
    assert bars.first.get_attribute("data-start") == "2026-02-05"
    spike_bar = chart.locator('rect.bar[data-start="2026-03-14"]')
    box = spike_bar.bounding_box()
    assert box is not None and box["height"] > 20 and box["width"] >= 3
    heights = [float(h) for h in bars.evaluate_all("els => els.map(e => e.getAttribute('height'))")]
    assert max(heights) == float(spike_bar.get_attribute("height") or 0)
    marker = chart.locator(f'.flag-marker[data-run-id="{data.spike_run_id}"]')
    marker_box = marker.bounding_box()
    assert marker_box is not None
    assert abs((marker_box["x"] + marker_box["width"] / 2) - (box["x"] + box["width"] / 2)) < 2
    # The axis says its unit, and the flag's reason is on the page, visible without hovering.
    assert chart.locator("text.title", has_text="ref. steps per day").is_visible()
    flag_item = page.locator(f'#flag-list li[data-run-id="{data.spike_run_id}"]')
    assert flag_item.is_visible() and "longest" in (flag_item.text_content() or "")
    # Tapping the marker goes to its explanation.
    marker.click()
    assert page.url.endswith("#flag-" + (marker.locator("text").text_content() or "").strip())
    # A run's flag opens in place on a tap.
    row = page.locator(f'table#runs tr[data-run-id="{data.spike_run_id}"]')
    why = row.locator("details.flag-why .why").first
    assert not why.is_visible()
    row.locator("details.flag-why summary").first.click()
    assert why.is_visible() and "longest" in (why.text_content() or "")
    assert page.locator('table#runs .prompt[data-done="yes"]').count() == 2
    assert page.locator("table#shoes tr[data-shoe-id]").count() == 1
    measured = _check(page, "dashboard-6w", width, shots)
    print(f"dashboard 6w at {width}px: {measured}")

    # Ranges are links; the half-year view draws one bar per week.
    page.locator('nav.ranges a[data-range="6m"]').click()
    assert "range=6m" in page.url and f"t={data.token}" in page.url
    assert page.locator('nav.ranges a[aria-current="page"]').get_attribute("data-range") == "6m"
    assert chart.locator("rect.bar").count() == 27
    _check(page, "dashboard-6m", width, shots)

    # A run page, reached from the list, with its token.
    page.goto(f"{base}/dashboard/anna?t={data.token}")
    page.locator(f'table#runs tr[data-run-id="{data.spike_run_id}"] td a').first.click()
    assert f"/runs/{data.spike_run_id}" in page.url
    assert "5:33 /km" in (page.locator("#run-figures").text_content() or "")
    assert page.locator("#run-flags li").count() >= 1
    assert page.locator(".prompt .reasons li").count() >= 1
    _check(page, "run", width, shots)
    page.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_archive_and_home_at_desk_and_phone_width(
    site: tuple[Seeded, str], browser: Any, shots: Path, width: int
) -> None:
    data, base = site
    # The archive and the home page are the admin's: log in as a person does, with the link and its button.
    page = browser.new_page(viewport={"width": width, "height": 900 if width > 600 else 844})
    link = login_url(data.rt.settings, data.rt.now()).removeprefix(data.rt.settings.effective_public_url)
    page.goto(f"{base}{link}")
    page.locator("form#login-link button").click()
    page.wait_for_url(f"{base}/")
    response = page.goto(f"{base}/dashboard/archie")
    assert response is not None and response.status == 200
    chart = page.locator("svg#load-chart" if width > 600 else "svg#load-chart-phone")
    assert chart.locator("rect.bar[height]").count() > 12  # by month since May 2024
    assert page.locator("table#runs tr[data-run-id]").count() == 5
    _check(page, "archive-all", width, shots)
    page.goto(f"{base}/dashboard/archie?range=6w")
    assert chart.locator("text.empty").is_visible()
    _check(page, "archive-6w", width, shots)
    page.goto(f"{base}/dashboard/archie/runs/{data.archive_run_ids[0]}")
    assert "freshness window" in (page.locator("#no-prompt").text_content() or "")
    _check(page, "archive-run", width, shots)

    page.goto(f"{base}/")
    assert page.locator("section.athlete").count() == 2
    assert page.locator('section[data-athlete="anna"] a.connect-strava').is_visible()
    assert page.locator("table#health tr[data-check='database'][data-ok='yes']").count() == 1
    _check(page, "home", width, shots)
    page.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_digest_preview_is_legible_on_a_phone(
    site: tuple[Seeded, str], browser: Any, shots: Path, width: int, tmp_path: Path
) -> None:
    data, _ = site
    with data.rt.db.transaction() as s:
        athlete = s.scalars(select(Athlete).where(Athlete.name == "anna")).one()
        html, note = preview_digest(s, data.rt.settings, athlete, data.rt.now())
    # The seeded athletes have no channel: the preview still draws what would be sent, and says why it is not.
    assert note is None or "email" in note or "no channel" in note
    preview = tmp_path / "digest.html"
    preview.write_text(html, encoding="utf-8")
    page = browser.new_page(viewport={"width": width, "height": 844})
    page.goto(preview.as_uri())
    image = page.locator("img").first
    natural = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    shown = image.bounding_box()
    assert shown is not None
    # Drawn at 2×: twice as many pixels as the width it is laid out for.
    assert natural[0] == CHART_WIDTH_PX * CHART_SCALE
    # Chart labels are CHART_FONT_PT at 100 px per inch of the laid-out width; drawn smaller on a phone.
    label_px = CHART_FONT_PT / 72 * 100 * shown["width"] / CHART_WIDTH_PX
    print(f"digest at {width}px: image {natural} shown {shown['width']:.0f} px wide, chart labels {label_px:.1f} px")
    assert label_px >= MIN_FONT_PX
    _check(page, "digest", width, shots)
    page.close()
