"""Real Flux: the quantum agent takes the vendor side first (start modes ``ready`` and
``predicted``), against the simulated IBM device (the real ``qrmi`` client in the loop)."""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import pytest
import yaml
from fluxinst import QRMI_SAMPLER_TASK, FluxInstance, build_r, requires_flux
from standins.qcs_server import QCSStandIn

pytestmark = [requires_flux, pytest.mark.flux]

KEY_VAR = "FLUXQR_TEST_IBM_KEY"
SECRET = "qcs-apikey-51c0ffee"
TASK = r"""
import json, os
print(json.dumps({k: v for k, v in os.environ.items()
                  if k.endswith("ACQUISITION_TOKEN") or k.startswith("FLUXQR_QPU")}))
"""


def _devices(path: Path, server: QCSStandIn, slots: int = 2) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "devices": [
        {"name": "ibm_fez", "adapter": "qrmi", "qubits": 156, "vendor": "ibm",
         "technology": "superconducting", "sharing": {"sessions": slots}, "timeout": 30,
         "params": {"resource_id": "ibm_fez", "resource_type": "ibm-quantum-compute-service",
                    "config": server.qrmi_config()},
         "credentials": {"QRMI_IBM_QCS_IAM_APIKEY": KEY_VAR}}]}))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("flux-agent")
    # one model minute = 2 s; the queue starts empty (tests set it)
    server = QCSStandIn("fake_fez", apikey=SECRET, time_scale=30.0, service_median=20.0,
                        service_sigma=0.2, interactive_ttl=120.0).start()
    devices = _devices(work / "devices.yaml", server)
    (work / "task.py").write_text(TASK)
    inst = FluxInstance(work, build_r(work / "R.json", cores=4, devices=devices),
                        hosts="node[0-1]", devices=devices, env={KEY_VAR: SECRET},
                        agent_args=("interval=1",)).start()
    yield inst, server, work
    inst.stop()
    server.stop()


def _ops(server: QCSStandIn, op: str) -> list[dict]:
    return [e for e in server.log()["sessions"] if e["op"] == op]


def _until(predicate, limit: float = 90, what: str = "condition"):
    """Poll ``predicate`` until it returns something true (the bound is a hang guard)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _memo(inst: FluxInstance, jobid: str) -> dict:
    rec = inst.job_info(jobid)
    return ((rec.get("annotations") or {}).get("user") or {}).get("qpu") or {}


def _events(inst: FluxInstance, jobid: str) -> list[dict]:
    out = inst.run(["flux", "job", "eventlog", "-f", "json", jobid]).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _balanced(server: QCSStandIn) -> None:
    """Every session opened on the vendor is closed exactly once (waits for the agent)."""
    def done() -> bool:
        opened = {e["session_id"] for e in _ops(server, "acquire")}
        closed = [e["session_id"] for e in _ops(server, "release")]
        return sorted(closed) == sorted(opened)
    _until(done, what="every session closed once")


def _ran_in_second_session(inst: FluxInstance, server: QCSStandIn, jobid: str) -> list[str]:
    """The job completed, and its tasks had the second of the two sessions opened (the
    first was given back); returns the two session ids."""
    info = inst.wait_job(jobid)
    assert info["result"] == "COMPLETED"
    sessions = [e["session_id"] for e in _ops(server, "acquire")]
    assert len(sessions) == 2, sessions
    seen = json.loads(inst.run(["flux", "job", "attach", jobid], check=False
                               ).stdout.splitlines()[-1])
    assert seen["ibm_fez_QRMI_JOB_ACQUISITION_TOKEN"] == sessions[1]
    return sessions


def test_ready_job_is_held_until_the_vendor_grants_then_runs_with_its_session(env) -> None:
    inst, server, work = env
    server.reset()
    server.set(initial_queue=3, arrival_rate=0.0)  # ~60 model s of other users' work ahead
    jobid = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez", sys.executable,
                      str(work / "task.py")]).stdout.strip()
    events = _events(inst, jobid)
    assert events[0]["name"] == "submit" and events[0]["context"]["urgency"] == 0
    _until(lambda: _memo(inst, jobid).get("state") == "anchored", what="anchored")
    assert "alloc" not in [e["name"] for e in _events(inst, jobid)], "nodes idle on vendor"
    info = inst.wait_job(jobid)
    assert info["result"] == "COMPLETED"
    names = [e["name"] for e in _events(inst, jobid)]
    # released by the agent (urgency restored to the default) before the nodes were given
    urgency = [e for e in _events(inst, jobid) if e["name"] == "urgency"]
    assert urgency and urgency[-1]["context"]["urgency"] == 16
    assert names.index("urgency") < names.index("alloc")
    r = inst.job_R(jobid)
    assert any(n["metadata"]["type"] == "qpu" for n in r["scheduling"]["graph"]["nodes"])
    out = inst.run(["flux", "job", "attach", jobid], check=False).stdout
    seen = json.loads(out.splitlines()[-1])
    session = _ops(server, "acquire")[-1]["session_id"]
    assert seen["ibm_fez_QRMI_JOB_ACQUISITION_TOKEN"] == session
    log = server.log()
    anchor = [j for j in log["jobs"] if j.get("session_id") == session]
    assert anchor and anchor[0]["running"] is not None, "the anchor ran in the job's session"
    sess = [s for s in log["sim_sessions"] if s["id"] == session][0]
    assert sess["activated"] is not None and sess["timeouts"] == 0
    _balanced(server)
    server.set(initial_queue=0)


def test_grant_given_back_when_the_nodes_were_taken_meanwhile(env) -> None:
    """The anchor goes in while the nodes are free; a classical job takes them before the
    vendor grants. The agent gives the grant back (closes the session instead of keeping
    the QPU idle and billed for 30 minutes), queues again once the nodes are coming
    free, and the job runs in its second session."""
    inst, server, work = env
    server.reset()
    server.set(initial_queue=3, arrival_rate=0.0)  # ~60 model s (2 s) until the grant
    blocker = None
    try:
        jobid = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez", sys.executable,
                          str(work / "task.py")]).stdout.strip()
        _until(lambda: _memo(inst, jobid).get("state") == "anchored", what="anchored")
        blocker = inst.run(["flux", "submit", "-N2", "-t", "30m", "sleep", "600"]
                           ).stdout.strip()
        _until(lambda: "grant given back" in (_memo(inst, jobid).get("why") or ""),
               what="the grant given back")
        first = _ops(server, "acquire")[0]["session_id"]
        _until(lambda: first in [e["session_id"] for e in _ops(server, "release")],
               what="the first session closed")
        assert "alloc" not in [e["name"] for e in _events(inst, jobid)]
        inst.run(["flux", "cancel", blocker])
        _ran_in_second_session(inst, server, jobid)
        sims = {s["id"]: s for s in server.log()["sim_sessions"]}
        assert sims[first]["activated"] is not None and sims[first]["timeouts"] == 0
        _balanced(server)
    finally:
        if blocker:
            inst.run(["flux", "cancel", blocker], check=False)
        server.set(initial_queue=0)


def test_released_job_that_loses_its_nodes_gives_the_grant_back(env) -> None:
    """At the grant Fluxion can start the job soon (one node busy with a job about to
    reach its time limit), so it is released; then a more urgent classical job takes that
    node first. Asked again while it waits, Fluxion now predicts minutes: the agent holds
    the job again and gives the grant back instead of keeping the QPU idle, and the job
    runs in its second session once the node is free."""
    inst, server, work = env
    server.reset()
    # a 20 s idle timeout (600 model s): half of it is the bound on grant -> start
    server.set(initial_queue=3, arrival_rate=0.0, interactive_ttl=600.0)
    short = urgent = None
    try:
        jobid = inst.run(["flux", "submit", "-N2", "--qpu-device=ibm_fez", sys.executable,
                          str(work / "task.py")]).stdout.strip()
        _until(lambda: _memo(inst, jobid).get("state") == "anchored", what="anchored")
        short = inst.run(["flux", "submit", "-N1", "-t", "8s", "sleep", "600"]).stdout.strip()
        _until(lambda: _memo(inst, jobid).get("state") == "released", what="released")
        assert "alloc" not in [e["name"] for e in _events(inst, jobid)]
        urgent = inst.run(["flux", "submit", "-N1", "--urgency=31", "-t", "30m", "sleep",
                           "600"]).stdout.strip()
        _until(lambda: "grant given back" in (_memo(inst, jobid).get("why") or ""),
               limit=60, what="the grant given back")
        urgency = [e["context"]["urgency"] for e in _events(inst, jobid)
                   if e["name"] == "urgency"]
        assert urgency[-2:] == [16, 0], urgency  # released, then held again
        first = _ops(server, "acquire")[0]["session_id"]
        _until(lambda: first in [e["session_id"] for e in _ops(server, "release")],
               what="the first session closed")
        inst.run(["flux", "cancel", urgent])
        _ran_in_second_session(inst, server, jobid)
        _balanced(server)
    finally:
        for other in (short, urgent):
            if other:
                inst.run(["flux", "cancel", other], check=False)
        server.set(initial_queue=0, interactive_ttl=120.0)


def test_cancel_while_held_cancels_the_anchor_and_closes_the_session(env) -> None:
    inst, server, work = env
    server.reset()
    server.set(initial_queue=40)  # a long vendor queue: the anchor stays queued
    try:
        jobid = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez", "true"]
                         ).stdout.strip()
        _until(lambda: _memo(inst, jobid).get("state") == "anchored", what="anchored")
        session = _ops(server, "acquire")[-1]["session_id"]
        # flux qr status lists the held job with its vendor state
        from flux.job import JobID

        held = json.loads(inst.run(["flux", "qr", "status", "--json"]).stdout)["jobs"]
        assert held[str(int(JobID(jobid)))]["state"] == "anchored"
        assert held[str(int(JobID(jobid)))]["vendor_queue"] >= 1
        assert JobID(jobid).f58 in inst.run(["flux", "qr", "status"]).stdout
        inst.run(["flux", "cancel", jobid])
        inst.wait_job(jobid)
        _balanced(server)
        assert _ops(server, "release")[-1]["session_id"] == session
        anchor = [j for j in server.log()["jobs"] if j.get("session_id") == session]
        assert anchor and anchor[0]["running"] is None, "the anchor never ran"
        assert anchor[0]["state"] == "Cancelled"
        assert "alloc" not in [e["name"] for e in _events(inst, jobid)]
    finally:
        server.set(initial_queue=0)


def test_cancel_while_the_vendor_is_still_opening_the_session(env) -> None:
    inst, server, work = env
    server.reset()
    server.set(slow=3.0)  # every vendor reply stalls 3 s
    try:
        jobid = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez", "true"]
                         ).stdout.strip()
        _until(lambda: _memo(inst, jobid).get("state") == "opening", what="opening")
        inst.run(["flux", "cancel", jobid])
        inst.wait_job(jobid)
    finally:
        server.set(slow=0.0)
    _until(lambda: _ops(server, "acquire"), what="the stalled open to land")
    _balanced(server)


def test_vendor_refusal_fails_the_job_with_one_line(env) -> None:
    inst, server, work = env
    marker = work / "refused-ran"
    server.set(refuse_sessions=True)
    try:
        jobid = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez", "touch",
                          str(marker)]).stdout.strip()
        info = inst.wait_job(jobid)
    finally:
        server.set(refuse_sessions=False)
    assert info["result"] != "COMPLETED" and not marker.exists()
    exc = [e for e in _events(inst, jobid) if e["name"] == "exception"]
    assert exc and exc[0]["context"]["type"] == "fluxqr"
    note = exc[0]["context"]["note"]
    assert "the vendor refused the session" in note and "\n" not in note
    assert SECRET not in note


def test_device_down_while_held_waits_then_runs(env) -> None:
    inst, server, work = env
    server.set(offline=True)
    try:
        _until(lambda: _down(inst), what="device down")  # the agent refreshes every second
        jobid = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez", "true"]
                         ).stdout.strip()
        _until(lambda: "down" in (_memo(inst, jobid).get("why") or ""), what="why=down")
        assert _memo(inst, jobid)["state"] == "waiting"
        # a `now` job for the down device is held too (never at the head of Fluxion's
        # queue), so a classical job behind it runs, under the default fcfs policy
        now = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez", "--qpu-start=now",
                        "true"]).stdout.strip()
        _until(lambda: "down" in (_memo(inst, now).get("why") or ""), what="now job held")
        assert inst.job_info(now)["urgency"] == 0
        classical = inst.run(["flux", "submit", "-N2", "true"]).stdout.strip()
        assert inst.wait_job(classical)["result"] == "COMPLETED"
    finally:
        server.set(offline=False)
    assert inst.wait_job(jobid)["result"] == "COMPLETED"
    assert inst.wait_job(now)["result"] == "COMPLETED"
    assert inst.job_info(now)["urgency"] == 16  # the user's urgency, restored


def _down(inst: FluxInstance) -> bool:
    status = json.loads(inst.run(["flux", "qr", "status", "--json"]).stdout)
    return any(d["name"] == "ibm_fez" and not d["up"] for d in status.get("devices", []))


def test_fifty_jobs_random_cancel_timeout_failure_sessions_balanced(env) -> None:
    inst, server, work = env
    server.reset()
    rng = random.Random(11)
    kinds = (["ok"] * 20 + ["fail"] * 10 + ["cancel"] * 10 + ["timeout"] * 10)
    rng.shuffle(kinds)
    jobs = []
    for kind in kinds:
        cmd = {"ok": ["true"], "fail": ["false"], "cancel": ["sleep", "60"],
               "timeout": ["sleep", "60"]}[kind]
        extra = ["-t", "3s"] if kind == "timeout" else []
        start = ["--qpu-start=predicted"] if rng.random() < 0.3 else []
        jobid = inst.run(["flux", "submit", "-n1", "--qpu-device=ibm_fez", *start, *extra,
                          *cmd]).stdout.strip()
        jobs.append((kind, jobid))
    for kind, jobid in jobs:
        if kind == "cancel":
            time.sleep(rng.random() * 0.3)  # held, opening, anchored or running
            inst.run(["flux", "cancel", jobid], check=False)
    results = {jobid: (kind, inst.wait_job(jobid, timeout=300)) for kind, jobid in jobs}
    for kind, info in results.values():
        if kind in ("ok", "fail"):
            assert info["result"] == ("COMPLETED" if kind == "ok" else "FAILED"), (kind, info)
    _balanced(server)
    opened = {e["session_id"]: e["time"] for e in _ops(server, "acquire")}
    closed = {e["session_id"]: e["time"] for e in _ops(server, "release")}
    edges = sorted([(t, 1) for t in opened.values()] + [(t, -1) for t in closed.values()])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    assert peak <= 2, f"{peak} sessions open at once on a device with 2 session slots"
    status = json.loads(inst.run(["flux", "qr", "status", "--json"]).stdout)
    assert not status["jobs"], status["jobs"]
    state = Path(inst.run(["flux", "getattr", "rundir"]).stdout.strip()) / "fluxqr"
    _until(lambda: not list(state.glob("*.json")), what="no session records left")


def test_module_reload_readopts_held_jobs(env) -> None:
    inst, server, work = env
    server.reset()
    server.set(initial_queue=6)
    try:
        ids = [inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez", "true"]
                        ).stdout.strip() for _ in range(2)]
        for jobid in ids:
            _until(lambda j=jobid: _memo(inst, j).get("state") == "anchored", what="anchored")
        opened = len(_ops(server, "acquire"))
        inst.run(["flux", "module", "remove", "fluxqr"])
        inst.load_agent()
        for jobid in ids:
            assert inst.wait_job(jobid, timeout=180)["result"] == "COMPLETED"
        assert len(_ops(server, "acquire")) == opened, "re-adopted, not reopened"
        _balanced(server)
    finally:
        server.set(initial_queue=0)


def test_released_by_hand_runs_as_now(env) -> None:
    inst, server, work = env
    server.reset()
    server.set(initial_queue=40)
    try:
        jobid = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez", "true"]
                         ).stdout.strip()
        _until(lambda: _memo(inst, jobid).get("state") in ("opening", "anchored"),
               what="held")
        inst.run(["flux", "job", "urgency", jobid, "16"])
        info = inst.wait_job(jobid, timeout=120)
        assert info["result"] == "COMPLETED"
        assert "released by hand" in _memo(inst, jobid).get("start", "")
        _balanced(server)
    finally:
        server.set(initial_queue=0)


def test_held_submission_needs_the_agent(env) -> None:
    inst, server, work = env
    inst.run(["flux", "module", "remove", "fluxqr"])
    try:
        r = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez", "true"], check=False)
        assert r.returncode != 0 and not r.stdout.strip()
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "fluxqr agent is not running" in lines[0], r.stderr
    finally:
        inst.load_agent()


def test_broken_config_never_stops_the_instance(tmp_path: Path) -> None:
    """No [fluxqr] table (a flux batch child), or a broken devices file: the instance
    starts, the agent loads and says why in dmesg and status, classical jobs run, and a
    fixed configuration is picked up by flux config reload."""
    with QCSStandIn("fake_fez") as server:
        good = _devices(tmp_path / "devices.yaml", server)
        broken = tmp_path / "broken.yaml"
        broken.write_text("version: 1\ndevices: [ {name: x\n")
        inst = FluxInstance(tmp_path / "i", build_r(tmp_path / "R.json", devices=good),
                            hosts="node[0-1]", devices=broken).start()
        try:
            status = json.loads(inst.run(["flux", "qr", "status", "--json"]).stdout)
            assert "broken.yaml" in status["error"]
            assert "agent not configured" in inst.run(["flux", "dmesg"]).stdout
            jobid = inst.run(["flux", "submit", "-n1", "true"]).stdout.strip()
            assert inst.wait_job(jobid)["result"] == "COMPLETED"
            conf = tmp_path / "i" / "conf" / "instance.toml"
            conf.write_text(conf.read_text().replace(str(broken), str(good)))
            inst.run(["flux", "config", "reload"])
            status = json.loads(inst.run(["flux", "qr", "status", "--json"]).stdout)
            assert status["error"] is None and status["devices"]
            # a flux batch child has no [fluxqr]: the agent loads there too, and classical
            # jobs run
            out, script = tmp_path / "child.out", tmp_path / "child.sh"
            script.write_text(f"#!/bin/sh\nflux module load {inst.module} && flux run true && "
                              "flux qr status --json\n")
            child = inst.run(["flux", "batch", "-N1", f"--output={out}", str(script)]
                             ).stdout.strip()
            assert inst.wait_job(child)["result"] == "COMPLETED"
            assert "no devices file configured" in out.read_text(), out.read_text()
        finally:
            inst.stop()


def _usage(inst: FluxInstance, *args: str) -> str:
    return inst.run(["flux", "qr", "usage", "--since", "1d", *args]).stdout


def test_usage_recorded_for_every_ending_and_matching_the_vendor_billing(env) -> None:
    """Complete, fail, cancel and timeout: one row each, charged what the vendor billed."""
    import csv
    import io

    inst, server, work = env
    server.reset()
    jobs = {}
    for kind, cmd, extra in (("completed", ["sleep", "1"], []), ("failed", ["false"], []),
                             ("canceled", ["sleep", "60"], []),
                             ("timeout", ["sleep", "60"], ["-t", "3s"])):
        jobs[kind] = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez", *extra, *cmd]
                              ).stdout.strip()
    inst.run(["flux", "job", "wait-event", "-t", "120", jobs["canceled"], "start"])
    inst.run(["flux", "cancel", jobs["canceled"]])
    for jobid in jobs.values():
        inst.wait_job(jobid, timeout=180)
    _balanced(server)
    from flux.job import JobID

    def rows() -> dict[str, dict]:
        data = json.loads(_usage(inst, "--jobs", "--format", "json"))
        return {r["jobid"]: r for r in data["jobs"]}

    wanted = {int(JobID(j)) for j in jobs.values()}
    _until(lambda: all(rows().get(j, {}).get("exit") for j in wanted), what="jobs ended")
    by_id = rows()
    log = server.log()
    scale = server.knobs()["time_scale"]  # the log bills model seconds, the API wall ones
    billed = {s["id"]: s["billed"] / scale for s in log["sim_sessions"]}
    import hashlib

    for kind, jobid in jobs.items():
        row = by_id[int(JobID(jobid))]
        assert row["exit"] == kind and row["device"] == "ibm_fez", row
        assert row["tasks"] == 0, row  # the job ran no task; the agent's anchor is not one
        ref = ((inst.job_info(jobid).get("annotations") or {}).get("user") or {}) \
            .get("qpu_sessions", {}).get("ibm_fez", {}).get("session")
        session = next(s for s in billed if "sha256:" + hashlib.sha256(s.encode())
                       .hexdigest()[:16] == ref)
        assert row["source"] == "vendor" and row["qpu_seconds"] == pytest.approx(
            billed[session], abs=1e-6), (kind, row, billed[session])
    # every format: the table, CSV and JSON agree on the totals
    table = _usage(inst)
    assert "ibm_fez" in table
    parsed = list(csv.DictReader(io.StringIO(_usage(inst, "--format", "csv"))))
    total = json.loads(_usage(inst, "--format", "json"))["totals"]
    assert [r["device"] for r in parsed] == [t["device"] for t in total]


def test_usage_counts_the_tasks_the_job_submitted_not_the_agents_anchors(env) -> None:
    """A held job (anchored by the agent) submits N tasks in its session: the ledger and
    ``flux qr usage`` say N, the user's own jobs in the stand-in's log of that session."""
    import hashlib

    from flux.job import JobID

    inst, server, work = env
    server.reset()
    (work / "tasks.py").write_text(QRMI_SAMPLER_TASK)
    n = 3
    jobid = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez", sys.executable,
                      str(work / "tasks.py"), str(n)]).stdout.strip()
    assert inst.wait_job(jobid, timeout=180)["result"] == "COMPLETED"
    submitted = json.loads(inst.run(["flux", "job", "attach", jobid]).stdout.splitlines()[-1])
    assert len(set(submitted)) == n
    _balanced(server)
    ref = ((inst.job_info(jobid).get("annotations") or {}).get("user") or {}) \
        .get("qpu_sessions", {}).get("ibm_fez", {}).get("session")
    session = next(e["session_id"] for e in _ops(server, "acquire")
                   if "sha256:" + hashlib.sha256(e["session_id"].encode()).hexdigest()[:16]
                   == ref)
    in_session = {j["id"] for j in server.log()["jobs"] if j["session_id"] == session}
    anchors = in_session - set(submitted)
    assert set(submitted) <= in_session and anchors, "the user's tasks and the agent's anchor"

    def row() -> dict:
        data = json.loads(_usage(inst, "--jobs", "--format", "json"))
        return next((r for r in data["jobs"] if r["jobid"] == int(JobID(jobid))), {})

    _until(lambda: row().get("exit"), what="the job's usage row")
    assert row()["tasks"] == n == len(in_session) - len(anchors), (row(), in_session)
    assert row()["device"] == "ibm_fez" and row()["source"] == "vendor"
    # the table's per-job view shows the same count
    table = _usage(inst, "--jobs").splitlines()
    line = next(ln for ln in table if JobID(jobid).f58 in ln)
    assert table[0].split()[-2:] == ["tasks", "exit"], table
    assert line.split()[-2:] == [str(n), "completed"], table


def test_qpu_limits_at_submit_and_while_running(tmp_path: Path) -> None:
    with QCSStandIn("fake_fez", apikey=SECRET, time_scale=30.0) as server:
        devices = _devices(tmp_path / "devices.yaml", server)
        inst = FluxInstance(tmp_path / "i", build_r(tmp_path / "R.json", devices=devices),
                            hosts="node[0-1]", devices=devices, env={KEY_VAR: SECRET},
                            config="\n[fluxqr.limits]\njob-qpu-seconds = 120\n").start()
        try:
            # at submit: a session that may run 10 minutes is over the 2-minute cap
            r = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez",
                          "--qpu-session-time=10m", "true"], check=False)
            assert r.returncode != 0 and not r.stdout.strip()
            assert len(r.stderr.strip().splitlines()) == 1
            assert "over the site limit of 120 per job" in r.stderr, r.stderr
            # while running: the job is stopped when its session reaches the cap
            jobid = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez", "sleep", "600"]
                             ).stdout.strip()
            info = inst.wait_job(jobid, timeout=300)
            assert info["result"] != "COMPLETED"
            exc = [e for e in _events(inst, jobid) if e["name"] == "exception"]
            assert exc and exc[0]["context"]["type"] == "qpu-limit", exc
            assert "reaching the site limit" in exc[0]["context"]["note"]
            _balanced(server)
        finally:
            inst.stop()
