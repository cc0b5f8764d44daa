"""Strava bulk-export archives: every foot activity once, across re-imports, folders and hostile members."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from factories import ingest_planned
from fitgen import write_activity
from sqlalchemy import func, select
from test_more_sources import gpx_xml, tcx_xml, track_points
from typer.testing import CliRunner

from ingest.strava_export import StravaExportError, import_strava_export, parse_activity_date
from stridecare.db.models import Run
from stridecare.runtime import Runtime
from stridecare_app.cli.main import app

START = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)
NOW = START + timedelta(days=30)  # history: no post-run prompts needed

# The real header repeats "Elapsed Time" and "Distance" (display units first, then seconds and metres).
HEADER = [
    "Activity ID",
    "Activity Date",
    "Activity Name",
    "Activity Type",
    "Activity Description",
    "Elapsed Time",
    "Distance",
    "Max Heart Rate",
    "Relative Effort",
    "Commute",
    "Activity Private Note",
    "Activity Gear",
    "Filename",
    "Athlete Weight",
    "Bike Weight",
    "Elapsed Time",
    "Moving Time",
    "Distance",
    "Max Speed",
    "Average Speed",
    "Elevation Gain",
    "Elevation Loss",
    "Max Cadence",
    "Average Cadence",
]


def _date(t: datetime) -> str:
    return t.strftime("%b %-d, %Y, %-I:%M:%S %p")


def _row(activity_id: int, start: datetime, kind: str, filename: str, seconds: float, metres: float) -> list[str]:
    values = {name: "" for name in HEADER}
    row = [values[name] for name in HEADER]
    row[0], row[1], row[2], row[3] = str(activity_id), _date(start), f"activity {activity_id}", kind
    row[5], row[6], row[12] = str(round(seconds)), f"{metres / 1000:.2f}", filename
    row[15], row[16], row[17] = f"{seconds:.1f}", f"{seconds:.1f}", f"{metres:.1f}"
    return row


def build_export(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """An export with a FIT, a gzipped FIT, a GPX, a gzipped TCX, a manual run, a ride and a zip-slip."""
    src = tmp_path / "src"
    src.mkdir()
    day = timedelta(days=1)
    fit = src / "101.fit"
    write_activity(fit, start=START, duration_s=1800, speed_mps=3.2, cadence_rpm=85)
    fit_gz_plain = src / "102.fit"
    write_activity(fit_gz_plain, start=START + day, duration_s=1500, speed_mps=3.0, cadence_rpm=84)
    ride = src / "106.fit"
    write_activity(ride, start=START + 5 * day, duration_s=1800, speed_mps=8.0, cadence_rpm=90, sport="cycling")
    gpx = gpx_xml([("walking", track_points(start=START + 2 * day, duration_s=1200, speed_mps=1.4), 57.0)])
    tcx = tcx_xml([("Running", track_points(start=START + 3 * day, duration_s=1200), None)])

    rows = [
        _row(101, START, "Run", "activities/101.fit", 1800, 5760),
        _row(102, START + day, "Run", "activities/102.fit.gz", 1500, 4500),
        _row(103, START + 2 * day, "Walk", "activities/103.gpx", 1200, 1680),
        _row(104, START + 3 * day, "Trail Run", "activities/104.tcx.gz", 1200, 3600),
        _row(105, START + 4 * day, "Run", "", 1800, 5000),
        _row(106, START + 5 * day, "Ride", "activities/106.fit.gz", 1800, 14400),
        _row(107, START + 6 * day, "Run", "../evil.fit", 600, 1800),
    ]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(HEADER)
    writer.writerows(rows)

    archive = tmp_path / "export_12345.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("activities.csv", text.getvalue())
        zf.write(fit, "activities/101.fit")
        zf.writestr("activities/102.fit.gz", gzip.compress(fit_gz_plain.read_bytes()))
        zf.writestr("activities/103.gpx", gpx)
        zf.writestr("activities/104.tcx.gz", gzip.compress(tcx.encode()))
        zf.writestr("activities/106.fit.gz", gzip.compress(ride.read_bytes()))
        zf.writestr("../evil.fit", fit.read_bytes())
        zf.writestr("profile.csv", "Athlete ID\n1\n")
    return archive, {"101": fit, "102": fit_gz_plain}


def _runs(rt: Runtime) -> list[Run]:
    with rt.db.transaction() as session:
        rows = list(session.scalars(select(Run).order_by(Run.start_time)))
        session.expunge_all()
    return rows


def test_export_imports_every_foot_activity_once(rt: Runtime, tmp_path: Path) -> None:
    archive, plain = build_export(tmp_path)
    reports: list[dict[str, object]] = []
    summary = import_strava_export(rt, archive, "me", NOW, report=lambda r: reports.append(r.as_json()))
    assert summary == {"ingested": 5, "skipped": 1, "rejected": 1}, reports
    runs = _runs(rt)
    assert [(r.source, r.sport, r.cadence_source) for r in runs] == [
        ("fit", "running", "stream"),
        ("fit", "running", "stream"),
        ("gpx", "walking", "stream"),
        ("tcx", "running", "estimated"),
        ("strava", "running", "estimated"),
    ]
    manual = runs[-1]
    assert manual.source_key == "105"
    assert manual.distance_m == pytest.approx(5000)
    assert manual.timer_s == pytest.approx(1800)
    assert manual.steps > 0
    assert manual.start_time.replace(tzinfo=UTC) == START + timedelta(days=4)
    ride = next(r for r in reports if str(r["path"]).endswith(("(106)", "/106.fit.gz")))
    assert ride["status"] == "skipped"
    assert "not a foot sport" in str(ride["reason"])
    evil = next(r for r in reports if r["status"] == "rejected")
    assert "unsafe" in str(evil["reason"])
    assert "\n" not in str(evil["reason"])
    for where in (tmp_path.parent, tmp_path, Path.cwd()):
        assert not (where / "evil.fit").exists()

    # Importing the same archive again adds nothing.
    again = import_strava_export(rt, archive, "me", NOW)
    assert again == {"duplicate": 5, "skipped": 1, "rejected": 1}
    assert len(_runs(rt)) == 5

    # The watch's own files arriving later through a folder are the same content: no second run.
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for key in ("101", "102"):
        dropped = inbox / f"{key}-from-watch.fit"
        dropped.write_bytes(plain[key].read_bytes())
        report = ingest_planned(rt.db, rt.settings, "me", dropped, NOW)
        assert report.status == "duplicate", report
    with rt.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 5


def test_manual_entry_is_the_same_run_as_the_strava_api_would_store(rt: Runtime, tmp_path: Path) -> None:
    archive, _ = build_export(tmp_path)
    import_strava_export(rt, archive, "me", NOW)
    keys = {(r.source, r.source_key) for r in _runs(rt)}
    # The Strava API import keys activities by str(id) under source "strava": the same row as the CSV's.
    assert ("strava", "105") in keys

    # The watch file of that session arriving later is the richer record: the CSV summary becomes its copy.
    watch_file = tmp_path / "watch.fit"
    write_activity(watch_file, start=START + timedelta(days=4), duration_s=1800, speed_mps=2.78, cadence_rpm=84)
    report = ingest_planned(rt.db, rt.settings, "me", watch_file, NOW)
    assert report.status == "ingested"
    runs = {(r.source, r.source_key): r for r in _runs(rt)}
    assert runs[("strava", "105")].duplicate_of_id == report.runs[0]["id"]


def test_hostile_and_broken_archives(rt: Runtime, tmp_path: Path) -> None:
    not_zip = tmp_path / "export_1.zip"
    not_zip.write_bytes(b"PK\x03\x04 but not really a zip")
    with pytest.raises(StravaExportError) as info:
        import_strava_export(rt, not_zip, "me", NOW)
    assert "\n" not in str(info.value)

    no_csv = tmp_path / "export_2.zip"
    with zipfile.ZipFile(no_csv, "w") as zf:
        zf.writestr("activities/1.fit", b"x")
    with pytest.raises(StravaExportError, match=r"activities\.csv"):
        import_strava_export(rt, no_csv, "me", NOW)

    # A bomb member, an absolute path, a missing file with a summary, a row with garbage and a CSV-listed file
    # that is damaged: each gets its own reason and the good row still counts.
    good = tmp_path / "good.fit"
    write_activity(good, start=START, duration_s=900, cadence_rpm=85)
    rows = [
        _row(1, START, "Run", "activities/1.fit", 900, 2700),
        _row(2, START + timedelta(days=1), "Run", "activities/2.fit.gz", 900, 2700),
        _row(3, START + timedelta(days=2), "Run", "/etc/passwd", 900, 2700),
        _row(4, START + timedelta(days=3), "Run", "activities/4.fit", 900, 2700),
        _row(5, START + timedelta(days=4), "Run", "activities/5.fit", 900, 2700),
        ["6", "not a date", "x", "Run"],
    ]
    text = io.StringIO()
    csv.writer(text).writerows([HEADER, *rows])
    hostile = tmp_path / "export_3.zip"
    with zipfile.ZipFile(hostile, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("export_3/activities.csv", text.getvalue())  # re-zipped one folder down
        zf.write(good, "export_3/activities/1.fit")
        zf.writestr("export_3/activities/2.fit.gz", gzip.compress(b"\0" * (8 << 20)))
        zf.writestr("export_3/activities/5.fit", good.read_bytes()[:200])
    reports: list[dict[str, object]] = []
    summary = import_strava_export(rt, hostile, "me", NOW, report=lambda r: reports.append(r.as_json()))
    by_status = {status: n for status, n in summary.items()}
    assert by_status == {"ingested": 2, "rejected": 4}, reports
    reasons = [str(r["reason"]) for r in reports if r["status"] == "rejected"]
    assert any("bomb" in r for r in reasons)
    assert any("unsafe" in r for r in reasons)
    assert any("FIT" in r for r in reasons)
    assert any("Activity Date" in r for r in reasons)
    assert all("\n" not in r for r in reasons)
    missing = next(r for r in reports if str(r["path"]).endswith(("#5", "(4)")))
    assert missing["status"] == "ingested"
    assert "missing" in str(missing["reason"])


def test_activity_dates() -> None:
    assert parse_activity_date("Mar 2, 2026, 6:30:00 AM") == START
    assert parse_activity_date("Mar 2, 2026, 6:30:00\u202fPM") == START + timedelta(hours=12)
    assert parse_activity_date("2026-03-02 06:30:00") == START
    assert parse_activity_date("yesterday") is None


def test_cli_import_of_an_export_zip(cli_env: Path) -> None:
    archive, _ = build_export(cli_env)
    runner = CliRunner()
    first = runner.invoke(app, ["import", str(archive), "--json"])
    assert first.exit_code == 2, first.output  # the zip-slip row is a rejection
    statuses = [json.loads(line)["status"] for line in first.stdout.splitlines() if line.startswith("{")]
    assert sorted(statuses) == sorted(["ingested"] * 5 + ["skipped", "rejected"])
    second = runner.invoke(app, ["import", str(archive), "--json"])
    statuses = [json.loads(line)["status"] for line in second.stdout.splitlines() if line.startswith("{")]
    assert statuses.count("duplicate") == 5
    assert "ingested" not in statuses
    listed = runner.invoke(app, ["runs", "--json"])
    assert len(json.loads(listed.stdout)) == 5

    folder = cli_env / "folder"
    folder.mkdir()
    assert runner.invoke(app, ["import", str(folder)]).exit_code == 0


# --- bounded archives: rows, lines, members, encryption ---------------------------------------------------------


def _csv_zip(path: Path, rows: list[list[str]], header: list[str] = HEADER, name: str = "activities.csv") -> Path:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, text.getvalue())
    return path


def _manual_rows(count: int, kind: str = "Run") -> list[list[str]]:
    return [_row(1000 + i, START - timedelta(hours=7 * i), kind, "", 1800, 5400) for i in range(count)]


def _set_flag(path: Path, member: str, flag: int = 0, method: int | None = None) -> None:
    """Patch ``member``'s general-purpose flags (bit 0: encrypted) or compression method in both its local
    header and its central directory entry, as an encrypting or exotic zip tool would have written them."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    local = info.header_offset
    central = data.find(b"PK\x01\x02")
    while data[central + 46 : central + 46 + len(member)] != member.encode():
        central = data.find(b"PK\x01\x02", central + 4)
    for at, flags_at, method_at in ((local, 6, 8), (central, 8, 10)):
        if flag:
            data[at + flags_at] |= flag
        if method is not None:
            data[at + method_at : at + method_at + 2] = method.to_bytes(2, "little")
    path.write_bytes(bytes(data))


def test_a_100000_row_csv_is_refused_at_the_row_cap_before_anything_is_stored(rt: Runtime, tmp_path: Path) -> None:
    """The zip that drove `import` to 506 MB and 75 minutes: refused at once, with the count and the setting."""
    archive = _csv_zip(tmp_path / "export_big.zip", _manual_rows(100_000))
    assert archive.stat().st_size < 3_000_000
    assert rt.settings.export_max_rows < 100_000
    with pytest.raises(StravaExportError) as info:
        import_strava_export(rt, archive, "me", NOW)
    message = str(info.value)
    assert f"more than {rt.settings.export_max_rows:,} rows" in message
    assert "STRIDECARE_EXPORT_MAX_ROWS" in message and "\n" not in message
    with rt.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 0


def test_rows_up_to_the_cap_are_imported_and_one_more_is_refused(tmp_path: Path) -> None:
    from conftest import make_settings

    rt = Runtime.open(make_settings(tmp_path, export_max_rows=450))
    try:
        rows = _manual_rows(440) + [_row(5000 + i, START, "Ride", "", 1800, 9000) for i in range(10)]
        archive = _csv_zip(tmp_path / "export_450.zip", rows)
        summary = import_strava_export(rt, archive, "me", NOW)
        assert summary == {"ingested": 440, "skipped": 10}
        again = import_strava_export(rt, archive, "me", NOW)  # batches see what earlier batches stored
        assert again == {"duplicate": 440, "skipped": 10}
        over = _csv_zip(tmp_path / "export_451.zip", [*rows, _row(9999, START, "Run", "", 1800, 5400)])
        with pytest.raises(StravaExportError, match="more than 450 rows"):
            import_strava_export(rt, over, "me", NOW)
    finally:
        rt.close()


def test_a_row_listed_twice_is_stored_once(rt: Runtime, tmp_path: Path) -> None:
    row = _row(77, START, "Run", "", 1800, 5400)
    reports: list[dict[str, object]] = []
    summary = import_strava_export(
        rt, _csv_zip(tmp_path / "e.zip", [row, row]), "me", NOW, report=lambda r: reports.append(r.as_json())
    )
    assert summary == {"ingested": 1, "duplicate": 1}
    assert any("listed twice" in str(r["reason"]) for r in reports)


def test_overlong_lines_wide_headers_and_odd_cells_end_in_a_reason(rt: Runtime, tmp_path: Path) -> None:
    # 2 MB of commas on one line: refused before a cell is built, not 2 million cells.
    wide = tmp_path / "wide.zip"
    with zipfile.ZipFile(wide, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("activities.csv", ",".join(HEADER) + "\n" + "," * (2 << 20) + "\n")
    with pytest.raises(StravaExportError, match="longer than"):
        import_strava_export(rt, wide, "me", NOW)
    header = tmp_path / "header.zip"
    _csv_zip(header, [], header=[f"c{i}" for i in range(5000)])
    with pytest.raises(StravaExportError, match="columns"):
        import_strava_export(rt, header, "me", NOW)
    # A cell over csv's field limit (128 KB) spoils its own row only.
    rows: list[list[str]] = [
        _row(1, START, "Run", "", 1800, 5400),
        _row(2, START + timedelta(days=1), "Run", "", 1800, 5400),
    ]
    rows[0][4] = "x" * 200_000
    reports: list[dict[str, object]] = []
    summary = import_strava_export(
        rt, _csv_zip(tmp_path / "cell.zip", rows), "me", NOW, report=lambda r: reports.append(r.as_json())
    )
    assert summary == {"rejected": 1, "ingested": 1}, reports
    assert "unreadable CSV row" in str(next(r for r in reports if r["status"] == "rejected")["reason"])


def test_encrypted_and_unreadable_members_are_skipped_with_a_reason(rt: Runtime, tmp_path: Path) -> None:
    fit = tmp_path / "1.fit"
    write_activity(fit, start=START, duration_s=900, cadence_rpm=85)
    rows = [
        _row(1, START, "Run", "activities/1.fit", 900, 2700),
        _row(2, START + timedelta(days=1), "Run", "activities/2.fit", 900, 2700),
        _row(3, START + timedelta(days=2), "Run", "activities/3.fit", 900, 2700),
    ]
    archive = _csv_zip(tmp_path / "export_enc.zip", rows)
    with zipfile.ZipFile(archive, "a") as zf:
        zf.write(fit, "activities/1.fit")
        zf.write(fit, "activities/2.fit")  # encrypted below
        zf.write(fit, "activities/3.fit")  # an unknown compression method below
    _set_flag(archive, "activities/2.fit", flag=0x1)
    _set_flag(archive, "activities/3.fit", method=99)
    reports: list[dict[str, object]] = []
    summary = import_strava_export(rt, archive, "me", NOW, report=lambda r: reports.append(r.as_json()))
    assert summary == {"ingested": 1, "skipped": 2}, reports
    reasons = {Path(str(r["path"])).name: str(r["reason"]) for r in reports if r["status"] == "skipped"}
    assert "encrypted" in reasons["2.fit"]
    assert "compression method" in reasons["3.fit"]


def test_an_encrypted_activities_csv_is_one_clear_line_on_the_command_line(cli_env: Path, tmp_path: Path) -> None:
    archive = _csv_zip(tmp_path / "export_locked.zip", _manual_rows(3))
    _set_flag(archive, "activities.csv", flag=0x1)
    result = CliRunner().invoke(app, ["import", str(archive)])
    assert result.exit_code == 2, result.output  # `fail`: a message, not a RuntimeError's traceback
    assert isinstance(result.exception, SystemExit)
    assert "activities.csv is encrypted" in result.output and "Traceback" not in result.output


def test_a_zip_announcing_more_members_than_the_cap_is_refused_before_it_is_read(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ingest.strava_export as export

    archive = _csv_zip(tmp_path / "export_many.zip", _manual_rows(1))
    with zipfile.ZipFile(archive, "a") as zf:
        for i in range(30):
            zf.writestr(f"media/{i}.jpg", b"")
    monkeypatch.setattr(export, "MAX_MEMBERS", 20)
    with pytest.raises(StravaExportError, match="31 entries, over the cap of 20"):
        import_strava_export(rt, archive, "me", NOW)
