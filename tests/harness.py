"""Test harness: real processes (celery worker, beat, ``stridecare run``), receivers on loopback, bounded waits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from stridecare.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last value: {last!r})")


def settings_env(settings: Settings) -> dict[str, str]:
    """The STRIDECARE_* environment that reproduces ``settings`` in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIDECARE_")}
    data = settings.model_dump(exclude={"load"})
    for name, value in data.items():
        if value is None:
            continue
        key = f"STRIDECARE_{name.upper()}"
        if name in {"encryption_keys"}:
            env[key] = ",".join(v.get_secret_value() for v in getattr(settings, name))
        elif name in {"inboxes", "webhook_allowed_networks"}:
            env[key] = json.dumps([str(v) for v in value])
        elif hasattr(getattr(settings, name), "get_secret_value"):
            env[key] = getattr(settings, name).get_secret_value()
        else:
            env[key] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Proc:
    """A child process with its output captured to a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """Everything the process printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (no clean shutdown: the crash case)."""
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it does not end in time."""
        if not self.alive():
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def start(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    """Start ``args`` in its own process group, logging to ``log_dir/name.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    fh = log.open("ab")
    popen = subprocess.Popen(args, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    fh.close()
    return Proc(name, popen, log)


def celery_worker(name: str, env: dict[str, str], log_dir: Path, concurrency: int = 1, pool: str = "prefork") -> Proc:
    """A real ``celery -A workers.app worker`` process."""
    return start(
        name,
        [
            str(BIN / "celery"),
            "-A",
            "workers.app",
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            "--loglevel=INFO",
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        env,
        log_dir,
    )


def celery_beat(name: str, env: dict[str, str], log_dir: Path) -> Proc:
    """A real ``celery -A workers.app beat`` process (with our leader lease)."""
    return start(
        name,
        [
            str(BIN / "celery"),
            "-A",
            "workers.app",
            "beat",
            "--loglevel=INFO",
            "-s",
            str(log_dir / f"{name}-schedule"),
        ],
        env,
        log_dir,
    )


def stridecare(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    """A ``stridecare …`` command as a process."""
    return start(name, [str(BIN / "stridecare"), *args], env, log_dir)


@contextmanager
def processes(*procs: Proc) -> Iterator[None]:
    """Stop every process at the end, and show their output when the test failed."""
    try:
        yield
    except BaseException:
        for p in procs:
            sys.stderr.write(f"\n----- {p.name} -----\n{p.output()[-6000:]}\n")
        raise
    finally:
        for p in procs:
            p.stop()


# -- an HTTP receiver that verifies Standard Webhooks signatures -------------------------------------------


@dataclass
class Received:
    """One request the receiver saw."""

    headers: dict[str, str]
    body: bytes
    verified: bool
    status: int


@dataclass
class WebhookReceiver:
    """A loopback HTTP server that checks every signature and answers from a script of status codes."""

    secret: str | None = None
    script: list[int] = field(default_factory=list)
    default_status: int = 200
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def start(self) -> WebhookReceiver:
        """Listen on 127.0.0.1 with a free port."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified = False
                if receiver.secret:
                    from standardwebhooks.webhooks import Webhook

                    try:
                        Webhook(receiver.secret).verify(body, headers)
                        verified = True
                    except Exception:
                        verified = False
                status = receiver.script.pop(0) if receiver.script else receiver.default_status
                receiver.requests.append(Received(headers, body, verified, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def delivered_ids(self) -> list[str]:
        """webhook-id of every verified 2xx request, in arrival order (duplicates kept)."""
        return [r.headers.get("webhook-id", "") for r in self.requests if r.verified and 200 <= r.status < 300]

    def payloads(self) -> dict[str, dict[str, Any]]:
        """Verified, accepted payloads by webhook-id (a deduplicating receiver's view)."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.requests:
            if r.verified and 200 <= r.status < 300:
                out.setdefault(r.headers["webhook-id"], json.loads(r.body))
        return out


# -- a real SMTP server ------------------------------------------------------------------------------------


@dataclass
class SmtpSink:
    """An aiosmtpd server on loopback that keeps every message it accepts."""

    messages: list[Any] = field(default_factory=list)
    port: int = 0
    _controller: Any = None

    def start(self) -> SmtpSink:
        """Listen on 127.0.0.1 with a free port (plain SMTP: for tests with STRIDECARE_SMTP_SECURITY=none)."""
        import email
        import email.policy
        import socket

        from aiosmtpd.controller import Controller

        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                sink.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
                return "250 OK"

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop the server."""
        if self._controller is not None:
            self._controller.stop()


def install_plugin(site: Path, module: str, source: str, group: str, entry_points: dict[str, str]) -> None:
    """Lay out the one-module distribution ``module`` in ``site`` the way pip installs a wheel: the module, and a
    ``dist-info`` whose ``entry_points.txt`` registers ``entry_points`` (name → ``module:Class``) in ``group``.
    What ``importlib.metadata`` reads once ``site`` is on the path, without touching the shared environment."""
    import textwrap

    site.mkdir()
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    dist = module.replace("_", "-")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")
    (info / "top_level.txt").write_text(f"{module}\n")
