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

import pytest
from fluxinst import FluxInstance, build_r, requires_flux

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
