"""The weekly digest: the past week's figures and a load chart, on the athlete's chosen weekday.

:func:`weekly_digests` runs on the beat's tick beside the weekly balance prompt. On ``Athlete.digest_weekday`` at
``Athlete.digest_time`` local time it writes a prompt of kind ``digest`` (dedupe key: the ISO week of the send
day, so a second beat or a re-run tick writes nothing) covering the seven local days before the send day, with
its figures frozen in ``Prompt.facts``, and its outbox rows written by the same writer as every prompt's
(``delivery.outbox.create_deliveries``): one per channel the athlete chose. Email shows the chart; the webhook
gets the figures as JSON, the console the text, push one line and the dashboard link. Athletes with no channel
get no digest, and nobody gets one for a week that ended before their first run (a new athlete's first message
is not an empty week).
A digest is written on its day only, never later, so it is always for the week just ended.

:func:`render_digest` turns the stored facts into the email at send time: text and HTML bodies, the chart as a
PNG (matplotlib, Agg backend) drawn at twice its display size, that the HTML shows inline through its Content-ID.
:func:`preview_digest` renders the digest an athlete would get now as one self-contained HTML file.
"""

from __future__ import annotations

import base64
import io
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from delivery.outbox import channels_for, create_deliveries
from delivery.render import athlete_zone, local_iso, template_environment
from recommender import rules
from recommender.dashboard_data import daily_series, first_run_day, flagged_runs, routine_prompts, week_totals
from recommender.per_athlete import for_each_athlete
from recommender.routines import WELLNESS_DISCLAIMER
from recommender.status import figures_as_of
from stridecare.db.models import Athlete, Prompt
from stridecare.runtime import Runtime
from stridecare.settings import Settings

DIGEST_KIND = "digest"
DIGEST_TIME = "08:00"  # the default of ``Athlete.digest_time``
CHART_DAYS = 28  # the chart shows the digest week in the context of the four weeks before it ends
# The chart is laid out for a display width of CHART_WIDTH_PX CSS pixels (1 inch = 100 px) and saved at 2×.
# A 390 px phone shows the 480 px image at ~342 px (0.71×): 13 pt labels (18 px) render at ~12.8 px.
CHART_WIDTH_PX, CHART_HEIGHT_PX, CHART_SCALE = 480, 330, 2
CHART_FONT_PT = 13.0
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
    prompts = routine_prompts(session, athlete, first, last)
    series = daily_series(session, settings, athlete, last - timedelta(days=CHART_DAYS - 1), last)
    return {
        "week": rules.iso_week_key(send_day),
        "totals": week_totals(session, athlete, first, last),
        "prompts": {"made": len(prompts), "done": sum(1 for p in prompts if p.done_at is not None)},
        "flags": flagged_runs(session, athlete, first, last),
        "acute": series[-1]["acute"],
        "chronic": series[-1]["chronic"],
        # The shared figures at the week's end, under the names every screen uses (recommender.figures).
        "figures": figures_as_of(session, settings, athlete, last).values(),
        "days": series,
    }


def has_a_week(session: Session, athlete: Athlete, send_day: date) -> bool:
    """True when the digest week before ``send_day`` ends on or after the athlete's first run."""
    first = first_run_day(session, athlete)
    return first is not None and first <= send_day - timedelta(days=1)


def _digest_one(rt: Runtime, session: Session, athlete: Athlete, now: datetime) -> Prompt | None:
    if not channels_for(rt.settings, athlete):
        return None
    last = session.scalar(
        select(Prompt.dedupe_key)
        .where(Prompt.athlete_id == athlete.id, Prompt.kind == DIGEST_KIND)
        .order_by(Prompt.created_at.desc())
        .limit(1)
    )
    due = rules.weekly_balance_due(now, athlete.timezone, athlete.digest_weekday, athlete.digest_time, last)
    if due is None:
        return None
    # Only on its day, and only for the week just ended: a beat that was down all that day, or an email
    # address set later in the week, gets no digest of a week that is long past.
    send_day = due.astimezone(ZoneInfo(athlete.timezone)).date()
    if send_day != now.astimezone(ZoneInfo(athlete.timezone)).date() or not has_a_week(session, athlete, send_day):
        return None
    prompt = Prompt(
        athlete_id=athlete.id,
        kind=DIGEST_KIND,
        dedupe_key=rules.iso_week_key(send_day),
        local_day=send_day,
        routines=[],
        reasons=[],
        facts=digest_facts(session, rt.settings, athlete, send_day),
        rule=f"weekly digest on weekday {athlete.digest_weekday} at {athlete.digest_time}",
        created_at=now,
        due_at=rules.defer_for_quiet_hours(max(now, due), athlete.timezone, athlete.quiet_start, athlete.quiet_end),
    )
    session.add(prompt)
    session.flush()
    # The one outbox writer, as for every prompt: one row per channel the athlete chose.
    create_deliveries(session, rt.settings, athlete, prompt)
    return prompt


def weekly_digests(rt: Runtime) -> int:
    """Write this week's digest (with its outbox rows) for every athlete whose moment has come."""
    return for_each_athlete(rt, lambda session, athlete, now: _digest_one(rt, session, athlete, now) is not None)


# -- rendering ------------------------------------------------------------------------------------------------


def chart_png(days: list[dict[str, Any]], highlight_from: str | None = None) -> bytes:
    """Daily load bars with the acute and chronic lines as a PNG at :data:`CHART_SCALE`× its display size, with
    its unit on the axis; days from ``highlight_from`` (the digest week) stand out."""
    # The object API with the Agg canvas, never pyplot: no global figure state, safe in worker threads.
    # deferred: start-up time (matplotlib, which only drawing a digest's chart needs)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(CHART_WIDTH_PX / 100, CHART_HEIGHT_PX / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = list(range(len(days)))
    colours = ["#1f6feb" if highlight_from and d["day"] >= highlight_from else "#b7c8e4" for d in days]
    ax.bar(xs, [d["load"] for d in days], color=colours, width=0.75, label="daily load")
    ax.plot(xs, [d["acute"] for d in days], color="#0b3d91", linewidth=2.2, label="acute (7-day)")
    ax.plot(xs, [d["chronic"] for d in days], color="#2e7d32", linewidth=2.2, linestyle="--", label="chronic (28-day)")
    ticks = [i for i, d in enumerate(days) if date.fromisoformat(d["day"]).weekday() == 0]
    ax.set_xticks(
        ticks, [f"{date.fromisoformat(days[i]['day']).day} {date.fromisoformat(days[i]['day']):%b}" for i in ticks]
    )
    ax.tick_params(axis="both", labelsize=CHART_FONT_PT)
    ax.set_ylabel("ref. steps/day", fontsize=CHART_FONT_PT)
    ax.yaxis.set_major_formatter("{x:,.0f}")
    ax.yaxis.set_major_locator(_locator())
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_ylim(bottom=0)
    ax.legend(
        fontsize=CHART_FONT_PT,
        frameon=False,
        loc="lower left",
        bbox_to_anchor=(0, 1.0),
        ncol=2,
        handlelength=1.4,
        columnspacing=1.0,
        borderaxespad=0.2,
    )
    fig.tight_layout(pad=0.4)
    out = io.BytesIO()
    # No "Software" metadata: the same facts give the same bytes.
    fig.savefig(out, format="png", dpi=100 * CHART_SCALE, metadata={"Software": None})
    return out.getvalue()


def _locator() -> Any:
    from matplotlib.ticker import MaxNLocator  # deferred: start-up time (matplotlib, as in chart_png)

    # Four or five whole-number ticks: fractions of a reference step mean nothing.
    return MaxNLocator(nbins=4, integer=True, min_n_ticks=3)


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
    timezone: str = "UTC",
    chart: bool = True,
) -> RenderedDigest:
    """Subject, text and HTML bodies, a webhook-shaped payload and the inline chart (when ``chart``) of one
    stored digest. Its days are the athlete's local days; times are given in ``timezone`` as well as UTC."""
    if created_at.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    zone = athlete_zone(timezone)
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
        "load": f"{totals['load']:,.0f}",
        "prompts_done": int(facts["prompts"]["done"]),
        "prompts_made": int(facts["prompts"]["made"]),
        "acute": f"{facts['acute']:,.0f}",
        "chronic": f"{facts['chronic']:,.0f}",
    }
    flags = [
        {"day": _day_text(f["day"]), "text": "; ".join(x["reason"] for x in f["flags"])} for f in facts.get("flags", [])
    ]
    context = {
        "name": name,
        "period": period,
        "figures": figures,
        "flags": flags,
        "cid": cid,
        "chart": {"width": CHART_WIDTH_PX, "height": CHART_HEIGHT_PX},
        "dashboard_url": dashboard_url,
        "unsubscribe_url": unsubscribe_url,
        "disclaimer": WELLNESS_DISCLAIMER,
    }
    subject = f"{name}: your week in running, {period}"
    env = template_environment(_TEMPLATES)
    text = env.get_template("digest.txt.j2").render(context)
    html = env.get_template("digest.html.j2").render(context, subject=subject)
    payload = {
        "type": "digest.created",
        "timestamp": created_at.isoformat(),
        "data": {
            "prompt_id": prompt_id,
            "kind": DIGEST_KIND,
            "week": facts.get("week"),
            "totals": totals,
            "figures": facts.get("figures", {}),
            "created_at": created_at.isoformat(),
            "created_at_local": local_iso(created_at, zone),
            "timezone": zone.key,
        },
    }
    if not chart:
        return RenderedDigest(subject, text, html, payload, ())
    png = chart_png(facts["days"], highlight_from=totals["first_day"])
    return RenderedDigest(subject, text, html, payload, ((cid, png, "png"),))


def _day_text(day: str) -> str:
    """A local day as a reader says it: "Mon 7 Dec"."""
    try:
        value = date.fromisoformat(day)
    except (TypeError, ValueError):
        return str(day)
    return f"{value:%a} {value.day} {value:%b}"


def digest_summary(facts: dict[str, Any]) -> str:
    """The digest in one line, for a notification: the week's runs, distance and load, and flags if any."""
    totals = facts["totals"]
    runs = int(totals["runs"])
    line = (
        f"{runs} run{'s' if runs != 1 else ''}, {totals['distance_m'] / 1000:.1f} km, "
        f"load {totals['load']:,.0f} ref. steps"
    )
    flagged = len(facts.get("flags", []))
    if flagged:
        line += f"; {flagged} day{'s' if flagged != 1 else ''} flagged"
    return line


def digest_now(session: Session, settings: Settings, athlete: Athlete, now: datetime) -> tuple[date, dict[str, Any]]:
    """The send day of the digest the athlete would have got most recently (this week's scheduled day, or last
    week's when this week's is still ahead) and its facts, computed now."""
    zone = ZoneInfo(athlete.timezone)
    today = now.astimezone(zone).date()
    send_day = today - timedelta(days=today.weekday()) + timedelta(days=athlete.digest_weekday % 7)
    if send_day > today:
        send_day -= timedelta(days=7)
    return send_day, digest_facts(session, settings, athlete, send_day)


def preview_digest(
    session: Session,
    settings: Settings,
    athlete: Athlete,
    now: datetime,
    *,
    unsubscribe_url: str | None = None,
    dashboard_url: str | None = None,
) -> tuple[str, str | None]:
    """The digest's HTML as one self-contained page (the chart inlined as a data: URI in place of its Content-ID),
    and a note when the scheduled digest would not be sent (no address, or no run yet by that week)."""
    send_day, facts = digest_now(session, settings, athlete, now)
    rendered = render_digest(
        prompt_id="preview",
        athlete_name=athlete.display_name or athlete.name,
        facts=facts,
        unsubscribe_url=unsubscribe_url,
        dashboard_url=dashboard_url,
        created_at=now,
        timezone=athlete.timezone,
    )
    html = rendered.html
    for cid, data, subtype in rendered.images:
        uri = f"data:image/{subtype};base64,{base64.b64encode(data).decode('ascii')}"
        html = html.replace(f"cid:{cid}", uri)
    note: str | None = None
    if not has_a_week(session, athlete, send_day):
        note = f"not sent: the week before {send_day.isoformat()} ends before {athlete.name}'s first run"
    elif not channels_for(settings, athlete):
        note = f"not sent: {athlete.name} has no channel that can receive it"
    return html, note
