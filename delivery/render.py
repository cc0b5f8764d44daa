"""Render a foot-care prompt into an email subject, text and HTML bodies, and a webhook payload.

Inputs are plain values (no ORM objects) so the recommender, the relay and tests can all call it. The payload
carries our recommendation only, never raw source (Strava) fields: the Strava API agreement forbids passing
its data to third parties, and a webhook receiver is one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

PromptKind = Literal["post_run", "weekly_balance"]
PROMPT_KINDS: tuple[str, ...] = ("post_run", "weekly_balance")
PAYLOAD_TYPE = "prompt.created"
# The version of docs/webhook-payload.schema.json the payloads follow; a receiver routes on it. Adding a field
# keeps the version, removing or changing one raises it.
PAYLOAD_SCHEMA_VERSION = 1

DEFAULT_DISCLAIMER = (
    "This is general wellness advice, not medical advice. "
    "If you have pain, swelling or numbness in your feet, see a clinician before going on."
)

_TEMPLATES = Path(__file__).with_name("templates")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_MAX_NAME = 60


class RenderedPrompt(NamedTuple):
    """One prompt, ready for any channel; unpacks as ``subject, text, html, payload``."""

    subject: str
    text: str
    html: str
    payload: dict[str, Any]


@cache
def template_environment(folder: Path) -> Environment:
    """The Jinja environment for the ``*.html.j2`` / ``*.txt.j2`` templates in ``folder``, one per folder."""
    return Environment(
        loader=FileSystemLoader(folder),
        # Escape everything except plain text: the text body must show "&" as "&", HTML must never run markup.
        autoescape=select_autoescape(enabled_extensions=("html.j2",), disabled_extensions=("txt.j2",), default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _one_line(value: object, limit: int | None = None) -> str:
    """Collapse control characters and line breaks, which would break headers and forge lines in text."""
    text = " ".join(_CONTROL.sub(" ", str(value)).split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _check_url(name: str, url: str | None) -> str | None:
    if url is None:
        return None
    if not url.startswith(("https://", "http://")) or _CONTROL.search(url) or any(c in url for c in " <>\"'"):
        raise ValueError(f"{name} must be an http(s) URL without spaces or quotes")
    return url


def _seconds(duration: object) -> int | None:
    if duration is None:
        return None
    if isinstance(duration, timedelta):
        return round(duration.total_seconds())
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        return round(duration)
    return None


def _clock(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _instant(value: object) -> datetime | None:
    """``value`` as an aware datetime when it is one (or an ISO string with an offset); else None."""
    if isinstance(value, str) and len(value) > 10:
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, datetime) and value.tzinfo is not None and value.utcoffset() is not None:
        return value
    return None


def _run_date(value: object, zone: ZoneInfo) -> date | None:
    """The athlete's calendar day of ``value``: an instant is converted to ``zone`` first (a Tokyo run at
    07:28 on Monday is Monday's, not Sunday's UTC day); a plain date is taken as it is."""
    instant = _instant(value)
    if instant is not None:
        return instant.astimezone(zone).date()
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def athlete_zone(name: str | None) -> ZoneInfo:
    """The athlete's time zone (UTC when unset or unknown: a message is never lost for a bad zone name)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_time_text(when: datetime, zone: ZoneInfo) -> str:
    """``when`` as the athlete reads it: "Mon 7 Dec 22:00 JST" (the zone's abbreviation, or its offset)."""
    local = when.astimezone(zone)
    label = local.tzname() or local.strftime("%z")
    return f"{local:%a} {local.day} {local:%b} {local:%H:%M} {label}"


def local_iso(when: datetime | None, zone: ZoneInfo) -> str | None:
    """``when`` as ISO 8601 with the athlete's UTC offset (``2026-12-07T07:28:00+09:00``)."""
    return when.astimezone(zone).isoformat() if when is not None else None


def run_day_text(run: Mapping[str, Any] | None, timezone: str) -> str | None:
    """The athlete's day of ``run`` as a reader says it ("Mon 7 Dec"), or None without a run or a date."""
    if run is None:
        return None
    start = _instant(run.get("start_time"))
    day = _run_date(start if start is not None else run.get("date"), athlete_zone(timezone))
    return f"{day:%a} {day.day} {day:%b}" if day else None


def notification_line(
    routines: Sequence[Mapping[str, Any]], reasons: Sequence[str], day: str | None = None, limit: int = 240
) -> str:
    """One line for a notification: the run's local day, the routines, then why ("Mon 7 Dec: Roll out your
    soles, Toe spread — Long run: 21.1 km …")."""
    titles = ", ".join(_one_line(r.get("title", ""), 60) for r in routines if r.get("title"))
    why = "; ".join(_one_line(reason, 160) for reason in reasons if str(reason).strip())
    line = f"{titles} — {why}" if titles and why else titles or why
    return _one_line(f"{day}: {line}" if day else line, limit)


def _number(value: object, digits: int) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(float(value), digits)
    return None


def _iso_utc(value: object) -> str | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return None


def routable(payload: Mapping[str, Any], handle: str, display_name: str | None) -> dict[str, Any]:
    """``payload`` with what a receiver routes on: the schema version and whose prompt it is (every kind)."""
    data = dict(payload.get("data") or {})
    data["athlete"] = {"handle": handle, "display_name": _one_line(display_name, _MAX_NAME) if display_name else None}
    return {**payload, "schema_version": PAYLOAD_SCHEMA_VERSION, "data": data}


def _run_view(run: Mapping[str, Any], zone: ZoneInfo) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run summary as display strings for the templates, and as numbers for the payload; its day is the
    athlete's local day."""
    # Accept the planner's stored facts ("start_time", "timer_s") as well as the plain names; the start time
    # wins over a stored "date", which may be a UTC day.
    start_instant = _instant(run.get("start_time"))
    day = _run_date(start_instant if start_instant is not None else run.get("date"), zone)
    distance = _number(run.get("distance_km"), 2)
    seconds = _seconds(run.get("duration", run.get("duration_s", run.get("timer_s"))))
    load = _number(run.get("load"), 1)
    parts: list[str] = []
    if distance is not None:
        parts.append(f"{distance:.1f} km")
    if seconds is not None:
        parts.append(_clock(seconds))
    elif isinstance(run.get("duration"), str):
        parts.append(_one_line(run["duration"], 20))
    if load is not None:
        parts.append(f"load {load:,.0f} ref. steps")
    view = {
        "date_text": f"{day:%a} {day.day} {day:%b}" if day else "your last run day",
        "line": ", ".join(parts) or "no details",
    }
    start = run.get("start_time")
    numbers = {
        # Which run, for a receiver: our id, when it started (UTC), what kind of session it was.
        "id": run.get("id") if isinstance(run.get("id"), int) else None,
        "start_time": _iso_utc(start),
        "start_time_local": local_iso(start_instant, zone),
        "sport": _one_line(run["sport"], 32) if isinstance(run.get("sport"), str) else None,
        "date": day.isoformat() if day else None,
        "distance_km": distance,
        "duration_s": seconds,
        "load": load,
    }
    return view, numbers


def render_prompt(
    *,
    prompt_id: str | int,
    athlete_name: str,
    kind: PromptKind,
    routines: Sequence[Mapping[str, Any]],
    reasons: Sequence[str],
    flags: Sequence[Mapping[str, Any]],
    run: Mapping[str, Any] | None,
    done_url: str | None,
    unsubscribe_url: str | None,
    created_at: datetime,
    disclaimer: str = DEFAULT_DISCLAIMER,
    figures: Mapping[str, float | int | None] | None = None,
    timezone: str = "UTC",
    held_until: datetime | None = None,
    feel: Mapping[str, Any] | None = None,
) -> RenderedPrompt:
    """Render one prompt for every channel.

    ``routines`` are mappings with ``key``, ``title``, ``instructions`` and ``dose``; ``flags`` have ``name``
    and ``reason``; ``run`` has ``date`` (date, datetime or ISO string; or ``start_time``), ``distance_km``,
    ``duration`` (timedelta or seconds; or ``duration_s`` / ``timer_s``) and ``load``, or is None for the
    weekly prompt; other keys are ignored. ``created_at`` must be timezone-aware. The disclaimer may be
    reworded by the caller but never left out. ``figures`` (the shared figures by their shared names, already
    rounded) go into the payload as they are. Dates and times are shown in ``timezone`` (the athlete's IANA
    zone); the payload carries both UTC and local forms. ``held_until``: when quiet hours hold the prompt back.
    ``feel``: the one-tap foot-discomfort question (``question``, ``links``: ``score`` and ``url`` per score,
    ``where``: the places one may name), shown by every form and carried by the payload.
    """
    if kind not in PROMPT_KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}; expected one of {PROMPT_KINDS}")
    if created_at.tzinfo is None or created_at.utcoffset() is None:
        raise ValueError("created_at must be timezone-aware")
    if not disclaimer.strip():
        raise ValueError("every prompt carries the wellness disclaimer; it may not be empty")
    if not routines:
        raise ValueError("a prompt needs at least one routine")
    done_url = _check_url("done_url", done_url)
    unsubscribe_url = _check_url("unsubscribe_url", unsubscribe_url)
    feel_view = (
        {
            "question": _one_line(feel["question"], 120),
            "links": [{"score": int(x["score"]), "url": _check_url("feel url", str(x["url"]))} for x in feel["links"]],
            "where": [_one_line(w, 20) for w in feel.get("where", ())],
        }
        if feel
        else None
    )

    try:
        routine_views = [
            {
                "key": str(r["key"]),
                "title": _one_line(r["title"], 120),
                "dose": _one_line(r["dose"], 80),
                "instructions": " ".join(str(r["instructions"]).split()),
            }
            for r in routines
        ]
        flag_views = [
            {"name": str(f["name"]), "reason": _one_line(f["reason"], 300)}
            | ({"level": str(f["level"])} if f.get("level") is not None else {})
            for f in flags
        ]
    except KeyError as exc:
        raise ValueError(f"routine or flag is missing {exc.args[0]!r}") from None
    reason_lines = [_one_line(reason, 300) for reason in reasons]
    name = _one_line(athlete_name, _MAX_NAME) or "there"
    zone = athlete_zone(timezone)
    run_view, run_numbers = _run_view(run, zone) if run is not None else (None, None)

    if kind == "weekly_balance":
        subject = f"{name}: your weekly balance check"
    elif run_numbers is not None and run_numbers["distance_km"] is not None:
        subject = f"{name}: foot care after your {run_numbers['distance_km']:.1f} km run"
    else:
        subject = f"{name}: foot care after your run"

    context = {
        "subject": subject,
        "name": name,
        "kind": kind,
        "routines": routine_views,
        "reasons": reason_lines,
        "flags": flag_views,
        "run": run_view,
        "done_url": done_url,
        "unsubscribe_url": unsubscribe_url,
        "disclaimer": " ".join(disclaimer.split()),
        "feel": feel_view,
    }
    env = template_environment(_TEMPLATES)
    text = env.get_template("prompt.txt.j2").render(context)
    html = env.get_template("prompt.html.j2").render(context)

    payload: dict[str, Any] = {
        "type": PAYLOAD_TYPE,
        "timestamp": created_at.astimezone(UTC).isoformat(),
        "data": {
            "prompt_id": prompt_id,
            "kind": kind,
            "routines": [{k: r[k] for k in ("key", "title", "dose")} for r in routine_views],
            "reasons": reason_lines,
            "flags": flag_views,
            "run": run_numbers,
            "figures": dict(figures or {}),
            "done_url": done_url,
            "created_at": created_at.astimezone(UTC).isoformat(),
            "created_at_local": local_iso(created_at, zone),
            "timezone": zone.key,
            "disclaimer": context["disclaimer"],
        },
    }
    if feel_view is not None:
        payload["data"]["feel"] = feel_view
    if held_until is not None:
        payload["data"]["held_until"] = held_until.astimezone(UTC).isoformat()
        payload["data"]["held_until_local"] = local_iso(held_until, zone)
    return RenderedPrompt(subject, text, html, payload)
