"""The relational schema: athletes, runs and their samples, load, prompts, the delivery outbox, Strava state.

Every table that a task writes has a natural unique key, so a redelivered task or a rerun import is a no-op.
Times are stored as timezone-aware UTC.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from stridecare.db.column_types import UTCDateTime as UTCDateTime  # migrations name it here

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def new_id() -> str:
    """A random identifier for rows that leave the system (prompt ids appear in links and webhook ids)."""
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (Alembic needs them on both SQLite and PostgreSQL)."""

    metadata = MetaData(naming_convention=NAMING)


class Athlete(Base):
    """A person whose feet we look after; ``name`` is the short handle used on the command line."""

    __tablename__ = "athletes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    # Every channel's settings for this athlete, by channel name, each in its channel's schema
    # ({"email": {"address": …}, "webhook": {"url": …, "secret": <encrypted>}, "console": {"enabled": false},
    # "push": {"url": <encrypted>}}): the one place, built-ins and plugins alike, so a channel needs no column.
    # Read and write it through stridecare.plugins (channel_options, store_channel_settings).
    channel_settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    quiet_start: Mapped[str | None] = mapped_column(String(5))  # "22:00"
    quiet_end: Mapped[str | None] = mapped_column(String(5))  # "07:00"
    body_mass_kg: Mapped[float | None] = mapped_column(Float)
    sex: Mapped[str | None] = mapped_column(String(8))
    balance_weekday: Mapped[int] = mapped_column(Integer, default=6)  # Monday=0 … Sunday=6
    balance_time: Mapped[str] = mapped_column(String(5), default="18:00")
    balance_level: Mapped[int] = mapped_column(Integer, default=0)
    digest_weekday: Mapped[int] = mapped_column(Integer, default=0)
    digest_time: Mapped[str] = mapped_column(String(5), default="08:00", server_default="08:00")
    dashboard_token: Mapped[str] = mapped_column(String(64), default=new_id)
    # Mixed into the signature of this athlete's done and unsubscribe links: it dies with the row, so an
    # athlete who later gets the same id cannot use a forgotten one's links.
    link_secret: Mapped[str] = mapped_column(String(64), default=new_id)
    # The pair new runs are counted on when the source names none; a plain id (no FK) so that athletes and
    # shoes can be deleted in any order.
    default_shoe_id: Mapped[int | None] = mapped_column(Integer)
    # The earliest run start whose derived figures (loads, daily series, flags) still wait for the planner:
    # set with a change to the runs, moved forward chunk by chunk, None when everything is up to date.
    replan_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Wall time of the last sign of life of the replan a set mark is owed to: when a deferred store queued it,
    # and at each chunk it commits. A store that finds it older than the planner's REPLAN_STALL_S queues a
    # replan itself (the owed one's message was lost or its task failed).
    replan_progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The coach's group on the roster ("juniors", "club"): a filter, nothing else depends on it.
    group_name: Mapped[str | None] = mapped_column(String(64))


class UsedToken(Base):
    """A single-use token already spent (a Strava connect link, an OAuth state), kept until it would expire."""

    __tablename__ = "used_tokens"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AdminLogin(Base):
    """The installation's admin login (one row, id 1): an optional password hash, and the moment before which
    every admin session is void (set when the password changes or every session is ended)."""

    __tablename__ = "admin_login"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    sessions_since: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ImportedFile(Base):
    """The import log: one row per distinct file content per athlete, whatever its name or folder."""

    __tablename__ = "imported_files"
    # The decode guard counts unfinished reads of one content across athletes: content_hash alone is looked up.
    __table_args__ = (
        UniqueConstraint("athlete_id", "content_hash"),
        Index("ix_imported_files_content_hash", "content_hash"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    athlete_id: Mapped[int] = mapped_column(ForeignKey("athletes.id", ondelete="CASCADE"))
    content_hash: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # ingested | skipped | rejected | retry
    reason: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Where the content came from (``ingest.origin.Origin``): an inbox, an export, a connector's activity.
    origin: Mapped[str | None] = mapped_column(String(32))
    origin_account: Mapped[str | None] = mapped_column(String(128))
    origin_item: Mapped[str | None] = mapped_column(String(128))
    # The kept original (``ingest.originals``), relative to the data home: what ``stridecare recompute`` reads.
    original: Mapped[str | None] = mapped_column(Text)
    # status "retry": reading did not finish (a timeout, the reader died); read again at ``retry_at`` with a
    # larger budget. ``attempts`` counts those unfinished reads.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SourceRecord(Base):
    """What an API source said of one activity, kept as it came (zlib-compressed JSON), so that a conversion
    or model change can rebuild the run without fetching it again (``stridecare recompute``)."""

    __tablename__ = "source_records"
    __table_args__ = (UniqueConstraint("athlete_id", "source", "source_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    athlete_id: Mapped[int] = mapped_column(ForeignKey("athletes.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(32))
    source_key: Mapped[str] = mapped_column(String(128))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SeenFile(Base):
    """Fast path for rescans: a file whose path, size and mtime are unchanged is not read again by this athlete.

    Keyed by athlete and path: two athletes importing one folder each see (and import) its files."""

    __tablename__ = "seen_files"

    athlete_id: Mapped[int] = mapped_column(ForeignKey("athletes.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(Text, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64))


class DecodeAttempt(Base):
    """A decoding in progress, written before it starts and deleted when it ends: a row left behind by a process
    that died means the file may kill its reader; after two such deaths the file is quarantined
    instead of being read again."""

    __tablename__ = "decode_attempts"

    content_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(200))  # "host:pid" of the process that started it
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # started, not finished


class Run(Base):
    """One foot session. ``(athlete_id, source, source_key)`` is unique; a run seen from two sources links the
    weaker copy to the richer one through ``duplicate_of_id`` and only the primary counts for load and prompts."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("athlete_id", "source", "source_key"),
        Index("ix_runs_athlete_start", "athlete_id", "start_time"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    athlete_id: Mapped[int] = mapped_column(ForeignKey("athletes.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(32))
    source_key: Mapped[str] = mapped_column(String(128))
    file_id: Mapped[int | None] = mapped_column(ForeignKey("imported_files.id", ondelete="SET NULL"))
    name: Mapped[str | None] = mapped_column(String(300))
    sport: Mapped[str] = mapped_column(String(32))
    sub_sport: Mapped[str | None] = mapped_column(String(32))
    start_time: Mapped[datetime] = mapped_column(UTCDateTime)
    utc_offset_s: Mapped[int | None] = mapped_column(Integer)
    elapsed_s: Mapped[float] = mapped_column(Float)
    timer_s: Mapped[float] = mapped_column(Float)
    distance_m: Mapped[float] = mapped_column(Float)
    ascent_m: Mapped[float | None] = mapped_column(Float)
    descent_m: Mapped[float | None] = mapped_column(Float)
    steps: Mapped[float] = mapped_column(Float)
    avg_cadence_spm: Mapped[float | None] = mapped_column(Float)
    cadence_source: Mapped[str] = mapped_column(String(16))
    device: Mapped[str | None] = mapped_column(String(100))
    device_total_strides: Mapped[float | None] = mapped_column(Float)
    avg_heart_rate_bpm: Mapped[float | None] = mapped_column(Float)
    max_heart_rate_bpm: Mapped[float | None] = mapped_column(Float)
    # Why the recorded steps were replaced by an estimate (an impossible step length), shown on the run page.
    step_note: Mapped[str | None] = mapped_column(Text)
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    shoe_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    samples: Mapped[RunSamples | None] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True, uselist=False
    )
    load: Mapped[RunLoad | None] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True, uselist=False
    )


class RunSamples(Base):
    """A run's sample series, packed as little-endian float32 columns and zlib-compressed (see db/samples.py)."""

    __tablename__ = "run_samples"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    encoding: Mapped[str] = mapped_column(String(16), default="f32z-v1")
    data: Mapped[bytes] = mapped_column(LargeBinary)

    run: Mapped[Run] = relationship(back_populates="samples")


class RunLoad(Base):
    """The load model's figures for one run, recomputed when the run or the athlete's history changes."""

    __tablename__ = "run_loads"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    load: Mapped[float] = mapped_column(Float)
    stimulus_sum: Mapped[float] = mapped_column(Float)  # Σ (n/2)·F⁴, for the per-foot daily stimulus ψ
    downhill_impact: Mapped[float] = mapped_column(Float)
    peak_force_bw: Mapped[float] = mapped_column(Float)
    # Steps by gait (model version 2): the run's steps are their sum.
    walking_steps: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    running_steps: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    long_run: Mapped[bool] = mapped_column(Boolean, default=False)
    flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_version: Mapped[int] = mapped_column(Integer, default=1)

    run: Mapped[Run] = relationship(back_populates="load")


class DailyLoad(Base):
    """Load per athlete and local calendar day with the acute and chronic averages at that day."""

    __tablename__ = "daily_loads"
    __table_args__ = (UniqueConstraint("athlete_id", "day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    athlete_id: Mapped[int] = mapped_column(ForeignKey("athletes.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)
    load: Mapped[float] = mapped_column(Float)
    acute: Mapped[float] = mapped_column(Float)
    chronic: Mapped[float] = mapped_column(Float)
    distance_m: Mapped[float] = mapped_column(Float, default=0.0)
    steps: Mapped[float] = mapped_column(Float, default=0.0)
    stimulus: Mapped[float] = mapped_column(Float, default=0.0)


class Prompt(Base):
    """A routine recommendation. ``(athlete_id, kind, dedupe_key)`` is unique: one post-run prompt per run, one
    weekly balance prompt per ISO week. ``facts`` and ``rule`` record why it was made."""

    __tablename__ = "prompts"
    __table_args__ = (
        UniqueConstraint("athlete_id", "kind", "dedupe_key"),
        # The roster reads every athlete's recent prompts at once.
        Index("ix_prompts_athlete_day", "athlete_id", "local_day"),
        # The home page and `stridecare status` read an athlete's newest prompts.
        Index("ix_prompts_athlete_created", "athlete_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    athlete_id: Mapped[int] = mapped_column(ForeignKey("athletes.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))  # post_run | weekly_balance | digest | shoe
    dedupe_key: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    local_day: Mapped[date] = mapped_column(Date)
    routines: Mapped[list[str]] = mapped_column(JSON, default=list)
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    rule: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Completion(Base):
    """A routine the athlete reported as done (from a signed link or the command line)."""

    __tablename__ = "completions"
    __table_args__ = (UniqueConstraint("prompt_id", "routine"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[str] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    athlete_id: Mapped[int] = mapped_column(ForeignKey("athletes.id", ondelete="CASCADE"))
    routine: Mapped[str] = mapped_column(String(32))
    level: Mapped[int] = mapped_column(Integer, default=0)
    done_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FeelScore(Base):
    """How the athlete's feet felt, 0 (no discomfort) to 10 (worst), one per athlete and local day (the last
    answer of the day wins); ``location`` is where, when they said. ``prompt_id``/``run_id``: the post-run
    prompt it answered (plain ids: the score outlives a replanned prompt)."""

    __tablename__ = "feel_scores"
    __table_args__ = (UniqueConstraint("athlete_id", "day", name="uq_feel_scores_athlete_day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    athlete_id: Mapped[int] = mapped_column(ForeignKey("athletes.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)
    score: Mapped[int] = mapped_column(Integer)
    location: Mapped[str | None] = mapped_column(String(16))
    prompt_id: Mapped[str | None] = mapped_column(String(32))
    run_id: Mapped[int | None] = mapped_column(Integer)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Delivery(Base):
    """The outbox: one row per prompt and channel, written in the same transaction as the prompt.

    The relay sends rows that are due and records the outcome; retry times live here, not in broker countdowns.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("prompt_id", "channel"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[str] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    athlete_id: Mapped[int] = mapped_column(ForeignKey("athletes.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[str] = mapped_column(String(128), default=lambda: f"msg_{new_id()}")
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sent|failed|cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeliveryAttempt(Base):
    """One try of a delivery, for the operator's eyes and for tests that count attempts."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, default="")


class StravaAccount(Base):
    """A connected Strava athlete; tokens are Fernet-encrypted and refreshed under a row lock."""

    __tablename__ = "strava_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    athlete_id: Mapped[int] = mapped_column(ForeignKey("athletes.id", ondelete="CASCADE"), unique=True)
    strava_athlete_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    access_token_enc: Mapped[str] = mapped_column(Text)
    refresh_token_enc: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    scope: Mapped[str] = mapped_column(String(200), default="")
    connected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    backfill_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    backfill_page: Mapped[int] = mapped_column(Integer, default=0)
    backfill_state: Mapped[str] = mapped_column(String(16), default="idle")
    # When a deferred backfill may run again (next rate-limit window); a periodic job picks up what is due.
    backfill_resume_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Activity ids already handed over whose start second equals ``backfill_before`` - 1 s: the cursor re-lists
    # that second so that activities sharing it across a page boundary are not lost.
    backfill_seen_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    backfill_detail: Mapped[str | None] = mapped_column(Text)
    # Events are hints, the activity list is the truth: a create event makes the next list call due (not
    # before ``listed_at`` + the list interval), so a burst of events costs one list request.
    list_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    listed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class StravaEvent(Base):
    """A push event as received; unique on its content so Strava's retries are processed once."""

    __tablename__ = "strava_events"
    # The events table is the queue the drain claims from (status, next_attempt_at).
    __table_args__ = (UniqueConstraint("dedupe_key"), Index("ix_strava_events_due", "status", "next_attempt_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    detail: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Activity lists that did not show this event's activity (a second miss finishes the event).
    list_misses: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ConnectorAccount(Base):
    """An account at a pull source (intervals.icu, Garmin Connect, a plugin's): its encrypted credentials, its
    cursor and when it may be asked again (``ingest/connectors``)."""

    __tablename__ = "connector_accounts"
    __table_args__ = (UniqueConstraint("athlete_id", "provider", "account_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    athlete_id: Mapped[int] = mapped_column(ForeignKey("athletes.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(32))
    account_key: Mapped[str] = mapped_column(String(200))
    # An API key or a token bundle, Fernet-encrypted; None once disconnected.
    credentials_enc: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="connected")  # connected | refused | blocked | disconnected
    cursor: Mapped[datetime | None] = mapped_column(UTCDateTime)  # newest activity start seen
    next_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cooldown_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cooldown_s: Mapped[int] = mapped_column(Integer, default=0)  # the last cooldown, doubled by the next
    last_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    connected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConnectorItem(Base):
    """The ledger: one row per activity an account listed, with its outcome, so nothing is downloaded twice."""

    __tablename__ = "connector_items"
    __table_args__ = (UniqueConstraint("account_id", "activity_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("connector_accounts.id", ondelete="CASCADE"))
    activity_id: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sport: Mapped[str | None] = mapped_column(String(64))
    # pending | downloaded | ingested | duplicate | skipped | rejected | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    downloaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiBudget(Base):
    """Rate-limit state of an external API as read from its response headers, and when work may resume."""

    __tablename__ = "api_budgets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    limits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    usage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    observed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set while the provider refuses the application itself (Strava: 403 Application/Status/Inactive, its
    # owner has no subscription); ``app_probe_at`` is when one request may ask again (at most hourly).
    app_inactive_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    app_probe_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Lease(Base):
    """A named lock with an expiry: only one beat, one relay pass, one refresh at a time."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Shoe(Base):
    """A pair of shoes, with the distance at which the athlete wants a reminder.

    ``start_km``: what the pair had done before its first run here (bought used, worn before); it is part of
    every distance shown and reminded. ``in_use_from``: the athlete's local day from which the default pair
    counts runs (None for pairs older than the column: no bound). ``retired_at``: from then on the pair takes no
    run (None on a retired pair: none at all)."""

    __tablename__ = "shoes"
    __table_args__ = (UniqueConstraint("athlete_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    athlete_id: Mapped[int] = mapped_column(ForeignKey("athletes.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    strava_gear_id: Mapped[str | None] = mapped_column(String(32))
    remind_at_km: Mapped[float | None] = mapped_column(Float)
    retired: Mapped[bool] = mapped_column(Boolean, default=False)
    start_km: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    in_use_from: Mapped[date | None] = mapped_column(Date)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Cumulative foot load (reference steps, the runs' RunLoad.load) at which the pair is due: one alert.
    retire_at_load: Mapped[float | None] = mapped_column(Float)
