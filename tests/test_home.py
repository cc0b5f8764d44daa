"""The home page: loopback only, the athletes with their inbox folders, last runs and prompts, health, and a
"Connect Strava" button that carries a signed, single-use connect link."""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from conftest import make_settings
from dashboard_seed import seed
from starlette.testclient import TestClient

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
        client = TestClient(create_app(data.rt), client=LOCAL, base_url="http://127.0.0.1:8080")
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


def test_home_is_for_this_machine_only(tmp_path: Path) -> None:
    rt = Runtime.open(make_settings(tmp_path))
    try:
        with rt.db.transaction() as s:
            s.add(Athlete(name="anna", timezone="UTC"))
        app = create_app(rt)
        assert TestClient(app, client=LOCAL, base_url="http://localhost:8080").get("/").status_code == 200
        assert TestClient(app, client=("::1", 1), base_url="http://[::1]:8080").get("/").status_code == 200
        # Another machine, a reverse proxy on this one, and a foreign name rebound to 127.0.0.1: not found.
        assert TestClient(app, base_url="http://127.0.0.1:8080").get("/").status_code == 404
        local = TestClient(app, client=LOCAL, base_url="http://127.0.0.1:8080")
        assert local.get("/", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 404
        rebound = TestClient(app, client=LOCAL, base_url="http://attacker.example:8080")
        assert rebound.get("/").status_code == 404
    finally:
        rt.close()


def test_no_connect_button_without_strava_and_a_hint_without_athletes(tmp_path: Path) -> None:
    rt = Runtime.open(make_settings(tmp_path))
    try:
        client = TestClient(create_app(rt), client=LOCAL, base_url="http://127.0.0.1:8080")
        assert "stridecare athlete add" in client.get("/").text.split('id="no-athletes"', 1)[1]
        with rt.db.transaction() as s:
            s.add(Athlete(name="anna", timezone="UTC"))
        page = client.get("/").text
        assert "connect-strava" not in page and "STRIDECARE_STRAVA_CLIENT_ID" in page
    finally:
        rt.close()
