"""Benchmark "two-queue": classical idle node·s while hybrid jobs wait in a vendor queue.

A real Flux instance shaped like a cluster (flux-core's ``[fake-resources]``, its R
replaced through ``amend-r`` by the R that ``fluxqr graph build`` writes with the QPU
vertices) and set up as the admin guide says (fluxqr's ingest frobnicator/validator,
``[fluxqr]``, the agent loaded as a broker module), a background load of classical jobs
with mock execution (``system.exec.test.run_duration``), and a workload of hybrid jobs
(nodes + the QPU) against the discrete-event IBM QCS stand-in (``tests/standins``; the
real ``qrmi`` client talks to it) at several vendor-queue regimes. Every arm runs the
same workload:

* ``now`` / ``ready`` / ``predicted``: fluxqr's agent with that start mode. Hybrid jobs are
  submitted as ``flux submit --qpu-device=... --qpu-start=MODE`` does: the request is
  recorded (:func:`fluxqr.flux.submit.add_quantum`), the CLI plugin's
  :func:`~fluxqr.flux.cliplugin.hold` decides the hold (urgency 0, the user's urgency kept
  in the jobspec), and the instance's frobnicator resolves it. ``now`` is today's
  co-allocation: the agent opens the session at allocation, the nodes idle meanwhile.
* ``scout``: flux-quantum's shape on stock Flux (no agent): the hybrid job is submitted held
  (urgency 0) with a 1-core scout job; the scout opens the session and queues an anchor
  task, and when the anchor runs (session active) it releases the held job and ends.

Hybrid jobs have mock execution too (fake nodes run no processes): the benchmark plays
their task in a thread — on the job's ``start`` event it gets the session from the agent's
``fluxqr.session-env`` service (what the job shell gives real tasks), runs the job's vendor
tasks with the real qrmi client (classical compute between them), then ends the job
(``flux cancel``), which frees its nodes as the job's exit would.

Time is compressed (``--time-scale`` model seconds per wall second, the vendor's clock).
The agent works in wall seconds, so it is configured in wall seconds too: its
``idle-timeout`` is the vendor's interactive TTL and ``vendor-job-seconds`` the mean
service time of other users' jobs, both divided by the time scale; jobs carry a duration
(Fluxion's start estimates need one) of ``walltime_factor`` × their run time. All figures
are model seconds:

* idle node·s per hybrid job: nodes × the time its vendor tasks waited in the vendor
  queue while the job held its nodes (mean, p95);
* gap: classical start − session activation (negative: the nodes started first), and its
  two parts for the held arms: activation → release (the agent) and release → start
  (Fluxion);
* idle-timeout expiries of the hybrid jobs' sessions before their last task was queued
  (those that cost a re-queue or a lapsed grant), billed session seconds per job;
* hybrid turnaround (submit → end), background slowdown ((wait + run) / run, mean),
  utilisation (allocated node·s / (nodes × span)); for ``scout`` also its core·s.

    python benchmarks/bench_two_queue.py [--quick] [--json] [--arms now,scout]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
OUT = ROOT / "benchmarks" / "out"

from fluxqr.flux import env as fluxenv  # noqa: E402

BELL = ('OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; h q[0]; cx q[0], q[1]; '
        "c = measure q;")
DEVICE = "ibm_fez"
LONG = 100000.0  # mock run_duration of hybrid/scout jobs: the benchmark ends them


@dataclass
class Knobs:
    """Everything that shapes a run (printed with the results)."""

    nodes: int = 16
    cores_per_node: int = 4
    hybrid_nodes: int = 4
    hybrid_jobs: int = 8
    vendor_tasks: int = 2               # vendor tasks per hybrid job
    compute_between: float = 30.0       # model s of classical compute between vendor tasks
    hybrid_every: float = 120.0         # model s between hybrid submissions
    background_util: float = 0.6        # offered background load, fraction of the nodes
    background_nodes: tuple[int, ...] = (1, 2, 4)
    background_run: tuple[float, float] = (120.0, 480.0)  # model s, uniform
    warmup: float = 180.0               # model s of background load before the first hybrid
    time_scale: float = 60.0            # model seconds per wall second
    service_median: float = 60.0        # other users' vendor jobs, model s
    service_sigma: float = 0.5
    task_service: float = 20.0          # one of our vendor tasks, model s
    interactive_ttl: float = 60.0
    walltime_factor: float = 1.0        # job duration (Fluxion's estimates) / its run time
    regimes: tuple[tuple[str, float, float], ...] = (
        ("empty", 0.0, 0.3), ("minutes", 300.0, 0.95), ("hour", 3600.0, 0.95))
    seed: int = 11

    def mean_service(self) -> float:
        return self.service_median * math.exp(self.service_sigma ** 2 / 2)


def quick_knobs() -> Knobs:
    return Knobs(hybrid_jobs=3, regimes=(("empty", 0.0, 0.3), ("minutes", 300.0, 0.95)),
                 warmup=120.0, hybrid_every=90.0)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    vals = sorted(values)
    k = (len(vals) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


# -- the cluster ------------------------------------------------------------------------------


class Cluster:
    """The vendor stand-in, the devices file, the R, and a fake-resources Flux instance."""

    def __init__(self, work: Path, knobs: Knobs):
        from standins.qcs_server import QCSStandIn

        self.work, self.knobs = work, knobs
        self.vendor = QCSStandIn("fake_fez", time_scale=knobs.time_scale,
                                 interactive_ttl=knobs.interactive_ttl,
                                 task_service=knobs.task_service).start()
        self.devices = work / "devices.yaml"
        self.devices.write_text(yaml.safe_dump({"version": 1, "devices": [{
            "name": DEVICE, "adapter": "qrmi", "qubits": 156, "vendor": "ibm",
            "technology": "superconducting", "sharing": {"sessions": 8}, "timeout": 30,
            "params": {"resource_id": DEVICE, "resource_type": "ibm-quantum-compute-service",
                       "config": self.vendor.qrmi_config()},
            "credentials": {"QRMI_IBM_QCS_IAM_APIKEY": "BENCH_QCS_APIKEY"}}]}))
        os.environ["BENCH_QCS_APIKEY"] = "standin-key"
        self.r_path = work / "R.json"
        subprocess.run([sys.executable, "-m", "fluxqr.cli", "graph", "build",
                        "--nodes", str(knobs.nodes), "--cores", str(knobs.cores_per_node),
                        "--prefix", "fake", "--devices", str(self.devices),
                        "-o", str(self.r_path)], check=True, env=self._env())
        amender = work / "amend.py"
        amender.write_text(
            "import json\n"
            f"def amend(R, hwloc_xml=None):\n    return json.load(open({str(self.r_path)!r}))\n")
        self.amender = amender
        from fluxqr.core import graph
        from fluxqr.core.jobspec import view_from_graph

        self.view = view_from_graph(graph.read(self.r_path))
        self.inst: Any = None
        self.h: Any = None

    def _env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))

    def start(self) -> Cluster:
        import flux

        from fluxqr.flux import install as fluxinstall
        from fluxqr.flux.localinstance import LocalInstance

        k = self.knobs
        inst = LocalInstance(self.work / "flux", self.r_path, size=1, devices=self.devices,
                             agent=False, env=self._env())
        # The admin guide's setup (ingest plugins, [fluxqr]), on fake resources, with the
        # agent's clock settings in wall seconds (see the module docstring).
        inst.config_text = f"""
[fake-resources]
nnodes = {k.nodes}
cores-per-node = {k.cores_per_node}
host-prefix = "fake"
amend-r = "{self.amender}"

[sched-fluxion-resource]
match-format = "rv1"

[sched-fluxion-qmanager]
queue-policy = "easy"

{fluxinstall.ingest_config(inst.files)}
[fluxqr]
devices = "{self.devices}"
idle-timeout = {k.interactive_ttl / k.time_scale:.4f}
vendor-job-seconds = {k.mean_service() / k.time_scale:.4f}
"""
        self.inst = inst.start()
        self.h = flux.Flux(self.inst.uri)
        from fluxqr.flux import instance

        self.conf = instance.config(self.h)
        return self

    def handle(self) -> Any:
        import flux

        return flux.Flux(self.inst.uri)

    def stop(self) -> None:
        if self.inst is not None:
            self.inst.stop()
        self.vendor.stop()

    def model_time(self, wall_epoch: float) -> float:
        """A wall-clock timestamp (Flux eventlogs) on the vendor's model clock."""
        sim = self.vendor.sim
        return sim.clock() - (time.time() - wall_epoch) * sim.clock.scale


# -- jobs -------------------------------------------------------------------------------------


def classical_jobspec(nodes: int, cores: int, run_model_s: float, knobs: Knobs,
                      duration_model_s: float | None = None) -> Any:
    """A ``JobspecV1`` with mock execution of ``run_model_s`` and a duration (model s)."""
    from flux.job import JobspecV1

    scale = knobs.time_scale
    spec = JobspecV1.from_command(["true"], num_nodes=nodes, num_tasks=nodes,
                                  cores_per_task=cores, exclusive=True)
    spec.setattr("system.exec.test.run_duration", f"{run_model_s / scale:.3f}s")
    duration = duration_model_s if duration_model_s is not None else \
        run_model_s * knobs.walltime_factor
    # Fluxion plans in whole seconds from the second its match ran: one second of slack,
    # or mock jobs are killed for an expired allocation just before their end.
    spec.duration = math.ceil(duration / scale) + 1
    return spec


def hybrid_jobspec(cluster: Cluster, start: str, wait_model_s: float) -> Any:
    """Nodes + a request for the QPU, as ``flux submit --qpu-device --qpu-start`` records it
    (the instance's frobnicator resolves it). Its duration covers its vendor work and three
    times the regime's vendor wait (a user's generous estimate); the benchmark ends it."""
    from fluxqr.flux.submit import add_quantum

    k = cluster.knobs
    work = k.vendor_tasks * (k.task_service + k.compute_between)
    spec = classical_jobspec(k.hybrid_nodes, k.cores_per_node, LONG, k,
                             duration_model_s=work + 3 * wait_model_s + 900)
    return add_quantum(spec, qubits=2, device=DEVICE, start=start)


@dataclass
class HybridRecord:
    jobid: int
    submitted: float                      # model s
    released: float | None = None         # urgency restored (held arms)
    start: float | None = None
    end: float | None = None
    session_id: str | None = None
    tasks: list[str] = field(default_factory=list)
    error: str | None = None
    scout_core_s: float = 0.0


class Workload:
    """One (regime, arm) run: background load, hybrid submissions, the tasks' threads."""

    def __init__(self, cluster: Cluster, arm: Arm, rng: random.Random, wait: float):
        self.c, self.k, self.arm, self.rng = cluster, cluster.knobs, arm, rng
        self.wait = wait  # the regime's vendor wait, model s
        self.hybrids: list[HybridRecord] = []
        self.background: dict[int, float] = {}  # jobid -> run duration, model s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def wall(self, model_s: float) -> float:
        return model_s / self.k.time_scale

    def now(self) -> float:
        return self.c.vendor.sim.clock()

    # the background load: Poisson arrivals at the offered utilisation
    def _background(self) -> None:
        import flux.job

        h = self.c.handle()
        mean_nodes = statistics.mean(self.k.background_nodes)
        mean_run = sum(self.k.background_run) / 2
        rate = self.k.background_util * self.k.nodes / (mean_nodes * mean_run)  # per model s
        while not self._stop.is_set():
            nodes = self.rng.choice(self.k.background_nodes)
            run = self.rng.uniform(*self.k.background_run)
            spec = classical_jobspec(nodes, self.k.cores_per_node, run, self.k)
            self.background[int(flux.job.submit(h, spec))] = run
            self._stop.wait(self.wall(self.rng.expovariate(rate)))

    def _task(self, rec: HybridRecord) -> None:
        """The hybrid job's task: wait for its start, run its vendor tasks, end the job."""
        import flux.job

        h = self.c.handle()
        try:
            ev = flux.job.event_wait(h, rec.jobid, "start")
            rec.start = self.c.model_time(ev.timestamp)
            res, sid = self.arm.task_resource(self, rec, h)
            rec.session_id = sid
            for i in range(self.k.vendor_tasks):
                if i:
                    time.sleep(self.wall(self.k.compute_between))
                rec.tasks.append(run_vendor_task(res))
            self.arm.task_end(self, rec, res)
        except Exception as exc:  # noqa: BLE001 - reported in the table, the run goes on
            rec.error = f"{type(exc).__name__}: {exc}"
        finally:
            flux.job.cancel(h, rec.jobid, "hybrid task done")
            rec.end = self.now()

    def run(self) -> None:
        bg = threading.Thread(target=self._background, daemon=True)
        bg.start()
        time.sleep(self.wall(self.k.warmup))
        for i in range(self.k.hybrid_jobs):
            if i:
                time.sleep(self.wall(self.k.hybrid_every))
            rec = HybridRecord(jobid=0, submitted=self.now())
            rec.jobid = self.arm.submit(self, rec)
            self.hybrids.append(rec)
            t = threading.Thread(target=self._task, args=(rec,), daemon=True)
            t.start()
            self._threads.append(t)
        for t in self._threads:
            t.join()
        self._stop.set()
        bg.join()
        self.arm.cleanup(self)
        self.c.inst.run(["flux", "cancel", "--all", "--quiet"])
        self.c.inst.run(["flux", "queue", "idle", "--timeout=60s"])


def qrmi_resource(cluster: Cluster, session_id: str | None = None) -> Any:
    import qrmi

    cfg = {**cluster.vendor.qrmi_config(), "QRMI_IBM_QCS_IAM_APIKEY": "standin-key"}
    if session_id is not None:
        cfg["QRMI_IBM_QCS_SESSION_ID"] = session_id
    return qrmi.QuantumResource.from_config(DEVICE, qrmi.ResourceType.IBMQuantumComputeService,
                                            cfg)


def run_vendor_task(res: Any, poll: float = 0.02) -> str:
    """One Sampler task through qrmi, waited for; its vendor job id."""
    import qrmi

    payload = qrmi.Payload.QiskitPrimitive(
        input=json.dumps({"pubs": [[BELL]], "version": 2, "shots": 100}),
        program_id="sampler")
    jid = res.task_start(payload)
    final = (qrmi.TaskStatus.Completed, qrmi.TaskStatus.Cancelled, qrmi.TaskStatus.Failed)
    while res.task_status(jid) not in final:
        time.sleep(poll)
    return jid


# -- arms -------------------------------------------------------------------------------------


class Arm:
    """A start mode: how hybrid jobs are submitted, and what their task does."""

    name = "arm"

    def prepare(self, cluster: Cluster) -> None:
        """Before the arm's runs (e.g. load the agent)."""

    def submit(self, w: Workload, rec: HybridRecord) -> int:
        raise NotImplementedError

    def task_resource(self, w: Workload, rec: HybridRecord, h: Any) -> tuple[Any, str]:
        """The task's qrmi resource and the session id it uses (called at job start)."""
        raise NotImplementedError

    def task_end(self, w: Workload, rec: HybridRecord, res: Any) -> None:
        """After the task's last vendor task (the job ends right after)."""

    def cleanup(self, w: Workload) -> None:
        """After the run (e.g. stop scouts)."""

    def finish(self, cluster: Cluster) -> None:
        """After the arm's runs (e.g. unload the agent)."""


class AgentArm(Arm):
    """fluxqr's agent with ``--qpu-start=<mode>``."""

    def __init__(self, mode: str):
        self.name = mode

    def prepare(self, cluster: Cluster) -> None:
        cluster.inst.load_agent()

    def submit(self, w: Workload, rec: HybridRecord) -> int:
        from fluxqr.flux.cliplugin import hold
        from fluxqr.flux.submit import submit

        spec = hybrid_jobspec(w.c, self.name, w.wait)
        # What the CLI plugin does: hold (urgency 0, the user's 16 kept for the agent).
        held = hold(spec, w.c.conf, 16)
        return int(submit(spec, w.c.h, urgency=0 if held else 16))

    def task_resource(self, w: Workload, rec: HybridRecord, h: Any) -> tuple[Any, str]:
        # What the job shell plugin asks for a task (it answers once the session is open).
        env = h.rpc("fluxqr.session-env", {"jobid": rec.jobid}).get()["env"]
        sid = next(v for k, v in env.items()
                   if k.endswith("_QRMI_JOB_ACQUISITION_TOKEN")
                   or k.endswith("_QRMI_IBM_QCS_SESSION_ID"))
        return qrmi_resource(w.c, session_id=sid), sid

    def finish(self, cluster: Cluster) -> None:
        cluster.inst.run(["flux", "module", "remove", "fluxqr"])


class ScoutArm(Arm):
    """flux-quantum's pair on stock Flux: a 1-core scout opens the session, then releases."""

    name = "scout"

    def __init__(self) -> None:
        self.sessions: dict[int, str] = {}

    def submit(self, w: Workload, rec: HybridRecord) -> int:
        import flux.job

        from fluxqr.flux.submit import submit

        jobid = int(submit(hybrid_jobspec(w.c, "now", w.wait), w.c.h, urgency=0))
        scout = classical_jobspec(1, 1, LONG, w.k, duration_model_s=w.wait * 3 + 900)
        scout.jobspec["resources"] = [{"type": "slot", "count": 1, "label": "task",
                                       "with": [{"type": "core", "count": 1}]}]
        scout.jobspec["tasks"][0]["count"] = {"per_slot": 1}
        scout_id = int(flux.job.submit(w.c.h, scout))
        threading.Thread(target=self._scout, args=(w, rec, jobid, scout_id),
                         daemon=True).start()
        return jobid

    def _scout(self, w: Workload, rec: HybridRecord, jobid: int, scout_id: int) -> None:
        import flux.job

        h = w.c.handle()
        started = None
        try:
            ev = flux.job.event_wait(h, scout_id, "start")
            started = w.c.model_time(ev.timestamp)
            res = qrmi_resource(w.c)
            sid = res.acquire()
            self.sessions[jobid] = sid
            anchor = run_anchor(res)
            while res.task_status(anchor) == _qrmi().TaskStatus.Queued:
                time.sleep(0.02)
            h.rpc("job-manager.urgency", {"id": jobid, "urgency": 16}).get()
        except Exception as exc:  # noqa: BLE001
            rec.error = f"scout: {type(exc).__name__}: {exc}"
            h.rpc("job-manager.urgency", {"id": jobid, "urgency": 16}).get()
        finally:
            flux.job.cancel(h, scout_id, "scout done")
            if started is not None:
                rec.scout_core_s = w.now() - started

    def task_resource(self, w: Workload, rec: HybridRecord, h: Any) -> tuple[Any, str]:
        sid = self.sessions[rec.jobid]
        return qrmi_resource(w.c, session_id=sid), sid

    def task_end(self, w: Workload, rec: HybridRecord, res: Any) -> None:
        res.release(rec.session_id)


def _qrmi() -> Any:
    import qrmi

    return qrmi


def run_anchor(res: Any) -> str:
    payload = _qrmi().Payload.QiskitPrimitive(
        input=json.dumps({"pubs": [[BELL]], "version": 2, "shots": 1}), program_id="sampler")
    return res.task_start(payload)


ARMS: dict[str, Callable[[], Arm]] = {
    "now": lambda: AgentArm("now"), "ready": lambda: AgentArm("ready"),
    "predicted": lambda: AgentArm("predicted"), "scout": ScoutArm}


# -- metrics ----------------------------------------------------------------------------------


def metrics(w: Workload, vendor_log: dict[str, Any], jobs: dict[int, dict]) -> dict[str, Any]:
    k = w.k
    vjobs = {j["id"]: j for j in vendor_log["jobs"]}
    vsess = {s["id"]: s for s in vendor_log["sim_sessions"]}
    expiries = {}  # session id -> model times of its interactive-timeout expiries
    for ev in vendor_log.get("events", []):
        if ev["op"] == "interactive-timeout":
            expiries.setdefault(ev["session_id"], []).append(ev["t"])
    idle, gaps, billed, turnaround, timeouts, scout = [], [], [], [], 0, []
    to_release, to_start, all_timeouts = [], [], 0
    per_job: list[dict[str, Any]] = []
    errors = [r.error for r in w.hybrids if r.error]
    for rec in w.hybrids:
        if rec.error or rec.start is None or rec.end is None:
            continue
        wait = sum(vjobs[t]["running"] - max(vjobs[t]["queued"], rec.start)
                   for t in rec.tasks if vjobs[t]["running"] is not None)
        idle.append(k.hybrid_nodes * max(0.0, wait))
        sess = vsess.get(rec.session_id or "")
        if sess is not None:
            if sess["activated"] is not None:
                gaps.append(rec.start - sess["activated"])
                if rec.released is not None:
                    to_release.append(rec.released - sess["activated"])
                    to_start.append(rec.start - rec.released)
            # Expiries that cost something: before the job's last vendor task was queued
            # (a task queued again, or a grant lapsed before the nodes came).
            last = max((vjobs[t]["queued"] for t in rec.tasks), default=rec.end)
            timeouts += sum(1 for t in expiries.get(sess["id"], []) if t < last)
            all_timeouts += sess["timeouts"]
            billed.append(sess["billed"])
        turnaround.append(rec.end - rec.submitted)
        scout.append(rec.scout_core_s)
        if sess is not None:
            first = min((vjobs[j]["queued"] for j in sess["jobs"]), default=None)
            per_job.append({"jobid": rec.jobid, "submitted": rec.submitted,
                            "opened": sess["opened"], "first_vendor_job": first,
                            "activated": sess["activated"], "released": rec.released,
                            "start": rec.start, "end": rec.end,
                            "expiries": expiries.get(sess["id"], []),
                            "tasks_queued": [vjobs[t]["queued"] for t in rec.tasks],
                            "tasks_running": [vjobs[t]["running"] for t in rec.tasks]})
    slowdown, busy = [], 0.0
    span0 = min((j["t_submit"] for j in jobs.values()), default=0.0)
    span1 = max((j.get("t_inactive") or j["t_submit"] for j in jobs.values()), default=0.0)
    for jid, run in w.background.items():
        j = jobs.get(jid)
        if not j or not j.get("t_run") or j.get("result") != "COMPLETED":
            continue  # still queued or running at the end of the run: canceled
        slowdown.append((j["t_inactive"] - j["t_submit"]) / run)
    for j in jobs.values():
        if j.get("t_run"):
            end = j.get("t_cleanup") or j.get("t_inactive") or span1
            busy += j["nnodes"] * (end - j["t_run"])
    util = busy / (k.nodes * (span1 - span0)) if span1 > span0 else float("nan")
    return {
        "idle_node_s_mean": statistics.fmean(idle) if idle else float("nan"),
        "idle_node_s_p95": pct(idle, 95),
        "gap_s_mean": statistics.fmean(gaps) if gaps else float("nan"),
        "gap_s_p95": pct(gaps, 95),
        "idle_timeouts": timeouts,
        "idle_timeouts_all": all_timeouts,
        "activation_to_release_s_mean": statistics.fmean(to_release) if to_release
        else float("nan"),
        "release_to_start_s_mean": statistics.fmean(to_start) if to_start else float("nan"),
        "billed_s_mean": statistics.fmean(billed) if billed else float("nan"),
        "turnaround_s_mean": statistics.fmean(turnaround) if turnaround else float("nan"),
        "background_slowdown": statistics.fmean(slowdown) if slowdown else float("nan"),
        "utilisation": util,
        "scout_core_s_mean": statistics.fmean(scout) if scout else 0.0,
        "vendor_queue_mean": vendor_log.get("queue_mean", float("nan")),
        "hybrid_done": len(idle), "errors": errors[:3], "jobs": per_job,
    }


def flux_jobs(cluster: Cluster, ids: list[int]) -> dict[int, dict]:
    import flux.job

    out: dict[int, dict] = {}
    for info in flux.job.JobList(cluster.h, ids=ids, attrs=["all"]).jobs():
        rec = info.to_dict(filtered=False) if hasattr(info, "to_dict") else dict(info.__dict__)
        out[int(info.id)] = rec
    return out


def release_time(cluster: Cluster, jobid: int) -> float | None:
    """When a held job's urgency was last restored before its nodes were allocated (its
    eventlog; a job held again to give a grant back is released more than once), wall
    epoch; None if never."""
    log = cluster.h.rpc("job-info.lookup", {"id": jobid, "keys": ["eventlog"],
                                            "flags": 0}).get()["eventlog"]
    released = None
    for line in log.splitlines():
        ev = json.loads(line)
        if ev["name"] == "alloc":
            break
        if ev["name"] == "urgency":
            urgency = (ev.get("context") or {}).get("urgency", 0)
            released = float(ev["timestamp"]) if urgency > 0 else None
    return released


def run_arm(cluster: Cluster, arm: Arm, regime: tuple[str, float, float],
            seed: int) -> dict[str, Any]:
    k = cluster.knobs
    name, wait, rho = regime
    mean = k.mean_service()
    cluster.vendor.set(initial_queue=round(wait / mean), arrival_rate=rho / mean,
                       service_median=k.service_median, service_sigma=k.service_sigma,
                       seed=seed)
    cluster.vendor.restart()
    w = Workload(cluster, arm, random.Random(seed), wait)
    samples: list[int] = []
    stop = threading.Event()

    def sample_queue() -> None:
        while not stop.is_set():
            samples.append(cluster.vendor.sim.queue_length())
            stop.wait(0.2)

    sampler = threading.Thread(target=sample_queue, daemon=True)
    sampler.start()
    w.run()
    stop.set()
    sampler.join()
    log = cluster.vendor.log()
    log["queue_mean"] = statistics.fmean(samples) if samples else float("nan")
    ids = list(w.background) + [r.jobid for r in w.hybrids]
    jobs = flux_jobs(cluster, ids)
    for rec in w.hybrids:
        released = release_time(cluster, rec.jobid)
        rec.released = cluster.model_time(released) if released else None
    for j in jobs.values():  # wall -> model seconds
        for key in ("t_submit", "t_run", "t_cleanup", "t_inactive"):
            if j.get(key):
                j[key] = j[key] * k.time_scale
    return metrics(w, log, jobs)


# -- output -----------------------------------------------------------------------------------

COLUMNS = [("idle_node_s_mean", "idle n·s", ".0f"), ("idle_node_s_p95", "p95", ".0f"),
           ("gap_s_mean", "gap s", ".0f"), ("gap_s_p95", "p95", ".0f"),
           ("activation_to_release_s_mean", "act→rel s", ".0f"),
           ("release_to_start_s_mean", "rel→start s", ".0f"),
           ("idle_timeouts", "TTL exp", "d"), ("billed_s_mean", "billed s", ".0f"),
           ("turnaround_s_mean", "turnaround s", ".0f"),
           ("background_slowdown", "bg slowdown", ".2f"), ("utilisation", "util", ".2f"),
           ("scout_core_s_mean", "scout core·s", ".0f"), ("vendor_queue_mean", "vq", ".1f"),
           ("hybrid_done", "done", "d")]


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["regime    arm        " + " ".join(f"{h:>12}" for _, h, _ in COLUMNS)]
    for regime, arms in results.items():
        for arm, m in arms.items():
            cells = []
            for key, _, fmt in COLUMNS:
                v = m.get(key)
                cells.append(f"{v:>12{fmt}}" if isinstance(v, (int, float))
                             and not (isinstance(v, float) and math.isnan(v))
                             else f"{'-':>12}")
            lines.append(f"{regime:<9} {arm:<10} " + " ".join(cells))
            for err in m.get("errors") or []:
                lines.append(f"{'':<20} error: {err}")
    return "\n".join(lines)


def targets(results: dict[str, dict[str, Any]], knobs: Knobs) -> list[str]:
    """Issue 10's targets, per regime: ``ready`` idle node·s ≤ 5 % of ``now``'s, no
    idle-timeout expiry, p95 gap activation → classical start ≤ half the idle timeout."""
    out = []
    for regime, arms in results.items():
        now, ready = arms.get("now"), arms.get("ready")
        if not now or not ready:
            continue
        checks = []
        base = now["idle_node_s_mean"]
        if base and not math.isnan(base):
            ratio = ready["idle_node_s_mean"] / base
            checks.append((f"idle ready/now {ratio:.1%} (≤ 5 %)", ratio <= 0.05))
        checks.append((f"TTL expiries {ready['idle_timeouts']} (0)",
                       ready["idle_timeouts"] == 0))
        half = knobs.interactive_ttl / 2
        gap = ready["gap_s_p95"]
        checks.append((f"p95 gap {gap:.0f} s (≤ {half:.0f} s)", gap <= half))
        verdict = "ok" if all(ok for _, ok in checks) else "MISS"
        out.append(f"targets {regime:<8} {verdict:<4}  " + "; ".join(
            c + ("" if ok else " MISS") for c, ok in checks))
    return out


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per arm over all regimes (the ``arms`` of the JSON): means of the regime figures."""
    arms: dict[str, dict[str, Any]] = {}
    names = {a for r in results.values() for a in r}
    for arm in sorted(names):
        runs = [r[arm] for r in results.values() if arm in r]
        summary: dict[str, Any] = {}
        for key, _, _ in COLUMNS:
            vals = [m[key] for m in runs if isinstance(m.get(key), (int, float))
                    and not math.isnan(m[key])]
            summary[key] = (sum(vals) if key in ("idle_timeouts", "hybrid_done")
                            else statistics.fmean(vals) if vals else None)
        summary["by_regime"] = {reg: {k2: v for k2, v in r[arm].items()
                                      if not k2.startswith("_")}
                                for reg, r in results.items() if arm in r}
        arms[arm] = summary
    return arms


def figure(results: dict[str, dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no figure (pip install matplotlib)", file=sys.stderr)
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    arms = sorted({a for r in results.values() for a in r})
    for arm in arms:
        pts = [(r[arm]["vendor_queue_mean"], r[arm]["idle_node_s_mean"],
                r[arm]["gap_s_mean"], r[arm]["billed_s_mean"])
               for r in results.values() if arm in r]
        if not pts:
            continue
        pts.sort()
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=arm)
        ax2.scatter([p[1] for p in pts], [p[3] for p in pts], label=arm)
    ax1.set_xlabel("vendor queue length (mean jobs)")
    ax1.set_ylabel("classical idle node·s per hybrid job")
    ax1.set_title("idle nodes vs vendor queue")
    ax2.set_xlabel("classical idle node·s per hybrid job")
    ax2.set_ylabel("billed QPU session s per hybrid job")
    ax2.set_title("idle nodes / QPU billing trade-off")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two regimes, three hybrid jobs")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--arms", default="now,ready,predicted,scout")
    ap.add_argument("--time-scale", type=float, help="model seconds per wall second")
    ap.add_argument("--figure", default=str(OUT / "two_queue.png"))
    args = ap.parse_args(argv)
    knobs = quick_knobs() if args.quick else Knobs()
    if args.time_scale:
        knobs.time_scale = args.time_scale
    if not (fluxenv.flux_command() and fluxenv.has_fluxion()):
        print("two-queue: skipped (no Flux)")
        return 0
    arms = [ARMS[a.strip()]() for a in args.arms.split(",") if a.strip()]
    results: dict[str, dict[str, Any]] = {}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fluxqr-two-queue-") as tmp:
        cluster = Cluster(Path(tmp), knobs).start()
        try:
            for arm in arms:
                arm.prepare(cluster)
                for i, regime in enumerate(knobs.regimes):
                    row = results.setdefault(regime[0], {})
                    row[arm.name] = run_arm(cluster, arm, regime, knobs.seed + i)
                    if not args.json:
                        print(f"  {regime[0]:<8} {arm.name:<10} done "
                              f"({time.monotonic() - t0:.0f} s)", flush=True)
                arm.finish(cluster)
        finally:
            cluster.stop()
    fig = figure(results, Path(args.figure))
    kn = {k: v for k, v in knobs.__dict__.items()}
    if args.json:
        print(json.dumps({"arms": summarise(results), "knobs": kn}, default=str, indent=1))
        return 0
    print(f"\ntwo-queue benchmark ({'quick' if args.quick else 'full'}; model seconds, "
          f"time scale {knobs.time_scale:g} model s per wall s; "
          f"{time.monotonic() - t0:.0f} s wall)")
    print(table(results))
    print()
    for line in targets(results, knobs):
        print(line)
    print("\nknobs: " + ", ".join(f"{k}={v}" for k, v in kn.items()))
    if fig:
        print(f"figure: {fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
