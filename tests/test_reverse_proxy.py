"""Behind a real nginx: the README's reverse-proxy snippet works, and nginx's bare default opens nothing.

nginx is Debian's (``scripts/services.sh`` installs it for ``make test``); it runs here as a foreground process
with its configuration, logs and temporary files in the test's folder. Two sites in front of one stridecare:

* ``proxy_pass`` with nginx's defaults: no forwarding header, and ``Host`` rewritten to the upstream's loopback
  address, so every visitor looks like this machine asking for 127.0.0.1. Nothing may open because of that.
* The README's ``location`` block, taken from README.md as written, with ``STRIDECARE_TRUSTED_PROXIES`` and
  ``STRIDECARE_PUBLIC_URL`` set as the README says.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from conftest import make_settings
from factories import parsed_run, store_runs
from sqlalchemy import select
from webclient import csrf_of, free_port, serving

from stridecare.db.models import Athlete
from stridecare.runtime import Runtime
from stridecare_app.web.app import create_app
from stridecare_app.web.auth import SESSION_COOKIE, login_url

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_NAME = "stride.example.org"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        pytest.skip("nginx is not installed (apt-get install nginx; scripts/services.sh installs it for make test)")
    return found


def readme_location_block() -> str:
    """The body of the ``location / { … }`` block of the README's nginx snippet."""
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"```nginx\n(.*?)```", readme, re.S)
    assert snippet, "README.md has no nginx snippet"
    block = re.search(r"location / \{\n(.*?)\n\s*\}", snippet.group(1), re.S)
    assert block, snippet.group(1)
    assert "proxy_pass http://127.0.0.1:8080;" in block.group(1)
    return block.group(1)


@contextmanager
def nginx(tmp: Path, servers: str) -> Iterator[None]:
    """A foreground nginx with ``servers`` (server blocks) until the block ends."""
    binary = nginx_binary()
    for folder in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / folder).mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers need the test's folders
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""{user}daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{servers}
}}
"""
    )
    check = subprocess.run(
        [binary, "-t", "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")], capture_output=True
    )
    assert check.returncode == 0, check.stderr.decode()
    proc = subprocess.Popen([binary, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")])
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)


def log_in_through(client: httpx.Client, rt: Runtime, host: str | None = None) -> httpx.Response:
    """Open a fresh login link through ``client`` and press its button; the POST's answer."""
    headers = {"Host": host} if host else {}
    link = login_url(rt.settings, rt.now()).removeprefix(rt.settings.effective_public_url)
    page = client.get(link, headers=headers)
    assert page.status_code == 200, page.text[:300]
    token = re.search(r'name="t" value="([^"]+)"', page.text)
    assert token
    return client.post("/login", data={"csrf": csrf_of(page.text), "t": token.group(1)}, headers=headers)


def seed(rt: Runtime) -> tuple[str, int]:
    [run_id] = store_runs(rt.db, rt.settings, "anna", [parsed_run(rt.now() - timedelta(hours=2))], rt.now())
    with rt.db.read() as s:
        return s.scalars(select(Athlete.dashboard_token).where(Athlete.name == "anna")).one(), run_id


def test_nginx_default_proxy_pass_opens_nothing_without_the_login(tmp_path: Path) -> None:
    rt = Runtime.open(make_settings(tmp_path, strava_client_id="4711", strava_client_secret="s"))
    try:
        token, run_id = seed(rt)
        front = free_port()
        with serving(create_app(rt, enqueue=lambda _id: None)) as app_port:
            # nginx's defaults: Host becomes "127.0.0.1:<port>" and nothing says who the visitor is.
            site = f"server {{ listen 127.0.0.1:{front}; location / {{ proxy_pass http://127.0.0.1:{app_port}; }} }}"
            with nginx(tmp_path / "nginx", site):
                wait_listening(front)
                with httpx.Client(base_url=f"http://127.0.0.1:{front}", follow_redirects=False, timeout=10) as anyone:
                    for host in (None, "evil.example"):  # a rebound name is rewritten away by nginx too
                        headers = {"Host": host} if host else {}
                        home = anyone.get("/", headers=headers)
                        assert home.status_code == 303 and home.headers["location"] == "/login", host
                        for path in ("/dashboard/anna", f"/dashboard/anna/runs/{run_id}", "/metrics"):
                            assert anyone.get(path, headers=headers).status_code == 403, (host, path)
                        assert "/strava/connect" not in anyone.get("/login", headers=headers).text
                    # What people come through the proxy for still works: the athlete's link, the admin's login.
                    assert anyone.get("/dashboard/anna", params={"t": token}).status_code == 200
                    assert log_in_through(anyone, rt).status_code == 303
                    home = anyone.get("/")
                    assert home.status_code == 200 and "connect-strava" in home.text
                    assert anyone.get("/metrics").status_code == 200
    finally:
        rt.close()


def test_the_readme_nginx_snippet_with_trusted_proxies(tmp_path: Path) -> None:
    nginx_binary()
    front = free_port()
    # As the README says: the public URL people use, and nginx (on this machine) as the trusted proxy.
    rt = Runtime.open(
        make_settings(tmp_path, public_url=f"http://{PUBLIC_NAME}:{front}", trusted_proxies=["127.0.0.1"])
    )
    try:
        token, _ = seed(rt)
        with serving(create_app(rt, enqueue=lambda _id: None)) as app_port:
            location = readme_location_block().replace("127.0.0.1:8080", f"127.0.0.1:{app_port}")
            site = f"server {{ listen 127.0.0.1:{front}; server_name {PUBLIC_NAME}; location / {{\n{location}\n}} }}"
            with nginx(tmp_path / "nginx", site):
                wait_listening(front)
                with httpx.Client(base_url=f"http://127.0.0.1:{front}", follow_redirects=False, timeout=10) as browser:
                    public = {"Host": PUBLIC_NAME}
                    assert browser.get("/healthz", headers=public).status_code == 200
                    assert browser.get("/", headers=public).headers["location"] == "/login"
                    # A name rebound to the proxy's address reaches stridecare with that name: refused.
                    # (Its own X-Forwarded-Host is overwritten by nginx with the name it asked for.)
                    answer = browser.get("/healthz", headers={"Host": "evil.example", "X-Forwarded-Host": PUBLIC_NAME})
                    assert answer.status_code == 421
                    done = log_in_through(browser, rt, host=PUBLIC_NAME)
                    assert done.status_code == 303
                    cookie = done.headers["set-cookie"].lower()
                    assert cookie.startswith(SESSION_COOKIE) and "httponly" in cookie and "samesite=strict" in cookie
                    assert browser.get("/", headers=public).status_code == 200
                    assert browser.get("/metrics", headers=public).status_code == 200
                    # A visitor's own X-Forwarded-For is appended to, never believed over the proxy's word.
                    spoofed = {**public, "X-Forwarded-For": "127.0.0.1"}
                    with httpx.Client(base_url=f"http://127.0.0.1:{front}", follow_redirects=False) as other:
                        assert other.get("/", headers=spoofed).status_code == 303
                        assert other.get("/dashboard/anna", headers=spoofed).status_code == 403
                        assert other.get("/dashboard/anna", params={"t": token}, headers=public).status_code == 200
    finally:
        rt.close()
