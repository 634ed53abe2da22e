"""Benchmark "throughput": what fluxqr costs an instance's job throughput.

Three arms, measured in one run on 2-broker test instances (``flux start --test-size=2``,
the way :class:`fluxqr.flux.localinstance.LocalInstance` starts them), N trivial jobs each
(``-n1 true``, really executed by the job shell):

* ``plain``: an instance without fluxqr (no ingest plugins, no ``[fluxqr]``, no agent, no
  job-shell plugin; Fluxion with its defaults) running classical jobs;
* ``plain-fluxion`` (for attribution, no target): a plain instance with the Fluxion settings
  the admin guide recommends for fluxqr (the ``rv1`` match format) and nothing else of
  fluxqr: ``classical``/``plain-fluxion`` is what fluxqr's own code
  costs, ``plain-fluxion``/``plain`` what the recommended scheduler settings cost;
* ``classical``: an instance set up as the admin guide says (LocalInstance: fluxqr's ingest
  frobnicator and validator, ``[fluxqr]`` with a devices file, Fluxion's ``rv1`` match
  format, the agent loaded, the job-shell plugin through the initrc)
  running the same classical jobs;
* ``hybrid``: the same fluxqr instance running hybrid jobs on the local Aer simulator
  (``flux submit --qpu-device=aer --qpu-start=now -n1 true``: the request is recorded as the
  CLI plugin does, once, and submitted N times as ``--cc=1-N`` does).

A batch submits its N jobs asynchronously, all at once (as ``flux submit --cc`` does), with
the waitable flag, and waits for every one to be inactive (``flux job wait``); jobs/s = N /
that wall time. Every job must complete with exit 0; a hybrid job's R must hold the QPU.
The arms are interleaved, repetition by repetition, and the medians (and the spread,
min-max) are reported: the machine is shared and noisy. Targets (issue 10):
classical/plain ≥ 0.95, hybrid/plain ≥ 0.8.

    python benchmarks/bench_throughput.py [--quick] [--json] [--jobs N] [--reps R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from fluxqr.flux import env as fluxenv  # noqa: E402

ARMS = ("plain", "plain-fluxion", "classical", "hybrid")
TARGETS = {"classical": 0.95, "hybrid": 0.8}
CORES = 2  # per node (the R is synthetic; noverify)
DEVICES = """version: 1
devices:
  - name: aer
    adapter: qiskit
    qubits: 30
    vendor: qiskit
    technology: simulator
    sharing: {sessions: 4}
    params: {backend: aer_simulator}
"""


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))


class Instances:
    """The plain instance and the fluxqr-configured one, both up for the whole run."""

    def __init__(self, work: Path):
        from fluxqr.core import graph, inventory
        from fluxqr.flux.localinstance import LocalInstance

        self.work = work
        devices = work / "devices.yaml"
        devices.write_text(DEVICES)
        plain_r, fluxqr_r = work / "plain.R.json", work / "fluxqr.R.json"
        graph.write_r(graph.synthesize(2, CORES), plain_r)
        g = graph.synthesize(2, CORES)
        graph.add_devices(g, inventory.load(devices))
        graph.write_r(g, fluxqr_r)
        self.fluxqr = LocalInstance(work / "fluxqr", fluxqr_r, size=2, hosts="node[0-1]",
                                    devices=devices, env=_env())
        self.plain = LocalInstance(work / "plain", plain_r, size=2, hosts="node[0-1]",
                                   validator=False, env=_env())
        # No fluxqr at all: Fluxion's defaults, and none of fluxqr's paths in the env.
        self.plain.config_text = f'[resource]\npath = "{plain_r}"\nnoverify = true\n'
        for key in ("FLUX_EXEC_PATH", "FLUX_CLI_PLUGINPATH"):
            self.plain.env.pop(key, None)
        from fluxqr.flux.localinstance import CONFIG

        # The same, with the admin guide's Fluxion settings (match format, queue policy).
        self.plain_fluxion = LocalInstance(work / "plain-fluxion", plain_r, size=2,
                                           hosts="node[0-1]", validator=False, env=_env())
        self.plain_fluxion.config_text = CONFIG.format(r_path=plain_r)
        for key in ("FLUX_EXEC_PATH", "FLUX_CLI_PLUGINPATH"):
            self.plain_fluxion.env.pop(key, None)
        self.handles: dict[str, Any] = {}
        self.sessions: dict[str, int] = {}

    def start(self) -> Instances:
        import flux

        insts = {"plain": self.plain, "plain-fluxion": self.plain_fluxion,
                 "fluxqr": self.fluxqr}
        for inst in insts.values():
            inst.start()
        self.handles = {name: flux.Flux(inst.uri) for name, inst in insts.items()}
        # LocalInstance starts `flux start` in a session of its own: all its processes
        self.sessions = {name: inst.proc.pid for name, inst in insts.items()}
        # The agent reads its devices once at load (imports the SDK): let it finish first.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = self.handles["fluxqr"].rpc("fluxqr.status").get()
            if status.get("cycles", 0) or any(d.get("updated") for d in
                                              status.get("devices") or []):
                break
            time.sleep(0.5)
        return self

    def stop(self) -> None:
        for inst in (self.fluxqr, self.plain_fluxion, self.plain):
            inst.stop()


#: Process names (``/proc/PID/comm``, 15 characters) -> the component they are.
COMPONENTS = (("flux-broker", "brokers"), ("fluxqr", "agent"), ("job-frobnicato", "ingest"),
              ("job-validator", "ingest"))
CPU_KEYS = ("brokers", "shells", "ingest", "agent", "other")


def cpu_seconds(session: int) -> dict[str, float]:
    """CPU seconds used so far by an instance's processes (``flux start``'s session), by
    component. A process that has exited counts in its parent's ``cutime``: the job shells
    (and the jobs' tasks) in the brokers'. Robust to a noisy machine where wall time is not."""
    tick = os.sysconf("SC_CLK_TCK")
    out = dict.fromkeys(CPU_KEYS, 0.0)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fp:
                stat = fp.read()
        except OSError:
            continue  # gone meanwhile
        comm, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
        f = fields.split()
        if int(f[3]) != session:  # f[3] is the session id (field 6 of proc(5))
            continue
        own, children = (int(f[11]) + int(f[12])) / tick, (int(f[13]) + int(f[14])) / tick
        name = next((c for prefix, c in COMPONENTS if comm.startswith(prefix)), "other")
        out[name] += own
        out["shells" if name == "brokers" else name] += children
    return out


def jobspec(hybrid: bool) -> str:
    from flux.job import JobspecV1

    spec = JobspecV1.from_command(["true"], num_tasks=1)
    spec.cwd = "/tmp"
    spec.environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if hybrid:
        from fluxqr.flux.submit import add_quantum

        add_quantum(spec, qubits=1, device="aer", start="now")
    return spec.dumps()


def batch(h: Any, spec: str, n: int) -> tuple[float, list[int], list[str]]:
    """Submit ``n`` copies at once, wait for all; (wall seconds, job ids, failures)."""
    import flux.job

    t0 = time.perf_counter()
    futures = [flux.job.submit_async(h, spec, waitable=True) for _ in range(n)]
    ids = [f.get_id() for f in futures]
    failures = []
    for _ in ids:
        result = flux.job.wait(h)
        if not result.success:
            failures.append(f"{result.jobid}: {result.errstr}")
    return time.perf_counter() - t0, ids, failures


def check_hybrid(h: Any, jobid: int) -> str | None:
    """None if the job's R holds the aer QPU, else what is wrong."""
    r = h.rpc("job-info.lookup", {"id": jobid, "keys": ["R"], "flags": 0}).get()["R"]
    r = json.loads(r) if isinstance(r, str) else r
    nodes = ((r.get("scheduling") or {}).get("graph") or {}).get("nodes") or []
    if any((n.get("metadata") or {}).get("type") == "qpu" for n in nodes):
        return None
    return f"job {jobid}: no QPU in its R"


def run(jobs: int, reps: int, warmup: int, log: Any) -> dict[str, Any]:
    specs = {"plain": jobspec(False), "plain-fluxion": jobspec(False),
             "classical": jobspec(False), "hybrid": jobspec(True)}
    target = {"plain": "plain", "plain-fluxion": "plain-fluxion", "classical": "fluxqr",
              "hybrid": "fluxqr"}
    walls: dict[str, list[float]] = {a: [] for a in ARMS}
    cpus: dict[str, list[dict[str, float]]] = {a: [] for a in ARMS}  # per job, ms
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fluxqr-throughput-") as tmp:
        inst = Instances(Path(tmp)).start()
        try:
            for arm in ARMS:  # warm-up: first jobs pay for caches and imports
                batch(inst.handles[target[arm]], specs[arm], warmup)
            for rep in range(reps):
                order = ARMS if rep % 2 == 0 else ARMS[::-1]  # interleaved, both ways
                for arm in order:
                    session = inst.sessions[target[arm]]
                    cpu0 = cpu_seconds(session)
                    wall, ids, failures = batch(inst.handles[target[arm]], specs[arm], jobs)
                    cpu1 = cpu_seconds(session)
                    walls[arm].append(wall)
                    cpus[arm].append({c: 1000 * (cpu1[c] - cpu0[c]) / jobs for c in CPU_KEYS})
                    errors += [f"{arm}: {f}" for f in failures]
                    if arm == "hybrid":
                        bad = check_hybrid(inst.handles["fluxqr"], ids[-1])
                        if bad:
                            errors.append(bad)
                    print(f"  rep {rep + 1}/{reps} {arm:<9} {jobs / wall:6.1f} jobs/s",
                          file=log, flush=True)
        finally:
            inst.stop()
    out: dict[str, Any] = {"arms": {}, "ratios": {}, "errors": errors[:5],
                           "knobs": {"jobs": jobs, "reps": reps, "warmup": warmup,
                                     "nodes": 2, "cores_per_node": CORES}}
    for arm in ARMS:
        rates = [jobs / w for w in walls[arm]]
        cpu = {c: statistics.median(x[c] for x in cpus[arm]) for c in CPU_KEYS}
        cpu["total"] = statistics.median(sum(x.values()) for x in cpus[arm])
        out["arms"][arm] = {"wall_s_median": statistics.median(walls[arm]),
                            "cpu_ms_per_job_median": cpu,
                            "jobs_per_s_median": statistics.median(rates),
                            "jobs_per_s_min": min(rates), "jobs_per_s_max": max(rates),
                            "jobs_per_s": rates}
    base = out["arms"]["plain"]["jobs_per_s_median"]
    for arm, goal in {"plain-fluxion": None, **TARGETS}.items():
        # per repetition too (arms of one repetition ran back to back): the spread
        per_rep = [a / p for a, p in zip([jobs / w for w in walls[arm]],
                                         [jobs / w for w in walls["plain"]], strict=True)]
        out["ratios"][arm] = {"median_of_medians": out["arms"][arm]["jobs_per_s_median"] / base,
                              "per_rep_min": min(per_rep), "per_rep_max": max(per_rep),
                              "target": goal}
    return out


def table(res: dict[str, Any]) -> str:
    k = res["knobs"]
    lines = [f"{'arm':<34} {'wall s':>7} {'jobs/s':>7} {'min-max':>13} {'vs plain':>9} "
             f"{'per-rep':>11} {'target':>7}"]
    names = {"plain": "plain instance",
             "plain-fluxion": "plain, Fluxion as for fluxqr",
             "classical": "fluxqr-configured, classical jobs",
             "hybrid": "fluxqr-configured, hybrid (aer)"}
    for arm in ARMS:
        a = res["arms"][arm]
        r = res["ratios"].get(arm)
        ratio = f"{r['median_of_medians']:.2f}" if r else "1.00"
        spread = f"{r['per_rep_min']:.2f}-{r['per_rep_max']:.2f}" if r else ""
        verdict = "" if not r or r["target"] is None else (f"≥{r['target']:.2f} " +
                                    ("ok" if r["median_of_medians"] >= r["target"] else "MISS"))
        lines.append(f"{names[arm]:<34} {a['wall_s_median']:7.2f} "
                     f"{a['jobs_per_s_median']:7.1f} "
                     f"{a['jobs_per_s_min']:6.1f}-{a['jobs_per_s_max']:<6.1f} {ratio:>9} "
                     f"{spread:>11} {verdict:>7}")
    lines.append("")
    lines.append(f"{'CPU ms per job (median)':<34} " + " ".join(f"{c:>8}" for c in CPU_KEYS)
                 + f" {'total':>8} {'vs plain':>9}")
    base = res["arms"]["plain"]["cpu_ms_per_job_median"]["total"]
    for arm in ARMS:
        cpu = res["arms"][arm]["cpu_ms_per_job_median"]
        lines.append(f"{names[arm]:<34} " + " ".join(f"{cpu[c]:8.1f}" for c in CPU_KEYS)
                     + f" {cpu['total']:8.1f} {cpu['total'] / base:9.2f}")
    arms = res["arms"]

    def vs_fx(arm: str) -> str:
        rate = arms[arm]["jobs_per_s_median"] / arms["plain-fluxion"]["jobs_per_s_median"]
        cpu = (arms[arm]["cpu_ms_per_job_median"]["total"]
               / arms["plain-fluxion"]["cpu_ms_per_job_median"]["total"])
        return f"{arm} {rate:.2f} jobs/s, {cpu:.2f} CPU"

    lines.append("fluxqr's own code, vs plain with Fluxion as for fluxqr: "
                 f"{vs_fx('classical')}; {vs_fx('hybrid')}")
    lines.append(f"({k['jobs']} jobs per batch, {k['reps']} repetitions interleaved, medians; "
                 f"2 brokers, {k['cores_per_node']} cores each)")
    for err in res["errors"]:
        lines.append(f"error: {err}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer jobs and repetitions")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--jobs", type=int, help="jobs per batch (default 100, quick 40)")
    ap.add_argument("--reps", type=int, help="repetitions (default 9, quick 5)")
    args = ap.parse_args(argv)
    if not (fluxenv.flux_command() and fluxenv.has_fluxion()):
        print("throughput: skipped (no Flux)")
        return 0
    jobs = args.jobs or (40 if args.quick else 100)
    reps = args.reps or (5 if args.quick else 9)
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    res = run(jobs, reps, warmup=10, log=sys.stderr if args.json else sys.stdout)
    res["load_average"] = load
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"\nthroughput ({'quick' if args.quick else 'full'}; "
              f"{time.monotonic() - t0:.0f} s wall; load average {load:.1f} on "
              f"{os.cpu_count()} cores{': NOISY' if load > (os.cpu_count() or 1) else ''})")
        print(table(res))
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
