"""Benchmark "graph": building a hybrid R, and what QPUs cost Fluxion at load.

1. ``fluxqr graph build`` of 4,096 nodes x 96 cores x 4 GPUs + 32 QPUs into an R with
   JGF (``scheduling``), against flux-sched's own encoder ``flux ion-R encode`` of the
   same classical cluster. Each command runs in a fresh process; wall time and peak RSS
   (``RUSAGE_CHILDREN`` of a dedicated runner process) are compared. Targets: both
   ratios fluxqr / ion-R <= 0.5.
2. Fluxion's graph load time (``load-time`` of ``sched-fluxion-resource.stats-get``)
   in a real ``flux start`` instance, with the 32 QPUs / without. Target <= 1.02.

    python benchmarks/bench_graph.py [--reps N] [--load-nodes N] [--skip-load]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fluxqr.flux import env as fluxenv

ROOT = Path(__file__).resolve().parent.parent
NODES, CORES, GPUS, QPUS = 4096, 96, 4, 32
BUILD_TARGET = 0.5
LOAD_TARGET = 1.02

#: Runs one command (stdin/stdout redirected to files) and reports its wall time and the
#: peak RSS of the largest process in its tree; a fresh runner per measurement keeps
#: RUSAGE_CHILDREN about that one command.
RUNNER = r"""
import json, resource, subprocess, sys, time
spec = json.loads(sys.argv[1])
fin = open(spec["stdin"], "rb") if spec["stdin"] else subprocess.DEVNULL
fout = open(spec["stdout"], "wb") if spec["stdout"] else subprocess.DEVNULL
t0 = time.perf_counter()
p = subprocess.run(spec["argv"], stdin=fin, stdout=fout, stderr=subprocess.PIPE,
                   cwd=spec["cwd"])
wall = time.perf_counter() - t0
print(json.dumps({"rc": p.returncode, "wall": wall,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "stderr": p.stderr.decode(errors="replace")[-2000:]}))
"""

#: Initial program of the load-time instance: rc1 has loaded Fluxion by the time it runs.
PROBE = r"""
import json, os, time, flux
h = flux.Flux()
stats = h.rpc("sched-fluxion-resource.stats-get").get()
ready = time.time()
pid = h.attr_get("broker.pid")
cpu = 0.0
for tid in os.listdir(f"/proc/{pid}/task"):
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            comm = f.read().strip()
        if comm.startswith("sched-fluxion-r"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                cpu += int(f.read().split()[0]) / 1e9
    except OSError:
        pass
print(json.dumps({"V": stats["V"], "E": stats["E"], "load": stats["load-time"],
                  "cpu": cpu, "ready": ready}))
"""


def write_inventory(path: Path, count: int = QPUS) -> Path:
    """A devices.yaml of ``count`` Qiskit generic devices (no SDK is touched to build)."""
    vendors = ("ibm", "iqm", "quantinuum", "ionq")
    techs = ("superconducting", "superconducting", "trapped_ion", "trapped_ion")
    lines = ["version: 1", "site: fluxqr benchmark", "devices:"]
    for i in range(count):
        qubits = 20 + 8 * i
        lines += [f"  - name: qpu{i:02d}",
                  "    adapter: qiskit",
                  f"    qubits: {qubits}",
                  f"    vendor: {vendors[i % 4]}",
                  f"    technology: {techs[i % 4]}",
                  f"    sharing: {{sessions: {1 + i % 4}}}" if i % 8 else
                  "    sharing: {exclusive: true}",
                  f"    params: {{backend: 'generic:{qubits}'}}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def measure(argv: list[str], stdin: Path | None = None, stdout: Path | None = None
            ) -> dict[str, Any]:
    """Wall seconds and peak RSS (KiB) of one command, run by a dedicated runner process."""
    spec = {"argv": argv, "stdin": str(stdin) if stdin else None,
            "stdout": str(stdout) if stdout else None, "cwd": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(spec)], capture_output=True,
                         text=True, check=True, timeout=1800)
    res = json.loads(out.stdout)
    if res["rc"] != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res['rc']}):\n{res['stderr']}")
    return res


def fluxqr_build(args: list[str]) -> list[str]:
    """The ``fluxqr graph build`` command line, as a user runs it."""
    return [sys.executable, "-m", "fluxqr.cli", "graph", "build", *args]


def mib(kib: float) -> float:
    return kib / 1024


def verdict(ratio: float, target: float) -> str:
    return "PASS" if ratio <= target else "MISS"


def busy_note() -> None:
    load = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    if load > 0.75 * cpus:
        print(f"   note: load average {load:.1f} on {cpus} CPUs before starting -- other work "
              "is running, timings are noisy")


# -- 1. graph build vs flux ion-R encode ---------------------------------------------------


def bench_build(tmp: Path, reps: int, flux: str | None) -> None:
    print(f"== graph build: {NODES} nodes x {CORES} cores x {GPUS} GPUs + {QPUS} QPUs "
          "-> R with JGF", flush=True)
    busy_note()
    inv = write_inventory(tmp / "devices.yaml")
    rlite = tmp / "R_lite_only.json"
    rlite.write_text(json.dumps({"version": 1, "execution": {
        "R_lite": [{"rank": f"0-{NODES - 1}",
                    "children": {"core": f"0-{CORES - 1}", "gpu": f"0-{GPUS - 1}"}}],
        "nodelist": [f"node[0-{NODES - 1}]"], "starttime": 0, "expiration": 0}}))
    fq_out, ion_out = tmp / "fluxqr-R.json", tmp / "ion-R.json"
    fq_cmd = fluxqr_build(["--nodes", str(NODES), "--cores", str(CORES), "--gpus", str(GPUS),
                           "--devices", str(inv), "-o", str(fq_out)])
    fq: list[dict[str, Any]] = []
    ion: list[dict[str, Any]] = []
    for rep in range(reps):
        print(f"   run {rep + 1}/{reps}: fluxqr graph build ...", end="", flush=True)
        fq.append(measure(fq_cmd))
        print(f" {fq[-1]['wall']:.1f} s", end="", flush=True)
        if flux:
            print("; flux ion-R encode ...", end="", flush=True)
            ion.append(measure([flux, "ion-R", "encode"], stdin=rlite, stdout=ion_out))
            print(f" {ion[-1]['wall']:.1f} s", end="", flush=True)
        print(flush=True)
    fq_wall = min(r["wall"] for r in fq)
    fq_rss = mib(max(r["maxrss_kib"] for r in fq))
    print(f"{'':<22}{'wall (s)':>10}{'peak RSS (MiB)':>17}{'output (MB)':>14}")
    print(f"{'fluxqr graph build':<22}{fq_wall:>10.2f}{fq_rss:>17.0f}"
          f"{fq_out.stat().st_size / 1e6:>14.1f}")
    if not ion:
        print("flux ion-R encode: skipped (no Flux)")
        return
    ion_wall = min(r["wall"] for r in ion)
    ion_rss = mib(max(r["maxrss_kib"] for r in ion))
    print(f"{'flux ion-R encode':<22}{ion_wall:>10.2f}{ion_rss:>17.0f}"
          f"{ion_out.stat().st_size / 1e6:>14.1f}")
    tr, mr = fq_wall / ion_wall, fq_rss / ion_rss
    print(f"{f'ratio (target <= {BUILD_TARGET})':<22}{tr:>5.2f} {verdict(tr, BUILD_TARGET):<4}"
          f"{mr:>12.2f} {verdict(mr, BUILD_TARGET)}")
    print(f"   (wall: best of {reps}; RSS: highest of {reps}; ion-R encodes only the classical "
          "part, fluxqr adds the 32 QPU subtrees)")


# -- 2. Fluxion graph load with vs without QPUs --------------------------------------------


def load_once(flux: str, r_path: Path, workdir: Path) -> dict[str, Any]:
    """Start a one-broker instance on ``r_path``; Fluxion's load figures once it is up."""
    conf = workdir / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "instance.toml").write_text(
        f'[resource]\npath = "{r_path}"\nnoverify = true\n\n'
        '[sched-fluxion-resource]\nmatch-format = "rv1"\n')
    start = time.time()
    proc = subprocess.run([flux, "start", "--test-size=1", f"--config-path={conf}",
                           flux, "python", "-c", PROBE],
                          capture_output=True, text=True, timeout=600, cwd=workdir)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"flux start failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    res = json.loads(lines[-1])
    res["startup"] = res["ready"] - start
    return res


def bench_load(tmp: Path, reps: int, nodes: int, flux: str) -> None:
    print(f"\n== Fluxion graph load: {nodes} nodes x {CORES} cores x {GPUS} GPUs, without vs "
          f"with {QPUS} QPUs ({reps} instances each, alternating)", flush=True)
    busy_note()
    inv = tmp / "devices.yaml"
    if not inv.exists():
        write_inventory(inv)
    classical = ["--nodes", str(nodes), "--cores", str(CORES), "--gpus", str(GPUS)]
    paths = {"without": tmp / f"R-{nodes}.json", "with": tmp / f"R-{nodes}-qpus.json"}
    subprocess.run(fluxqr_build([*classical, "-o", str(paths["without"])]), check=True,
                   cwd=ROOT)
    subprocess.run(fluxqr_build([*classical, "--devices", str(inv), "-o", str(paths["with"])]),
                   check=True, cwd=ROOT)
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    for rep in range(reps):
        order = ("without", "with") if rep % 2 == 0 else ("with", "without")
        print(f"   run {rep + 1}/{reps}:", end="", flush=True)
        for variant in order:
            res = load_once(flux, paths[variant], tmp / "instance")
            runs[variant].append(res)
            print(f" {variant} {res['load']:.2f} s", end="", flush=True)
        print(flush=True)

    def col(variant: str, key: str, fn: Any) -> float:
        return fn([r[key] for r in runs[variant]])

    rows = [("vertices", "V", min, "{:.0f}"),
            ("load-time, best (s)", "load", min, "{:.3f}"),
            ("load-time, median (s)", "load", statistics.median, "{:.3f}"),
            ("Fluxion CPU, median (s)", "cpu", statistics.median, "{:.3f}"),
            ("start->loaded, median (s)", "startup", statistics.median, "{:.2f}")]
    print(f"{'':<28}{'without':>10}{'with':>10}{'ratio':>8}")
    for label, key, fn, fmt in rows:
        a, b = col("without", key, fn), col("with", key, fn)
        print(f"{label:<28}{fmt.format(a):>10}{fmt.format(b):>10}{b / a:>8.3f}")
    ratio = col("with", "load", min) / col("without", "load", min)
    print(f"ratio (load-time best, target <= {LOAD_TARGET})  {ratio:.3f} "
          f"{verdict(ratio, LOAD_TARGET)}")
    print("   (load-time: Fluxion's own stats-get 'load-time', resource.acquire to graph "
          "built; CPU: its module thread's CPU time when up. One broker: ranks "
          f"1-{nodes - 1} are loaded but down.)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=2, help="runs of each build command (best wall)")
    p.add_argument("--load-reps", type=int, default=5, help="instances per load variant")
    p.add_argument("--load-nodes", type=int, default=512, help="nodes in the load-time R")
    p.add_argument("--skip-build", action="store_true", help="skip the build comparison")
    p.add_argument("--skip-load", action="store_true", help="skip the Fluxion load comparison")
    args = p.parse_args(argv)
    flux = fluxenv.flux_command()
    fluxion = bool(flux) and fluxenv.has_fluxion()
    with tempfile.TemporaryDirectory(prefix="fluxqr-bench-graph-") as d:
        tmp = Path(d)
        if not args.skip_build:
            bench_build(tmp, args.reps, flux if fluxion else None)
        if not args.skip_load:
            if fluxion and flux:
                bench_load(tmp, args.load_reps, args.load_nodes, flux)
            else:
                print("\n== Fluxion graph load: skipped (no Flux)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
