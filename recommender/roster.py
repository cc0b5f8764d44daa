"""A coach's roster: every athlete, ordered by what needs attention, each with its reasons.

What needs attention, most urgent first (:data:`WEIGHTS`): a foot-discomfort score of 4 or more (or three rising
ones), a load flag in the last 7 days (with a high score given that day beside it), routines missed, no data for
10 days, a shoe due. Athletes with equal weight keep name order; those with nothing to say come last.

Built for a coach with hundreds of athletes of years of runs: a fixed handful of queries for the whole roster,
each reading only recent rows through an index (never a scan of every run), whatever the number of athletes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import String, cast, func, select
from sqlalchemy.orm import Session

from recommender.feel import HIGH, WINDOW_DAYS, gentle_reasons, score_text
from recommender.run_detail import flag_title
from stridecare.db.models import Athlete, FeelScore, Prompt, Run, RunLoad, Shoe
from stridecare.domain.history import local_day

FLAG_DAYS = 7
STALE_DAYS = 10
MISSED_DAYS = 14
# A routine counts as missed when not ticked off a day after it was due.
MISSED_GRACE = timedelta(days=1)
MISSED_AT_LEAST = 2
ROUTINE_KINDS = ("post_run", "weekly_balance")

# How much each reason weighs in the order; the kinds, most urgent first.
WEIGHTS: dict[str, int] = {"feel": 16, "flag": 8, "missed": 4, "stale": 2, "shoe": 1}


@dataclass(slots=True)
class RosterRow:
    """One athlete on the roster with what needs attention."""

    id: int
    name: str
    display_name: str
    group: str | None
    last_run: date | None
    reasons: list[dict[str, str]] = field(default_factory=list)

    @property
    def weight(self) -> int:
        """The sum of the reasons' weights (0: nothing needs attention)."""
        return sum(WEIGHTS[r["kind"]] for r in self.reasons)

    def as_json(self) -> dict[str, Any]:
        """Plain values for the page."""
        return {
            "id": self.id,
            "name": self.name,
            "display_name": self.display_name,
            "group": self.group,
            "last_run": self.last_run.isoformat() if self.last_run else None,
            "reasons": self.reasons,
            "weight": self.weight,
        }


def _day_text(day: date) -> str:
    return f"{day:%a} {day.day} {day:%b}"


def groups(session: Session) -> list[str]:
    """The groups athletes are in, sorted."""
    return sorted(g for g in session.scalars(select(Athlete.group_name).distinct()) if g)


def roster(session: Session, now: datetime, group: str | None = None) -> list[dict[str, Any]]:
    """Every athlete (of ``group``, when given) ordered by what needs attention, with its reasons."""
    query = select(Athlete).order_by(Athlete.name)
    if group:
        query = query.where(Athlete.group_name == group)
    athletes = list(session.scalars(query))
    if not athletes:
        return []
    ids = [a.id for a in athletes]
    today = {a.id: local_day(now, a.timezone) for a in athletes}
    rows = {a.id: RosterRow(a.id, a.name, a.display_name or a.name, a.group_name, None) for a in athletes}
    by_id = {a.id: a for a in athletes}

    # The newest run of each: the (athlete, start) index read backwards to its first primary run, per athlete.
    newest = (
        select(Run.start_time)
        .where(Run.athlete_id == Athlete.id, Run.duplicate_of_id.is_(None))
        .order_by(Run.start_time.desc())
        .limit(1)
        .correlate(Athlete)
        .scalar_subquery()
    )
    last_start: dict[int, datetime | None] = {
        int(aid): start for aid, start in session.execute(select(Athlete.id, newest).where(Athlete.id.in_(ids)))
    }

    # Scores of the last two weeks (the rules' window), oldest first.
    oldest_today = min(today.values())
    # Plain tuples, not ORM objects: a few thousand rows, read on every view.
    scores: dict[int, list[tuple[date, int, str | None]]] = defaultdict(list)
    for athlete_id, day, value, where in session.execute(
        select(FeelScore.athlete_id, FeelScore.day, FeelScore.score, FeelScore.location)
        .where(FeelScore.athlete_id.in_(ids), FeelScore.day >= oldest_today - timedelta(days=WINDOW_DAYS))
        .order_by(FeelScore.day)
    ):
        scores[athlete_id].append((day, value, where))

    # Flagged runs of the last week: only recent rows, through the (athlete, start) index.
    flagged: dict[int, list[tuple[date, list[str], dict[str, str]]]] = defaultdict(list)
    since = now - timedelta(days=FLAG_DAYS)
    for athlete_id, start, flags, facts in session.execute(
        select(Run.athlete_id, Run.start_time, RunLoad.flags, RunLoad.facts)
        .join(RunLoad, RunLoad.run_id == Run.id)
        .where(
            Run.athlete_id.in_(ids),
            Run.start_time >= since,
            Run.duplicate_of_id.is_(None),
            # Only flagged runs reach Python (the list is stored as JSON text; most runs raise none).
            cast(RunLoad.flags, String) != "[]",
        )
        .order_by(Run.start_time.desc())
    ):
        if flags:
            reasons = facts.get("flag_reasons", {}) if isinstance(facts, dict) else {}
            flagged[athlete_id].append((local_day(start, by_id[athlete_id].timezone), list(flags), reasons))

    # Routines due in the last two weeks (a day's grace) and how many were ticked off.
    missed: dict[int, tuple[int, int]] = {}
    for athlete_id, total, open_ in session.execute(
        select(
            Prompt.athlete_id,
            func.count(Prompt.id),
            func.count(Prompt.id).filter(Prompt.done_at.is_(None)),
        )
        .where(
            Prompt.athlete_id.in_(ids),
            Prompt.local_day >= oldest_today - timedelta(days=MISSED_DAYS),
            Prompt.kind.in_(ROUTINE_KINDS),
            Prompt.due_at <= now - MISSED_GRACE,
        )
        .group_by(Prompt.athlete_id)
    ):
        missed[athlete_id] = (int(total), int(open_))

    # Shoes due: an alert was sent for a pair still in use.
    active = {
        shoe_id: name
        for shoe_id, name in session.execute(
            select(Shoe.id, Shoe.name).where(Shoe.athlete_id.in_(ids), Shoe.retired.is_(False))
        )
    }
    shoe_due: dict[int, dict[int, str]] = defaultdict(dict)
    for athlete_id, key, facts in session.execute(
        select(Prompt.athlete_id, Prompt.dedupe_key, Prompt.facts).where(
            Prompt.athlete_id.in_(ids),
            Prompt.kind == "shoe",
            # Every alert's key starts "shoe:": the range keeps the planner on the (athlete, kind, key) index,
            # where it would otherwise scan every prompt (it cannot know alerts are rare among them).
            Prompt.dedupe_key >= "shoe:",
            Prompt.dedupe_key < "shoe;",
        )
    ):
        shoe_id = _shoe_id(key)
        if shoe_id in active:
            due = (facts or {}).get("shoe", {}).get("due") if isinstance(facts, dict) else None
            shoe_due[athlete_id][shoe_id] = f"{active[shoe_id]}: {due}" if due else active[shoe_id]

    for a in athletes:
        row = rows[a.id]
        day = today[a.id]
        start = last_start.get(a.id)
        row.last_run = local_day(start, a.timezone) if start is not None else None
        mine = scores.get(a.id, [])
        by_day = {answer[0]: answer for answer in mine}
        why = gentle_reasons(mine, day)
        if why:
            row.reasons.append({"kind": "feel", "text": " ".join(why[:-1]).replace("this prompt is", "prompts are")})
        for flag_day, names, reasons in flagged.get(a.id, []):
            for name in names:
                text = f"{_day_text(flag_day)}: {flag_title(name)} — {reasons.get(name, name)}"
                answer = by_day.get(flag_day)
                if answer is not None and answer[1] >= HIGH:
                    text += f" (feet {score_text(answer[1], answer[2])} that day)"
                row.reasons.append({"kind": "flag", "text": text})
        total, open_ = missed.get(a.id, (0, 0))
        if open_ >= MISSED_AT_LEAST:
            row.reasons.append(
                {"kind": "missed", "text": f"{open_} of {total} routines of the last {MISSED_DAYS} days not ticked off"}
            )
        if row.last_run is None:
            row.reasons.append({"kind": "stale", "text": "No runs yet"})
        elif (day - row.last_run).days >= STALE_DAYS:
            row.reasons.append(
                {
                    "kind": "stale",
                    "text": f"No data for {(day - row.last_run).days} days (last run {_day_text(row.last_run)})",
                }
            )
        for text in shoe_due.get(a.id, {}).values():
            row.reasons.append({"kind": "shoe", "text": f"Shoe due: {text}"})
    ordered = sorted(rows.values(), key=lambda r: (-r.weight, r.name))
    return [r.as_json() for r in ordered]


def _shoe_id(dedupe_key: str) -> int | None:
    """The pair of a shoe alert's key (``shoe:<id>:…``)."""
    parts = dedupe_key.split(":")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "shoe" and parts[1].isdigit() else None
