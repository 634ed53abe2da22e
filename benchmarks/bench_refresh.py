"""Benchmark "refresh": what the refresh loop costs a running Fluxion, with 32 QPUs.

In a real instance whose graph holds 32 QPUs:

* RPCs per cycle when nothing changed (target 0);
* RPCs per cycle when every device changed one key, against the number of distinct
  key=value pairs that changed (target <= that number, +1 for the shared ``updated``);
* cycle time (RPC part, with reads prepared; and a full cycle of 32 real adapter reads:
  Qiskit ``generic:<n>`` backends);
* change-to-visible latency: the broker module at interval 1 s reading a QRMI device
  behind the loopback IBM QCS stand-in; the stand-in's queue length changes and
  ``get_property`` is polled until it shows (median of 5).

    python benchmarks/bench_refresh.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fluxqr.agent import refresh  # noqa: E402
from fluxqr.core import graph, inventory  # noqa: E402
from fluxqr.devices.snapshot import DeviceSnapshot  # noqa: E402
from fluxqr.flux import env as fluxenv  # noqa: E402
from fluxqr.flux import instance  # noqa: E402

N = 32


def _inventory(path: Path, extra: list[dict] | None = None) -> inventory.Inventory:
    devices = [{"name": f"q{i:02d}", "adapter": "qiskit", "qubits": 5 + i % 8,
                "vendor": ["ibm", "iqm", "quera", "ionq"][i % 4],
                "params": {"backend": f"generic:{5 + i % 8}"}} for i in range(N)]
    path.write_text(yaml.safe_dump({"version": 1, "devices": devices + (extra or [])}))
    return inventory.load(path)


def _r(path: Path, inv: inventory.Inventory) -> Path:
    graph.write_r(graph.add_devices(graph.synthesize(2, 4), inv), path)
    return path


class Counting:
    """A FluxionTarget that counts the RPCs it sends."""

    def __init__(self, target: refresh.FluxionTarget):
        self.t = target
        self.rpcs = 0

    def qpus(self):
        return self.t.qpus()

    def set_property(self, paths, key, value):
        self.rpcs += 1
        self.t.set_property(paths, key, value)

    def remove_property(self, paths, key):
        self.rpcs += 1
        self.t.remove_property(paths, key)

    def set_status(self, path, up):
        self.rpcs += 1
        self.t.set_status(path, up)

    def flush(self):
        pass


def bench_rpcs(inst, inv: inventory.Inventory) -> None:
    snaps = {d.name: DeviceSnapshot(d.name, "qiskit", "online", queue_depth=0,
                                     median_2q_error=0.01) for d in inv}
    target = Counting(refresh.FluxionTarget(instance.connect(inst.uri)))
    loop = refresh.Refresher(inv, target, reader=lambda i, t: [snaps[d.name] for d in i])
    first = loop.cycle()
    t0 = time.perf_counter()
    same = loop.cycle()
    t_same = time.perf_counter() - t0
    for i, d in enumerate(inv):
        snaps[d.name] = DeviceSnapshot(d.name, "qiskit", "online", queue_depth=1 + i % 4,
                                       median_2q_error=0.01)
    t0 = time.perf_counter()
    changed = loop.cycle()
    t_changed = time.perf_counter() - t0
    distinct = len({s.queue_depth for s in snaps.values()})
    shown = instance.get_property(target.t.handle, "/cluster0/q05", "queue_depth")
    print(f"first cycle (fills {N} devices)         {first.rpcs:4d} RPCs")
    print(f"nothing changed                        {same.rpcs:4d} RPCs  {t_same * 1e3:7.1f} ms"
          f"  target 0: {'PASS' if same.rpcs == 0 else 'MISS'}")
    ok = changed.rpcs <= distinct + 1
    print(f"every device changed queue_depth       {changed.rpcs:4d} RPCs  "
          f"{t_changed * 1e3:7.1f} ms  distinct key=value pairs: {distinct} (+1 updated)  "
          f"{'PASS' if ok else 'MISS'}")
    assert shown == ["2"], shown  # q05 -> 1 + 5 % 4


def bench_real_cycle(inv: inventory.Inventory) -> None:
    target = refresh.GraphFileTarget(_r(Path(tempfile.mkdtemp()) / "R.json", inv))
    loop = refresh.Refresher(inv, target)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        loop.cycle()
        times.append(time.perf_counter() - t0)
    print(f"full cycle, {N} real adapter reads (graph file target): first {times[0]:.2f} s, "
          f"then {statistics.median(times[1:]):.2f} s")


def bench_latency(work: Path) -> None:
    from fluxinst import FluxInstance
    from standins.qcs_server import QCSStandIn

    with QCSStandIn("fake_fez") as server:
        extra = [{"name": "ibm_fez", "adapter": "qrmi", "qubits": 156, "vendor": "ibm",
                  "params": {"resource_id": "ibm_fez",
                             "resource_type": "ibm-quantum-compute-service",
                             "config": server.qrmi_config()},
                  "credentials": {"QRMI_IBM_QCS_IAM_APIKEY": "BENCH_KEY"}}]
        devfile = work / "latency-devices.yaml"
        inv = _inventory(devfile, extra)
        with FluxInstance(work / "lat", _r(work / "lat.R.json", inv), hosts="node[0-1]",
                          env={"BENCH_KEY": "bench"}) as inst:
            inst.run(["flux", "module", "load", str(inst.module), f"devices={devfile}",
                      "interval=1"])
            h = instance.connect(inst.uri)

            def shown() -> str | None:
                try:
                    return instance.get_property(h, "/cluster0/ibm_fez", "queue_depth")[0]
                except (OSError, IndexError):
                    return None

            deadline = time.monotonic() + 120
            while shown() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            lat = []
            for q in range(1, 6):
                server.set(queue_length=100 + q)
                t0 = time.monotonic()
                while shown() != str(100 + q) and time.monotonic() - t0 < 60:
                    time.sleep(0.02)
                lat.append(time.monotonic() - t0)
            status = instance.rpc(h, "fluxqr.status")
            cycle = status["last_cycle"]["seconds"]
    print(f"change-to-visible latency, module interval 1 s, {N + 1} devices: median "
          f"{statistics.median(lat):.2f} s, max {max(lat):.2f} s (last cycle {cycle:.2f} s; "
          f"bound interval + cycle = {1 + cycle:.2f} s)")


def main() -> int:
    print(f"== refresh: {N} QPUs in a real Fluxion")
    if not (fluxenv.flux_command() and fluxenv.has_fluxion()):
        print("skipped (no Flux)")
        return 0
    from fluxinst import FluxInstance

    with tempfile.TemporaryDirectory(prefix="fluxqr-bench-refresh-") as d:
        work = Path(d)
        inv = _inventory(work / "devices.yaml")
        with FluxInstance(work / "rpc", _r(work / "R.json", inv), hosts="node[0-1]") as inst:
            bench_rpcs(inst, inv)
        bench_real_cycle(inv)
        bench_latency(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
