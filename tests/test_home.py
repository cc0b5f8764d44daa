"""The home page: the admin's only, the athletes with their inbox folders, last runs and prompts, health, and a
"Connect Strava" button that carries a signed, single-use connect link."""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from conftest import make_settings
from dashboard_seed import seed
from webclient import admin, browser

from ingest.strava.oauth import check_connect_token
from stridecare.db.models import Athlete
from stridecare.runtime import Runtime
from stridecare_app.web.app import create_app

LOCAL = ("127.0.0.1", 50000)


def test_home_lists_athletes_inboxes_runs_prompts_and_health(tmp_path: Path) -> None:
    inbox = tmp_path / "inboxes" / "anna"
    inbox.mkdir(parents=True)
    data = seed(tmp_path, strava_client_id="12345", inboxes=[f"anna={inbox}", f"bert={tmp_path / 'missing'}"])
    try:
        client = admin(create_app(data.rt), data.rt)
        page = client.get("/")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        section = page.text.split('data-athlete="anna"', 1)[1].split("</section>", 1)[0]
        assert str(inbox) in section
        assert '<a href="/dashboard/anna">Anna</a>' in section
        assert f'href="/dashboard/anna/runs/{data.spike_run_id}">2026-03-14</a> 13.5 km' in section
        assert "Roll out your soles" in section  # the spike run's prompt, newest first
        assert "<dt>runs</dt><dd>12</dd>" in section
        # An inbox for a handle nobody has yet says how to fix it; its missing folder shows in the health table.
        assert "stridecare athlete add bert" in page.text
        assert re.search(r'data-check="database" data-ok="yes"', page.text)
        assert re.search(r'data-check="inbox anna" data-ok="yes"', page.text)
        assert re.search(r'data-check="inbox bert" data-ok="no">.*missing', page.text)
        assert 'data-check="outbox" data-ok="yes"' in page.text
        # The button carries a connect link signed for this athlete and not yet spent.
        link = html.unescape(re.findall(r'class="button connect-strava" href="([^"]+)"', section)[0])
        assert urlsplit(link).path == "/strava/connect"
        token = parse_qs(urlsplit(link).query)["t"][0]
        with data.rt.db.transaction() as s:
            assert check_connect_token(s, data.rt.settings, token, data.rt.now(), spend=False) == data.athlete_id
    finally:
        data.rt.close()


def test_home_is_for_the_admin_only_whoever_connects(tmp_path: Path) -> None:
    rt = Runtime.open(make_settings(tmp_path, strava_client_id="12345"))
    try:
        with rt.db.transaction() as s:
            s.add(Athlete(name="anna", timezone="UTC"))
        app = create_app(rt)
        # This machine's address opens nothing (a proxy or a tunnel on it connects for anyone): to the login.
        for peer, base in ((LOCAL, "http://localhost:8080"), (("::1", 1), "http://[::1]:8080")):
            answer = browser(app, peer=peer, base_url=base, follow_redirects=False).get("/")
            assert answer.status_code == 303 and answer.headers["location"] == "/login"
            assert "connect-strava" not in answer.text
        # Logged in, from another machine too.
        assert "connect-strava" in admin(app, rt, peer=("203.0.113.9", 1)).get("/").text
        # A foreign name rebound to 127.0.0.1 gets nothing at all, session or not.
        rebound = admin(app, rt)
        rebound.base_url = rebound.base_url.copy_with(host="attacker.example")
        assert rebound.get("/").status_code == 421
    finally:
        rt.close()


def test_no_connect_button_without_strava_and_a_hint_without_athletes(tmp_path: Path) -> None:
    rt = Runtime.open(make_settings(tmp_path))
    try:
        client = admin(create_app(rt), rt)
        assert "stridecare athlete add" in client.get("/").text.split('id="no-athletes"', 1)[1]
        with rt.db.transaction() as s:
            s.add(Athlete(name="anna", timezone="UTC"))
        page = client.get("/").text
        assert "connect-strava" not in page and "STRIDECARE_STRAVA_CLIENT_ID" in page
    finally:
        rt.close()
