"""The admin's login, whoever connects: one-time links, the session cookie, the password, CSRF, Host, proxies.

Real components: the app served by uvicorn where cookies and headers matter, the real ``stridecare web`` and
``stridecare run`` processes for the link they print, the real command line for ``stridecare admin``, migrated
SQLite databases. Nothing here is open because of the client's address: every client below connects from
loopback unless it says otherwise, and that opens nothing.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import make_settings
from factories import parsed_run, store_runs
from harness import processes, settings_env, stridecare, wait_for
from sqlalchemy import select
from starlette.testclient import TestClient
from typer.testing import CliRunner
from webclient import admin, browser, csrf_of, free_port, log_in

from stridecare.clock import write_clock_file
from stridecare.db.models import AdminLogin, Athlete
from stridecare.runtime import Runtime
from stridecare_app.cli.main import app as cli
from stridecare_app.web.app import create_app
from stridecare_app.web.auth import SESSION_COOKIE, login_url, make_login_token

REMOTE = ("203.0.113.9", 40000)
PASSWORD = "correct horse battery staple"


@pytest.fixture
def crt(tmp_path: Path) -> Any:
    """A runtime on the simulation clock (so that a link can be made to expire), with two athletes."""
    clock = tmp_path / "clock.txt"
    from datetime import UTC, datetime

    write_clock_file(clock, datetime(2026, 12, 7, 9, 0, tzinfo=UTC))
    rt = Runtime.open(make_settings(tmp_path, clock_file=clock))
    with rt.db.transaction() as s:
        s.add_all([Athlete(name="anna", timezone="UTC"), Athlete(name="bert", timezone="UTC")])
    yield rt
    rt.close()


def cli_env(rt: Runtime) -> dict[str, str]:
    return settings_env(rt.settings)


def token_of(rt: Runtime, name: str) -> str:
    with rt.db.read() as s:
        return s.scalars(select(Athlete.dashboard_token).where(Athlete.name == name)).one()


def link_path(rt: Runtime) -> str:
    return login_url(rt.settings, rt.now()).removeprefix(rt.settings.effective_public_url)


def ask(client: TestClient, path: str) -> tuple[str, str]:
    """GET a login link's page: ``(csrf, t)`` of its form."""
    page = client.get(path)
    assert page.status_code == 200, page.text[:300]
    token = re.search(r'name="t" value="([^"]+)"', page.text)
    assert token
    return csrf_of(page.text), token.group(1)


# -- the link ------------------------------------------------------------------------------------------------


def test_a_login_link_asks_on_get_logs_in_once_on_post_and_sets_a_strict_httponly_cookie(crt: Runtime) -> None:
    web = create_app(crt)
    client = browser(web, peer=REMOTE, follow_redirects=False)
    assert client.get("/").headers["location"] == "/login"
    path = link_path(crt)
    ask(client, path)
    csrf, token = ask(client, path)  # a link preview does not spend it
    done = client.post("/login", data={"csrf": csrf, "t": token})
    assert done.status_code == 303 and done.headers["location"] == "/"
    cookie = done.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes
    assert "secure" not in attributes  # the public URL is http here: a Secure cookie would never come back
    home = client.get("/")
    assert home.status_code == 200 and 'data-athlete="anna"' in home.text
    # Spent: the same link logs nobody else in, and its page says so.
    other = browser(web, peer=REMOTE, follow_redirects=False)
    looked = other.get(path)
    assert looked.status_code == 403 and "not valid" in looked.text and 'name="t"' not in looked.text
    again = client.post("/login", data={"csrf": csrf_of(home.text), "t": token})
    assert again.status_code == 403 and "not valid" in again.text
    assert other.get("/").status_code == 303


def test_a_link_expires_and_a_forged_or_foreign_one_is_refused(crt: Runtime, tmp_path: Path) -> None:
    web = create_app(crt)
    client = browser(web, follow_redirects=False)
    path = link_path(crt)
    assert crt.settings.clock_file is not None
    write_clock_file(crt.settings.clock_file, crt.now() + timedelta(minutes=61))
    assert client.get(path).status_code == 403
    csrf, _ = ask(client, link_path(crt))  # a fresh link's form, for its CSRF token
    token = path.split("t=", 1)[1]
    assert client.post("/login", data={"csrf": csrf, "t": token}).status_code == 403
    # Made with another installation's key: not ours.
    foreign = make_login_token(make_settings(tmp_path / "other", secret_key="another-key"), crt.now())
    assert client.get(f"/login?t={foreign}").status_code == 403
    assert client.post("/login", data={"csrf": csrf, "t": foreign}).status_code == 403
    for odd in ("é" * 40, "x" * 5000, "", "a.b.c"):
        assert client.post("/login", data={"csrf": csrf, "t": odd}).status_code in (400, 403)
    assert client.get("/").status_code == 303


def test_the_login_form_needs_its_csrf_token(crt: Runtime) -> None:
    web = create_app(crt)
    victim = browser(web, follow_redirects=False)
    _, token = ask(victim, link_path(crt))
    # A page elsewhere posting a login (or a logout) into this browser has no CSRF token to send.
    for data in ({"t": token}, {"t": token, "csrf": "guess"}, {"t": token, "csrf": "é"}):
        refused = victim.post("/login", data=data)
        assert refused.status_code == 403 and SESSION_COOKIE not in refused.headers.get("set-cookie", "x")
    assert victim.get("/").status_code == 303
    # The link was not spent by the refused posts: the real form still works.
    csrf, token = ask(victim, f"/login?t={token}")
    assert victim.post("/login", data={"csrf": csrf, "t": token}).status_code == 303
    assert victim.post("/logout", data={"csrf": "guess"}).status_code == 403
    assert victim.get("/").status_code == 200  # still logged in
    logout = victim.post("/logout", data={"csrf": csrf_of(victim.get("/").text)})
    assert logout.status_code == 303
    assert victim.get("/").status_code == 303


def test_a_tampered_or_foreign_session_cookie_opens_nothing(crt: Runtime, tmp_path: Path) -> None:
    web = create_app(crt)
    client = admin(web, crt)
    value = client.cookies[SESSION_COOKIE]
    payload, _, rest = value.partition(".")
    stranger = browser(web, follow_redirects=False)
    import base64
    import json

    data = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
    data["admin"] = data["admin"] + 1
    forged = base64.b64encode(json.dumps(data).encode()).decode().rstrip("=") + "." + rest
    stranger.cookies.set(SESSION_COOKIE, forged)
    assert stranger.get("/").status_code == 303
    # A cookie signed by another installation (another secret key) is no session here.
    other_rt = Runtime.open(make_settings(tmp_path / "other", secret_key="another-key"))
    try:
        other = admin(create_app(other_rt), other_rt)
        stranger.cookies.set(SESSION_COOKIE, other.cookies[SESSION_COOKIE])
        assert stranger.get("/").status_code == 303
    finally:
        other_rt.close()


# -- the password and the command line -----------------------------------------------------------------------


def test_admin_password_is_stored_hashed_logs_in_and_ends_every_session(crt: Runtime) -> None:
    runner = CliRunner()
    env = cli_env(crt)
    web = create_app(crt)
    before = admin(web, crt)
    assert before.get("/").status_code == 200
    anonymous = browser(web, follow_redirects=False)
    assert 'name="password"' not in anonymous.get("/login").text  # no password: no form for one
    short = runner.invoke(cli, ["admin", "password", "--stdin"], input="short\n", env=env)
    assert short.exit_code == 2 and "10 to" in short.output
    result = runner.invoke(cli, ["admin", "password", "--stdin"], input=PASSWORD + "\n", env=env)
    assert result.exit_code == 0, result.output
    with crt.db.read() as s:
        stored = s.get(AdminLogin, 1)
        assert stored is not None and stored.password_hash is not None
        assert stored.password_hash.startswith("scrypt$") and PASSWORD not in stored.password_hash
    assert before.get("/", follow_redirects=False).status_code == 303  # a new password ends every session
    page = anonymous.get("/login").text
    assert 'name="password"' in page
    wrong = anonymous.post("/login", data={"csrf": csrf_of(page), "password": PASSWORD + "!"})
    assert wrong.status_code == 403 and "Wrong password" in wrong.text
    right = anonymous.post("/login", data={"csrf": csrf_of(page), "password": PASSWORD})
    assert right.status_code == 303 and anonymous.get("/").status_code == 200
    # `admin logout` ends every session; `--clear` removes the password (links still work).
    assert runner.invoke(cli, ["admin", "logout"], env=env).exit_code == 0
    assert anonymous.get("/").status_code == 303
    assert runner.invoke(cli, ["admin", "password", "--clear"], env=env).exit_code == 0
    fresh = browser(web, follow_redirects=False)
    assert 'name="password"' not in fresh.get("/login").text
    csrf = csrf_of(anonymous.get("/login?t=" + link_path(crt).split("t=", 1)[1]).text)
    assert anonymous.post("/login", data={"csrf": csrf, "password": PASSWORD}).status_code == 400
    assert anonymous.get("/").status_code == 303
    assert log_in(fresh, crt).get("/").status_code == 200


def test_password_guessing_is_braked_and_the_link_still_works(crt: Runtime) -> None:
    with crt.db.transaction() as s:
        from stridecare_app.web.auth import set_password

        set_password(s, PASSWORD)
    web = create_app(crt)
    guesser = browser(web, peer=REMOTE, follow_redirects=False)
    csrf = csrf_of(guesser.get("/login").text)
    codes = [guesser.post("/login", data={"csrf": csrf, "password": f"guess-{n}"}).status_code for n in range(11)]
    assert codes == [403] * 10 + [429]
    # Even the right password waits out the window; a login link does not.
    assert guesser.post("/login", data={"csrf": csrf, "password": PASSWORD}).status_code == 429
    assert admin(web, crt).get("/").status_code == 200


def test_the_command_line_prints_a_link_that_logs_in_once(crt: Runtime) -> None:
    result = CliRunner().invoke(cli, ["admin", "link"], env=cli_env(crt))
    assert result.exit_code == 0, result.output
    link = next(line for line in result.output.splitlines() if "/login?t=" in line).strip()
    assert link.startswith(crt.settings.effective_public_url + "/login?t=")
    client = browser(create_app(crt), follow_redirects=False)
    csrf, token = ask(client, link.removeprefix(crt.settings.effective_public_url))
    assert client.post("/login", data={"csrf": csrf, "t": token}).status_code == 303
    assert client.get("/").status_code == 200


@pytest.mark.parametrize("command", [["web"], ["run", "--concurrency", "1"]])
def test_web_and_run_print_a_login_link_at_start_that_works_against_the_server(
    tmp_path: Path, command: list[str]
) -> None:
    port = free_port()
    settings = make_settings(tmp_path, web_port=port)
    env = settings_env(settings)
    proc = stridecare(command[0], command, env, tmp_path / "logs")
    with processes(proc):
        line = wait_for(
            lambda: re.search(r"log in at (http://\S+/login\?t=\S+)", proc.output()), timeout=60, what="the link"
        )
        assert line is not None
        link = line.group(1)
        assert urlsplit(link).netloc == f"127.0.0.1:{port}"
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), timeout=30, what="the web app")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False, timeout=10) as client:
            assert client.get("/").headers["location"] == "/login"
            page = client.get(link.removeprefix(f"http://127.0.0.1:{port}"))
            token = re.search(r'name="t" value="([^"]+)"', page.text)
            assert page.status_code == 200 and token
            done = client.post("/login", data={"csrf": csrf_of(page.text), "t": token.group(1)})
            assert done.status_code == 303
            assert client.get("/").status_code == 200


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# -- an athlete's private link -------------------------------------------------------------------------------


def test_an_athletes_link_opens_only_that_athletes_pages(crt: Runtime) -> None:
    [bert_run] = store_runs(crt.db, crt.settings, "bert", [parsed_run(crt.now() - timedelta(days=1))], crt.now())
    anna = token_of(crt, "anna")
    web = create_app(crt)
    reader = browser(web, peer=REMOTE, follow_redirects=False)
    assert reader.get(f"/dashboard/anna?t={anna}").status_code == 200
    # Another athlete's pages, the home page and the metrics: anna's token is no authority there.
    denied = reader.get(f"/dashboard/bert?t={anna}")
    unknown = reader.get(f"/dashboard/nobody?t={anna}")
    assert denied.status_code == unknown.status_code == 403 and denied.text == unknown.text
    assert reader.get(f"/dashboard/bert/runs/{bert_run}?t={anna}").status_code == 403
    assert reader.get(f"/dashboard/anna/runs/{bert_run}?t={anna}").status_code == 404
    assert reader.get(f"/?t={anna}").status_code == 303
    assert reader.get(f"/metrics?t={anna}").status_code == 403
    assert reader.get("/metrics", headers={"Authorization": f"Bearer {anna}"}).status_code == 403
    # The admin sees bert's run.
    assert admin(web, crt).get(f"/dashboard/bert/runs/{bert_run}").status_code == 200


# -- Host and proxies ----------------------------------------------------------------------------------------


def _paths(web: Any) -> list[str]:
    """A concrete path for every route of the app."""
    paths = []
    for route in web.routes:
        path = route.path
        for name in re.findall(r"{(\w+)[^}]*}", path):
            path = re.sub(r"{" + name + r"[^}]*}", "1" if "id" in name else "anna", path)
        paths.append(path)
    return sorted(set(paths))


def test_a_foreign_host_gets_421_on_every_route_even_with_a_session(crt: Runtime) -> None:
    web = create_app(crt)
    session = admin(web, crt)
    paths = _paths(web)
    assert {"/", "/healthz", "/metrics", "/login", "/strava/webhook", "/dashboard/anna"} <= set(paths)
    for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example", "", "[::1", "localhost.evil"):
        for path in paths:
            for method in ("GET", "POST"):
                answer = session.request(method, path, headers={"host": host})
                assert answer.status_code == 421, (host, method, path, answer.status_code)
    # Loopback names, with or without a port, and the public URL's host are this site.
    for host in ("localhost", "LOCALHOST:8080", "127.0.0.1", "127.0.0.2:9", "[::1]:8080", "app.localhost"):
        assert session.get("/", headers={"host": host}).status_code == 200, host
    public = Runtime(crt.settings.model_copy(update={"public_url": "https://stride.example.org/"}), crt.db)
    web2 = create_app(public)
    assert browser(web2).get("/healthz", headers={"host": "stride.example.org"}).status_code == 200
    assert browser(web2).get("/healthz", headers={"host": "STRIDE.example.org:443"}).status_code == 200
    assert browser(web2).get("/healthz", headers={"host": "other.example.org"}).status_code == 421


def test_forwarded_headers_count_only_from_a_trusted_proxy(crt: Runtime) -> None:
    trusting = Runtime(
        crt.settings.model_copy(update={"public_url": "https://stride.example.org", "trusted_proxies": ["10.0.0.0/8"]}),
        crt.db,
    )
    web = create_app(trusting)
    proxy = browser(web, peer=("10.1.2.3", 5000), follow_redirects=False)
    stranger = browser(web, peer=REMOTE, follow_redirects=False)
    # A proxy that keeps Host as the upstream's and says the real name in X-Forwarded-Host: that name counts.
    local_host = {"host": "127.0.0.1:8080"}
    assert proxy.get("/healthz", headers={**local_host, "x-forwarded-host": "stride.example.org"}).status_code == 200
    assert proxy.get("/healthz", headers={**local_host, "x-forwarded-host": "evil.example"}).status_code == 421
    # From anyone else the header means nothing.
    assert stranger.get("/healthz", headers={**local_host, "x-forwarded-host": "evil.example"}).status_code == 200
    # X-Forwarded-Proto from the proxy makes the request https (the session cookie is Secure for an https URL).
    page = proxy.get("/login", headers={"host": "stride.example.org", "x-forwarded-proto": "https"})
    assert page.status_code == 200 and "secure" in page.headers["set-cookie"].lower()
    # A trusted proxy's X-Forwarded-For says who the client is; nothing is opened by it either way.
    for client in (proxy, stranger):
        for forwarded in ("127.0.0.1", "::1", "10.1.2.3"):
            answer = client.get("/", headers={"host": "stride.example.org", "x-forwarded-for": forwarded})
            assert answer.status_code == 303, (client, forwarded)
