"""The Celery application, configured from the one settings object.

``celery -A workers.app worker`` and ``celery -A workers.app beat`` use the module-level ``app``, built from the
``STRIDECARE_*`` environment. With no broker configured the broker is a SQLite file (kombu's SQLAlchemy
transport), so a real worker runs with no server installed.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from stridecare.runtime import Runtime, reset_after_fork
from stridecare.settings import Settings, load_settings

# The task modules define shared tasks: importing them registers their tasks on every app made here.
from workers import connector_tasks, strava_tasks, tasks, tick  # noqa: F401
from workers.queues import DEFAULT, QUEUES, ROUTES


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings that make redelivery safe (late acks, one prefetch, no results, bounded visibility) and
    put each kind of work on a queue of its own (:mod:`workers.queues`)."""
    conf: dict[str, Any] = {
        "broker_url": settings.effective_broker_url,
        # Every queue declared: a worker without -Q consumes them all; `-Q files,planning,delivery` picks some.
        "task_queues": {name: {"exchange": name, "routing_key": name} for name in QUEUES},
        "task_default_queue": DEFAULT,
        "task_routes": (ROUTES,),
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "beat_schedule": {
            "tick": {"task": "stridecare.tick", "schedule": settings.relay_interval_s},
            # Connector accounts whose pull is due (each account's own time, jittered, is in SQL).
            "connectors": {
                "task": "stridecare.connectors_due",
                "schedule": min(60.0, settings.connector_poll_interval_s),
            },
        },
        "beat_scheduler": "workers.beat:LeaderScheduler",
        "timezone": "UTC",
    }
    if settings.effective_broker_url.startswith("sqla+"):
        # The same SQL queue through our subclass of kombu's transport, which polls it five times a second.
        conf["broker_url"] = settings.effective_broker_url.removeprefix("sqla+")
        conf["broker_transport"] = "workers.sql_broker:Transport"
    if settings.effective_broker_url.startswith(("redis://", "rediss://")):
        # Longer than the longest task: an unacked message is redelivered only after this (celery#3270).
        conf["broker_transport_options"] = {"visibility_timeout": settings.broker_visibility_timeout_s}
    return conf


def make_app(settings: Settings, runtime: Runtime | None = None) -> Celery:
    """A Celery app for ``settings`` with the stridecare tasks registered.

    The tasks run against ``runtime`` (the embedded runner passes its own), or against one opened from
    ``settings`` on first use in each worker process (``celery -A workers.app worker``).
    """
    celery = Celery("stridecare")
    celery.conf.update(celery_config(settings))
    celery.stridecare_settings = settings
    celery.stridecare_runtime = runtime
    celery.conf.beat_schedule_filename = str(settings.data_home / "celerybeat-schedule")
    celery.autodiscover_tasks(["workers"], related_name="tasks", force=True)
    return celery


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _after_fork(**_: Any) -> None:
    reset_after_fork()


app = make_app(load_settings())
