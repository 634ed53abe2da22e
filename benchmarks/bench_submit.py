"""Benchmark "jobspec": what the fluxqr ``flux submit`` plugin costs a submission.

In a real two-broker instance loaded with the local devices, ``flux submit --dry-run``
is timed (median of N, variants interleaved to cancel drift):

* classical ``-n1 true`` with the plugin installed / without: target <= 1.10;
* hybrid ``-n1 --qpu=1 --qubits=2 true`` with the plugin / the classical job without
  the plugin: target <= 1.5.

When a target is missed, the imports the plugin adds (``PYTHONPROFILEIMPORTTIME``) and
the time of its broker RPCs are printed.

    python benchmarks/bench_submit.py [--reps N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLASSICAL = ["submit", "--dry-run", "-n1", "true"]
HYBRID = ["submit", "--dry-run", "-n1", "--qpu=1", "--qubits=2", "true"]
CLASSICAL_TARGET = 1.10
HYBRID_TARGET = 1.5

#: Times the plugin's steps, as modify_jobspec makes them (it records the request; the
#: instance's frobnicator resolves it, so no Fluxion view is fetched on the client).
RPC_PROBE = r"""
import json, time
t = time.perf_counter
t0 = t()
from fluxqr.flux import instance
from fluxqr.core import jobspec
t1 = t()
h = instance.connect()
t2 = t()
conf = instance.config(h)
instance.check_validator(h, conf)
t3 = t()
record = jobspec.request_record({"qpus": 1, "qubits": 2}, "--qpu options")
t4 = t()
start = jobspec.might_hold(record, (conf.get("fluxqr") or {}).get("devices"))
t5 = t()
print(json.dumps({"import fluxqr.flux.instance, fluxqr.core.jobspec": t1 - t0,
                  "connect (imports flux)": t2 - t1,
                  "config.get (check_validator)": t3 - t2,
                  "request_record (checks)": t4 - t3,
                  "might_hold (inventory read)": t5 - t4}))
"""


def run_timed(flux: str, argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of one flux command; its stdout. Raises if it fails."""
    t0 = time.perf_counter()
    p = subprocess.run([flux, *argv], env=env, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"flux {' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
    return wall, p.stdout


def import_costs(flux: str, argv: list[str], env: dict[str, str]) -> dict[str, int]:
    """Cumulative import time (us) per top-level-ish module, from ``-X importtime``."""
    p = subprocess.run([flux, *argv], env=dict(env, PYTHONPROFILEIMPORTTIME="1"),
                       capture_output=True, text=True, timeout=120)
    costs: dict[str, int] = {}
    for line in p.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(3)) <= 3:  # first two nesting levels
            costs[m.group(4)] = max(costs.get(m.group(4), 0), int(m.group(2)))
    return costs


def profile(flux: str, python: str, argv: list[str], plugin_env: dict[str, str],
            base_env: dict[str, str]) -> None:
    """Print what the plugin adds: imports absent from the baseline, and its RPC times."""
    print(f"   profile of 'flux {' '.join(argv)}' with the plugin:")
    base = import_costs(flux, CLASSICAL, base_env)
    with_plugin = import_costs(flux, argv, plugin_env)
    extra = sorted(((us, mod) for mod, us in with_plugin.items() if mod not in base),
                   reverse=True)
    print("     imports not made without the plugin (cumulative ms):")
    for us, mod in extra[:12]:
        print(f"       {us / 1000:8.1f}  {mod}")
    if argv == HYBRID:
        p = subprocess.run([python, "-c", RPC_PROBE], env=plugin_env, capture_output=True,
                           text=True, timeout=120)
        if p.returncode == 0:
            print("     plugin steps, measured in a separate process (ms):")
            steps = json.loads(p.stdout)
            for step, secs in steps.items():
                print(f"       {secs * 1000:8.1f}  {step}")


def interleave(flux: str, variants: dict[str, tuple[list[str], dict[str, str]]],
               reps: int) -> dict[str, list[float]]:
    """Run every variant ``reps`` times, rotating their order each round."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    print(f"   {reps} rounds:", end="", flush=True)
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            argv, env = variants[name]
            times[name].append(run_timed(flux, argv, env)[0])
        print(f" {rep + 1}", end="", flush=True)
    print(flush=True)
    return times


def bench_large(flux: str, nodes: int, reps: int) -> None:
    """For information: the hybrid submit against a cluster of ``nodes`` nodes."""
    from fluxinst import FluxInstance, build_r, fluxqr_env

    print(f"\n== for information (no target): the same on a {nodes}-node x 96-core cluster",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="fluxqr-bench-submit-large-") as d:
        tmp = Path(d)
        r_path = build_r(tmp / "R.json", nodes=nodes, cores=96,
                         devices=ROOT / "graphs" / "local-devices.yaml")
        shims = fluxqr_env(tmp / "shims")
        # One broker: Fluxion loads all the nodes, ranks 1.. are down (fine for --dry-run).
        with FluxInstance(tmp, r_path, size=1, hosts="node0") as fi:
            base_env = {k: v for k, v in fi.env.items() if k != "FLUX_CLI_PLUGINPATH"}
            variants = {"classical, no plugin": (CLASSICAL, base_env),
                        "hybrid, plugin": (HYBRID, dict(base_env, **shims))}
            run_timed(flux, HYBRID, variants["hybrid, plugin"][1])
            times = interleave(flux, variants, reps)
            med = {name: statistics.median(ts) for name, ts in times.items()}
            print(f"{'':<24}{'median (s)':>11}")
            for name, m in med.items():
                print(f"{name:<24}{m:>11.3f}")
            ratio = med["hybrid, plugin"] / med["classical, no plugin"]
            print(f"{'hybrid ratio':<24}{ratio:>11.2f}  (the target, for the small instance: "
                  f"<= {HYBRID_TARGET})")


def bench(reps: int, force_profile: bool = False, large: int = 0) -> int:
    from fluxqr.flux import env as fluxenv

    print("== jobspec: flux submit --dry-run with the fluxqr plugin vs without", flush=True)
    flux = fluxenv.flux_command()
    if not flux or not fluxenv.has_fluxion():
        print("skipped (no Flux)")
        return 0
    sys.path.insert(0, str(ROOT / "tests"))
    from fluxinst import FluxInstance, build_r, fluxqr_env  # the tests' instance helper

    load = os.getloadavg()[0]
    if load > 0.75 * (os.cpu_count() or 1):
        print(f"   note: load average {load:.1f} on {os.cpu_count()} CPUs -- other work is "
              "running, timings are noisy")
    with tempfile.TemporaryDirectory(prefix="fluxqr-bench-submit-") as d:
        tmp = Path(d)
        r_path = build_r(tmp / "R.json", nodes=2, cores=4,
                         devices=ROOT / "graphs" / "local-devices.yaml")
        shims = fluxqr_env(tmp / "shims")
        with FluxInstance(tmp, r_path, size=2, hosts="node[0-1]") as fi:
            base_env = {k: v for k, v in fi.env.items()
                        if k not in ("FLUX_CLI_PLUGINPATH", "FLUX_CLI_PLUGINPATH_OVERRIDE")}
            plugin_env = dict(base_env, **shims)
            variants = {
                "classical, no plugin": (CLASSICAL, base_env),
                "classical, plugin": (CLASSICAL, plugin_env),
                "hybrid, plugin": (HYBRID, plugin_env),
            }
            # Warm-up (page cache, .pyc files), and a check that each variant works.
            for name, (argv, env) in variants.items():
                _, out = run_timed(flux, argv, env)
                # the plugin records the quantum request; the instance's frobnicator turns
                # it into QPU resources at ingest (not part of a --dry-run)
                has_qpu = '"quantum"' in out
                if has_qpu != (argv == HYBRID):
                    raise RuntimeError(f"{name}: unexpected jobspec: {out[:500]}")
            times = interleave(flux, variants, reps)
            jobs = fi.run(["flux", "jobs", "-a", "-n"]).stdout.strip()
            njobs = len(jobs.splitlines()) if jobs else 0
            med = {name: statistics.median(ts) for name, ts in times.items()}
            print(f"{'':<24}{'median (s)':>11}{'min (s)':>9}{'max (s)':>9}")
            for name, ts in times.items():
                print(f"{name:<24}{med[name]:>11.3f}{min(ts):>9.3f}{max(ts):>9.3f}")
            base = med["classical, no plugin"]
            checks = [("classical ratio", "classical, plugin", CLASSICAL_TARGET, CLASSICAL),
                      ("hybrid ratio", "hybrid, plugin", HYBRID_TARGET, HYBRID)]
            to_profile: list[list[str]] = []
            for label, name, target, argv in checks:
                ratio = med[name] / base
                ok = ratio <= target
                print(f"{label} (target <= {target:.2f})  {ratio:.2f} "
                      f"{'PASS' if ok else 'MISS'}")
                if not ok or force_profile:
                    to_profile.append(argv)
            print(f"   ({reps} runs each; ratios of medians, both against the classical "
                  f"job without the plugin; jobs actually submitted: {njobs})")
            for argv in to_profile:
                profile(flux, sys.executable, argv, plugin_env, base_env)
    if large:
        bench_large(flux, large, max(3, reps // 3))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=15, help="runs of each variant")
    p.add_argument("--profile", action="store_true", help="profile even if targets are met")
    p.add_argument("--large", type=int, default=512, metavar="NODES",
                   help="also time the hybrid submit on a NODES-node cluster (0: skip)")
    args = p.parse_args(argv)
    return bench(args.reps, args.profile, args.large)


if __name__ == "__main__":
    sys.exit(main())
