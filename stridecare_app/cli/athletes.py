"""``stridecare athlete add|set|list``: who we look after and how they want to hear from us."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from delivery.push import check_push_url
from delivery.ssrf import ForbiddenTarget, TargetUnresolvable, check_target, parse_networks
from recommender.schedule import reschedule_held
from stridecare.crypto import Vault, new_webhook_secret
from stridecare.db.models import Athlete
from stridecare.handles import InvalidHandle, check_handle
from stridecare.links import dashboard_url
from stridecare.plugins import (
    InvalidChannelSettings,
    channel_classes,
    channel_options,
    put_channel_options,
    store_channel_settings,
)
from stridecare.settings import Settings
from stridecare_app.cli.app import app, athlete_or_fail, emit_json, fail, runtime

athlete_app = typer.Typer(help="Add athletes and set how and when they receive prompts.", no_args_is_help=True)
app.add_typer(athlete_app, name="athlete")

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")

NameArg = Annotated[str, typer.Argument(help="Short handle, e.g. `anna` (used by folders and commands).")]
EmailOpt = Annotated[
    str | None,
    typer.Option(help="Email address for prompts (needs an SMTP server: `stridecare config set smtp_host HOST`)."),
]
WebhookOpt = Annotated[
    str | None,
    typer.Option(help="HTTPS URL that receives signed prompts (Standard Webhooks). '' removes it."),
]
TzOpt = Annotated[str | None, typer.Option(help="IANA time zone, e.g. Europe/Berlin.")]
QuietOpt = Annotated[str | None, typer.Option(help="Quiet hours HH:MM-HH:MM, e.g. 22:00-07:00; '' for none.")]
MassOpt = Annotated[float | None, typer.Option(help="Body mass in kg (only changes force in newtons).")]
DayOpt = Annotated[str | None, typer.Option(help="Weekday for the weekly balance prompt: mon … sun.")]
TimeOpt = Annotated[str | None, typer.Option(help="Local time for the weekly balance prompt, HH:MM.")]
DigestDayOpt = Annotated[str | None, typer.Option("--digest-day", help="Weekday of the weekly digest: mon … sun.")]
DigestTimeOpt = Annotated[str | None, typer.Option("--digest-time", help="Local time for the weekly digest, HH:MM.")]
NameOpt = Annotated[str | None, typer.Option("--display-name", help="Name used in greetings.")]
PushOpt = Annotated[
    str | None,
    typer.Option(
        "--push",
        help=(
            "Apprise URL for prompts on the phone as a notification (title, one line, the run's page), e.g. "
            "'ntfy://ntfy.sh/my-topic'; HTTP services and mailto:// (syslog, UDP and local schemes need "
            "STRIDECARE_PUSH_UNGUARDED_SCHEMES). Stored encrypted; '' removes it."
        ),
    ),
]
GroupOpt = Annotated[
    str | None,
    typer.Option(
        "--group",
        help="The coach's group for the roster's filter (\"juniors\", \"club\"); an empty value clears it.",
    ),
]
ChannelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--channel",
        help=(
            "A channel's setting as CHANNEL.KEY=VALUE, checked against the channel's schema (repeatable), e.g. "
            "console.enabled=false or pager.folder=/srv/pager; CHANNEL= removes the channel's settings."
        ),
    ),
]


def _channel_values(specs: list[str]) -> dict[str, dict[str, str | None] | None]:
    """``["sms.number=+49…", "pager="]`` as ``{"sms": {"number": "+49…"}, "pager": None}`` (None: remove)."""
    out: dict[str, dict[str, str | None] | None] = {}
    for spec in specs:
        left, eq, value = spec.partition("=")
        name, dot, key = left.partition(".")
        if not eq or not name:
            fail(f"--channel wants CHANNEL.KEY=VALUE or CHANNEL=, got {spec!r}")
        if not dot:
            if value:
                fail(f"--channel {spec!r}: give a key, as in {name}.address={value}")
            out[name] = None
            continue
        current = out.get(name) or {}
        current[key] = value or None
        out[name] = current
    return out


def _store(athlete: Athlete, name: str, values: dict[str, str | None] | None, vault: Vault) -> None:
    """Write one channel's settings through its schema (None removes the channel); a refusal is a plain message."""
    classes = channel_classes()
    cls = classes.get(name)
    if cls is None:
        fail(f"no channel named {name!r} is installed (installed: {', '.join(sorted(classes))})")
    try:
        if values is None:
            put_channel_options(athlete, name, None)
        else:
            store_channel_settings(athlete, cls, values, vault)
    except InvalidChannelSettings as exc:
        fail(str(exc))


def _apply_channels(
    athlete: Athlete, push: str | None, specs: list[str] | None, vault: Vault, settings: Settings
) -> str | None:
    """Store ``--push`` and ``--channel`` settings under the channel's name, secrets encrypted; returns a
    warning to show (a push host that does not resolve from here)."""
    wanted: dict[str, dict[str, str | None] | None] = _channel_values(specs or [])
    warning: str | None = None
    if push is not None:
        if push:
            problem, warning = check_push_url(push, settings)
            if problem:
                fail(problem)
        wanted["push"] = {"url": push} if push else None
    for name, values in wanted.items():
        _store(athlete, name, values, vault)
    return warning


@dataclass(frozen=True, slots=True)
class _Changes:
    """The profile options of ``athlete add`` and ``athlete set``, in that order; None leaves a value as it is."""

    email: str | None
    webhook: str | None
    timezone: str | None
    quiet: str | None
    mass: float | None
    balance_day: str | None
    balance_time: str | None
    display_name: str | None
    digest_day: str | None = None
    digest_time: str | None = None


def _apply(athlete: Athlete, changes: _Changes, vault: Vault) -> str | None:
    """Validate and apply options; returns a newly generated webhook secret to show once."""
    email, webhook, timezone, quiet, mass = (
        changes.email,
        changes.webhook,
        changes.timezone,
        changes.quiet,
        changes.mass,
    )
    balance_day, balance_time, display_name = changes.balance_day, changes.balance_time, changes.display_name
    digest_day, digest_time = changes.digest_day, changes.digest_time
    new_secret: str | None = None
    if display_name is not None:
        athlete.display_name = display_name or None
    if email is not None:
        if email and ("@" not in email or any(c.isspace() for c in email)):
            fail(f"{email!r} is not an email address")
        # A fresh address clears an earlier unsubscribe (the channel's reset_on_change).
        _store(athlete, "email", {"address": email} if email else None, vault)
    if webhook is not None:
        if webhook and not webhook.startswith(("https://", "http://")):
            fail("the webhook URL must start with https:// (or http:// on a trusted network)")
        values: dict[str, str | None] | None = {"url": webhook} if webhook else None
        if values is not None and not channel_options(athlete, "webhook").get("secret"):
            new_secret = new_webhook_secret()
            values["secret"] = new_secret
        _store(athlete, "webhook", values, vault)
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            fail(f"unknown time zone {timezone!r}; use an IANA name such as Europe/Berlin")
        athlete.timezone = timezone
    if quiet is not None:
        if quiet == "":
            athlete.quiet_start = athlete.quiet_end = None
        else:
            start, _, end = quiet.partition("-")
            if not (_HHMM.match(start) and _HHMM.match(end)):
                fail(f"quiet hours must look like 22:00-07:00, got {quiet!r}")
            athlete.quiet_start, athlete.quiet_end = start, end
    if mass is not None:
        if not 20 <= mass <= 300:
            fail("body mass must be between 20 and 300 kg")
        athlete.body_mass_kg = mass
    if balance_day is not None:
        key = balance_day.strip().lower()[:3]
        if key not in WEEKDAYS:
            fail(f"balance day must be one of {', '.join(WEEKDAYS)}")
        athlete.balance_weekday = WEEKDAYS.index(key)
    if balance_time is not None:
        if not _HHMM.match(balance_time):
            fail(f"balance time must be HH:MM, got {balance_time!r}")
        athlete.balance_time = balance_time
    if digest_day is not None:
        key = digest_day.strip().lower()[:3]
        if key not in WEEKDAYS:
            fail(f"digest day must be one of {', '.join(WEEKDAYS)}")
        athlete.digest_weekday = WEEKDAYS.index(key)
    if digest_time is not None:
        if not _HHMM.match(digest_time):
            fail(f"digest time must be HH:MM, got {digest_time!r}")
        athlete.digest_time = digest_time
    return new_secret


def _describe(a: Athlete) -> dict[str, object]:
    email, webhook = channel_options(a, "email"), channel_options(a, "webhook")
    return {
        "name": a.name,
        "display_name": a.display_name,
        "email": email.get("address"),
        "email_unsubscribed": bool(email.get("unsubscribed_at")),
        "webhook_url": webhook.get("url"),
        "webhook_disabled": bool(webhook.get("disabled_at")),
        "timezone": a.timezone,
        "quiet_hours": f"{a.quiet_start}-{a.quiet_end}" if a.quiet_start else None,
        "body_mass_kg": a.body_mass_kg,
        "balance_day": WEEKDAYS[a.balance_weekday],
        "balance_time": a.balance_time,
        "balance_level": a.balance_level,
        "digest_day": WEEKDAYS[a.digest_weekday],
        "digest_time": a.digest_time,
        # Which channels have settings, never the settings themselves: they may hold tokens.
        "channels": sorted(k for k in (a.channel_settings or {}) if k not in ("email", "webhook", "console")),
        "console": bool(channel_options(a, "console").get("enabled", True)),
    }


@athlete_app.command("add")
def add(
    name: NameArg,
    email: EmailOpt = None,
    webhook: WebhookOpt = None,
    timezone: TzOpt = None,
    quiet: QuietOpt = None,
    mass: MassOpt = None,
    balance_day: DayOpt = None,
    balance_time: TimeOpt = None,
    display_name: NameOpt = None,
) -> None:
    """Add an athlete. A webhook secret is generated and shown once: give it to the receiver."""
    try:
        check_handle(name)
    except InvalidHandle as exc:
        fail(str(exc))
    rt = runtime()
    try:
        with rt.db.transaction() as session:
            athlete = Athlete(name=name, timezone=timezone or rt.settings.default_timezone)
            session.add(athlete)
            changes = _Changes(email, webhook, timezone, quiet, mass, balance_day, balance_time, display_name)
            secret = _apply(athlete, changes, rt.vault)
            session.flush()
    except IntegrityError:
        fail(f"athlete {name!r} exists already; change it with `stridecare athlete set {name} …`")
    typer.echo(f"added {name}")
    if secret:
        typer.echo(f"webhook secret (shown once, verify signatures with it): {secret}")
    _warn_if_refused(webhook, rt.settings)


@athlete_app.command("set")
def set_(
    name: NameArg,
    email: EmailOpt = None,
    webhook: WebhookOpt = None,
    timezone: TzOpt = None,
    quiet: QuietOpt = None,
    mass: MassOpt = None,
    balance_day: DayOpt = None,
    balance_time: TimeOpt = None,
    display_name: NameOpt = None,
    digest_day: DigestDayOpt = None,
    digest_time: DigestTimeOpt = None,
    push: PushOpt = None,
    channel: ChannelOpt = None,
    group: GroupOpt = None,
) -> None:
    """Change an athlete's details; options not given stay as they are.

    Changing --quiet or --timezone re-times prompts held for quiet hours at once: a prompt no longer in quiet
    hours goes out at the runner's next relay pass, and each held prompt's new time is printed.
    """
    rt = runtime()
    with rt.db.transaction() as session:
        athlete = athlete_or_fail(session, name)
        # Locked: the channels' settings are one JSON value, which a delivery's outcome may update meanwhile.
        session.refresh(athlete, with_for_update=True)
        changes = _Changes(
            email, webhook, timezone, quiet, mass, balance_day, balance_time, display_name, digest_day, digest_time
        )
        secret = _apply(athlete, changes, rt.vault)
        warning = _apply_channels(athlete, push, channel, rt.vault, rt.settings)
        if group is not None:
            cleaned = " ".join(group.split())
            if len(cleaned) > 64 or any(not c.isprintable() for c in cleaned):
                fail("a group name is up to 64 printable characters")
            athlete.group_name = cleaned or None
        held = _reschedule_held(session, athlete, rt.now()) if timezone is not None or quiet is not None else []
    typer.echo(f"updated {name}")
    for line in held:
        typer.echo(line)
    if secret:
        typer.echo(f"webhook secret (shown once, verify signatures with it): {secret}")
    _warn_if_refused(webhook, rt.settings)
    if warning:
        typer.echo(f"warning: {warning}", err=True)


def _reschedule_held(session: Session, athlete: Athlete, now: datetime) -> list[str]:
    """Held prompts re-timed for new quiet hours or a new time zone; a line for each that changed."""
    done = reschedule_held(session, athlete, now)
    zone = ZoneInfo(athlete.timezone)
    lines = [f"held prompt {pid} released: it goes out now" for pid in done.released]
    lines += [f"held prompt {pid} now goes out at {due.astimezone(zone):%Y-%m-%d %H:%M %Z}" for pid, due in done.moved]
    return lines


def _warn_if_refused(webhook: str | None, settings: Settings) -> None:
    """Say now, not at the first failed delivery, when the guard against request forgery will refuse the URL.

    A warning, not an error: the operator may still allow the network, or the name may resolve differently
    where the workers run.
    """
    if not webhook:
        return
    try:
        check_target(webhook, parse_networks(settings.webhook_allowed_networks))
    except ForbiddenTarget as exc:
        typer.echo(f"warning: deliveries to this webhook will be refused: {exc}", err=True)
    except TargetUnresolvable as exc:
        typer.echo(f"warning: {exc}; deliveries retry on the backoff schedule (about a day)", err=True)


@athlete_app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False) -> None:
    """List athletes and their delivery settings."""
    rt = runtime()
    with rt.db.transaction() as session:
        rows = [_describe(a) for a in session.scalars(select(Athlete).order_by(Athlete.name))]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        channels = [c for c in ("email", "webhook_url") if row[c]] + list(row["channels"])  # type: ignore[call-overload]
        channels += ["console"] if row["console"] else []
        typer.echo(f"{row['name']:16} {row['timezone']:20} {', '.join(channels) or 'no channel'}")


@athlete_app.command("link")
def link(name: NameArg) -> None:
    """Print the athlete's private dashboard link (anyone with it can see that athlete's dashboard)."""
    rt = runtime()
    with rt.db.transaction() as session:
        athlete = athlete_or_fail(session, name)
        token = athlete.dashboard_token
    typer.echo(dashboard_url(rt.settings.effective_public_url, name, token))
