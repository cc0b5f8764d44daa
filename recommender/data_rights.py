"""Data rights: export everything we hold about an athlete's running, and forget an athlete completely.

``export_athlete`` writes one JSON and one CSV file per table (runs, run loads, daily loads, prompts,
completions, shoes). Sample series are left out (they are bulky binary; the original files are the athlete's
own), and so are secrets (webhook secret, Strava tokens, the dashboard token).

``forget_athlete`` deletes, in one transaction, every row that belongs to the athlete: delivery attempts,
deliveries, completions, prompts, run samples and loads, runs, daily loads, imported-file records, shoes, the
Strava account and the Strava push events whose ``owner_id`` is that Strava athlete, then the athlete itself.
Deletes are explicit rather than left to ``ON DELETE CASCADE``, because SQLite enforces foreign keys only when
asked to.

``seen_files`` has no athlete column: it maps a path to a content hash so rescans skip unchanged files. Its
rows whose content hash is one of the athlete's imported files are deleted too: they say that this athlete's
files were seen. Another athlete with the same file content merely has it hashed again on the next rescan
(their own import record still makes it a duplicate). Files still lying in the athlete's inbox folder are not
touched — they are the athlete's own files on the operator's disk — but the folder watcher would import them
again, so the command line names the folder and asks the operator to remove it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from stridecare.db.models import (
    Athlete,
    Base,
    Completion,
    DailyLoad,
    Delivery,
    DeliveryAttempt,
    ImportedFile,
    Prompt,
    Run,
    RunLoad,
    RunSamples,
    SeenFile,
    Shoe,
    StravaAccount,
    StravaEvent,
)

EXPORT_TABLES: tuple[str, ...] = ("runs", "run_loads", "daily_loads", "prompts", "completions", "shoes")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _rows(session: Session, model: type[Base], where: Any, order: Any) -> tuple[list[str], list[dict[str, Any]]]:
    names = [c.key for c in model.__table__.columns]
    rows = [
        {name: _plain(getattr(obj, name)) for name in names}
        for obj in session.scalars(select(model).where(where).order_by(order))
    ]
    return names, rows


def export_tables(session: Session, athlete: Athlete) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
    """Column names and rows per exported table, the athlete's rows only, as plain JSON-able values."""
    run_ids = select(Run.id).where(Run.athlete_id == athlete.id)
    return {
        "runs": _rows(session, Run, Run.athlete_id == athlete.id, Run.start_time),
        "run_loads": _rows(session, RunLoad, RunLoad.run_id.in_(run_ids), RunLoad.run_id),
        "daily_loads": _rows(session, DailyLoad, DailyLoad.athlete_id == athlete.id, DailyLoad.day),
        "prompts": _rows(session, Prompt, Prompt.athlete_id == athlete.id, Prompt.created_at),
        "completions": _rows(session, Completion, Completion.athlete_id == athlete.id, Completion.done_at),
        "shoes": _rows(session, Shoe, Shoe.athlete_id == athlete.id, Shoe.name),
    }


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
                writer.writerow(
                    {k: json.dumps(v, default=str) if isinstance(v, list | dict) else v for k, v in row.items()}
                )
        written += [json_path, csv_path]
    return written


@dataclass(frozen=True, slots=True)
class Forgotten:
    """How many rows of each table were deleted."""

    counts: dict[str, int]

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
    hashes = list(session.scalars(select(ImportedFile.content_hash).where(ImportedFile.athlete_id == aid)))
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
    run("imported_files", delete(ImportedFile).where(ImportedFile.athlete_id == aid))
    if hashes:
        for start in range(0, len(hashes), 500):
            run("seen_files", delete(SeenFile).where(SeenFile.content_hash.in_(hashes[start : start + 500])))
    run("shoes", delete(Shoe).where(Shoe.athlete_id == aid))
    if account is not None:
        owner = account.strava_athlete_id
        event_ids = [
            event_id
            for event_id, payload in session.execute(select(StravaEvent.id, StravaEvent.payload))
            if _owner_id(payload) == owner
        ]
        for start in range(0, len(event_ids), 500):
            run("strava_events", delete(StravaEvent).where(StravaEvent.id.in_(event_ids[start : start + 500])))
    run("strava_accounts", delete(StravaAccount).where(StravaAccount.athlete_id == aid))
    run("athletes", delete(Athlete).where(Athlete.id == aid))
    session.expunge_all()
    return Forgotten({k: v for k, v in counts.items() if v})
