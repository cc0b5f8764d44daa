"""The one settings object: every knob of stridecare, read from ``STRIDECARE_*`` variables and the settings file.

Values come, in order of precedence, from explicit keyword arguments, ``STRIDECARE_*`` environment variables,
an optional env-style file named by ``STRIDECARE_CONFIG`` (or passed as ``config_file``), and the data home's
settings file ``stridecare.toml`` (``stridecare config set``). Every default works with no server installed:
SQLite in the data home and an in-process worker.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationInfo, create_model, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from stridecare.domain.load import LoadConstants, load_constants_from_settings
from stridecare.handles import check_handle


def _default_data_home() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "stridecare"


def _split_list(value: Any) -> Any:
    """Accept comma- or newline-separated lists as well as JSON arrays in environment variables."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]
    return value


# The field list is LoadConstants' own (names, types, defaults), so a constant is declared once, in the domain.
# mypy is shown the dataclass's attributes; at run time pydantic gets the same fields from ``create_model``.
if TYPE_CHECKING:

    class _LoadConstantFields(BaseSettings, LoadConstants):
        """The constants as settings fields (static view)."""

else:
    _constant_types = get_type_hints(LoadConstants)
    _LoadConstantFields = create_model(
        "_LoadConstantFields",
        __base__=BaseSettings,
        **{f.name: (_constant_types[f.name], f.default) for f in dataclasses.fields(LoadConstants)},
    )


class LoadModelSettings(_LoadConstantFields):
    """Constants of the foot-load model, one ``STRIDECARE_LOAD_<NAME>`` variable each (docs/foot-load-model.md).

    The fields are those of ``stridecare.domain.load.LoadConstants``, built from it with the same defaults; the
    frozen constants are built once per settings object (:attr:`constants`) and handed to the domain.
    """

    model_config = SettingsConfigDict(env_prefix="STRIDECARE_LOAD_", extra="ignore")

    @cached_property
    def constants(self) -> LoadConstants:
        """The model's frozen constants from these settings, built on first use and then shared."""
        return load_constants_from_settings(self)


SETTINGS_FILE = "stridecare.toml"  # in the data home; written by `stridecare config set`


def settings_file(data_home: Path) -> Path:
    """The settings file of the data home ``data_home``."""
    return data_home / SETTINGS_FILE


class DataHomeFileSource(PydanticBaseSettingsSource):
    """The data home's settings file (TOML, one ``name = value`` per setting, ``[load]`` for the model's
    constants), read by every process below the environment.

    The data home is the one setting the file cannot hold: it is found first, from the sources above this one
    (explicit values, the environment, the ``--config`` file) or the default."""

    def __init__(self, settings_cls: type[BaseSettings], above: tuple[PydanticBaseSettingsSource, ...]) -> None:
        super().__init__(settings_cls)
        self._above = above

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: :meth:`__call__` reads the whole file at once."""
        return None, field_name, False

    def data_home(self) -> Path:
        """The data home the sources above this one name, or the default."""
        for source in self._above:
            value = source().get("data_home")
            if value:
                return Path(value).expanduser()
        return _default_data_home()

    def __call__(self) -> dict[str, Any]:
        path = settings_file(self.data_home())
        if not path.is_file():
            return {}
        try:
            values = TomlConfigSettingsSource(self.settings_cls, toml_file=path)()
        except ValueError as exc:  # tomllib.TOMLDecodeError: say which file, and where
            raise ValueError(f"settings file {path}: {exc}") from None
        values.pop("data_home", None)
        if isinstance(values.get("load"), dict):
            # A [load] table is one value for the nested settings: its STRIDECARE_LOAD_* variables, read by the
            # nested object itself, must still win over it.
            from_env = LoadModelSettings()
            values["load"] = {**values["load"], **{k: getattr(from_env, k) for k in from_env.model_fields_set}}
        return values


class Settings(BaseSettings):
    """Everything configurable. Pass this object explicitly; nothing reads the environment behind your back.

    Precedence: explicit values, ``STRIDECARE_*`` environment variables, the ``--config`` env-style file, the
    data home's settings file (:data:`SETTINGS_FILE`), the defaults."""

    model_config = SettingsConfigDict(
        env_prefix="STRIDECARE_", env_file_encoding="utf-8", extra="ignore", env_nested_delimiter="__"
    )

    # Where the embedded default keeps its database, broker file, inbox and quarantine.
    data_home: Path = Field(default_factory=_default_data_home)
    database_url: str | None = None
    # None means embedded: a real Celery worker in-process on a SQLite broker file (no server to install).
    broker_url: str | None = None
    # Redis visibility timeout must exceed the longest task (see ARCHITECTURE.md, "Celery on Redis").
    broker_visibility_timeout_s: int = 3600

    # Watched folders, each "path" (for the default athlete) or "athlete=path".
    inboxes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    quarantine_dir: Path | None = None
    default_athlete: str = "me"
    max_file_mb: float = 64.0
    # A Strava export whose activities.csv has more rows is refused whole, before any is stored: it bounds an
    # import's time (a manual entry costs a few milliseconds to store; bench/bench_strava_export.py).
    export_max_rows: int = Field(default=50_000, ge=1)
    # A file whose content does not prove it whole (a FIT file's sizes and CRCs do) is read only after its
    # size and modification time held still this long.
    settle_seconds: float = 2.0
    # A watched file that fails to decode is quarantined only once it has not changed for this long; before
    # that its writer may simply not be done, and it is read again.
    hold_still_seconds: float = 30.0
    # Every untrusted file is decoded in a child process with these limits (address space, CPU, wall clock).
    decode_memory_mb: int = 512
    decode_cpu_seconds: int = 60
    decode_timeout_s: float = 120.0
    rescan_interval_s: float = 60.0
    import_workers: int = Field(default_factory=lambda: os.cpu_count() or 1)

    # Prompts
    fresh_window_hours: float = 24.0
    relay_interval_s: float = 5.0
    # A claimed delivery whose worker died is sent again after this long (longer than any send attempt).
    delivery_claim_s: float = 120.0
    # A delivery handed to the broker is handed again after this long if nobody claimed it (a lost message).
    redispatch_after_s: float = 60.0
    # The beat's tick finishes an athlete's stale mark that neither a store nor a replan chunk touched for this
    # long (its replan lost with the broker, or its task failed): ``workers.periodic.finish_stale_marks``. The
    # default is the planner's own stall limit, ``stridecare.db.marks.REPLAN_STALL_S``.
    replan_stall_s: float = Field(default=30.0, gt=0)
    default_timezone: str = "UTC"

    # Email
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_ca_file: Path | None = None
    smtp_timeout_s: float = 20.0
    mail_from: str = "stridecare <stridecare@localhost>"

    # Outgoing webhooks
    webhook_allowed_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_timeout_s: float = 10.0
    webhook_max_response_bytes: int = 65536
    # Apprise schemes allowed for --push although their traffic does not go through the guarded resolver
    # (rsyslog, syslog, mqtt, desktop notifiers …): refused unless listed here, e.g. "rsyslog,mqtt".
    push_unguarded_schemes: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Home Assistant over MQTT (the `mqtt` extra; docs/home-assistant.md): mqtt://user:pass@host:1883, or
    # mqtts:// for TLS. Unset: nothing is published.
    mqtt_url: SecretStr | None = None
    mqtt_discovery_prefix: str = "homeassistant"
    # Our own topics (states, events, availability) live under this one.
    mqtt_base_topic: str = "stridecare"

    # Web
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    # The address people's browsers reach the web app at (links in prompts); default: http://WEB_HOST:WEB_PORT.
    public_url: str | None = None
    # When set, /metrics also answers a scraper that sends it as a bearer token (an admin session always may).
    metrics_token: SecretStr | None = None
    # Reverse proxies whose X-Forwarded-For/-Proto/-Host are believed (IPs or CIDRs, comma-separated); from
    # anyone else those headers are ignored. Empty: no proxy is trusted.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Signs "done" links and unsubscribe links; generated into the data home when unset.
    secret_key: SecretStr | None = None
    # Fernet keys for tokens at rest, newest first; generated into the data home when unset.
    encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # Strava
    strava_client_id: str | None = None
    strava_client_secret: SecretStr | None = None
    strava_base_url: str = "https://www.strava.com"
    strava_verify_token: SecretStr | None = None
    strava_subscription_id: int | None = None
    strava_streams_days: int = 42
    strava_refresh_margin_s: int = 300
    # The API host, apart from the OAuth host above: Strava moves the API to https://api-v3.strava.com (no
    # /api/v3 prefix; available from 2027-01-04). Unset: STRAVA_BASE_URL + "/api/v3".
    strava_api_url: str | None = None
    # Revoke access with POST /oauth/revoke (client credentials, available now) instead of /oauth/deauthorize
    # (retired by Strava on 2027-06-01).
    strava_use_revoke: bool = False
    # A create event makes the athlete's recent-activities list due, at most once per this many seconds: a burst
    # of events (or a forged flood) costs one list request per athlete per interval.
    strava_list_interval_s: int = Field(default=120, ge=10)
    # Requests of each rate-limit window that update and delete checks leave for new runs.
    strava_event_reserve: int = Field(default=10, ge=0)

    # Connectors (accounts runs are pulled from: docs/connectors.md)
    intervals_base_url: str = "https://intervals.icu"
    # The beat asks every connected account this often, give or take a fifth (jitter).
    connector_poll_interval_s: float = 900.0
    connector_timeout_s: float = 30.0
    # Garmin blocks accounts that download fast: at most this many originals an hour per account.
    garmin_downloads_per_hour: int = 25

    # Simulation clock: when set, "now" is read from this file (an ISO 8601 timestamp). For demos that replay
    # weeks of runs in minutes and for end-to-end tests; leave unset in real use.
    clock_file: Path | None = None

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_json: bool = False

    load: LoadModelSettings = Field(default_factory=LoadModelSettings)

    @field_validator("inboxes", "webhook_allowed_networks", "push_unguarded_schemes", "trusted_proxies", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("smtp_security", "log_level", mode="before")
    @classmethod
    def _choice(cls, value: Any, info: ValidationInfo) -> Any:
        # Spelling is forgiven ("SSL", " info "); a value outside the allowed set is refused at start, with
        # the allowed values in the message, instead of failing at the first send.
        if not isinstance(value, str):
            return value
        text = value.strip()
        return text.upper() if info.field_name == "log_level" else text.lower()

    @field_validator("default_athlete")
    @classmethod
    def _handle(cls, value: str) -> str:
        return check_handle(value)

    @field_validator("inboxes")
    @classmethod
    def _inbox_handles(cls, value: list[str]) -> list[str]:
        for item in value:
            athlete, sep, _ = item.partition("=")
            if sep and athlete.strip():
                check_handle(athlete.strip())
        return value

    @field_validator("default_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as 'Europe/Berlin'") from None
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is no IP address or network; use e.g. 127.0.0.1 or 10.0.0.0/8") from None
        return value

    @field_validator("encryption_keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        return _split_list(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The data home's settings file below the environment and the ``--config`` file."""
        above = (init_settings, env_settings, dotenv_settings)
        return (*above, DataHomeFileSource(settings_cls, above), file_secret_settings)

    # -- derived values -------------------------------------------------------------------------------------

    @property
    def effective_database_url(self) -> str:
        """The configured database URL, or the embedded SQLite file in the data home."""
        return self.database_url or f"sqlite:///{self.data_home / 'stridecare.db'}"

    @property
    def embedded(self) -> bool:
        """True when no broker server is configured: the worker runs in-process on a SQLite broker file."""
        return not self.broker_url

    @property
    def effective_broker_url(self) -> str:
        """The broker URL Celery connects to; a SQLite file in the data home for the embedded default."""
        return self.broker_url or f"sqla+sqlite:///{self.data_home / 'broker.db'}"

    @property
    def effective_quarantine_dir(self) -> Path:
        """Where damaged files are moved, each with a ``.reason.txt`` beside it."""
        return self.quarantine_dir or self.data_home / "quarantine"

    @property
    def effective_public_url(self) -> str:
        """Base URL for links in prompts."""
        return (self.public_url or f"http://{self.web_host}:{self.web_port}").rstrip("/")

    @property
    def max_file_bytes(self) -> int:
        """The size cap for one imported file, in bytes."""
        return int(self.max_file_mb * 1024 * 1024)

    def inbox_map(self) -> list[tuple[str, Path]]:
        """Watched folders as ``(athlete, path)`` pairs; the data home's inbox when none is configured."""
        pairs: list[tuple[str, Path]] = []
        for item in self.inboxes or [str(self.data_home / "inbox")]:
            athlete, sep, path = item.partition("=")
            if not sep:
                athlete, path = self.default_athlete, item
            pairs.append((athlete.strip() or self.default_athlete, Path(path.strip()).expanduser()))
        return pairs


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from explicit overrides, the environment, an optional env-style file and the data
    home's settings file, in that order of precedence."""
    config = config_file or os.environ.get("STRIDECARE_CONFIG")
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"settings file not found: {path}")
        return Settings(_env_file=path, **overrides)
    return Settings(**overrides)


def _sources_above_the_file(config_file: str | Path | None) -> tuple[PydanticBaseSettingsSource, ...]:
    config = config_file or os.environ.get("STRIDECARE_CONFIG")
    env = EnvSettingsSource(Settings)
    return (env, DotEnvSettingsSource(Settings, env_file=Path(config))) if config else (env,)


def settings_file_location(config_file: str | Path | None = None) -> Path:
    """Where the data home's settings file is for this environment, found without reading it (so that a file
    that does not parse can still be repaired with ``stridecare config``)."""
    return settings_file(DataHomeFileSource(Settings, _sources_above_the_file(config_file)).data_home())


def set_above_the_file(config_file: str | Path | None = None) -> dict[str, str]:
    """The settings the environment (or the ``--config`` file) sets, which win over the data home's file:
    ``{"smtp_port": "STRIDECARE_SMTP_PORT", "load.default_mass_kg": "STRIDECARE_LOAD_DEFAULT_MASS_KG"}``."""
    found: dict[str, str] = {}
    for source in _sources_above_the_file(config_file):
        for name, value in source().items():
            if name == "load" and isinstance(value, dict):
                found |= {f"load.{k}": f"STRIDECARE_LOAD__{k.upper()}" for k in value}
            else:
                found[name] = f"STRIDECARE_{name.upper()}"
    found |= {f"load.{k}": f"STRIDECARE_LOAD_{k.upper()}" for k in LoadModelSettings().model_fields_set}
    return found


def known_variables() -> set[str]:
    """Every environment variable the settings read, for validating deployment files."""
    names = {f"STRIDECARE_{name.upper()}" for name in Settings.model_fields if name != "load"}
    names |= {f"STRIDECARE_LOAD_{name.upper()}" for name in LoadModelSettings.model_fields}
    names.add("STRIDECARE_CONFIG")
    return names
