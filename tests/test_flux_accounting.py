"""Real Flux: QPU accounting inside an instance — jobs that complete, fail, are canceled
and time out, recorded through the ledger hooks by a small driver (standing in for the
quantum agent, which calls the same hooks), read back with ``flux qr usage``, and still
there after the instance restarts."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from fluxinst import QRMI_SAMPLER_TASK, FluxInstance, build_r, requires_flux

from fluxqr.core import accounting

pytestmark = [requires_flux, pytest.mark.flux]

# Runs inside the instance: waits for the given jobs, then records each as the agent would
# for a job on a local simulator (charged its wall time), using the instance's ledger path.
DRIVER = r"""
import json, pwd, sys
import flux, flux.job
from fluxqr.core.accounting import Ledger
from fluxqr.flux import instance
h = flux.Flux()
path = instance.accounting_db(h)
led = Ledger(path)
for jobid in sys.argv[1:]:
    jid = flux.job.JobID(jobid)
    flux.job.event_wait(h, jid, "clean", raiseJobException=False)
    info = flux.job.get_job(h, jid)
    user = pwd.getpwuid(info["userid"]).pw_name
    led.job_started(jid, userid=info["userid"], username=user, queue=info.get("queue"),
                    devices={"aer": "qiskit"}, t_submit=info["t_submit"])
    led.job_running(jid, info["t_run"])
    led.session_event(jid, "aer", "activated", info["t_run"])
    led.session_event(jid, "aer", "closed", info["t_inactive"])
    led.job_ended(jid, info["result"], info["t_inactive"])
print(json.dumps({"path": path}))
"""


def _submit(inst: FluxInstance, *args: str) -> str:
    return inst.run(["flux", "submit", *args]).stdout.strip()


def test_usage_of_real_jobs_and_restart(tmp_path: Path) -> None:
    r_path = build_r(tmp_path / "R.json", nodes=1, cores=4)
    db = tmp_path / "state" / "accounting.db"
    config = f'[fluxqr]\naccounting-db = "{db}"\n'
    with FluxInstance(tmp_path / "a", r_path, size=1, config=config) as inst:
        # before any job: an empty report, not an error
        empty = inst.run(["flux", "qr", "usage"])
        assert "no usage recorded" in empty.stdout
        jobs = {"completed": _submit(inst, "true"),
                "failed": _submit(inst, "false"),
                "timeout": _submit(inst, "-t", "1s", "sleep", "60"),
                "canceled": _submit(inst, "sleep", "60")}
        inst.run(["flux", "job", "wait-event", jobs["canceled"], "start"])
        inst.run(["flux", "cancel", jobs["canceled"]])
        out = inst.run([sys.executable, "-c", DRIVER, *jobs.values()], timeout=300)
        assert json.loads(out.stdout)["path"] == str(db)
        infos = {kind: inst.job_info(jobid) for kind, jobid in jobs.items()}
        rows = list(csv.DictReader(io.StringIO(inst.run(
            ["flux", "qr", "usage", "--jobs", "--format", "csv"]).stdout)))
        by_id = {int(r["jobid"]): r for r in rows}
        assert len(rows) == 4
        for kind, info in infos.items():
            row = by_id[info["id"]]
            assert row["exit"] == kind, (kind, row)
            assert int(row["userid"]) == info["userid"]
            assert float(row["t_run"]) == pytest.approx(info["t_run"])
            assert float(row["seconds"]) == pytest.approx(info["t_inactive"] - info["t_run"])
            assert row["source"] == "wall" and row["device"] == "aer"
        assert accounting.f58(infos["failed"]["id"]) == jobs["failed"]  # same id as flux's
        table = inst.run(["flux", "qr", "usage", "--since", "1h", "--by", "user,device"]).stdout
        assert table.splitlines()[2].split()[1:3] == ["aer", "4"]
        before = json.loads(inst.run(["flux", "qr", "usage", "--format", "json"]).stdout)
    # a new instance with the same configuration: the ledger is still there
    with FluxInstance(tmp_path / "b", r_path, size=1, config=config) as inst:
        after = json.loads(inst.run(["flux", "qr", "usage", "--format", "json"]).stdout)
        assert after["jobs"] == before["jobs"] and after["totals"] == before["totals"]
        assert sorted(j["exit"] for j in after["jobs"]) == ["canceled", "completed", "failed",
                                                            "timeout"]


def test_default_database_is_under_the_instance(tmp_path: Path) -> None:
    r_path = build_r(tmp_path / "R.json", nodes=1, cores=2)
    with FluxInstance(tmp_path / "a", r_path, size=1) as inst:
        code = ("import flux; from fluxqr.flux import instance; "
                "print(instance.accounting_db(flux.Flux()))")
        path = inst.python(code).stdout.strip()
        rundir = inst.run(["flux", "getattr", "rundir"]).stdout.strip()
        statedir = inst.run(["flux", "getattr", "statedir"], check=False).stdout.strip()
        assert path == str(Path(statedir or rundir) / "fluxqr" / "accounting.db")
        result = inst.run(["flux", "qr", "usage", "--format", "json"])
        assert json.loads(result.stdout)["jobs"] == []


KEY_VAR, SECRET = "FLUXQR_TEST_IBM_KEY", "qcs-apikey-5hutd0wn"


def _ibm_instance(tmp_path: Path, server: Any, db: Path) -> FluxInstance:
    import yaml

    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({"version": 1, "devices": [
        {"name": "ibm_fez", "adapter": "qrmi", "qubits": 156, "vendor": "ibm",
         "timeout": 30, "params": {"resource_id": "ibm_fez", "resource_type":
                                   "ibm-quantum-compute-service",
                                   "config": server.qrmi_config()},
         "credentials": {"QRMI_IBM_QCS_IAM_APIKEY": KEY_VAR}}]}))
    return FluxInstance(tmp_path / "i", build_r(tmp_path / "R.json", devices=devices),
                        hosts="node[0-1]", devices=devices, env={KEY_VAR: SECRET},
                        config=f'accounting-db = "{db}"\n', agent_args=("interval=1",))


def _sessions(log: dict[str, Any], op: str) -> list[str]:
    return [e["session_id"] for e in log["sessions"] if e["op"] == op]


def _one_session_billed(log: dict[str, Any]) -> float:
    """The one session the agent opened and closed, as the stand-in billed it (client s)."""
    acquired = _sessions(log, "acquire")
    assert len(acquired) == 1 and _sessions(log, "release") == acquired, log["sessions"]
    return {s["id"]: s["billed"] / 30.0 for s in log["sim_sessions"]}[acquired[0]]


def _ledger_row(db: Path, jobid: str) -> dict[str, Any]:
    """The job's only usage row, read from the ledger file after the instance is gone."""
    from flux.job import JobID

    with accounting.Ledger(db, create=False) as led:
        rows = [r for r in led.usage() if r["jobid"] == int(JobID(jobid))]
    assert len(rows) == 1, rows
    return rows[0]


def test_instance_shutdown_accounts_a_held_jobs_session(tmp_path: Path) -> None:
    """A hybrid job is held (its anchor queued behind 500 others) when the instance stops:
    the agent closes its IBM session at shutdown, and the ledger (read after the instance
    is gone) has it closed and charged what the vendor billed; the job, still queued, has
    not ended."""
    import time

    from standins.qcs_server import QCSStandIn

    db = tmp_path / "state" / "accounting.db"
    with QCSStandIn("fake_fez", apikey=SECRET, time_scale=30.0, initial_queue=500) as server:
        inst = _ibm_instance(tmp_path, server, db).start()
        try:
            jobid = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez", "true"]
                             ).stdout.strip()
            deadline = time.monotonic() + 120  # a hang guard
            while time.monotonic() < deadline and ((inst.job_info(jobid).get("annotations")
                                                    or {}).get("user") or {}).get(
                    "qpu", {}).get("state") != "anchored":
                time.sleep(0.3)
        finally:
            inst.stop()
        log = server.log()
    billed = _one_session_billed(log)
    row = _ledger_row(db, jobid)
    assert row["device"] == "ibm_fez" and row["opened"] is not None, row
    assert row["closed"] is not None and row["exit"] is None, row
    assert row["source"] == "vendor" and row["qpu_seconds"] == pytest.approx(billed, abs=1e-6)
    assert row["tasks"] == 0, row  # the agent's anchor is not the user's


def test_instance_shutdown_accounts_the_running_jobs_sessions(tmp_path: Path) -> None:
    """A hybrid job is still running when the instance stops: the ledger (read after the
    instance is gone) has the job ended, its session closed, charged what the vendor
    billed, with the user's tasks."""
    import time

    from standins.qcs_server import QCSStandIn

    db = tmp_path / "state" / "accounting.db"
    with QCSStandIn("fake_fez", apikey=SECRET, time_scale=30.0) as server:
        (tmp_path / "busy.py").write_text(QRMI_SAMPLER_TASK)
        out = tmp_path / "busy.out"
        inst = _ibm_instance(tmp_path, server, db).start()
        try:
            jobid = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez",
                              f"--output={out}", sys.executable, str(tmp_path / "busy.py"),
                              "2", "hold"]).stdout.strip()
            deadline = time.monotonic() + 180  # a hang guard
            while time.monotonic() < deadline and not (out.exists() and out.read_text()):
                time.sleep(0.3)
            submitted = json.loads(out.read_text().splitlines()[-1])
            assert len(set(submitted)) == 2
        finally:
            inst.stop()
        log = server.log()
    billed = _one_session_billed(log)
    assert billed > 0
    row = _ledger_row(db, jobid)
    assert row["device"] == "ibm_fez" and row["exit"] == "canceled", row
    assert row["closed"] is not None and row["t_inactive"] is not None, row
    assert row["source"] == "vendor" and row["qpu_seconds"] == pytest.approx(billed, abs=1e-6)
    assert row["tasks"] == 2, row
