"""QPU accounting: the ledger (schema, migrations, restarts, concurrent writers), limits,
and ``fluxqr usage`` in every output format."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_user_error, run_cli

from fluxqr.core import accounting, config
from fluxqr.core.accounting import Ledger, check_submit, over_limit
from fluxqr.core.config import Limits
from fluxqr.errors import FluxqrError

T0 = 1_800_000_000.0  # a fixed "now" for the library tests
DAY = 86400.0


def _job(led: Ledger, jobid: int, user: tuple[int, str], device: str, vendor: str,
         start: float, active: float, *, vendor_seconds: float | None = None,
         exit: str = "completed", queue: str = "batch", bank: str | None = "physics") -> None:
    """One whole job life, through the hooks the agent calls."""
    led.job_started(jobid, userid=user[0], username=user[1], queue=queue, bank=bank,
                    devices={device: vendor}, t_submit=start - 5)
    led.job_running(jobid, start)
    led.session_event(jobid, device, "opened", start)
    led.session_event(jobid, device, "activated", start + 1)
    if vendor_seconds is not None:
        led.record_usage(jobid, device, qpu_seconds=vendor_seconds, tasks=2)
    led.session_event(jobid, device, "closed", start + 1 + active)
    led.job_ended(jobid, exit, start + 2 + active)


ALICE, BOB = (1001, "alice"), (1002, "bob")


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    with Ledger(tmp_path / "state" / "fluxqr" / "accounting.db") as ledger:
        yield ledger


# -- the hooks and what is charged ----------------------------------------------------------


def test_vendor_seconds_win_over_wall_time_and_simulators_pay_wall_time(led: Ledger) -> None:
    _job(led, 1, ALICE, "ibm_fez", "ibm", T0, 100.0, vendor_seconds=12.5)
    _job(led, 2, ALICE, "aer", "qiskit", T0, 40.0)
    rows = {r["jobid"]: r for r in led.usage(now=T0 + 1000)}
    assert rows[1]["seconds"] == 12.5 and rows[1]["source"] == "vendor"
    assert rows[1]["wall_seconds"] == 100.0 and rows[1]["tasks"] == 2
    assert rows[2]["seconds"] == 40.0 and rows[2]["source"] == "wall"
    assert rows[1]["exit"] == "completed" and rows[1]["t_run"] == T0
    assert led.summary(1, now=T0 + 1000) == {
        "qpu_seconds": 12.5, "devices": {"ibm_fez": {"seconds": 12.5, "source": "vendor",
                                                     "tasks": 2}}}


def test_open_session_is_charged_to_now_and_never_activated_costs_nothing(led: Ledger) -> None:
    led.job_started(7, userid=1001, username="alice", devices={"ibm_fez": "ibm", "aer": None})
    led.session_event(7, "ibm_fez", "opened", T0)
    led.session_event(7, "aer", "activated", T0 + 10)
    assert led.job_seconds(7, now=T0 + 70) == 60.0  # aer running for 60 s, ibm never active
    led.job_ended(7, "CANCELED", T0 + 100)  # Flux's result name
    rows = {r["device"]: r for r in led.usage(now=T0 + 5000)}
    assert rows["aer"]["closed"] == T0 + 100 and rows["aer"]["seconds"] == 90.0
    assert rows["ibm_fez"]["closed"] == T0 + 100 and rows["ibm_fez"]["seconds"] == 0.0
    assert rows["aer"]["exit"] == "canceled"


def test_hooks_are_idempotent_for_a_readopting_agent(led: Ledger) -> None:
    led.job_started(3, userid=1001, username="alice", queue="batch", t_submit=T0,
                    devices={"ibm_fez": "ibm"})
    led.session_event(3, "ibm_fez", "activated", T0 + 5)
    # after a restart the agent adopts the job again, with less information
    led.job_started(3, userid=1001, devices={"ibm_fez": None}, t_submit=T0 + 99)
    led.session_event(3, "ibm_fez", "activated", T0 + 50)
    (row,) = led.usage(now=T0 + 100)
    assert (row["queue"], row["vendor"], row["t_submit"], row["activated"]) == \
        ("batch", "ibm", T0, T0 + 5)


def test_incremental_and_cumulative_usage(led: Ledger) -> None:
    led.job_started(4, userid=1002, username="bob", devices={"sv1": "amazon"})
    for _ in range(3):  # Braket: one task's duration and shots at a time
        led.record_usage(4, "sv1", qpu_seconds=1.5, tasks=1, shots=100, cost=0.01,
                         cumulative=False)
    (row,) = led.usage()
    assert (row["seconds"], row["tasks"], row["shots"]) == (4.5, 3, 300)
    assert row["cost"] == pytest.approx(0.03)
    led.record_usage(4, "sv1", qpu_seconds=2.0)  # a vendor total replaces
    assert led.usage()[0]["seconds"] == 2.0 and led.usage()[0]["tasks"] == 3


@pytest.mark.parametrize("call,needle", [
    (lambda led: led.session_event(99, "x", "activated"), "not in the accounting database"),
    (lambda led: led.session_event(1, "x", "started"), "unknown session event"),
    (lambda led: led.job_ended(1, "exploded"), "unknown job exit"),
    (lambda led: led.record_usage(1, "x", qpu_seconds=-1), "must be a number >= 0"),
    (lambda led: led.totals(["colour"]), "cannot group by colour"),
    (lambda led: led.usage(jobid="ƒ!!"), "invalid job id"),
])
def test_hook_errors_are_one_line(led: Ledger, call, needle: str) -> None:
    led.job_started(1, userid=1, devices={"x": None})
    with pytest.raises(FluxqrError, match=needle) as info:
        call(led)
    assert "\n" not in str(info.value)


def test_filters_and_totals(led: Ledger) -> None:
    _job(led, 1, ALICE, "ibm_fez", "ibm", T0 - 10 * DAY, 100.0, vendor_seconds=10.0)
    _job(led, 2, ALICE, "ibm_fez", "ibm", T0 - 2 * DAY, 100.0, vendor_seconds=20.0,
         queue="debug")
    _job(led, 3, BOB, "aer", "qiskit", T0 - 1 * DAY, 30.0, exit="timeout")
    _job(led, 4, BOB, "ibm_fez", "ibm", T0 - 1 * DAY, 50.0, vendor_seconds=5.0, exit="failed")
    week = T0 - 7 * DAY
    assert {r["jobid"] for r in led.usage(since=week, now=T0)} == {2, 3, 4}
    assert {r["jobid"] for r in led.usage(until=week, now=T0)} == {1}
    assert {r["jobid"] for r in led.usage(user="alice")} == {1, 2}
    assert {r["jobid"] for r in led.usage(user=1002)} == {3, 4}
    assert {r["jobid"] for r in led.usage(device="aer")} == {3}
    assert {r["jobid"] for r in led.usage(queue="debug")} == {2}
    totals = led.totals(("user", "device"), since=week, now=T0)
    assert [(t["user"], t["device"], t["jobs"], t["seconds"]) for t in totals] == [
        ("bob", "aer", 1, 30.0), ("alice", "ibm_fez", 1, 20.0), ("bob", "ibm_fez", 1, 5.0)]
    (grand,) = led.totals((), now=T0)
    assert (grand["jobs"], grand["seconds"], grand["qpu_seconds"]) == (4, 65.0, 35.0)
    by_exit = {t["exit"]: t["jobs"] for t in led.totals(("exit",), now=T0)}
    assert by_exit == {"completed": 2, "timeout": 1, "failed": 1}
    assert led.totals(("user",), since=T0 + DAY, now=T0) == []


# -- schema, migrations, restarts, concurrency ----------------------------------------------


def test_migration_from_schema_version_1_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    accounting.migrate(conn, target=1)  # what the first release created
    conn.execute("INSERT INTO jobs (jobid, userid, username, queue, bank, t_submit, t_run, "
                 "t_inactive, exit) VALUES (5, 1001, 'alice', 'batch', 'b', ?, ?, ?, "
                 "'completed')", (T0, T0 + 1, T0 + 100))
    conn.execute("INSERT INTO devices (jobid, device, vendor, opened, activated, closed, "
                 "qpu_seconds, tasks) VALUES (5, 'ibm_fez', 'ibm', ?, ?, ?, 7.0, 4)",
                 (T0 + 1, T0 + 2, T0 + 90))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    with Ledger(path) as led:
        assert led.schema_version() == accounting.SCHEMA_VERSION == 2
        (row,) = led.usage()
        assert (row["jobid"], row["seconds"], row["tasks"], row["shots"], row["project"]) == \
            (5, 7.0, 4, 0, None)
        led.job_started(6, userid=1, project="qc", devices={"aer": None})  # v2 columns work
        assert led.usage(jobid=6)[0]["project"] == "qc"
        indexes = {r[0] for r in led.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"jobs_userid", "devices_device"} <= indexes


def test_database_from_a_newer_fluxqr_or_not_a_database(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {accounting.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(FluxqrError, match="newer than this fluxqr"):
        Ledger(newer)
    junk = tmp_path / "junk.db"
    junk.write_text("this is not sqlite " * 100)
    with pytest.raises(FluxqrError, match="junk.db") as info:
        Ledger(junk)
    assert "\n" not in str(info.value)
    with pytest.raises(FluxqrError, match="no accounting database at"):
        Ledger(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()


_WRITER = """
import sys
from fluxqr.core.accounting import Ledger
led = Ledger(sys.argv[1])
led.job_started(42, userid=1001, username="alice", devices={"ibm_fez": "ibm"}, t_submit=1.0)
led.session_event(42, "ibm_fez", "activated", 10.0)
led.record_usage(42, "ibm_fez", qpu_seconds=3.25)
"""


def test_ledger_survives_a_restart_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "acct.db"
    # the writer process exits without closing (as a killed agent would)
    subprocess.run([sys.executable, "-c", _WRITER + "import os; os._exit(0)\n", str(path)],
                   check=True, timeout=60)
    with Ledger(path) as led:  # the restarted agent
        (row,) = led.usage(now=20.0)
        assert (row["jobid"], row["seconds"], row["activated"], row["exit"]) == \
            (42, 3.25, 10.0, None)
        led.session_event(42, "ibm_fez", "closed", 30.0)
        led.job_ended(42, "completed", 31.0)
    with Ledger(path) as led:
        assert led.usage()[0]["closed"] == 30.0 and led.usage()[0]["exit"] == "completed"
        assert led.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _concurrent_writer(path: str, worker: int, jobs: int) -> None:
    led = Ledger(path, timeout=60.0)
    for i in range(jobs):
        jid = worker * 1000 + i
        led.job_started(jid, userid=worker, username=f"u{worker}", devices={"dev": "v"})
        led.session_event(jid, "dev", "activated", float(i))
        led.job_started(1, userid=0, devices={"shared": None})
        led.record_usage(1, "shared", qpu_seconds=1.0, tasks=1, cumulative=False)
    led.close()


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "acct.db")
    Ledger(path).close()
    workers, jobs = 4, 25
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_concurrent_writer, args=(path, w, jobs))
             for w in range(1, workers + 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Ledger(path) as led:
        rows = led.usage(now=1000.0)
        assert len(rows) == workers * jobs + 1
        shared = next(r for r in rows if r["device"] == "shared")
        # every increment of the one shared row counted: no lost update
        assert (shared["seconds"], shared["tasks"]) == (workers * jobs, workers * jobs)
        per_user = {t["user"]: t["jobs"] for t in led.totals(("user",), now=1000.0)}
        assert all(per_user[f"u{w}"] == jobs for w in range(1, workers + 1))


# -- limits ---------------------------------------------------------------------------------


def test_limits_parse_and_settings() -> None:
    lim = config.parse_limits({"job-qpu-seconds": 600, "user-qpu-seconds": "1h",
                               "period": "7d"})
    assert lim == Limits(job=600.0, user=3600.0, period=7 * DAY)
    assert not Limits() and Limits(user=1.0)
    s = config.settings({"fluxqr": {"devices": "d.yaml", "accounting-db": "/x/a.db",
                                    "limits": {"job-qpu-seconds": "10m"}}}, ())
    assert s["accounting-db"] == "/x/a.db" and s["limits"] == Limits(job=600.0)
    assert "limits" not in config.settings({"fluxqr": {"devices": "d.yaml"}}, ())


@pytest.mark.parametrize("value,needle", [
    ("600", "must be a TOML table"),
    ({"job-seconds": 5}, "unknown key(s) job-seconds"),
    ({"job-qpu-seconds": 0}, "must be > 0"),
    ({"user-qpu-seconds": "lots"}, "invalid duration 'lots'"),
    ({"period": True}, "invalid duration"),
    ({"period": float("nan")}, "must be > 0"),
])
def test_limit_errors_are_one_line(value, needle: str) -> None:
    with pytest.raises(FluxqrError) as info:
        config.settings({"fluxqr": {"devices": "d.yaml", "limits": value}}, ())
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert "[fluxqr] limits" in str(info.value)


def test_check_submit(led: Ledger) -> None:
    _job(led, 1, ALICE, "ibm_fez", "ibm", T0 - 2 * DAY, 500.0, vendor_seconds=3000.0)
    _job(led, 2, ALICE, "ibm_fez", "ibm", T0 - 9 * DAY, 500.0, vendor_seconds=5000.0)
    lim = Limits(job=600.0, user=3600.0, period=7 * DAY)
    with pytest.raises(FluxqrError, match="over the site limit of 600 per job"):
        check_submit(led, lim, 1001, 601.0, now=T0)
    check_submit(led, lim, 1001, 600.0, now=T0)  # 3000 used in the week + 600 = 3600: fits
    with pytest.raises(FluxqrError, match=r"user 1001 has used 3000 of 3600 .* last 1w.*at most "
                                          r"600"):
        check_submit(led, Limits(user=3600.0, period=7 * DAY), 1001, 601.0, now=T0)
    check_submit(led, lim, "bob", 600.0, now=T0)  # bob has used nothing
    check_submit(led, Limits(), "alice", 1e9, now=T0)  # no limits, no check
    # the 9-day-old job leaves the window; a 10-day window sees it
    with pytest.raises(FluxqrError, match="has used 8000"):
        check_submit(led, Limits(user=3600.0, period=10 * DAY), "alice", None, now=T0)


def test_over_limit_for_a_running_job(led: Ledger) -> None:
    led.job_started(8, userid=1001, username="alice", devices={"aer": None})
    led.session_event(8, "aer", "activated", T0)
    lim = Limits(job=600.0)
    assert over_limit(led, lim, 8, now=T0 + 599) is None
    reason = over_limit(led, lim, 8, now=T0 + 600)
    assert reason and "job used 600 QPU seconds" in reason and "job-qpu-seconds" in reason
    assert over_limit(led, Limits(), 8, now=T0 + 1e6) is None
    # the user's earlier jobs count against the per-user cap
    _job(led, 9, ALICE, "ibm_fez", "ibm", T0 - DAY, 10.0, vendor_seconds=3500.0)
    ulim = Limits(user=3600.0, period=7 * DAY)
    assert over_limit(led, ulim, 8, now=T0 + 99) is None
    reason = over_limit(led, ulim, 8, now=T0 + 100)
    assert reason and reason.startswith("user alice used 3600 QPU seconds in the last 1w")


def test_job_facts_from_a_jobspec() -> None:
    js = {"attributes": {"system": {"duration": 3600, "queue": "batch", "bank": "physics",
                                    "quantum": {"request": {"qpus": 2, "session_max_time": 600}}}}}
    assert accounting.job_facts(js) == {"queue": "batch", "bank": "physics", "project": None,
                                        "request_seconds": 1200.0}
    del js["attributes"]["system"]["quantum"]["request"]["session_max_time"]
    assert accounting.job_facts(js)["request_seconds"] == 7200.0
    js["attributes"]["system"]["duration"] = 0  # unlimited
    assert accounting.job_facts(js)["request_seconds"] is None
    assert accounting.job_facts({})["request_seconds"] is None


# -- small helpers --------------------------------------------------------------------------


def test_job_ids_and_times() -> None:
    for jid in (0, 57, 58, 14965276672, 2**63 - 1):
        assert accounting.jobid_int(accounting.f58(jid)) == jid
        assert accounting.jobid_int(str(jid)) == jid
    assert accounting.jobid_int("f" + accounting.f58(1234)[1:]) == 1234
    assert accounting.jobid_int(hex(4096)) == 4096
    assert accounting.parse_time("7d", now=T0) == T0 - 7 * DAY
    assert accounting.parse_time("2w", now=T0) == T0 - 14 * DAY
    assert accounting.parse_time(str(T0), now=0) == T0
    assert accounting.parse_time("2026-11-01T00:00:00+00:00") == 1793491200.0
    assert accounting.parse_time(None) is None
    with pytest.raises(FluxqrError, match="cannot read 'yesterday'"):
        accounting.parse_time("yesterday", where="--since")
    assert accounting.default_path("/var/lib/flux", "/tmp/r") == \
        "/var/lib/flux/fluxqr/accounting.db"
    assert accounting.default_path(None, "/tmp/r") == "/tmp/r/fluxqr/accounting.db"


def test_f58_matches_flux() -> None:
    flux_job = pytest.importorskip("flux.job", reason="flux Python bindings not installed")
    for jid in (1, 14965276672, 2**40 + 12345):
        assert flux_job.JobID(jid).f58 == accounting.f58(jid)


# -- the CLI --------------------------------------------------------------------------------


@pytest.fixture
def usage_db(tmp_path: Path) -> Path:
    """A ledger with jobs of two users on three devices over the last ten days."""
    path = tmp_path / "acct.db"
    now = time.time()
    with Ledger(path) as led:
        _job(led, 101, ALICE, "ibm_fez", "ibm", now - 9 * DAY, 300.0, vendor_seconds=40.0)
        _job(led, 102, ALICE, "ibm_fez", "ibm", now - 3 * DAY, 300.0, vendor_seconds=25.0)
        _job(led, 103, BOB, "aer", "qiskit", now - 2 * DAY, 120.0, queue="debug",
             exit="timeout")
        _job(led, 104, BOB, "ibm_fez", "ibm", now - DAY, 60.0, vendor_seconds=5.0,
             exit="canceled")
        _job(led, 105, ALICE, "sv1", "amazon", now - 0.5 * DAY, 30.0, vendor_seconds=1.5)
    return path


def _usage(db: Path, *args: str) -> subprocess.CompletedProcess:
    result = run_cli("usage", "--db", str(db), *args)
    assert result.returncode == 0, result.stderr
    return result


def test_usage_table(usage_db: Path) -> None:
    out = _usage(usage_db, "--since", "7d").stdout.splitlines()
    assert out[0].startswith("QPU usage ") and out[0].endswith(" .. now")
    assert out[1].split() == ["user", "device", "jobs", "QPU", "s", "vendor", "s", "wall", "s",
                              "tasks", "shots"]
    rows = [line.split() for line in out[2:]]
    assert [r[:4] for r in rows] == [["bob", "aer", "1", "120.0"], ["alice", "ibm_fez", "1",
                                                                     "25.0"],
                                     ["bob", "ibm_fez", "1", "5.0"], ["alice", "sv1", "1", "1.5"],
                                     ["total", "4", "151.5", "31.5"]]
    jobs = _usage(usage_db, "--jobs", "--user", "bob").stdout.splitlines()
    assert jobs[0].split()[:3] == ["job", "user", "queue"]
    assert [line.split()[0] for line in jobs[1:]] == [accounting.f58(103), accounting.f58(104)]
    assert jobs[1].split()[-1] == "timeout" and jobs[2].split()[-1] == "canceled"
    empty = _usage(usage_db, "--device", "nothing").stdout
    assert "no usage recorded in this window" in empty


def test_usage_json(usage_db: Path) -> None:
    data = json.loads(_usage(usage_db, "--format", "json", "--by", "device",
                             "--since", "7d").stdout)
    assert data["group_by"] == ["device"] and data["until"] is None
    assert {t["device"]: t["seconds"] for t in data["totals"]} == \
        {"aer": 120.0, "ibm_fez": 30.0, "sv1": 1.5}
    assert sorted(j["jobid"] for j in data["jobs"]) == [102, 103, 104, 105]
    assert {j["f58"] for j in data["jobs"]} == {accounting.f58(i) for i in (102, 103, 104, 105)}
    one = json.loads(_usage(usage_db, "--format", "json", "--by", "").stdout)
    assert [(t["jobs"], t["seconds"]) for t in one["totals"]] == [(5, 191.5)]


def test_usage_csv(usage_db: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(
        _usage(usage_db, "--format", "csv", "--by", "user,queue").stdout)))
    assert list(rows[0]) == ["user", "queue", *accounting.TOTAL_COLUMNS]
    got = {(r["user"], r["queue"]): (int(r["jobs"]), float(r["seconds"])) for r in rows}
    assert got == {("alice", "batch"): (3, 66.5), ("bob", "debug"): (1, 120.0),
                   ("bob", "batch"): (1, 5.0)}
    jobs = list(csv.DictReader(io.StringIO(
        _usage(usage_db, "--format", "csv", "--jobs", "--queue", "batch").stdout)))
    assert tuple(jobs[0]) == accounting.JOB_COLUMNS
    assert [int(j["jobid"]) for j in jobs] == [101, 102, 104, 105]
    first = jobs[0]
    assert (first["username"], first["userid"], first["bank"], first["device"],
            float(first["seconds"]), first["source"], float(first["wall_seconds"])) == \
        ("alice", "1001", "physics", "ibm_fez", 40.0, "vendor", 300.0)
    assert float(first["t_inactive"]) - float(first["t_run"]) == pytest.approx(302.0)


def test_usage_chart_is_a_png(usage_db: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib (the 'report' extra) not installed")
    png = tmp_path / "usage.png"
    result = _usage(usage_db, "--since", "10d", "--chart", str(png), "--format", "json")
    json.loads(result.stdout)  # the report is still printed, whole
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (1000, 500)
    assert len(data) > 5000 and list(tmp_path.glob(".usage.png.*")) == []
    size, edges, series = __import__("fluxqr.core.usagechart", fromlist=["bins"]).bins(
        Ledger(usage_db).usage(), None, None)
    assert size == DAY and set(series) == {"aer", "ibm_fez", "sv1"}
    assert sum(series["ibm_fez"]) == 70.0 and len(edges) >= 9


@pytest.mark.parametrize("args,needles", [
    (("--since", "last week"), ("--since", "cannot read 'last week'")),
    (("--since", "1d", "--until", "3d"), ("--since is later than --until",)),
    (("--by", "user,colour"), ("cannot group by colour",)),
])
def test_usage_user_errors(usage_db: Path, args, needles) -> None:
    assert_user_error(run_cli("usage", "--db", str(usage_db), *args), *needles)


def test_usage_without_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    assert_user_error(run_cli("usage", "--db", str(missing)), "no accounting database at")
    assert not missing.exists()
    env = {k: v for k, v in __import__("os").environ.items() if k != "FLUX_URI"}
    assert_user_error(run_cli("usage", env=env), "not inside a Flux instance", "--db")
    png = tmp_path / "dir.png"
    png.mkdir()
    db = tmp_path / "a.db"
    Ledger(db).close()
    assert_user_error(run_cli("usage", "--db", str(db), "--chart", str(png)),
                      "cannot write the chart")
