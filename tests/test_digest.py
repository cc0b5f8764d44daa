"""The weekly digest, end to end through a real SMTP server: once per ISO week on the athlete's weekday after
08:00 local, through the same outbox writer and channels as every prompt (email with the chart as an inline PNG
referenced by Content-ID, the console with the text), figures that match the database, dates in the athlete's
time zone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from channel_settings import channel_settings
from conftest import runtime_on
from factories import ingest_planned
from fitgen import write_activity
from harness import SmtpSink
from sqlalchemy import select

from recommender.digest import DIGEST_KIND, weekly_digests
from recommender.feedback import record_done
from recommender.messages import relay_pending
from stridecare.clock import write_clock_file
from stridecare.db.models import Athlete, Delivery, Prompt, Run
from stridecare.plugins import patch_channel_options
from stridecare.runtime import Runtime
from workers.periodic import Enqueue, run_periodic

TZ = "Europe/Berlin"
WEEK = [date(2026, 3, 2) + timedelta(days=i) for i in range(7)]  # ISO week 10, Monday to Sunday


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    server = SmtpSink().start()
    yield server
    server.stop()


@pytest.fixture
def env(tmp_path: Path, sink: SmtpSink, tx_rt: Runtime) -> tuple[Runtime, Path]:
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, datetime(2026, 3, 1, tzinfo=UTC))
    rt = runtime_on(
        tx_rt.db, tmp_path, clock_file=clock, smtp_host="127.0.0.1", smtp_port=sink.port, smtp_security="none"
    )
    with rt.db.transaction() as s:
        # Email and the console: the digest goes to both, as a prompt does.
        s.add(
            Athlete(
                name="anna", channel_settings=channel_settings(email="anna@example.org"), timezone=TZ, digest_weekday=0
            )
        )
        s.add(Athlete(name="nomail", timezone=TZ, digest_weekday=0))
    return rt, clock


def _run(rt: Runtime, tmp_path: Path, start: datetime, minutes: int, name: str) -> None:
    path = tmp_path / name
    write_activity(path, start=start, duration_s=minutes * 60, speed_mps=3.1, cadence_rpm=84, sample_interval_s=5)
    assert (
        ingest_planned(rt.db, rt.settings, "anna", path, start + timedelta(minutes=minutes + 30)).status == "ingested"
    )


def _local(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=ZoneInfo(TZ)).astimezone(UTC)


def _seed(rt: Runtime, tmp_path: Path) -> None:
    _run(rt, tmp_path, _local(date(2026, 2, 27), 7), 30, "before.fit")  # the week before: not counted
    _run(rt, tmp_path, _local(WEEK[0], 0, 30), 40, "mon-early.fit")  # local Monday just after midnight
    _run(rt, tmp_path, _local(WEEK[2], 18), 35, "wed.fit")
    _run(rt, tmp_path, _local(WEEK[6], 23, 10), 60, "sun-late.fit")  # ends Monday: its prompt is next week's
    _run(rt, tmp_path, _local(date(2026, 3, 9), 6), 30, "next-mon.fit")  # the send day itself: next digest
    with rt.db.transaction() as s:
        prompt = s.scalars(select(Prompt).where(Prompt.kind == "post_run").order_by(Prompt.local_day)).all()[2]
        record_done(s, prompt.id, datetime(2026, 3, 4, 20, 0, tzinfo=UTC))


def _week_truth(rt: Runtime) -> dict[str, float]:
    lo, hi = _local(WEEK[0], 0), _local(WEEK[6] + timedelta(days=1), 0)
    with rt.db.transaction() as s:
        runs = [r for r in s.scalars(select(Run).where(Run.duplicate_of_id.is_(None))) if lo <= r.start_time < hi]
        prompts = [
            p for p in s.scalars(select(Prompt).where(Prompt.kind == "post_run")) if WEEK[0] <= p.local_day <= WEEK[6]
        ]
        return {
            "runs": len(runs),
            "km": sum(r.distance_m for r in runs) / 1000,
            "seconds": sum(r.timer_s for r in runs),
            "steps": sum(r.steps for r in runs),
            "load": sum(r.load.load for r in runs if r.load),
            "made": len(prompts),
            "done": sum(1 for p in prompts if p.done_at is not None),
        }


def _parts(mail: EmailMessage) -> list[EmailMessage]:
    return list(mail.walk())  # type: ignore[arg-type]


def test_digest_is_sent_once_per_week_by_email_with_an_inline_chart(
    env: tuple[Runtime, Path], sink: SmtpSink, tmp_path: Path
) -> None:
    rt, clock = env
    _seed(rt, tmp_path)
    truth = _week_truth(rt)
    assert truth["runs"] == 3 and truth["made"] >= 2 and truth["done"] == 1

    write_clock_file(clock, _local(date(2026, 3, 9), 7, 59))  # Monday, one minute early
    assert weekly_digests(rt) == 0
    write_clock_file(clock, _local(date(2026, 3, 9), 8, 5))
    assert weekly_digests(rt) == 1  # anna only: "nomail" has no run
    assert weekly_digests(rt) == 0  # a second tick the same week writes nothing
    with rt.db.transaction() as s:
        digest = s.scalars(select(Prompt).where(Prompt.kind == DIGEST_KIND)).one()
        assert digest.dedupe_key == "2026-W11"
        rows = s.scalars(select(Delivery).where(Delivery.prompt_id == digest.id).order_by(Delivery.channel))
        assert [(d.channel, d.message_id) for d in rows] == [
            ("console", f"msg_{digest.id}_console"),
            ("email", f"msg_{digest.id}_email"),
        ]

    relay_pending(rt)
    logged = [
        json.loads(line)
        for line in (rt.settings.data_home / "prompts.log").read_text().splitlines()
        if json.loads(line)["prompt_id"] == digest.id
    ]
    assert len(logged) == 1 and f"Runs: {truth['runs']}\n" in logged[0]["text"]
    assert logged[0]["payload"]["type"] == "digest.created"
    digests = [m for m in sink.messages if "your week in running" in str(m["Subject"])]
    assert len(digests) == 1
    mail = digests[0]
    assert mail["To"] == "anna@example.org"
    assert mail["List-Unsubscribe"].startswith("<http")

    # multipart/alternative (text, multipart/related (html, image/png)); the HTML shows the image by its cid.
    assert mail.get_content_type() == "multipart/alternative"
    related = [p for p in _parts(mail) if p.get_content_type() == "multipart/related"]
    assert len(related) == 1
    images = [p for p in _parts(mail) if p.get_content_type() == "image/png"]
    assert len(images) == 1
    png = images[0].get_content()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    cid = images[0]["Content-ID"].strip("<>")
    html = mail.get_body(preferencelist=("html",))
    assert html is not None
    assert f'src="cid:{cid}"' in html.get_content()
    assert "/unsubscribe/" in html.get_content()
    assert "/dashboard/anna?t=" in html.get_content()

    text = mail.get_body(preferencelist=("plain",))
    assert text is not None
    body = text.get_content().replace("\r\n", "\n")
    assert "/unsubscribe/" in body
    assert f"Runs: {truth['runs']}\n" in body
    assert f"Distance: {truth['km']:.1f} km\n" in body
    hours, rest = divmod(round(truth["seconds"]), 3600)
    assert f"Time: {hours}:{rest // 60:02d}\n" in body
    assert f"Steps: {round(truth['steps']):,}\n" in body
    assert f"Last 7 days: {truth['load']:,.0f} ref. steps\n" in body
    assert "ref. steps/day" in body  # acute and chronic are per day
    assert f"Prompts done: {truth['done']:.0f} of {truth['made']:.0f}\n" in body

    # Later that week: nothing more. The next Monday: the next digest.
    write_clock_file(clock, _local(date(2026, 3, 12), 9))
    assert weekly_digests(rt) == 0
    write_clock_file(clock, _local(date(2026, 3, 16), 8, 1))
    assert weekly_digests(rt) == 1
    relay_pending(rt)
    assert len([m for m in sink.messages if "your week in running" in str(m["Subject"])]) == 2


def test_the_beat_tick_writes_the_digest(env: tuple[Runtime, Path], tmp_path: Path) -> None:
    rt, clock = env
    _run(rt, tmp_path, _local(WEEK[2], 18), 35, "wed.fit")
    write_clock_file(clock, _local(date(2026, 3, 9), 8, 30))
    enqueued: list[int] = []
    run_periodic(rt, Enqueue(delivery=enqueued.append))
    run_periodic(rt, Enqueue(delivery=enqueued.append))
    with rt.db.transaction() as s:
        digests = list(s.scalars(select(Prompt).where(Prompt.kind == DIGEST_KIND)))
        assert len(digests) == 1
        rows = list(s.scalars(select(Delivery).where(Delivery.prompt_id == digests[0].id)))
    assert sorted(d.channel for d in rows) == ["console", "email"]
    assert {d.id for d in rows} <= set(enqueued)


def test_an_unsubscribed_email_gets_no_digest_and_no_channel_no_digest(
    env: tuple[Runtime, Path], tmp_path: Path
) -> None:
    rt, clock = env
    _run(rt, tmp_path, _local(WEEK[2], 18), 35, "wed.fit")
    with rt.db.transaction() as s:
        anna = s.scalars(select(Athlete).where(Athlete.name == "anna")).one()
        patch_channel_options(anna, "email", unsubscribed_at=datetime(2026, 3, 1, tzinfo=UTC))
    write_clock_file(clock, _local(date(2026, 3, 9), 9))
    assert weekly_digests(rt) == 1
    with rt.db.read() as s:
        assert [d.channel for d in s.scalars(select(Delivery).join(Prompt).where(Prompt.kind == DIGEST_KIND))] == [
            "console"
        ]
    with rt.db.transaction() as s:
        anna = s.scalars(select(Athlete).where(Athlete.name == "anna")).one()
        patch_channel_options(anna, "console", enabled=False)
    write_clock_file(clock, _local(date(2026, 3, 16), 9))
    assert weekly_digests(rt) == 0


def test_no_digest_for_a_week_before_the_first_run(env: tuple[Runtime, Path], tmp_path: Path) -> None:
    rt, clock = env
    # Monday 9 March, 08:05: anna has no run yet, so the week of 2-8 March is not hers to be told about.
    write_clock_file(clock, _local(date(2026, 3, 9), 8, 5))
    assert weekly_digests(rt) == 0
    # Her first run is on Tuesday 10 March; Monday's digest stays unsent (its week ended before that run) ...
    _run(rt, tmp_path, _local(date(2026, 3, 10), 7), 30, "first.fit")
    write_clock_file(clock, _local(date(2026, 3, 12), 9))
    assert weekly_digests(rt) == 0
    # ... and the next Monday's covers the week with her first run.
    write_clock_file(clock, _local(date(2026, 3, 16), 8, 5))
    assert weekly_digests(rt) == 1
    with rt.db.transaction() as s:
        digest = s.scalars(select(Prompt).where(Prompt.kind == DIGEST_KIND)).one()
        assert digest.facts["totals"]["runs"] == 1 and digest.facts["totals"]["first_day"] == "2026-03-09"


def test_digest_day_and_time_are_the_athletes(env: tuple[Runtime, Path], tmp_path: Path) -> None:
    rt, clock = env
    _seed(rt, tmp_path)
    with rt.db.transaction() as s:
        anna = s.scalars(select(Athlete).where(Athlete.name == "anna")).one()
        anna.digest_weekday, anna.digest_time = 4, "18:30"  # Friday evening
    write_clock_file(clock, _local(date(2026, 3, 9), 9))  # Monday: not hers any more
    assert weekly_digests(rt) == 0
    write_clock_file(clock, _local(date(2026, 3, 13), 18, 29))
    assert weekly_digests(rt) == 0
    write_clock_file(clock, _local(date(2026, 3, 13), 18, 31))
    assert weekly_digests(rt) == 1
    with rt.db.transaction() as s:
        digest = s.scalars(select(Prompt).where(Prompt.kind == DIGEST_KIND)).one()
        # The seven local days before Friday 13 March.
        totals = digest.facts["totals"]
        assert (totals["first_day"], totals["last_day"]) == ("2026-03-06", "2026-03-12")
        assert "18:30" in digest.rule


def test_chart_is_drawn_at_twice_its_display_size(env: tuple[Runtime, Path], tmp_path: Path) -> None:
    import io

    from PIL import Image

    from recommender.digest import CHART_HEIGHT_PX, CHART_SCALE, CHART_WIDTH_PX, chart_png, digest_facts

    rt, _ = env
    _seed(rt, tmp_path)
    with rt.db.transaction() as s:
        anna = s.scalars(select(Athlete).where(Athlete.name == "anna")).one()
        facts = digest_facts(s, rt.settings, anna, date(2026, 3, 9))
    image = Image.open(io.BytesIO(chart_png(facts["days"], highlight_from=facts["totals"]["first_day"])))
    assert image.size == (CHART_WIDTH_PX * CHART_SCALE, CHART_HEIGHT_PX * CHART_SCALE)
    assert image.info.get("dpi", (0, 0))[0] == pytest.approx(100 * CHART_SCALE, abs=1)


# -- the command line -----------------------------------------------------------------------------------------


def test_digest_day_time_and_preview_from_the_command_line(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from stridecare_app.cli.main import app

    clock = cli_env / "clock.txt"
    write_clock_file(clock, _local(date(2026, 3, 11), 12))  # Wednesday
    monkeypatch.setenv("STRIDECARE_CLOCK_FILE", str(clock))
    runner = CliRunner()
    assert runner.invoke(app, ["athlete", "add", "anna", "--timezone", TZ]).exit_code == 0
    result = runner.invoke(app, ["athlete", "set", "anna", "--digest-day", "sun", "--digest-time", "19:15"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["athlete", "set", "anna", "--digest-time", "7pm"]).exit_code == 2
    assert runner.invoke(app, ["athlete", "set", "anna", "--digest-day", "someday"]).exit_code == 2
    listed = runner.invoke(app, ["athlete", "list", "--json"])
    assert '"digest_day": "sun"' in listed.output and '"digest_time": "19:15"' in listed.output

    # No run yet: the preview is written, and says that this digest would not be sent.
    out = cli_env / "preview.html"
    result = runner.invoke(app, ["digest", "--preview", "anna", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "first run" in result.output
    # With a run in the week (Sunday 8 March is the last send day): the figures, an inlined 2× chart, real links.
    fit = cli_env / "run.fit"
    write_activity(fit, start=_local(WEEK[3], 7), duration_s=1800, speed_mps=3.0, cadence_rpm=85, sample_interval_s=5)
    assert runner.invoke(app, ["ingest", str(fit), "--athlete", "anna"]).exit_code == 0
    result = runner.invoke(app, ["digest", "--preview", "anna", "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert 'Runs</td><td style="text-align:right;"><strong>1</strong>' in html
    assert 'src="data:image/png;base64,' in html and "cid:" not in html
    assert "/dashboard/anna?t=" in html and "/unsubscribe/" in html
    assert runner.invoke(app, ["digest", "--preview", "nobody"]).exit_code == 2
