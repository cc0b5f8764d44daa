"""``GET /metrics``: Prometheus metrics of the pipeline, read from SQL and the broker at every scrape.

The counts tell an outsider who trains how much, so a scrape needs the admin session or, for Prometheus,
``STRIDECARE_METRICS_TOKEN`` sent as a bearer token. Where the request comes from counts for nothing.

The web app, the workers, the beat and the watcher are separate processes (in the distributed deployment
separate containers, several workers), so a counter kept in one process's memory would only ever count that
process. Every number here is therefore read from the shared database or broker when Prometheus scrapes,
into a registry made for that one scrape: any web replica answers the same, and a restart loses nothing.
"""

from __future__ import annotations

import hmac
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ingest.strava.ratelimit import BUDGET_NAME, app_status, day_start, quarter_start
from stridecare.db.models import ApiBudget, Delivery, ImportedFile, Prompt, Run
from stridecare.runtime import Runtime
from stridecare.settings import Settings
from stridecare_app.web.auth import is_admin
from workers.queues import QUEUES

log = logging.getLogger(__name__)

# Celery's default queue; the project routes every task to it.
# Series that exist even at zero, so that "no failed delivery yet" is a 0 and not a missing series (an alert
# on ``stridecare_deliveries_total{status="failed"} > 0`` would otherwise never see the first failure rise).
FILE_STATUSES = ("ingested", "skipped", "rejected")
DELIVERY_STATUSES = ("pending", "sent", "failed", "cancelled")
PROMPT_KINDS = ("post_run", "weekly_balance", "digest", "shoe")


def routes(rt: Runtime) -> list[Route]:
    """The ``/metrics`` route for the web app (picked up by ``stridecare_app.web.app._page_routes``)."""

    token = rt.settings.metrics_token.get_secret_value() if rt.settings.metrics_token is not None else None

    async def metrics(request: Request) -> Response:
        if not (bearer_matches(request, token) or await is_admin(request, rt)):
            return PlainTextResponse("forbidden", status_code=403)
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        # The collector blocks on SQL and the broker: keep that off the event loop.
        body = await run_in_threadpool(encoder, scrape_registry(rt))
        return Response(body, headers={"Content-Type": content_type})

    def detail() -> dict[str, Any]:
        with rt.db.read() as session:
            strava = app_status(session) if rt.settings.strava_client_id else None
        checks = [{"name": "strava app", "ok": strava is None, "detail": strava["message"] if strava else "active"}]
        return {"status": "ok" if strava is None else "degraded", "checks": checks, "strava_app": strava}

    async def healthz_detail(request: Request) -> Response:
        # /healthz stays a bare liveness answer for container checks; the parts' state is for the operator.
        if not (bearer_matches(request, token) or await is_admin(request, rt)):
            return PlainTextResponse("forbidden", status_code=403)
        return JSONResponse(await run_in_threadpool(detail))

    return [Route("/metrics", metrics, methods=["GET"]), Route("/healthz/detail", healthz_detail, methods=["GET"])]


def bearer_matches(request: Request, token: str | None) -> bool:
    """True when a metrics token is configured and the request sends it as ``Authorization: Bearer …``."""
    if token is None:
        return False
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def scrape_registry(rt: Runtime) -> CollectorRegistry:
    """A registry for one scrape, holding only the collector that reads the current state."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StridecareCollector(rt))
    return registry


class StridecareCollector(Collector):
    """Yields every stridecare metric from the database and the broker at collection time."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Any]:
        """All metric families; a source that cannot be read is reported as down, the others still appear."""
        up = GaugeMetricFamily(
            "stridecare_source_up",
            "1 when the source could be read for this scrape, 0 when not.",
            labels=["source"],
        )
        try:
            with self.rt.db.read() as session:
                # One transaction: the counts are one consistent snapshot.
                families = list(_database_families(session, self.rt.now()))
        except Exception:
            log.warning("metrics: cannot read the database", exc_info=True)
            up.add_metric(["database"], 0)
        else:
            up.add_metric(["database"], 1)
            yield from families

        depths = queue_depths(self.rt.settings)
        up.add_metric(["broker"], 0 if depths is None else 1)
        if depths is not None:
            gauge = GaugeMetricFamily(
                "stridecare_queue_depth",
                "Messages waiting in each Celery queue (not yet taken by a worker); sum them for the whole backlog.",
                labels=["queue"],
            )
            for queue, depth in depths.items():
                gauge.add_metric([queue], depth)
            yield gauge
        yield up


def _database_families(session: Session, now: datetime) -> Iterator[Any]:
    runs = CounterMetricFamily("stridecare_runs_ingested", "Runs stored, from every source.")
    runs.add_metric([], session.scalar(select(func.count()).select_from(Run)) or 0)
    yield runs

    files = CounterMetricFamily("stridecare_files", "Files in the import log, by outcome.", labels=["status"])
    file_rows = session.execute(select(ImportedFile.status, func.count()).group_by(ImportedFile.status))
    for labels, count in _counts(file_rows, 1, [(s,) for s in FILE_STATUSES]):
        files.add_metric(list(labels), count)
    yield files

    prompts = CounterMetricFamily("stridecare_prompts", "Prompts made, by kind.", labels=["kind"])
    prompt_rows = session.execute(select(Prompt.kind, func.count()).group_by(Prompt.kind))
    for labels, count in _counts(prompt_rows, 1, [(k,) for k in PROMPT_KINDS]):
        prompts.add_metric(list(labels), count)
    yield prompts

    # A gauge, not a counter: a delivery moves from pending to sent or failed, so the pending count falls,
    # and rate() would read that fall as a counter reset.
    deliveries = GaugeMetricFamily(
        "stridecare_deliveries_total",
        "Outbox deliveries by channel and current status (pending, sent, failed, cancelled).",
        labels=["channel", "status"],
    )
    delivery_rows = list(
        session.execute(
            select(Delivery.channel, Delivery.status, func.count()).group_by(Delivery.channel, Delivery.status)
        )
    )
    channels = {str(row[0]) for row in delivery_rows}
    for labels, count in _counts(delivery_rows, 2, [(c, s) for c in channels for s in DELIVERY_STATUSES]):
        deliveries.add_metric(list(labels), count)
    yield deliveries

    budget = session.get(ApiBudget, BUDGET_NAME)
    if budget is not None:
        used = GaugeMetricFamily(
            "stridecare_strava_budget_used",
            "Share of Strava's rate limit used in the current window, as Strava last reported (1 = spent).",
            labels=["limit", "window"],
        )
        for limit_name, window, share in strava_budget_shares(budget, now):
            used.add_metric([limit_name, window], share)
        yield used
        inactive = GaugeMetricFamily(
            "stridecare_strava_app_inactive",
            "1 while Strava refuses the app (403 Application/Status/Inactive: its owner needs a subscription).",
        )
        inactive.add_metric([], 0 if budget.app_inactive_since is None else 1)
        yield inactive


def _counts(rows: Iterable[Any], width: int, zero_keys: Iterable[tuple[str, ...]]) -> list[tuple[tuple[str, ...], int]]:
    """``GROUP BY`` rows (``width`` label values, then a count) as sorted pairs, with 0 for absent keys."""
    counts = dict.fromkeys(zero_keys, 0)
    for row in rows:
        counts[tuple(str(value) for value in row[:width])] = int(row[width])
    return sorted(counts.items())


def _pair(value: object) -> tuple[float, float] | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        try:
            return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            return None
    return None


def strava_budget_shares(budget: ApiBudget, now: datetime) -> list[tuple[str, str, float]]:
    """``(limit, window, used/limit)`` for Strava's overall and read limits, 15-minute and daily windows.

    Strava reports usage per fixed window (quarter hours and UTC days); usage observed in a window that has
    since closed no longer counts, so it reads as 0 here, as it does for the scheduler's own decisions.
    Malformed or missing pairs are left out rather than guessed.
    """
    observed = budget.observed_at
    if observed is None:
        return []
    shares: list[tuple[str, str, float]] = []
    for limit_name in ("overall", "read"):
        limits = _pair((budget.limits or {}).get(limit_name))
        usage = _pair((budget.usage or {}).get(limit_name))
        if limits is None or usage is None:
            continue
        short, daily = usage
        if day_start(observed) != day_start(now):
            short = daily = 0.0
        elif quarter_start(observed) != quarter_start(now):
            short = 0.0
        for window, used, limit in (("15min", short, limits[0]), ("daily", daily, limits[1])):
            if limit > 0:
                shares.append((limit_name, window, used / limit))
    return shares


def queue_depths(settings: Settings, queues: Iterable[str] = QUEUES) -> dict[str, int] | None:
    """Messages waiting in each of ``queues`` (every queue of :mod:`workers.queues`) on the configured broker;
    ``None`` when the broker cannot be read.

    Redis: the list lengths (kombu keeps one list per priority step). The embedded SQLite broker (kombu's
    SQLAlchemy transport): visible rows of ``kombu_message``. Other transports are not read.
    """
    url = settings.effective_broker_url
    try:
        if url.startswith(("redis://", "rediss://")):
            return _redis_depths(url, list(queues))
        if url.startswith("sqla+"):
            return _sql_depths(url.removeprefix("sqla+"), list(queues))
    except Exception:
        log.warning("metrics: cannot read the queue depth from the broker", exc_info=True)
        return None
    return None


def _redis_keys(queue: str) -> list[str]:
    # kombu's Redis transport puts a message of priority p on "<queue>\x06\x16<step>" (the plain name for
    # step 0); counting only "celery" would miss prioritised messages.
    # deferred: start-up time of the web app (kombu's Redis transport, needed only with a Redis broker)
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    return [queue if step == 0 else f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS]


def _redis_depths(url: str, queues: list[str]) -> dict[str, int]:
    import redis  # deferred: start-up time of the web app (the Redis client, needed only with a Redis broker)

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        pipe = client.pipeline()
        keys = [(queue, key) for queue in queues for key in _redis_keys(queue)]
        for _, key in keys:
            pipe.llen(key)
        depths = dict.fromkeys(queues, 0)
        for (queue, _), n in zip(keys, pipe.execute(), strict=True):
            depths[queue] += int(n)
        return depths
    finally:
        client.close()


_SQL_DEPTH = (
    "SELECT q.name, count(*) FROM kombu_message m JOIN kombu_queue q ON m.queue_id = q.id "
    "WHERE m.visible = :visible GROUP BY q.name"
)


def _sql_depths(url: str, queues: list[str]) -> dict[str, int]:
    depths = dict.fromkeys(queues, 0)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        if not path.is_file():
            return depths  # the transport creates its file with the first message: nothing was ever queued
        # Read-only, so a scrape never creates or locks the broker file for writing.
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2) as conn:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'kombu_message'").fetchone() is None:
                return depths
            rows = conn.execute(_SQL_DEPTH, {"visible": 1}).fetchall()
    else:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                if not inspect(conn).has_table("kombu_message"):
                    return depths
                rows = list(conn.execute(text(_SQL_DEPTH), {"visible": True}).tuples())
        finally:
            engine.dispose()
    for name, n in rows:
        if name in depths:
            depths[name] = int(n)
    return depths
