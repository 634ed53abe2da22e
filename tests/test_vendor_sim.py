"""The discrete-event vendor stand-in: the pure model on a manual clock, and the HTTP
server driven by the real ``qrmi`` client (sessions, primitive jobs, queue lengths)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from standins.qcs_server import QCSControl, QCSStandIn  # tests/ is on sys.path (conftest)
from standins.vendor_sim import ManualClock, SimError, VendorSim

ROOT = Path(__file__).resolve().parents[1]
BELL = ('OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; h q[0]; cx q[0], q[1]; '
        "c = measure q;")


def sim_at(clock: ManualClock, **knobs) -> VendorSim:
    return VendorSim(clock, **{"service_sigma": 0.0, "service_median": 10.0,
                               "task_service": 2.0, **knobs})


def ops(sim: VendorSim, op: str) -> list[dict]:
    return [e for e in sim.events if e["op"] == op]


# -- the model ---------------------------------------------------------------------------


def test_session_activates_when_its_first_job_reaches_the_head():
    clock = ManualClock()
    sim = sim_at(clock, initial_queue=3)
    assert sim.queue_length() == 2  # one of the three runs at once
    sess = sim.open_session("ibm_fez")
    assert sess.state == "open"
    job = sim.submit(sess.id)
    clock.now = 29.0
    assert (sim.job(job.id).state, sim.session(sess.id).state) == ("Queued", "open")
    clock.now = 30.0  # the third 10 s job ends: the session's job is at the head
    assert (sim.job(job.id).state, sim.session(sess.id).state) == ("Running", "active")
    assert sim.session(sess.id).activated == job.running == 30.0
    clock.now = 32.5
    assert sim.job(job.id).state == "Completed" and sim.job(job.id).done == 32.0


def test_active_session_holds_the_device_until_interactive_timeout():
    clock = ManualClock()
    sim = sim_at(clock, interactive_ttl=5.0)
    sess = sim.open_session("ibm_fez")
    first = sim.submit(sess.id)          # runs 0..2, session active from 0
    other = sim.submit(user="other", service=10.0)  # must wait for the session
    clock.now = 4.0
    assert sim.job(other.id).state == "Queued"
    second = sim.submit(sess.id)         # inside the interactive TTL: runs at once
    assert sim.job(second.id).running == 4.0
    clock.now = 20.0                     # 6..11 idle beyond the TTL: session goes inactive
    assert sim.job(other.id).running == 11.0
    assert sim.session(sess.id).state == "inactive"
    assert [e["t"] for e in ops(sim, "interactive-timeout")] == [11.0]
    # billed from activation (0) to the timeout (11), not while open or inactive
    assert sim.session(sess.id).billed == pytest.approx(11.0)
    assert first.done == 2.0


def test_inactive_session_requeues_at_the_back():
    clock = ManualClock()
    sim = sim_at(clock, interactive_ttl=1.0)
    sess = sim.open_session("ibm_fez")
    sim.submit(sess.id)                  # 0..2, timeout at 3
    clock.now = 3.5
    assert sim.session(sess.id).state == "inactive"
    blockers = [sim.submit(user="other", service=10.0) for _ in range(2)]  # to 13.5, 23.5
    late = sim.submit(sess.id)
    clock.now = 100.0
    assert sim.job(late.id).running == pytest.approx(23.5)
    assert all(sim.job(b.id).done <= late.running for b in blockers)
    assert sim.session(sess.id).activations == 2
    activations = [e["t"] for e in ops(sim, "activate")]
    assert activations == [0.0, pytest.approx(23.5)]


def test_max_ttl_closes_and_cancels_queued_jobs():
    clock = ManualClock()
    sim = sim_at(clock, interactive_ttl=100.0, max_ttl=3.0, task_service=2.0)
    sess = sim.open_session("ibm_fez")
    a, b = sim.submit(sess.id), sim.submit(sess.id)
    clock.now = 10.0
    assert sim.session(sess.id).state == "closed"
    assert (sim.job(a.id).state, sim.job(b.id).state) == ("Completed", "Completed")
    c = sim.submit(user="x")
    assert sim.session(sess.id).closed == 3.0 and sim.session(sess.id).billed == 3.0
    with pytest.raises(SimError):
        sim.submit(sess.id)
    assert sim.job(c.id).state in ("Running", "Completed")


def test_close_lets_queued_jobs_run_and_cancel_drops_them():
    clock = ManualClock()
    sim = sim_at(clock, initial_queue=1)
    s1, s2 = sim.open_session("ibm_fez"), sim.open_session("ibm_fez")
    j1, j2 = sim.submit(s1.id), sim.submit(s2.id)
    sim.close_session(s1.id)
    sim.close_session(s2.id, cancel=True)
    clock.now = 50.0
    assert sim.job(j1.id).state == "Completed"
    assert sim.job(j2.id).state == "Cancelled"
    assert sim.session(s1.id).state == sim.session(s2.id).state == "closed"
    # s1 was active only while its job ran (closed with nothing left): billed 2 s
    assert sim.session(s1.id).billed == pytest.approx(2.0)
    assert sim.session(s2.id).activated is None and sim.session(s2.id).billed == 0.0


def test_poisson_arrivals_are_reproducible_and_lognormal():
    logs = []
    for _ in range(2):
        clock = ManualClock()
        sim = VendorSim(clock, arrival_rate=0.05, service_median=10.0, service_sigma=0.8,
                        seed=7)
        clock.now = 4000.0
        sim.advance()
        logs.append([(j.id, j.queued, j.service) for j in sim.jobs.values()])
    assert logs[0] == logs[1]
    arrivals = [q for _, q, _ in logs[0]]
    assert 120 < len(arrivals) < 280  # about 200 expected
    services = sorted(s for _, _, s in logs[0])
    assert 6 < services[len(services) // 2] < 15  # median near 10
    other = VendorSim(ManualClock(), arrival_rate=0.05, seed=8)
    other.advance(4000.0)
    assert [j.queued for j in other.jobs.values()][:5] != arrivals[:5]


# -- the server with the real qrmi client --------------------------------------------------


def _resource(server: QCSStandIn):
    qrmi = pytest.importorskip("qrmi")
    return qrmi, qrmi.QuantumResource.from_config(
        server.name, qrmi.ResourceType.IBMQuantumComputeService,
        {**server.qrmi_config(), "QRMI_IBM_QCS_IAM_APIKEY": "standin-key"})


def _wait(qrmi, res, jid: str, deadline: float = 60.0):
    end = time.monotonic() + deadline
    final = (qrmi.TaskStatus.Completed, qrmi.TaskStatus.Cancelled, qrmi.TaskStatus.Failed)
    while (status := res.task_status(jid)) not in final:
        assert time.monotonic() < end, f"job {jid} still {status}"
        time.sleep(0.02)
    return status


def test_qrmi_session_job_waits_for_the_queue_then_runs():
    with QCSStandIn("fake_fez", time_scale=200.0, initial_queue=4, service_median=20.0,
                    service_sigma=0.3, interactive_ttl=60.0, task_service=5.0) as server:
        qrmi, res = _resource(server)
        sid = res.acquire()
        assert res.status().pending_job_count >= 1  # the simulated queue, live
        payload = qrmi.Payload.QiskitPrimitive(
            input=json.dumps({"pubs": [[BELL]], "version": 2, "shots": 100}),
            program_id="sampler")
        jid = res.task_start(payload)
        assert _wait(qrmi, res, jid) == qrmi.TaskStatus.Completed
        assert json.loads(res.task_result(jid).value)["metadata"]["job_id"] == jid
        res.release(sid)
        log = server.log()
    jobs = {j["id"]: j for j in log["jobs"]}
    mine = jobs[jid]
    assert (mine["session_id"], mine["user"], mine["state"]) == (sid, "api", "Completed")
    others = [j for j in jobs.values() if j["user"] == "other"]
    assert len(others) >= 4
    # FIFO: the four jobs queued before the session's job all ran before it
    assert all(o["done"] <= mine["running"] for o in others[:4])
    sess = next(s for s in log["sim_sessions"] if s["id"] == sid)
    assert sess["activated"] == mine["running"] and sess["state"] == "closed"
    assert sess["billed"] >= mine["done"] - mine["running"]
    assert [e["op"] for e in log["sessions"]] == ["acquire", "release"]
    assert log["sessions"][1]["how"] == "close"  # nothing pending: a plain close
    order = [e["op"] for e in log["events"] if e.get("session_id") == sid]
    assert order[:4] == ["session-open", "job-queued", "activate", "job-running"]


def test_qrmi_task_stop_and_release_with_pending_job_cancels():
    with QCSStandIn("fake_fez", time_scale=1.0, initial_queue=3,
                    service_median=3600.0) as server:
        qrmi, res = _resource(server)
        sid = res.acquire()
        payload = qrmi.Payload.QiskitPrimitive(
            input=json.dumps({"pubs": [[BELL]], "version": 2}), program_id="sampler")
        stopped, pending = res.task_start(payload), res.task_start(payload)
        assert res.task_status(stopped) == qrmi.TaskStatus.Queued
        res.task_stop(stopped)
        assert _wait(qrmi, res, stopped) == qrmi.TaskStatus.Cancelled
        res.release(sid)  # a job still queued: qrmi cancels the session
        assert res.task_status(pending) == qrmi.TaskStatus.Cancelled
        log = server.log()
    assert log["sessions"][-1]["how"] == "cancel"
    sess = next(s for s in log["sim_sessions"] if s["id"] == sid)
    assert sess["activated"] is None and sess["billed"] == 0.0


def test_out_of_process_with_knobs():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.standins.qcs_server", "--time-scale", "50",
         "--initial-queue", "5", "--service-median", "1000", "--seed", "3"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        control = QCSControl(url)
        knobs = control.knobs()
        assert (knobs["time_scale"], knobs["initial_queue"], knobs["seed"]) == (50.0, 5, 3)
        log = control.log()
        assert [j["user"] for j in log["jobs"]] == ["other"] * 5
        assert log["params"]["service_median"] == 1000.0
        control.set(initial_queue=2)  # a restart knob: a fresh queue of two
        assert len(control.log()["jobs"]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)
