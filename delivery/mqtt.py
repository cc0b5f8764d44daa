"""Home Assistant over MQTT: discovery sensors per athlete, their states, and an event per prompt.

Optional (``pip install 'stridecare[mqtt]'``, paho-mqtt): nothing here runs unless ``STRIDECARE_MQTT_URL`` is
set. What is published (``docs/home-assistant.md``):

* ``<prefix>/sensor/<node>/<object>/config``: one discovery config per sensor (retained, so Home Assistant finds
  them whenever it starts), each with ``unique_id``, the athlete's ``device`` and the shared ``availability``;
  an empty retained config removes a sensor (a retired pair).
* ``<base>/<node>/state``: one retained JSON object with every sensor's value (``value_template`` picks each).
* ``<prefix>/event/<node>/prompt/config`` and ``<base>/<node>/prompt``: an MQTT event entity, one event per
  prompt, *not* retained (a retained event would fire again on every reconnect).
* ``<base>/status``: ``online`` (retained) on connect, ``offline`` as the last will.

The client reconnects by itself (paho's network thread, 1 to 60 s between attempts) and republishes every
retained message it holds on each connect and whenever Home Assistant announces itself on ``<prefix>/status``,
so a broker restart or a Home Assistant restart loses nothing. Retained messages go at QoS 0 on purpose: paho
sends a QoS 1 message that was in flight when the connection broke again *after* the reconnect, where it would
overwrite the newer value just republished; the republish on every connect is what makes them reliable. The
broker password never reaches a log: only :meth:`BrokerAddress.display` is ever shown.

This module knows topics and payloads only; the figures come from ``recommender.home_assistant``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from stridecare.crypto import Vault
from stridecare.db.models import Athlete
from stridecare.plugins import ChannelOptions, DeliveryOutcome, OutgoingMessage, SettingsChannel, Target
from stridecare.settings import Settings

if TYPE_CHECKING:
    import paho.mqtt.client as paho

log = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"
EVENT_TYPES = ("post_run", "weekly_balance", "shoe", "digest")
_SLUG = re.compile(r"[^a-z0-9_]+")


class MqttUnavailable(RuntimeError):
    """The ``mqtt`` extra is not installed, or the broker URL is not one we take; the message says which."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """``STRIDECARE_MQTT_URL`` taken apart: ``mqtt://user:pass@host:1883`` or ``mqtts://…`` (TLS, port 8883)."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse the URL; a bad one raises :class:`MqttUnavailable` with a message that holds no password."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise MqttUnavailable(f"STRIDECARE_MQTT_URL is not a URL ({exc})") from None
        if parts.scheme not in ("mqtt", "mqtts"):
            raise MqttUnavailable(
                f"STRIDECARE_MQTT_URL takes mqtt:// or mqtts:// (got {parts.scheme or 'no'} scheme), "
                "e.g. mqtt://user:pass@homeassistant.local:1883"
            )
        if not parts.hostname:
            raise MqttUnavailable("STRIDECARE_MQTT_URL names no host, e.g. mqtt://homeassistant.local:1883")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def display(self) -> str:
        """The address as logs show it: the user, never the password."""
        who = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{who}{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SensorValue:
    """One Home Assistant sensor of an athlete: its object id, name, unit and the value now (None: unknown)."""

    object_id: str
    name: str
    value: float | int | str | None
    unit: str | None = None
    icon: str = "mdi:shoe-print"
    numeric: bool = True  # a measurement (state_class) or a text


@dataclass(frozen=True, slots=True)
class AthleteFigures:
    """What Home Assistant shows of one athlete. ``removed`` names sensors to take away (retired pairs)."""

    athlete_id: int
    name: str
    sensors: tuple[SensorValue, ...]
    removed: tuple[str, ...] = ()
    link_url: str | None = None


def node_id(athlete_id: int) -> str:
    """The discovery node of an athlete: stable across renames (the id, not the handle)."""
    return f"stridecare_athlete_{athlete_id}"


def object_slug(text: str) -> str:
    """A discovery object id from any text: lower case, ``[a-z0-9_]``."""
    return _SLUG.sub("_", text.lower()).strip("_") or "x"


@dataclass(frozen=True, slots=True)
class Topics:
    """Where things go, from the discovery prefix and our base topic."""

    prefix: str = "homeassistant"
    base: str = "stridecare"

    @property
    def availability(self) -> str:
        return f"{self.base}/status"

    @property
    def ha_status(self) -> str:
        return f"{self.prefix}/status"

    def state(self, node: str) -> str:
        return f"{self.base}/{node}/state"

    def events(self, node: str) -> str:
        return f"{self.base}/{node}/prompt"

    def sensor_config(self, node: str, object_id: str) -> str:
        return f"{self.prefix}/sensor/{node}/{object_id}/config"

    def event_config(self, node: str) -> str:
        return f"{self.prefix}/event/{node}/prompt/config"


def _device(figures: AthleteFigures) -> dict[str, Any]:
    device: dict[str, Any] = {
        "identifiers": [node_id(figures.athlete_id)],
        "name": f"stridecare {figures.name}",
        "manufacturer": "stridecare",
        "model": "foot-load and foot-care prompts",
    }
    if figures.link_url:
        device["configuration_url"] = figures.link_url
    return device


def discovery_messages(topics: Topics, figures: AthleteFigures) -> list[tuple[str, str]]:
    """Every retained (topic, payload) for one athlete: sensor configs, the removed ones' empty configs, the
    event entity's config and the state object. Pure: the same figures give the same messages."""
    node = node_id(figures.athlete_id)
    device = _device(figures)
    availability = {"availability_topic": topics.availability, "payload_available": ONLINE,
                    "payload_not_available": OFFLINE}  # fmt: skip
    out: list[tuple[str, str]] = []
    for sensor in figures.sensors:
        config: dict[str, Any] = {
            "name": sensor.name,
            "unique_id": f"{node}_{sensor.object_id}",
            "object_id": f"stridecare_{object_slug(figures.name)}_{sensor.object_id}",
            "state_topic": topics.state(node),
            "value_template": f"{{{{ value_json.{sensor.object_id} }}}}",
            "icon": sensor.icon,
            "device": device,
            **availability,
        }
        if sensor.unit:
            config["unit_of_measurement"] = sensor.unit
        if sensor.numeric:
            config["state_class"] = "measurement"
        out.append((topics.sensor_config(node, sensor.object_id), json.dumps(config, sort_keys=True)))
    for object_id in figures.removed:
        out.append((topics.sensor_config(node, object_id), ""))
    event = {
        "name": "Prompt",
        "unique_id": f"{node}_prompt",
        "object_id": f"stridecare_{object_slug(figures.name)}_prompt",
        "state_topic": topics.events(node),
        "event_types": list(EVENT_TYPES),
        "icon": "mdi:foot-print",
        "device": device,
        **availability,
    }
    out.append((topics.event_config(node), json.dumps(event, sort_keys=True)))
    # HA reads "None" as unknown: a sensor without a value yet shows as unknown, not as 0.
    state = {s.object_id: ("None" if s.value is None else s.value) for s in figures.sensors}
    out.append((topics.state(node), json.dumps(state, sort_keys=True)))
    return out


def event_payload(message: OutgoingMessage) -> dict[str, Any]:
    """The event of one prompt: its kind as ``event_type`` and its notification form (no raw source data)."""
    data = message.payload.get("data", {}) if isinstance(message.payload, dict) else {}
    kind = str(data.get("kind") or ("digest" if message.payload.get("type") == "digest.created" else "post_run"))
    return {
        "event_type": kind if kind in EVENT_TYPES else "post_run",
        "prompt_id": message.prompt_id,
        "message_id": message.message_id,  # the same on a retry: an automation can deduplicate on it
        "athlete": message.athlete_name,
        "subject": message.subject,
        "summary": message.summary or message.subject,
        "link_url": message.link_url,
        "created_at": message.created_at.isoformat(),
    }


class MqttPublisher:
    """One connection to the broker for this process, reconnecting by itself.

    Retained messages are kept (the latest per topic) and sent again on every connect and when Home Assistant
    comes online, so what the broker holds is always the latest even across restarts of either side.
    """

    def __init__(self, address: BrokerAddress, topics: Topics, *, client_id: str | None = None) -> None:
        """Start connecting in the background (never blocks: a broker that is down is retried, 1 to 60 s)."""
        try:
            import paho.mqtt.client as mqtt  # deferred: optional extra (stridecare[mqtt])
            from paho.mqtt.enums import CallbackAPIVersion
        except ImportError:
            raise MqttUnavailable("MQTT needs the mqtt extra: pip install 'stridecare[mqtt]'") from None
        self.address = address
        self.topics = topics
        self._retained: dict[str, str] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        cid = client_id or f"stridecare-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._client: paho.Client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid)
        if address.username:
            self._client.username_pw_set(address.username, address.password)
        if address.tls:
            self._client.tls_set_context(ssl.create_default_context())
        self._client.will_set(topics.availability, OFFLINE, qos=1, retain=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=60)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.connect_async(address.host, address.port, keepalive=30)
        self._client.loop_start()
        log.info("MQTT: publishing to %s (discovery prefix %s)", address.display(), topics.prefix)

    # -- callbacks (paho's network thread) ----------------------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            # Wrong credentials or a refusal: paho tries again; say why once per attempt, without the password.
            log.warning("MQTT: %s refused the connection: %s", self.address.display(), reason)
            return
        client.subscribe(self.topics.ha_status, qos=1)
        client.publish(self.topics.availability, ONLINE, qos=0, retain=True)
        self._republish()
        self._connected.set()
        log.info("MQTT: connected to %s", self.address.display())

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected.clear()
        if getattr(reason, "is_failure", False):
            log.warning("MQTT: lost %s (%s); reconnecting", self.address.display(), reason)

    def _on_message(self, client: paho.Client, userdata: Any, message: Any) -> None:
        # Home Assistant's birth message: it may have lost what it knew, so say it all again.
        if message.topic == self.topics.ha_status and message.payload == ONLINE.encode():
            self._republish()

    def _republish(self) -> None:
        # Under the lock, as publish_athlete sends: an older value can never go out after a newer one.
        with self._lock:
            for topic, payload in self._retained.items():
                self._client.publish(topic, payload, qos=0, retain=True)

    # -- publishing -----------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the broker has accepted our connection."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the connection; True when connected."""
        return self._connected.wait(timeout)

    def publish_athlete(self, figures: AthleteFigures) -> int:
        """Publish (retained) the athlete's discovery configs and states; kept and sent again on reconnect.
        Returns the number of messages. Never blocks: while the broker is away they wait for the connection."""
        messages = discovery_messages(self.topics, figures)
        with self._lock:
            for topic, payload in messages:
                if payload:
                    self._retained[topic] = payload
                else:
                    self._retained.pop(topic, None)
            if self.connected:
                self._client.publish(self.topics.availability, ONLINE, qos=0, retain=True)
                for topic, payload in messages:
                    self._client.publish(topic, payload, qos=0, retain=True)
        return len(messages)

    def publish_event(self, athlete_id: int, event: dict[str, Any], timeout: float = 10.0) -> DeliveryOutcome:
        """Send one event (not retained) and wait for the broker's acknowledgement."""
        if not self.wait_connected(min(timeout, 5.0)):
            return DeliveryOutcome(ok=False, retry=True, detail=f"not connected to {self.address.display()}")
        info = self._client.publish(self.topics.events(node_id(athlete_id)), json.dumps(event), qos=1, retain=False)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            return DeliveryOutcome(ok=False, retry=True, detail=f"MQTT publish failed: {exc}")
        if not info.is_published():
            return DeliveryOutcome(ok=False, retry=True, detail=f"no acknowledgement from {self.address.display()}")
        return DeliveryOutcome(ok=True, retry=False, detail=f"event on {self.topics.events(node_id(athlete_id))}")

    def close(self) -> None:
        """Say offline and disconnect (a clean stop; a crash leaves the same through the last will)."""
        if self.connected:
            self._client.publish(self.topics.availability, OFFLINE, qos=1, retain=True).wait_for_publish(2.0)
        self._client.disconnect()
        self._client.loop_stop()


_publishers: dict[tuple[str, str, str, int], MqttPublisher] = {}
_publishers_lock = threading.Lock()


def publisher_for(settings: Settings) -> MqttPublisher | None:
    """This process's publisher for the configured broker (built on first use), or None when MQTT is off.

    Built lazily, so a forked worker child gets its own connection and network thread."""
    if settings.mqtt_url is None:
        return None
    url = settings.mqtt_url.get_secret_value()
    key = (url, settings.mqtt_discovery_prefix, settings.mqtt_base_topic, os.getpid())
    with _publishers_lock:
        publisher = _publishers.get(key)
        if publisher is None:
            topics = Topics(prefix=settings.mqtt_discovery_prefix, base=settings.mqtt_base_topic)
            publisher = _publishers[key] = MqttPublisher(BrokerAddress.parse(url), topics)
        return publisher


def close_publishers() -> None:
    """Close every publisher of this process (a clean shutdown; tests)."""
    with _publishers_lock:
        held = [p for (_, _, _, pid), p in _publishers.items() if pid == os.getpid()]
        _publishers.clear()
    for publisher in held:
        publisher.close()


class MqttOptions(ChannelOptions):
    """Whether an athlete's prompts become Home Assistant events; on unless turned off."""

    enabled: bool = True


class MqttChannel(SettingsChannel):
    """Each prompt becomes an event of the athlete's Home Assistant event entity (when MQTT is configured)."""

    name = "mqtt"
    address_key = ""  # no address: the broker is the operator's, one for everyone
    options_schema = MqttOptions

    def wants(self, athlete: Athlete) -> bool:
        """Every athlete while ``STRIDECARE_MQTT_URL`` is set, unless they turned it off
        (``--channel mqtt.enabled=false``)."""
        return self.settings.mqtt_url is not None and bool(self.options(athlete).get("enabled", True))

    def target(self, athlete: Athlete, vault: Vault) -> Target:
        """The athlete's event topic (the broker is the operator's)."""
        topics = Topics(prefix=self.settings.mqtt_discovery_prefix, base=self.settings.mqtt_base_topic)
        return Target(f"{athlete.id}:{topics.events(node_id(athlete.id))}")

    def send(self, message: OutgoingMessage, target: str, secret: str | None = None) -> DeliveryOutcome:
        """Publish the prompt's event; a broker that is away is retried on the outbox's schedule."""
        try:
            publisher = publisher_for(self.settings)
        except MqttUnavailable as exc:
            return DeliveryOutcome(ok=False, retry=False, detail=str(exc))
        if publisher is None:
            return DeliveryOutcome(ok=False, retry=False, detail="STRIDECARE_MQTT_URL is not set any more")
        athlete_id = int(target.split(":", 1)[0])
        return publisher.publish_event(athlete_id, event_payload(message))
