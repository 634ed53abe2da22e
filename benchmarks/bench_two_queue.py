"""Benchmark "two-queue": classical idle node·s while hybrid jobs wait in a vendor queue.

A real Flux instance shaped like a cluster (flux-core's ``[fake-resources]``, its R
replaced through ``amend-r`` by the R that ``fluxqr graph build`` writes with the QPU
vertices), a background load of classical jobs with mock execution
(``system.exec.test.run_duration``), and a workload of hybrid jobs (nodes + the QPU)
against the discrete-event IBM QCS stand-in (``tests/standins``; the real ``qrmi`` client
talks to it) at several vendor-queue regimes. Every arm runs the same workload:

* ``now``: today's co-allocation. The job's task opens the session when the job starts
  (qrmi ``acquire`` + ``task_start``) and waits for the vendor; the nodes idle meanwhile.
* ``scout``: flux-quantum's shape on stock Flux: the hybrid job is submitted held
  (urgency 0) with a 1-core scout job; the scout opens the session and queues an anchor
  task, and when the anchor runs (session active) it releases the held job and ends.
* ``ready`` / ``predicted``: fluxqr's agent (issue 10): ``--qpu-start=ready|predicted``,
  the agent module loaded with ``devices=``. Reported as "agent not available" when the
  agent in this checkout does not offer start modes.

Hybrid jobs have mock execution too (fake nodes run no processes): the benchmark plays
their task in a thread — on the job's ``start`` event it runs the job's vendor tasks
with the real qrmi client (classical compute between them), then ends the job
(``flux cancel``), which frees its nodes as the job's exit would.

All figures are model seconds (the vendor's clock: ``--time-scale`` model seconds per wall
second; the classical side is converted with the same scale):

* idle node·s per hybrid job: nodes × the time its vendor tasks waited in the vendor
  queue while the job held its nodes (mean, p95);
* gap: classical start − session activation (negative: the nodes started first);
* idle-timeout expiries of the hybrid jobs' sessions, billed session seconds per job;
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
    hybrid_jobs: int = 4
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
    regimes: tuple[tuple[str, float, float], ...] = (
        ("empty", 0.0, 0.3), ("minutes", 300.0, 0.95), ("hour", 3600.0, 0.95))
    seed: int = 11

    def mean_service(self) -> float:
        return self.service_median * math.exp(self.service_sigma ** 2 / 2)


def quick_knobs() -> Knobs:
    return Knobs(hybrid_jobs=4, regimes=(("empty", 0.0, 0.3), ("minutes", 300.0, 0.95)),
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

        from fluxqr.flux.localinstance import LocalInstance

        inst = LocalInstance(self.work / "flux", self.r_path, size=1, validator=False,
                             env=self._env())
        inst.config_text = f"""
[fake-resources]
nnodes = {self.knobs.nodes}
cores-per-node = {self.knobs.cores_per_node}
host-prefix = "fake"
amend-r = "{self.amender}"

[sched-fluxion-resource]
match-format = "rv1"

[sched-fluxion-qmanager]
queue-policy = "easy"

[fluxqr]
devices = "{self.devices}"
"""
        self.inst = inst.start()
        self.h = flux.Flux(self.inst.uri)
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


def classical_jobspec(nodes: int, cores: int, run_model_s: float, scale: float) -> dict:
    from flux.job import JobspecV1

    spec = JobspecV1.from_command(["true"], num_nodes=nodes, num_tasks=nodes,
                                  cores_per_task=cores, exclusive=True)
    spec.setattr("system.exec.test.run_duration", f"{run_model_s / scale:.3f}s")
    return json.loads(spec.dumps())


def hybrid_jobspec(cluster: Cluster, start: str | None = None) -> dict:
    """Nodes + the QPU, as fluxqr's submit plugin builds it (resolved against the R)."""
    from fluxqr.core.jobspec import QuantumRequest, apply_quantum

    knobs = cluster.knobs
    spec = classical_jobspec(knobs.hybrid_nodes, knobs.cores_per_node, LONG, 1.0)
    req = QuantumRequest(qpus=1, qubits=2, device=DEVICE)
    apply_quantum(spec, req, cluster.view)
    if start is not None:
        spec["attributes"]["system"]["quantum"]["request"]["start"] = start
    return spec


@dataclass
class HybridRecord:
    jobid: int
    submitted: float                      # model s
    start: float | None = None
    end: float | None = None
    session_id: str | None = None
    tasks: list[str] = field(default_factory=list)
    error: str | None = None
    scout_core_s: float = 0.0


class Workload:
    """One (regime, arm) run: background load, hybrid submissions, the tasks' threads."""

    def __init__(self, cluster: Cluster, arm: Arm, rng: random.Random):
        self.c, self.k, self.arm, self.rng = cluster, cluster.knobs, arm, rng
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
            spec = classical_jobspec(nodes, self.k.cores_per_node, run, self.k.time_scale)
            self.background[int(flux.job.submit(h, json.dumps(spec)))] = run
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
            try:
                flux.job.cancel(h, rec.jobid, "hybrid task done")
            except OSError:
                pass  # already inactive (e.g. the agent raised an exception on it)
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
    agent = False

    def available(self, cluster: Cluster) -> str | None:
        """None if the arm can run, else why not."""
        return None

    def prepare(self, cluster: Cluster) -> None:
        """Before the arm's runs (e.g. load a module)."""

    def submit(self, w: Workload, rec: HybridRecord) -> int:
        import flux.job

        return int(flux.job.submit(w.c.h, json.dumps(hybrid_jobspec(w.c))))

    def task_resource(self, w: Workload, rec: HybridRecord, h: Any) -> tuple[Any, str]:
        """The task's qrmi resource and the session id it uses (called at job start)."""
        res = qrmi_resource(w.c)
        return res, res.acquire()

    def task_end(self, w: Workload, rec: HybridRecord, res: Any) -> None:
        res.release(rec.session_id)

    def cleanup(self, w: Workload) -> None:
        """After the run (e.g. stop scouts)."""

    def finish(self, cluster: Cluster) -> None:
        """After the arm's runs (e.g. unload a module)."""


class NowArm(Arm):
    """Today's co-allocation: the session opens when the job starts."""

    name = "now"


class ScoutArm(Arm):
    """flux-quantum's pair on stock Flux: a 1-core scout opens the session, then releases."""

    name = "scout"

    def __init__(self) -> None:
        self.sessions: dict[int, str] = {}

    def submit(self, w: Workload, rec: HybridRecord) -> int:
        import flux.job

        jobid = int(flux.job.submit(w.c.h, json.dumps(hybrid_jobspec(w.c)), urgency=0))
        scout = classical_jobspec(1, 1, LONG, 1.0)
        scout["resources"] = [{"type": "slot", "count": 1, "label": "task",
                               "with": [{"type": "core", "count": 1}]}]
        scout["tasks"][0]["count"] = {"per_slot": 1}
        scout_id = int(flux.job.submit(w.c.h, json.dumps(scout)))
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
            try:
                flux.job.cancel(h, scout_id, "scout done")
            except OSError:
                pass
            if started is not None:
                rec.scout_core_s = w.now() - started

    def task_resource(self, w: Workload, rec: HybridRecord, h: Any) -> tuple[Any, str]:
        sid = self.sessions[rec.jobid]
        res = qrmi_resource(w.c, session_id=sid)
        return res, sid


def _qrmi() -> Any:
    import qrmi

    return qrmi


def run_anchor(res: Any) -> str:
    payload = _qrmi().Payload.QiskitPrimitive(
        input=json.dumps({"pubs": [[BELL]], "version": 2, "shots": 1}), program_id="sampler")
    return res.task_start(payload)


class AgentArm(Arm):
    """fluxqr's agent (issue 10) with ``--qpu-start=<mode>``."""

    agent = True

    def __init__(self, mode: str):
        self.name = mode

    def available(self, cluster: Cluster) -> str | None:
        try:
            from fluxqr.core import jobspec
        except ImportError as exc:  # pragma: no cover
            return str(exc)
        if not hasattr(jobspec, "start_mode"):
            return "agent not available (no start modes in fluxqr.core.jobspec)"
        return None

    def prepare(self, cluster: Cluster) -> None:
        inst = cluster.inst
        r = inst.run(["flux", "module", "load", str(inst.module),
                      f"devices={cluster.devices}"])
        if r.returncode != 0:
            raise RuntimeError(f"flux module load: {r.stderr.strip()}")

    def submit(self, w: Workload, rec: HybridRecord) -> int:
        import flux.job

        from fluxqr.core.jobspec import hold

        spec = hybrid_jobspec(w.c, start=self.name)
        held = hold(spec, 16)  # the agent's contract: urgency 0, the user's kept in the spec
        return int(flux.job.submit(w.c.h, json.dumps(spec), urgency=0 if held else 16))

    def task_resource(self, w: Workload, rec: HybridRecord, h: Any) -> tuple[Any, str]:
        env = h.rpc("fluxqr.session-env", {"jobid": rec.jobid}).get()["env"]
        sid = next(v for k, v in env.items()
                   if k.endswith("_QRMI_JOB_ACQUISITION_TOKEN")
                   or k.endswith("_QRMI_IBM_QCS_SESSION_ID"))
        return qrmi_resource(w.c, session_id=sid), sid

    def task_end(self, w: Workload, rec: HybridRecord, res: Any) -> None:
        pass  # the agent closes the session when the job ends

    def finish(self, cluster: Cluster) -> None:
        cluster.inst.run(["flux", "module", "remove", "fluxqr"])


ARMS: dict[str, Callable[[], Arm]] = {
    "now": NowArm, "ready": lambda: AgentArm("ready"),
    "predicted": lambda: AgentArm("predicted"), "scout": ScoutArm}


# -- metrics ----------------------------------------------------------------------------------


def metrics(w: Workload, vendor_log: dict[str, Any], jobs: dict[int, dict]) -> dict[str, Any]:
    k = w.k
    vjobs = {j["id"]: j for j in vendor_log["jobs"]}
    vsess = {s["id"]: s for s in vendor_log["sim_sessions"]}
    idle, gaps, billed, turnaround, timeouts, scout = [], [], [], [], 0, []
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
            timeouts += sess["timeouts"]
            billed.append(sess["billed"])
        turnaround.append(rec.end - rec.submitted)
        scout.append(rec.scout_core_s)
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
        "billed_s_mean": statistics.fmean(billed) if billed else float("nan"),
        "turnaround_s_mean": statistics.fmean(turnaround) if turnaround else float("nan"),
        "background_slowdown": statistics.fmean(slowdown) if slowdown else float("nan"),
        "utilisation": util,
        "scout_core_s_mean": statistics.fmean(scout) if scout else 0.0,
        "vendor_queue_mean": vendor_log.get("queue_mean", float("nan")),
        "hybrid_done": len(idle), "errors": errors[:3],
    }


def flux_jobs(cluster: Cluster, ids: list[int]) -> dict[int, dict]:
    import flux.job

    out: dict[int, dict] = {}
    for info in flux.job.JobList(cluster.h, ids=ids, attrs=["all"]).jobs():
        rec = info.to_dict(filtered=False) if hasattr(info, "to_dict") else dict(info.__dict__)
        out[int(info.id)] = rec
    return out


def run_arm(cluster: Cluster, arm: Arm, regime: tuple[str, float, float],
            seed: int) -> dict[str, Any]:
    k = cluster.knobs
    name, wait, rho = regime
    mean = k.mean_service()
    cluster.vendor.set(initial_queue=round(wait / mean), arrival_rate=rho / mean,
                       service_median=k.service_median, service_sigma=k.service_sigma,
                       seed=seed)
    cluster.vendor.restart()
    w = Workload(cluster, arm, random.Random(seed))
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
    OUT.mkdir(parents=True, exist_ok=True)  # the vendor's log of the run, for inspection
    (OUT / f"vendor-{name}-{arm.name}.json").write_text(json.dumps(
        {k2: log[k2] for k2 in ("sessions", "jobs", "sim_sessions", "events")}, indent=0))
    log["queue_mean"] = statistics.fmean(samples) if samples else float("nan")
    ids = list(w.background) + [r.jobid for r in w.hybrids]
    jobs = flux_jobs(cluster, ids)
    for j in jobs.values():  # wall -> model seconds
        for key in ("t_submit", "t_run", "t_cleanup", "t_inactive"):
            if j.get(key):
                j[key] = j[key] * k.time_scale
    return metrics(w, log, jobs)


# -- output -----------------------------------------------------------------------------------

COLUMNS = [("idle_node_s_mean", "idle n·s", ".0f"), ("idle_node_s_p95", "p95", ".0f"),
           ("gap_s_mean", "gap s", ".0f"), ("gap_s_p95", "p95", ".0f"),
           ("idle_timeouts", "TTL exp", "d"), ("billed_s_mean", "billed s", ".0f"),
           ("turnaround_s_mean", "turnaround s", ".0f"),
           ("background_slowdown", "bg slowdown", ".2f"), ("utilisation", "util", ".2f"),
           ("scout_core_s_mean", "scout core·s", ".0f"), ("vendor_queue_mean", "vq", ".1f"),
           ("hybrid_done", "done", "d")]


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["regime    arm        " + " ".join(f"{h:>12}" for _, h, _ in COLUMNS)]
    for regime, arms in results.items():
        for arm, m in arms.items():
            if "unavailable" in m:
                lines.append(f"{regime:<9} {arm:<10} {m['unavailable']}")
                continue
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


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per arm over all regimes (the ``arms`` of the JSON): means of the regime figures."""
    arms: dict[str, dict[str, Any]] = {}
    names = {a for r in results.values() for a in r}
    for arm in sorted(names):
        runs = [r[arm] for r in results.values() if arm in r]
        if any("unavailable" in m for m in runs):
            arms[arm] = {"unavailable": runs[0]["unavailable"]}
            continue
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
               for r in results.values() if arm in r and "unavailable" not in r[arm]]
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
    ap.add_argument("--quick", action="store_true", help="two regimes, four hybrid jobs")
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
                why = arm.available(cluster)
                if why is None:
                    try:
                        arm.prepare(cluster)
                    except Exception as exc:  # noqa: BLE001
                        why = f"agent not available ({exc})"
                for i, regime in enumerate(knobs.regimes):
                    row = results.setdefault(regime[0], {})
                    if why is not None:
                        row[arm.name] = {"unavailable": why}
                        continue
                    row[arm.name] = run_arm(cluster, arm, regime, knobs.seed + i)
                    if not args.json:
                        print(f"  {regime[0]:<8} {arm.name:<10} done "
                              f"({time.monotonic() - t0:.0f} s)", flush=True)
                if why is None:
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
    print("\nknobs: " + ", ".join(f"{k}={v}" for k, v in kn.items()))
    if fig:
        print(f"figure: {fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
