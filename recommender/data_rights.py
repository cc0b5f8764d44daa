"""Data rights: export everything we hold about an athlete's running, and forget an athlete completely.

``export_athlete`` writes one JSON and one CSV file per table (runs, run loads, daily loads, the daily figures
under their shared names, prompts, completions, shoes, foot-discomfort scores) and ``units.json``: loads are in
reference steps, acute and chronic load in reference steps per day. Sample series are left out (they are bulky
binary; the original files are the athlete's own), and so are secrets (webhook secret, push URL, Strava tokens, the
dashboard token). ``channels`` holds every channel's settings for the athlete (email address, webhook URL,
console on or off …), secret keys named but not exported; forgetting deletes them with the athlete's row.

``forget_athlete`` deletes, in one transaction, every row that belongs to the athlete: delivery attempts,
deliveries, completions, prompts, run samples and loads, runs, daily loads, imported-file records, shoes, feel
scores, the connector accounts with their ledgers and credentials, the Strava account and the Strava push events whose
``owner_id`` is that Strava athlete, then the athlete itself.
Deletes are explicit rather than left to ``ON DELETE CASCADE``, because SQLite enforces foreign keys only when
asked to.

``seen_files`` (the rescan fast path: which paths this athlete read, at which size and mtime) is keyed by athlete
and path, so the athlete's rows go and nobody else's: another athlete importing the same folder keeps theirs, and
the forgotten athlete, added again, imports the folder afresh. Files still lying in the athlete's inbox folder are not
touched — they are the athlete's own files on the operator's disk — but the folder watcher would import them
again, so the command line names the folder and asks the operator to remove it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from recommender.figures import (
    ACUTE_LOAD,
    ACWR,
    CHRONIC_LOAD,
    LAST_7_DAYS,
    LAST_28_DAYS,
    LOAD_UNIT,
    UNITS,
    figure_values,
)
from stridecare.db.models import (
    Athlete,
    Base,
    Completion,
    ConnectorAccount,
    ConnectorItem,
    DailyLoad,
    Delivery,
    DeliveryAttempt,
    FeelScore,
    ImportedFile,
    Prompt,
    Run,
    RunLoad,
    RunSamples,
    SeenFile,
    Shoe,
    SourceRecord,
    StravaAccount,
    StravaEvent,
)
from stridecare.db.samples import unpack_samples
from stridecare.domain.history import acwr
from stridecare.plugins import channel_classes, channel_options

EXPORT_TABLES: tuple[str, ...] = (
    "profile",
    "runs",
    "samples",
    "run_loads",
    "daily_loads",
    "daily_figures",
    "prompts",
    "completions",
    "deliveries",
    "shoes",
    "accounts",
    "channels",
)
# Measured values carry no more digits than they mean: 7392.000000000324 m is 7392.0 m.
_DECIMALS = 3
# Per sample series: metres to the decimetre, speed to the cm/s, cadence and altitude to a tenth.
_SAMPLE_DECIMALS = {"t": 1, "distance_m": 1, "speed_mps": 2, "cadence_spm": 1, "altitude_m": 1}
# Athlete columns that are secrets or tokens (a prompt's links, a webhook's key, channel URLs): never exported.
_PROFILE_SECRET = {"dashboard_token", "link_secret", "channel_settings"}
WITHHELD = "(secret, not exported)"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, _DECIMALS)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _profile(athlete: Athlete) -> tuple[list[str], list[dict[str, Any]]]:
    names = [c.key for c in Athlete.__table__.columns if c.key not in _PROFILE_SECRET]
    row = {name: _plain(getattr(athlete, name)) for name in names}
    row["channels"] = sorted((athlete.channel_settings or {}).keys())  # which; their settings in channels.json
    return [*names, "channels"], [row]


def _channels(athlete: Athlete) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per channel the athlete has, with its settings (channels.json): an email address, a webhook URL,
    whether the console is on, when they unsubscribed; secret keys (a webhook's signing secret, a push URL,
    which carries a token) are named but never exported."""
    classes = channel_classes()
    rows = []
    for name in sorted(athlete.channel_settings or {}):
        secret = set(getattr(classes.get(name), "secret_keys", ()))
        options = channel_options(athlete, name)
        settings = {k: WITHHELD if k in secret else v for k, v in sorted(options.items())}
        if classes.get(name) is None:  # a plugin no longer installed: which keys are secret is not known
            settings = dict.fromkeys(options, WITHHELD)
        rows.append({"channel": name, "settings": settings})
    return ["channel", "settings"], rows


def _samples(session: Session, athlete: Athlete) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per recorded sample of every run, rounded per series."""
    names = ["run_id", "t", "distance_m", "speed_mps", "cadence_spm", "altitude_m", "timer_running"]
    rows: list[dict[str, Any]] = []
    stored = session.execute(
        select(RunSamples.run_id, RunSamples.data)
        .join(Run, Run.id == RunSamples.run_id)
        .where(Run.athlete_id == athlete.id)
        .order_by(Run.start_time)
    )
    for run_id, data in stored:
        series = unpack_samples(data)
        for i in range(len(series)):
            row: dict[str, Any] = {"run_id": run_id, "timer_running": series.timer_running[i]}
            for key, digits in _SAMPLE_DECIMALS.items():
                value = getattr(series, key)[i]
                row[key] = None if value is None else round(value, digits)
            rows.append(row)
    return names, rows


def _rows(session: Session, model: type[Base], where: Any, order: Any) -> tuple[list[str], list[dict[str, Any]]]:
    names = [c.key for c in model.__table__.columns]
    rows = [
        {name: _plain(getattr(obj, name)) for name in names}
        for obj in session.scalars(select(model).where(where).order_by(order))
    ]
    return names, rows


def daily_figures(session: Session, athlete: Athlete) -> tuple[list[str], list[dict[str, Any]]]:
    """The shared figures of every stored day, under the names and rounding every screen uses
    (:mod:`recommender.figures`): acute and chronic load per day, and the 7- and 28-day sums ending that day.
    The units are in ``units.json`` beside the tables; the ACWR is empty before 28 days of history."""
    rows = list(session.scalars(select(DailyLoad).where(DailyLoad.athlete_id == athlete.id).order_by(DailyLoad.day)))
    by_day = {r.day: r.load for r in rows}

    def last(day: date, days: int) -> float:
        return sum(by_day.get(day - timedelta(days=k), 0.0) for k in range(days))

    first = rows[0].day if rows else None
    out = [
        {
            "day": r.day.isoformat(),
            **figure_values(
                acute_load=r.acute,
                chronic_load=r.chronic,
                load_last_7_days=last(r.day, 7),
                load_last_28_days=last(r.day, 28),
                # As every screen shows it: only once 28 days of history stand behind the day.
                acwr=acwr(r.acute, r.chronic, (r.day - first).days + 1) if first is not None else None,
            ),
        }
        for r in rows
    ]
    names = ["day", ACUTE_LOAD.key, CHRONIC_LOAD.key, LAST_7_DAYS.key, LAST_28_DAYS.key, ACWR.key]
    return names, out


def _accounts(session: Session, athlete: Athlete) -> tuple[list[str], list[dict[str, Any]]]:
    """The athlete's connector accounts (intervals.icu, Garmin …) with their state and what their ledger holds;
    the credentials are withheld."""
    names = ["provider", "account", "state", "connected_at", "last_pull", "last_error", "credentials", "activities"]
    rows = []
    for account in session.scalars(
        select(ConnectorAccount).where(ConnectorAccount.athlete_id == athlete.id).order_by(ConnectorAccount.id)
    ):
        seen = session.scalars(select(ConnectorItem.status).where(ConnectorItem.account_id == account.id)).all()
        rows.append(
            {
                "provider": account.provider,
                "account": account.account_key,
                "state": account.state,
                "connected_at": _plain(account.connected_at),
                "last_pull": _plain(account.last_poll_at),
                "last_error": account.last_error,
                "credentials": WITHHELD if account.credentials_enc else None,
                "activities": len(seen),
            }
        )
    return names, rows


def export_tables(session: Session, athlete: Athlete) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
    """Column names and rows per exported table, the athlete's rows only, as plain JSON-able values."""
    run_ids = select(Run.id).where(Run.athlete_id == athlete.id)
    return {
        "profile": _profile(athlete),
        "runs": _rows(session, Run, Run.athlete_id == athlete.id, Run.start_time),
        "samples": _samples(session, athlete),
        "run_loads": _rows(session, RunLoad, RunLoad.run_id.in_(run_ids), RunLoad.run_id),
        "daily_loads": _rows(session, DailyLoad, DailyLoad.athlete_id == athlete.id, DailyLoad.day),
        "daily_figures": daily_figures(session, athlete),
        "prompts": _rows(session, Prompt, Prompt.athlete_id == athlete.id, Prompt.created_at),
        "completions": _rows(session, Completion, Completion.athlete_id == athlete.id, Completion.done_at),
        "deliveries": _rows(session, Delivery, Delivery.athlete_id == athlete.id, Delivery.id),
        "shoes": _rows(session, Shoe, Shoe.athlete_id == athlete.id, Shoe.name),
        "feel_scores": _rows(session, FeelScore, FeelScore.athlete_id == athlete.id, FeelScore.day),
        "accounts": _accounts(session, athlete),
        "channels": _channels(athlete),
    }


# A spreadsheet runs a cell that starts with one of these as a formula (a run named "=HYPERLINK(…)").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula, with a leading ``'`` so it shows as text; numbers stay."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def export_athlete(session: Session, athlete: Athlete, out_dir: Path) -> list[Path]:
    """Write ``<table>.json`` and ``<table>.csv`` for every exported table into ``out_dir``; returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for table, (names, rows) in export_tables(session, athlete).items():
        json_path = out_dir / f"{table}.json"
        json_path.write_text(json.dumps(rows, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        csv_path = out_dir / f"{table}.csv"
        with csv_path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=names)
            writer.writeheader()
            for row in rows:
                # Lists and mappings (flags, routines, facts) as JSON text in one cell.
                cells = {k: json.dumps(v, default=str) if isinstance(v, list | dict) else v for k, v in row.items()}
                writer.writerow({k: _csv_cell(v) for k, v in cells.items()})
        written += [json_path, csv_path]
    units = out_dir / "units.json"
    units.write_text(json.dumps({"load": LOAD_UNIT, **UNITS}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return [*written, units]


@dataclass(frozen=True, slots=True)
class Forgotten:
    """How many rows of each table were deleted, and the kept originals (paths relative to the data home) that
    no other athlete's import names: the caller deletes those files once the transaction is committed."""

    counts: dict[str, int]
    originals: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        """All rows deleted."""
        return sum(self.counts.values())


def _owner_id(payload: Any) -> int | None:
    if not isinstance(payload, dict):
        return None
    value = payload.get("owner_id")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def forget_athlete(session: Session, athlete: Athlete) -> Forgotten:
    """Delete every row of ``athlete`` (see the module docstring), in the caller's transaction."""
    aid = athlete.id
    counts: dict[str, int] = {}

    def run(table: str, statement: Any) -> None:
        result = session.execute(statement.execution_options(synchronize_session=False))
        counts[table] = counts.get(table, 0) + int(result.rowcount or 0)  # type: ignore[attr-defined]

    run_ids = select(Run.id).where(Run.athlete_id == aid).scalar_subquery()
    delivery_ids = select(Delivery.id).where(Delivery.athlete_id == aid).scalar_subquery()
    prompt_ids = select(Prompt.id).where(Prompt.athlete_id == aid).scalar_subquery()
    account = session.scalar(select(StravaAccount).where(StravaAccount.athlete_id == aid))

    run("delivery_attempts", delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(delivery_ids)))
    # Rows of other athletes never point at this athlete's prompts or deliveries; match on both keys anyway.
    run("deliveries", delete(Delivery).where((Delivery.athlete_id == aid) | Delivery.prompt_id.in_(prompt_ids)))
    run("completions", delete(Completion).where((Completion.athlete_id == aid) | Completion.prompt_id.in_(prompt_ids)))
    run("prompts", delete(Prompt).where(Prompt.athlete_id == aid))
    run("run_samples", delete(RunSamples).where(RunSamples.run_id.in_(run_ids)))
    run("run_loads", delete(RunLoad).where(RunLoad.run_id.in_(run_ids)))
    # Copies point at their primary run; clear the links first so the order of deletion does not matter.
    session.execute(
        Run.__table__.update().where(Run.athlete_id == aid).values(duplicate_of_id=None)  # type: ignore[attr-defined]
    )
    run("runs", delete(Run).where(Run.athlete_id == aid))
    run("daily_loads", delete(DailyLoad).where(DailyLoad.athlete_id == aid))
    theirs = set(
        session.scalars(
            select(ImportedFile.original).where(ImportedFile.athlete_id == aid, ImportedFile.original.is_not(None))
        )
    )
    shared = set(
        session.scalars(
            select(ImportedFile.original).where(ImportedFile.athlete_id != aid, ImportedFile.original.in_(theirs))
        )
    )
    run("imported_files", delete(ImportedFile).where(ImportedFile.athlete_id == aid))
    run("source_records", delete(SourceRecord).where(SourceRecord.athlete_id == aid))
    run("seen_files", delete(SeenFile).where(SeenFile.athlete_id == aid))
    run("shoes", delete(Shoe).where(Shoe.athlete_id == aid))
    run("feel_scores", delete(FeelScore).where(FeelScore.athlete_id == aid))
    if account is not None:
        owner = account.strava_athlete_id
        event_ids = [
            event_id
            for event_id, payload in session.execute(select(StravaEvent.id, StravaEvent.payload))
            if _owner_id(payload) == owner
        ]
        for start in range(0, len(event_ids), 500):
            run("strava_events", delete(StravaEvent).where(StravaEvent.id.in_(event_ids[start : start + 500])))
    account_ids = select(ConnectorAccount.id).where(ConnectorAccount.athlete_id == aid).scalar_subquery()
    run("connector_items", delete(ConnectorItem).where(ConnectorItem.account_id.in_(account_ids)))
    run("connector_accounts", delete(ConnectorAccount).where(ConnectorAccount.athlete_id == aid))
    run("strava_accounts", delete(StravaAccount).where(StravaAccount.athlete_id == aid))
    run("athletes", delete(Athlete).where(Athlete.id == aid))
    session.expunge_all()
    return Forgotten({k: v for k, v in counts.items() if v}, tuple(sorted(p for p in theirs - shared if p)))
