"""Home Assistant over MQTT, against the real Mosquitto broker on 127.0.0.1:1883 (and a private one for the
reconnect): discovery configs per athlete with unique_id, device and availability, retained where Home Assistant
expects it; the states equal the dashboard's figures; a prompt becomes a non-retained event through the outbox;
the worker of `stridecare run` publishes after a replan without ever logging the broker password; the publisher
comes back by itself after the broker restarts; Home Assistant's birth message brings everything again."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from factories import parsed_run, store_runs
from harness import processes, settings_env, stridecare, wait_for
from sqlalchemy import select

from delivery.mqtt import (
    BrokerAddress,
    MqttChannel,
    MqttPublisher,
    MqttUnavailable,
    Topics,
    close_publishers,
    node_id,
)
from recommender.home_assistant import athlete_figures, publish_figures
from recommender.status import athlete_status
from stridecare.db.models import Athlete, Delivery, FeelScore, Prompt, Run, Shoe
from stridecare.domain.history import local_day
from stridecare.runtime import Runtime

mqtt = pytest.importorskip("paho.mqtt.client", reason="the mqtt extra (paho-mqtt) is not installed")
CallbackAPIVersion = pytest.importorskip("paho.mqtt.enums").CallbackAPIVersion

BROKER = ("127.0.0.1", 1883)
PASSWORD = "s3cr3t-Pa55"  # the test brokers take anyone: the point is that it never shows


def broker_up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


needs_broker = pytest.mark.skipif(not broker_up(*BROKER), reason="no MQTT broker on 127.0.0.1:1883")


class Listener:
    """A subscriber that keeps the last message per topic (payload, retained flag) and every message seen."""

    def __init__(self, port: int, *patterns: str) -> None:
        self.last: dict[str, tuple[str, bool]] = {}
        self.seen: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"listener-{uuid.uuid4().hex[:8]}")

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            for pattern in patterns:
                client.subscribe(pattern, qos=1)
            self._ready.set()

        def on_message(client: Any, userdata: Any, message: Any) -> None:
            with self._lock:
                text = message.payload.decode()
                self.last[message.topic] = (text, bool(message.retain))
                self.seen.append((message.topic, text, bool(message.retain)))

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._ready.wait(10), "the listener did not connect"

    def json(self, topic: str) -> dict[str, Any]:
        return dict(json.loads(self.last[topic][0]))

    def has(self, *topics: str) -> bool:
        with self._lock:
            return all(t in self.last for t in topics)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def clear_retained(port: int, listener: Listener) -> None:
    """Leave the shared broker as it was: an empty retained message removes each topic we retained."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for topic, (_, retained) in list(listener.last.items()):
        if retained or "/config" in topic or topic.endswith(("/state", "/status")):
            client.publish(topic, "", qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def topics() -> Iterator[Topics]:
    tag = uuid.uuid4().hex[:10]
    yield Topics(prefix=f"test-ha-{tag}", base=f"test-sc-{tag}")
    close_publishers()


def mqtt_settings(tmp_path: Path, topics: Topics, port: int = 1883, **more: Any) -> Any:
    return make_settings(
        tmp_path,
        mqtt_url=f"mqtt://stridecare:{PASSWORD}@127.0.0.1:{port}",
        mqtt_discovery_prefix=topics.prefix,
        mqtt_base_topic=topics.base,
        **more,
    )


# -- the broker URL --------------------------------------------------------------------------------------------


def test_broker_url_forms_and_the_password_never_shown() -> None:
    plain = BrokerAddress.parse("mqtt://ha:p%40ss@broker.lan")
    assert (plain.host, plain.port, plain.tls, plain.username, plain.password) == (
        "broker.lan",
        1883,
        False,
        "ha",
        "p@ss",
    )
    secure = BrokerAddress.parse("mqtts://broker.lan")
    assert (secure.port, secure.tls, secure.username) == (8883, True, None)
    assert BrokerAddress.parse("mqtt://127.0.0.1:1884").port == 1884
    assert (
        "p@ss" not in plain.display() and "p@ss" not in repr(plain) and plain.display() == "mqtt://ha@broker.lan:1883"
    )
    for bad, said in (
        ("http://u:hunter2@h", "takes mqtt:// or mqtts://"),
        ("mqtt://u:hunter2@:1883", "names no host"),
        ("mqtt://u:hunter2@h:99999", "is not a URL"),
    ):
        with pytest.raises(MqttUnavailable, match=said) as caught:
            BrokerAddress.parse(bad)
        assert "hunter2" not in str(caught.value)


# -- discovery and states -----------------------------------------------------------------------------------


@needs_broker
def test_discovery_configs_and_states_are_retained_and_match_the_dashboard(
    rt: Runtime, tmp_path: Path, topics: Topics
) -> None:
    now = datetime.now(UTC)
    store_runs(
        rt.db, rt.settings, "anna", [parsed_run(now - timedelta(days=d, hours=3), key=f"r{d}") for d in (0, 3)], now
    )
    with rt.db.transaction() as s:
        anna = s.scalars(select(Athlete).where(Athlete.name == "anna")).one()
        s.add_all(
            [
                Shoe(athlete_id=anna.id, name="Road 1", start_km=100.0),
                Shoe(athlete_id=anna.id, name="Old", retired=True),
            ]
        )
        anna_id = anna.id
        s.flush()
    with rt.db.transaction() as s:  # the runs on the new pair (by hand: the pair came after them)
        road = s.scalars(select(Shoe).where(Shoe.name == "Road 1")).one()
        for run in s.scalars(select(Run).where(Run.athlete_id == anna_id)):
            run.shoe_id = road.id
    with rt.db.transaction() as s:  # how the feet felt today, and a higher score two days ago
        today = local_day(now, "UTC")
        s.add_all(
            [
                FeelScore(athlete_id=anna_id, day=today, score=6),
                FeelScore(athlete_id=anna_id, day=today - timedelta(days=2), score=9),
            ]
        )
    settings = mqtt_settings(tmp_path, topics)
    assert publish_figures(rt.db, settings, anna_id, now)

    node = node_id(anna_id)
    with rt.db.read() as s:
        shoes = {sh.name: sh.id for sh in s.scalars(select(Shoe))}
        who = s.get_one(Athlete, anna_id)
        status = athlete_status(s, rt.settings, who, now)
        figures = athlete_figures(s, rt.settings, who, now)
    sensors = ["acute_load", "chronic_load", "acwr", "latest_flag", "next_routine", "discomfort_today"]
    sensors.append(f"shoe_{shoes['Road 1']}_km")
    configs = [topics.sensor_config(node, o) for o in sensors]
    everything = [*configs, topics.state(node), topics.event_config(node), topics.availability]
    first = Listener(1883, f"{topics.prefix}/#", f"{topics.base}/#")
    wait_for(lambda: first.has(*everything), timeout=15, what="the discovery messages")
    first.stop()
    # A subscriber arriving once they are out (Home Assistant starting later) still gets them all: retained.
    listener = Listener(1883, f"{topics.prefix}/#", f"{topics.base}/#")
    try:
        wait_for(lambda: listener.has(*everything), timeout=15, what="the retained discovery messages")
        for topic in everything:
            assert listener.last[topic][1], f"{topic} is not retained"
        assert listener.last[topics.availability][0] == "online"
        acute = listener.json(topics.sensor_config(node, "acute_load"))
        assert acute["unique_id"] == f"{node}_acute_load" and acute["state_topic"] == topics.state(node)
        assert acute["value_template"] == "{{ value_json.acute_load }}" and acute["state_class"] == "measurement"
        assert acute["device"]["identifiers"] == [node] and acute["device"]["name"] == "stridecare anna"
        assert acute["availability_topic"] == topics.availability and acute["payload_available"] == "online"
        assert "state_class" not in listener.json(topics.sensor_config(node, "latest_flag"))
        event = listener.json(topics.event_config(node))
        assert event["state_topic"] == topics.events(node) and "post_run" in event["event_types"]
        # the retired pair has no sensor
        assert topics.sensor_config(node, f"shoe_{shoes['Old']}_km") not in listener.last
        state = listener.json(topics.state(node))
        assert state["acute_load"] == status["acute_load"] > 0 and state["chronic_load"] == status["chronic_load"]
        assert state["acwr"] == ("None" if status["acwr"] is None else status["acwr"])
        assert state[f"shoe_{shoes['Road 1']}_km"] == pytest.approx(100 + 8.1 * 2, abs=0.1)
        assert state["discomfort_today"] == 6  # today's score, as the athlete gave it
        assert state["next_routine"] != "none" and state == {
            s.object_id: ("None" if s.value is None else s.value) for s in figures.sensors
        }
    finally:
        clear_retained(1883, listener)
        listener.stop()


@needs_broker
def test_a_prompt_is_one_non_retained_event_through_the_outbox(rt: Runtime, tmp_path: Path, topics: Topics) -> None:
    from delivery.outbox import deliver_one
    from recommender.messages import build_message

    settings = mqtt_settings(tmp_path, topics)
    rt_mqtt = Runtime(settings=settings, db=rt.db)
    now = rt.now()
    store_runs(rt.db, settings, "anna", [parsed_run(now - timedelta(hours=2), key="fresh")], now)
    with rt.db.read() as s:
        prompt = s.scalars(select(Prompt).where(Prompt.kind == "post_run")).one()
        rows = {d.channel: d.id for d in s.scalars(select(Delivery).where(Delivery.prompt_id == prompt.id))}
        athlete_id = prompt.athlete_id
    assert "mqtt" in rows  # one outbox row for the channel, written with the prompt
    listener = Listener(1883, f"{topics.base}/#")
    try:
        deliver_one(rt_mqtt, rows["mqtt"], build_message)
        topic = topics.events(node_id(athlete_id))
        wait_for(lambda: listener.has(topic), timeout=15, what="the prompt's event")
        payload, retained = listener.last[topic]
        event = json.loads(payload)
        assert not retained and event["event_type"] == "post_run" and event["prompt_id"] == prompt.id
        assert event["summary"] and event["link_url"]
        with rt.db.read() as s:
            assert s.get_one(Delivery, rows["mqtt"]).status == "sent"
        deliver_one(rt_mqtt, rows["mqtt"], build_message)  # a redelivered task sends nothing twice
        late = Listener(1883, f"{topics.base}/#")  # an event is never replayed to a later subscriber
        try:
            assert topic not in late.last and [t for t, *_ in listener.seen].count(topic) == 1
        finally:
            late.stop()
    finally:
        listener.stop()
    # an athlete may turn it off
    with rt.db.transaction() as s:
        anna = s.get_one(Athlete, athlete_id)
        assert MqttChannel(settings).wants(anna)
        anna.channel_settings = {**anna.channel_settings, "mqtt": {"enabled": False}}
        assert not MqttChannel(settings).wants(anna)
        assert not MqttChannel(make_settings(tmp_path)).wants(anna)  # no broker configured: no row at all


@needs_broker
@pytest.mark.slow
def test_the_worker_publishes_after_a_replan_and_never_logs_the_password(tmp_path: Path, topics: Topics) -> None:
    from fitgen import write_activity

    settings = mqtt_settings(tmp_path, topics, web_port=_free_port(), log_level="DEBUG")  # every line it logs
    rt = Runtime.open(settings)
    listener = Listener(1883, f"{topics.prefix}/#", f"{topics.base}/#")
    worker = stridecare("run", ["run", "--no-web"], settings_env(settings), tmp_path / "logs")
    try:
        with processes(worker):
            inbox = Path(settings.inboxes[0])
            inbox.mkdir(parents=True, exist_ok=True)
            write_activity(inbox / "fresh.fit", start=datetime.now(UTC) - timedelta(hours=1), duration_s=1800)

            def published() -> dict[str, Any]:
                states = [t for t in listener.last if t.startswith(topics.base) and t.endswith("/state")]
                if not states:
                    return {}
                state = listener.json(states[0])
                return state if isinstance(state.get("acute_load"), (int, float)) and state["acute_load"] > 0 else {}

            state: dict[str, Any] = wait_for(published, timeout=120, what="the athlete's figures on the broker")
            wait_for(lambda: any(t.endswith("/prompt") and not r for t, _, r in listener.seen), timeout=60,
                     what="the prompt's event")  # fmt: skip
        with rt.db.read() as s:
            me = s.scalars(select(Athlete)).one()
            assert state["acute_load"] == athlete_status(s, settings, me, datetime.now(UTC))["acute_load"]
        assert PASSWORD not in worker.output()
        for written in settings.data_home.rglob("*.log"):
            assert PASSWORD not in written.read_text(errors="replace")
    finally:
        clear_retained(1883, listener)
        listener.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- reconnecting ---------------------------------------------------------------------------------------------


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[tuple[int, Any]]:
    """A Mosquitto of our own on a free port (no persistence), which the test may stop and start again."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        pytest.skip("no mosquitto binary to run a private broker")
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: broker_up("127.0.0.1", port), timeout=10, what="the private broker")

    def stop() -> None:
        procs[-1].terminate()
        procs[-1].wait(10)

    start()
    try:
        yield port, (start, stop)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)


def test_the_publisher_reconnects_and_republishes_after_the_broker_restarts(
    private_broker: tuple[int, Any], topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    from delivery.mqtt import AthleteFigures, SensorValue

    caplog.set_level(logging.DEBUG)

    port, (start, stop) = private_broker
    publisher = MqttPublisher(BrokerAddress.parse(f"mqtt://u:{PASSWORD}@127.0.0.1:{port}"), topics)
    try:
        assert publisher.wait_connected(10)
        figures = AthleteFigures(7, "anna", (SensorValue("acute_load", "Acute foot load", 812.0, "ref. steps/d"),))
        publisher.publish_athlete(figures)
        state_topic = topics.state(node_id(7))
        stop()  # the broker goes away, and with it every retained message (no persistence)
        wait_for(lambda: not publisher.connected, timeout=10, what="the publisher to notice")
        newer = AthleteFigures(7, "anna", (SensorValue("acute_load", "Acute foot load", 900.0, "ref. steps/d"),))
        publisher.publish_athlete(newer)  # while away: kept, not lost
        start()
        assert publisher.wait_connected(30)
        listener = Listener(port, f"{topics.prefix}/#", f"{topics.base}/#")
        try:
            wait_for(lambda: listener.has(state_topic, topics.sensor_config(node_id(7), "acute_load")), timeout=15,
                     what="the republished retained messages")  # fmt: skip
            assert listener.json(state_topic) == {"acute_load": 900.0}
            # Online again, and retained by the broker: a listener that subscribed while the publisher was still
            # republishing may have got it live (not flagged retained); one that subscribes now gets it retained.
            late = Listener(port, topics.availability)
            try:
                wait_for(lambda: late.has(topics.availability), timeout=10, what="the retained availability")
                assert late.last[topics.availability] == ("online", True)
            finally:
                late.stop()
            # Home Assistant's birth message: everything is said again (live, so not flagged retained)
            before = len(listener.seen)
            listener.client.publish(topics.ha_status, "online", qos=1).wait_for_publish(5)
            wait_for(lambda: any(t == state_topic for t, *_ in listener.seen[before:]), timeout=10,
                     what="the answer to Home Assistant's birth")  # fmt: skip
        finally:
            listener.stop()
    finally:
        publisher.close()
    said = caplog.text
    assert f"connected to mqtt://u@127.0.0.1:{port}" in said and "reconnecting" in said
    assert PASSWORD not in said


def test_a_dead_broker_costs_a_retry_not_a_hang(topics: Topics) -> None:
    port = _free_port()  # nobody listens here
    publisher = MqttPublisher(BrokerAddress.parse(f"mqtt://127.0.0.1:{port}"), topics)
    try:
        outcome = publisher.publish_event(1, {"event_type": "post_run"}, timeout=1.0)
        assert not outcome.ok and outcome.retry and "not connected" in outcome.detail
    finally:
        publisher.close()
