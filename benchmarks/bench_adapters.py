"""Benchmark the device adapters: SDK import cost and per-adapter probe time.

Run from the repository root:  python benchmarks/bench_adapters.py [--repeat N]

Every measurement runs in a fresh interpreter, so imports are cold (as for a
``fluxqr devices probe`` command). The QRMI device talks to the loopback QCS
stand-in from tests/standins, started by this script.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SDK_MODULES = ["qiskit", "qiskit_ibm_runtime", "braket.devices", "mqt.core.qdmi", "qrmi"]
BASELINE = ["fluxqr", "fluxqr.devices"]

IMPORT_CODE = """
import time
t = time.perf_counter()
import {module}
print(time.perf_counter() - t)
"""

PROBE_CODE = """
import json, time
from fluxqr.devices import read
from fluxqr.core.inventory import Device
devices = [Device(**d) for d in json.loads({devices!r})]
t = time.perf_counter()
first = [read(d, timeout=120) for d in devices]
cold = time.perf_counter() - t
t = time.perf_counter()
second = [read(d, timeout=120) for d in devices]
warm = time.perf_counter() - t
print(json.dumps({{"cold": cold, "warm": warm,
                  "errors": [s.error for s in first + second if s.error]}}))
"""


def run(code: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"benchmark subprocess failed:\n{out.stderr}")
    return out.stdout.strip().splitlines()[-1]


def import_time(module: str, repeat: int, env: dict[str, str]) -> float:
    return statistics.median(float(run(IMPORT_CODE.format(module=module), env))
                             for _ in range(repeat))


def probe_time(devices: list[dict], repeat: int, env: dict[str, str]) -> tuple[float, float]:
    runs = [json.loads(run(PROBE_CODE.format(devices=json.dumps(devices)), env))
            for _ in range(repeat)]
    errors = [e for r in runs for e in r["errors"]]
    if errors:
        raise SystemExit(f"probe failed: {errors[0]}")
    return (statistics.median(r["cold"] for r in runs),
            statistics.median(r["warm"] for r in runs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLUXQR_BENCH_APIKEY": "bench-key"}

    from tests.standins.qcs_server import QCSStandIn

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s), "
          f"median of {args.repeat} fresh interpreters\n")
    print("cold import times")
    times = {m: import_time(m, args.repeat, env) for m in SDK_MODULES + BASELINE}
    ref = times["qiskit"]
    for module in SDK_MODULES:
        print(f"  import {module:<22} {times[module]:6.2f} s")
    for module in BASELINE:
        print(f"  import {module:<22} {times[module]:6.3f} s  "
              f"(x{times[module] / ref:.3f} of import qiskit)")

    with QCSStandIn("fake_fez") as qcs:
        devices = {
            "qiskit (fake_fez)": {"backend": "fake_fez"},
            "qdmi (mqt.sc.iqm.garnet)": {"device": "mqt.sc.iqm.garnet"},
            "braket (local:braket_sv)": {"device": "local:braket_sv"},
            "qrmi (QCS stand-in, ibm_fez)": {
                "resource_id": qcs.name, "resource_type": "ibm-quantum-compute-service",
                "config": qcs.qrmi_config()},
        }
        specs = []
        print("\nread time per adapter (cold = first read in the process, incl. SDK import)")
        for label, params in devices.items():
            adapter = label.split()[0]
            spec = {"name": adapter, "adapter": adapter, "qubits": 1, "params": params}
            if adapter == "qrmi":
                spec["credentials"] = {"QRMI_IBM_QCS_IAM_APIKEY": "FLUXQR_BENCH_APIKEY"}
            specs.append(spec)
            cold, warm = probe_time([spec], args.repeat, env)
            print(f"  {label:<30} cold {cold:6.2f} s   warm {warm:6.3f} s")
        cold, warm = probe_time(specs, args.repeat, env)
        print(f"  {'all four, one after another':<30} cold {cold:6.2f} s   warm {warm:6.3f} s")
        probe_all = PROBE_CODE.replace("[read(d, timeout=120) for d in devices]",
                                       "probe(devices, timeout=120)").replace(
            "import read", "import probe")
        runs = [json.loads(run(probe_all.format(devices=json.dumps(specs)), env))
                for _ in range(args.repeat)]
        print(f"  {'all four, probe() (threads)':<30} "
              f"cold {statistics.median(r['cold'] for r in runs):6.2f} s   "
              f"warm {statistics.median(r['warm'] for r in runs):6.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
