"""Shoes by foot load: each pair's cumulative load is its primary runs' ``RunLoad.load`` (the dashboard's
reference steps), a retirement threshold by km or by load gives one alert through the athlete's channels when
crossed (however often the athlete is planned again), thresholds can be changed later, the run page shows the
pair a run counts on, and revision 0019 goes down and up with SQLite's cascades armed without losing a run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from factories import parsed_run
from sqlalchemy import func, select
from test_shoes_life import NOV, cli, invoke, pairs, store
from webclient import admin

from recommender.messages import build_message
from stridecare.db.migrate import alembic_config
from stridecare.db.models import Athlete, Delivery, Prompt, Run, RunLoad, Shoe
from stridecare.runtime import Runtime
from stridecare_app.web.app import create_app


@pytest.fixture
def anna(rt: Runtime) -> Runtime:
    store(rt, parsed_run(NOV - timedelta(days=400), key="old"))  # creates anna; a run on no pair
    return rt


def load_of(rt: Runtime, shoe_name: str) -> float:
    """What the dashboard adds up: the load of the pair's primary runs, read straight from run_loads."""
    with rt.db.read() as s:
        total = s.scalar(
            select(func.sum(RunLoad.load))
            .join(Run, Run.id == RunLoad.run_id)
            .join(Shoe, Shoe.id == Run.shoe_id)
            .where(Shoe.name == shoe_name, Run.duplicate_of_id.is_(None))
        )
    return float(total or 0.0)


def shoe_prompts(rt: Runtime) -> list[Prompt]:
    with rt.db.read() as s:
        return list(s.scalars(select(Prompt).where(Prompt.kind == "shoe").order_by(Prompt.id)))


def test_each_pair_has_its_distance_steps_and_foot_load(anna: Runtime) -> None:
    rt = anna
    cli(rt, "shoe", "add", "road", "--from", "2026-11-01", "--use")
    store(rt, parsed_run(NOV, key="a"), parsed_run(NOV + timedelta(days=2), key="b", speed_mps=3.6))
    row = pairs(rt)["road"]
    expected = load_of(rt, "road")
    assert expected > 1000  # two planned runs of 45 minutes
    assert row["load"] == round(expected) and row["runs"] == 2
    assert row["steps"] == 2 * 170 * 45
    # a copy of a session (another source) adds nothing: only primary runs count
    store(rt, parsed_run(NOV, key="a-copy", source="other"))
    assert pairs(rt)["road"]["load"] == round(expected)
    assert f"{round(expected):,} load" in cli(rt, "shoe", "list")


def test_retire_at_load_alerts_once_through_the_athletes_channels(anna: Runtime) -> None:
    rt = anna
    cli(rt, "shoe", "add", "racer", "--from", "2026-11-01", "--use")
    store(rt, parsed_run(NOV, key="a"))
    one_run = load_of(rt, "racer")
    cli(rt, "shoe", "set", "racer", "--retire-at-load", str(round(one_run * 1.5)))
    assert shoe_prompts(rt) == [] and pairs(rt)["racer"]["due"] is None
    store(rt, parsed_run(NOV + timedelta(days=1), key="b"))  # crosses 1.5 runs' load
    [alert] = shoe_prompts(rt)
    assert alert.dedupe_key == f"shoe:{pairs(rt)['racer']['id']}:load:{round(one_run * 1.5)}"
    assert "reference steps of foot load" in alert.reasons[0] and "racer" in alert.reasons[0]
    with rt.db.read() as s:
        deliveries = s.scalars(select(Delivery).where(Delivery.prompt_id == alert.id)).all()
    assert [d.channel for d in deliveries] == ["console"]  # the athlete's channels, through the outbox
    # planned again and again (more runs, a recompute): still one alert
    store(rt, parsed_run(NOV + timedelta(days=2), key="c"), parsed_run(NOV + timedelta(days=3), key="d"))
    cli(rt, "shoe", "use", "racer")
    assert len(shoe_prompts(rt)) == 1
    assert "DUE:" in cli(rt, "shoe", "list") and pairs(rt)["racer"]["due"].startswith(f"{pairs(rt)['racer']['load']:,}")


def test_retire_at_km_on_add_and_a_new_threshold_later_arms_a_new_alert(anna: Runtime) -> None:
    rt = anna
    cli(rt, "shoe", "add", "trail", "--from", "2026-11-01", "--use", "--retire-at-km", "10")
    store(rt, parsed_run(NOV, key="a"))  # 8.1 km
    assert shoe_prompts(rt) == []
    store(rt, parsed_run(NOV + timedelta(days=1), key="b"))  # 16.2 km
    [first] = shoe_prompts(rt)
    shoe_id = pairs(rt)["trail"]["id"]
    assert first.dedupe_key == f"shoe:{shoe_id}:10"  # the key pairs with a distance only always had
    out = cli(rt, "shoe", "set", "trail", "--retire-at-km", "12")
    assert "past it already" in out
    assert sorted(p.dedupe_key for p in shoe_prompts(rt)) == [f"shoe:{shoe_id}:10", f"shoe:{shoe_id}:12"]
    out = cli(rt, "shoe", "set", "trail", "--no-retire-at-km", "--retire-at-load", "1e8")
    assert "retire at 100,000,000 load" in out and "past it" not in out
    assert pairs(rt)["trail"]["remind_at_km"] is None and pairs(rt)["trail"]["due"] is None


def test_bad_thresholds_are_refused_with_a_clear_message(anna: Runtime) -> None:
    rt = anna
    cli(rt, "shoe", "add", "road")
    for args, said in (
        (["shoe", "add", "x", "--retire-at-load", "0"], "--retire-at-load must be between 1"),
        (["shoe", "add", "x", "--retire-at-km", "-3"], "--retire-at-km must be between 1 and 10000"),
        (["shoe", "set", "road"], "nothing to set"),
        (["shoe", "set", "road", "--retire-at-km", "5", "--no-retire-at-km"], "cannot be set and removed"),
        (["shoe", "set", "nope", "--retire-at-km", "5"], "no shoes named 'nope'"),
    ):
        result = invoke(rt, *args)
        assert result.exit_code != 0 and said in result.output, (args, result.output)
    assert set(pairs(rt)) == {"road"}


def test_the_alert_renders_with_distance_and_load_on_every_channel_form(anna: Runtime) -> None:
    rt = anna
    cli(rt, "shoe", "add", "racer", "--from", "2026-11-01", "--use", "--retire-at-load", "100")
    store(rt, parsed_run(NOV, key="a"))
    [alert] = shoe_prompts(rt)
    with rt.db.read() as s:
        delivery = s.scalars(select(Delivery).where(Delivery.prompt_id == alert.id)).one()
        prompt = s.get(Prompt, alert.id)
        assert prompt is not None
        message = build_message(rt, s, delivery, prompt, s.get_one(Athlete, prompt.athlete_id))
    load = pairs(rt)["racer"]["load"]
    assert f"{load:,} reference steps of foot load" in message.text
    assert "100 reference steps of foot load" in message.text
    assert message.payload["data"]["shoe"]["retire_at_load"] == 100
    assert message.payload["data"]["shoe"]["load"] == load


def test_the_run_page_shows_the_pair_with_its_distance_and_load(anna: Runtime) -> None:
    rt = anna
    cli(rt, "shoe", "add", "Pegasus 41", "--from", "2026-11-01", "--use", "--retire-at-km", "700")
    [run_id] = store(rt, parsed_run(NOV, key="a"))
    page = admin(create_app(rt), rt).get(f"/dashboard/anna/runs/{run_id}")
    assert page.status_code == 200
    block = page.text.split('id="run-shoe"', 1)[1].split("</p>", 1)[0]
    load = pairs(rt)["Pegasus 41"]["load"]
    assert "Pegasus 41" in block and "8 km" in block and f"{load:,} ref. steps" in block
    assert "retire at 700 km" in block and "due" not in block
    with rt.db.read() as s:
        [old_id] = s.scalars(select(Run.id).where(Run.shoe_id.is_(None))).all()
    assert 'id="run-shoe"' not in admin(create_app(rt), rt).get(f"/dashboard/anna/runs/{old_id}").text


def test_revision_0019_goes_down_and_up_keeping_runs_and_pairs(anna: Runtime) -> None:
    from alembic import command

    rt = anna
    cli(rt, "shoe", "add", "road", "--from", "2026-11-01", "--use", "--retire-at-load", "5000")
    store(rt, parsed_run(NOV, key="a"))
    engine = rt.db.engine
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # cascades armed
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    for step, target in ((command.downgrade, "0018"), (command.upgrade, "head")):
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            step(cfg, target)
    with rt.db.read() as s:
        assert s.scalar(select(func.count(Run.id))) == 2
        shoe = s.scalars(select(Shoe)).one()
        assert shoe.retire_at_load is None  # the column came back empty
        assert s.scalar(select(func.count(Run.id)).where(Run.shoe_id == shoe.id)) == 1
