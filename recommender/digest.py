"""The weekly digest: the past week's figures and a load chart, by email, on the athlete's chosen weekday.

:func:`weekly_digests` runs on the beat's tick beside the weekly balance prompt. On ``Athlete.digest_weekday`` at
08:00 local time it writes a prompt of kind ``digest`` (dedupe key: the ISO week of the send day, so a second
beat or a re-run tick writes nothing) covering the seven local days before the send day, with its figures frozen
in ``Prompt.facts``, and one outbox row for the ``email`` channel only: the chart is an image, which the
webhook and console channels cannot carry. Athletes without a deliverable address get no digest.

:func:`render_digest` turns the stored facts into the email at send time: text and HTML bodies, the chart as a
PNG (matplotlib, Agg backend) that the HTML shows inline through its Content-ID.
"""

from __future__ import annotations

import io
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from delivery.outbox import channels_for
from recommender import rules
from recommender.dashboard_data import ROUTINE_KINDS, daily_series, flagged_runs, week_totals
from recommender.routines import WELLNESS_DISCLAIMER
from stridecare.db.models import Athlete, Delivery, Prompt
from stridecare.runtime import Runtime
from stridecare.settings import Settings

DIGEST_KIND = "digest"
DIGEST_TIME = "08:00"
CHART_DAYS = 28  # the chart shows the digest week in the context of the four weeks before it ends
_TEMPLATES = Path(__file__).with_name("templates")


class RenderedDigest(NamedTuple):
    """A digest ready for the email channel; unpacks as ``subject, text, html, payload, images``."""

    subject: str
    text: str
    html: str
    payload: dict[str, Any]
    images: tuple[tuple[str, bytes, str], ...]


def digest_facts(session: Session, settings: Settings, athlete: Athlete, send_day: date) -> dict[str, Any]:
    """The figures of the seven local days before ``send_day``: totals, prompts done, flags, the chart's series."""
    first, last = send_day - timedelta(days=7), send_day - timedelta(days=1)
    prompts = list(
        session.scalars(
            select(Prompt).where(
                Prompt.athlete_id == athlete.id,
                Prompt.kind.in_(ROUTINE_KINDS),
                Prompt.local_day >= first,
                Prompt.local_day <= last,
            )
        )
    )
    series = daily_series(session, settings, athlete, last - timedelta(days=CHART_DAYS - 1), last)
    return {
        "week": rules.iso_week_key(send_day),
        "totals": week_totals(session, athlete, first, last),
        "prompts": {"made": len(prompts), "done": sum(1 for p in prompts if p.done_at is not None)},
        "flags": flagged_runs(session, athlete, first, last),
        "acute": series[-1]["acute"],
        "chronic": series[-1]["chronic"],
        "days": series,
    }


def _digest_one(rt: Runtime, session: Session, athlete: Athlete, now: datetime) -> Prompt | None:
    if "email" not in channels_for(rt.settings, athlete):
        return None
    last = session.scalar(
        select(Prompt.dedupe_key)
        .where(Prompt.athlete_id == athlete.id, Prompt.kind == DIGEST_KIND)
        .order_by(Prompt.created_at.desc())
        .limit(1)
    )
    due = rules.weekly_balance_due(now, athlete.timezone, athlete.digest_weekday, DIGEST_TIME, last)
    if due is None:
        return None
    # The week is anchored on the scheduled day, not today: a beat that was down sends the same digest late.
    send_day = due.astimezone(ZoneInfo(athlete.timezone)).date()
    prompt = Prompt(
        athlete_id=athlete.id,
        kind=DIGEST_KIND,
        dedupe_key=rules.iso_week_key(send_day),
        local_day=send_day,
        routines=[],
        reasons=[],
        facts=digest_facts(session, rt.settings, athlete, send_day),
        rule=f"weekly digest on weekday {athlete.digest_weekday} at {DIGEST_TIME}",
        created_at=now,
        due_at=rules.defer_for_quiet_hours(max(now, due), athlete.timezone, athlete.quiet_start, athlete.quiet_end),
    )
    session.add(prompt)
    session.flush()
    session.add(
        Delivery(
            prompt_id=prompt.id,
            athlete_id=athlete.id,
            channel="email",
            message_id=f"msg_{prompt.id}_email",
            next_attempt_at=prompt.due_at,
        )
    )
    session.flush()
    return prompt


def weekly_digests(rt: Runtime) -> int:
    """Write this week's digest (with its email outbox row) for every athlete whose moment has come."""
    now = rt.now()
    created = 0
    with rt.db.transaction() as session:
        athlete_ids = list(session.scalars(select(Athlete.id)))
    for athlete_id in athlete_ids:
        try:
            with rt.db.transaction() as session:
                athlete = session.get(Athlete, athlete_id)
                if athlete is not None and _digest_one(rt, session, athlete, now) is not None:
                    created += 1
        except IntegrityError:
            # Another tick (a second beat, a redelivered task) wrote this week's digest first.
            continue
    return created


# -- rendering ------------------------------------------------------------------------------------------------


@cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(_TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), disabled_extensions=("txt.j2",), default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def chart_png(days: list[dict[str, Any]], highlight_from: str | None = None) -> bytes:
    """Daily load bars with the acute and chronic lines as a small PNG; days from ``highlight_from`` stand out."""
    # The object API with the Agg canvas, never pyplot: no global figure state, safe in worker threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 2.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = list(range(len(days)))
    colours = ["#1f6feb" if highlight_from and d["day"] >= highlight_from else "#b7c8e4" for d in days]
    ax.bar(xs, [d["load"] for d in days], color=colours, width=0.7, label="daily load")
    ax.plot(xs, [d["acute"] for d in days], color="#0b3d91", linewidth=1.8, label="acute (7-day)")
    ax.plot(xs, [d["chronic"] for d in days], color="#2e7d32", linewidth=1.8, linestyle="--", label="chronic (28-day)")
    ticks = [i for i, d in enumerate(days) if date.fromisoformat(d["day"]).weekday() == 0]
    ax.set_xticks(ticks, [f"{date.fromisoformat(days[i]['day']):%d %b}" for i in ticks], fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    ax.set_ylim(bottom=0)
    fig.tight_layout(pad=0.6)
    out = io.BytesIO()
    # No "Software" metadata: the same facts give the same bytes.
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def _clock(seconds: float) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    return f"{hours}:{rest // 60:02d}"


def render_digest(
    *,
    prompt_id: str,
    athlete_name: str,
    facts: dict[str, Any],
    unsubscribe_url: str | None,
    dashboard_url: str | None,
    created_at: datetime,
) -> RenderedDigest:
    """Subject, text and HTML bodies, a webhook-shaped payload and the inline chart of one stored digest."""
    if created_at.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    totals = facts["totals"]
    name = " ".join(athlete_name.split())[:60] or "there"
    first, last = date.fromisoformat(totals["first_day"]), date.fromisoformat(totals["last_day"])
    period = f"{first.day} {first:%b} – {last.day} {last:%b}"
    cid = f"chart.{prompt_id}@stridecare"
    figures = {
        "runs": int(totals["runs"]),
        "distance_km": f"{totals['distance_m'] / 1000:.1f}",
        "time": _clock(totals["timer_s"]),
        "steps": f"{int(totals['steps']):,}",
        "load": f"{totals['load']:.0f}",
        "prompts_done": int(facts["prompts"]["done"]),
        "prompts_made": int(facts["prompts"]["made"]),
        "acute": f"{facts['acute']:.0f}",
        "chronic": f"{facts['chronic']:.0f}",
    }
    flags = [{"day": f["day"], "text": "; ".join(x["reason"] for x in f["flags"])} for f in facts.get("flags", [])]
    context = {
        "name": name,
        "period": period,
        "figures": figures,
        "flags": flags,
        "cid": cid,
        "dashboard_url": dashboard_url,
        "unsubscribe_url": unsubscribe_url,
        "disclaimer": WELLNESS_DISCLAIMER,
    }
    subject = f"{name}: your week in running, {period}"
    env = _environment()
    text = env.get_template("digest.txt.j2").render(context)
    html = env.get_template("digest.html.j2").render(context, subject=subject)
    payload = {
        "type": "digest.created",
        "timestamp": created_at.isoformat(),
        "data": {"prompt_id": prompt_id, "kind": DIGEST_KIND, "week": facts.get("week"), "totals": totals},
    }
    png = chart_png(facts["days"], highlight_from=totals["first_day"])
    return RenderedDigest(subject, text, html, payload, ((cid, png, "png"),))
