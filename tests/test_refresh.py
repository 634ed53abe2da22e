"""The refresh loop's diffing and fault handling (no Flux needed: a recording target)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import GRAPHS

from fluxqr.agent import refresh
from fluxqr.core import config, graph, inventory
from fluxqr.devices.snapshot import DeviceSnapshot
from fluxqr.errors import FluxqrError


def _inv(n: int) -> inventory.Inventory:
    return inventory.parse({"version": 1, "devices": [
        {"name": f"q{i}", "adapter": "qiskit", "qubits": 5, "params": {"backend": "generic:5"}}
        for i in range(n)]})


class RecordingTarget:
    """Holds QPU state like Fluxion would and counts the RPCs it receives."""

    def __init__(self, names: list[str], fail: set[str] = frozenset()):
        self.state = {n: [f"/cluster0/{n}", True, {"vendor": "x"}] for n in names}
        self.calls: list[tuple] = []
        self.fail = set(fail)

    def qpus(self):
        return {n: (p, up, dict(props)) for n, (p, up, props) in self.state.items()}

    def _check(self, kind: str) -> None:
        if kind in self.fail:
            raise OSError(5, f"{kind} exploded")

    def set_property(self, paths, key, value):
        self.calls.append(("set", tuple(paths), key, value))
        self._check("set")
        for p in paths:
            self.state[p.rsplit("/", 1)[1]][2][key] = value

    def remove_property(self, paths, key):
        self.calls.append(("remove", tuple(paths), key))
        self._check("remove")
        for p in paths:
            self.state[p.rsplit("/", 1)[1]][2].pop(key, None)

    def set_status(self, path, up):
        self.calls.append(("status", path, up))
        self._check("status")
        self.state[path.rsplit("/", 1)[1]][1] = up

    def flush(self):
        pass


class Script:
    """A reader returning prepared snapshots, cycle after cycle."""

    def __init__(self):
        self.next: dict[str, DeviceSnapshot] = {}

    def __call__(self, inv, timeout):
        return [self.next[d.name] for d in inv]

    def all(self, inv, **fields):
        for d in inv:
            self.next[d.name] = DeviceSnapshot(d.name, "qiskit", **fields)


def _loop(n: int = 4, threshold: int = 2, **kw):
    inv = _inv(n)
    target = RecordingTarget([d.name for d in inv], **kw)
    script = Script()
    return inv, target, script, refresh.Refresher(inv, target, failure_threshold=threshold,
                                                  reader=script)


def test_unchanged_devices_cost_no_rpc() -> None:
    inv, target, script, r = _loop()
    script.all(inv, status="online", queue_depth=3, median_2q_error=0.004)
    first = r.cycle()
    assert first.rpcs == 4  # status, queue_depth, error_2q, updated: each one RPC for all
    target.calls.clear()
    assert r.cycle().rpcs == 0 and target.calls == []


def test_one_rpc_per_distinct_key_value() -> None:
    inv, target, script, r = _loop(6)
    script.all(inv, status="online", queue_depth=1)
    r.cycle()
    target.calls.clear()
    # every device changes one key; values: three distinct
    for i, d in enumerate(inv):
        script.next[d.name] = DeviceSnapshot(d.name, "qiskit", status="online",
                                             queue_depth=10 + i % 3)
    rep = r.cycle()
    sets = [c for c in target.calls if c[0] == "set"]
    assert {c[3] for c in sets if c[2] == "queue_depth"} == {"10", "11", "12"}
    assert len([c for c in sets if c[2] == "updated"]) == 1
    assert rep.rpcs == 3 + 1 and rep.changes == 6 + 6
    assert all(target.state[d.name][2]["queue_depth"] == str(10 + i % 3)
               for i, d in enumerate(inv))


def test_unknown_value_is_removed_not_left_stale() -> None:
    inv, target, script, r = _loop(1)
    script.all(inv, status="online", queue_depth=3)
    r.cycle()
    script.all(inv, status="online")
    r.cycle()
    assert "queue_depth" not in target.state["q0"][2]
    assert ("remove", ("/cluster0/q0",), "queue_depth") in target.calls


def test_unreachable_device_goes_down_after_threshold_and_comes_back() -> None:
    inv, target, script, r = _loop(1, threshold=2)
    script.all(inv, status="online", queue_depth=2)
    r.cycle()
    script.next["q0"] = DeviceSnapshot.failed("q0", "qiskit", "timed out after 5 s")
    r.cycle()
    assert target.state["q0"][1] is True  # one failure: still up, values kept
    assert target.state["q0"][2]["queue_depth"] == "2"
    r.cycle()
    assert target.state["q0"][1] is False
    assert "unreachable for 2 reads: timed out" in target.state["q0"][2]["down_reason"]
    assert r.states["q0"].failures == 2 and r.states["q0"].last_error.startswith("timed out")
    script.all(inv, status="online", queue_depth=2)
    r.cycle()
    assert target.state["q0"][1] is True
    assert "down_reason" not in target.state["q0"][2]
    assert target.state["q0"][2]["status"] == "online"
    assert r.states["q0"].failures == 0


def test_device_reporting_offline_goes_down_at_once() -> None:
    inv, target, script, r = _loop(2)
    script.all(inv, status="online")
    r.cycle()
    script.next["q1"] = DeviceSnapshot("q1", "qiskit", status="maintenance",
                                       status_reason="calibration window")
    r.cycle()
    assert target.state["q1"][1] is False and target.state["q0"][1] is True
    assert target.state["q1"][2]["down_reason"] == "device reports maintenance: " \
                                                   "calibration window"


def test_failing_rpcs_are_counted_and_retried_next_cycle() -> None:
    inv, target, script, r = _loop(2, fail={"set"})
    script.all(inv, status="online", queue_depth=4)
    rep = r.cycle()
    assert rep.errors and "exploded" in rep.errors[0]
    target.fail.clear()
    rep = r.cycle()
    assert not rep.errors and rep.rpcs > 0
    assert target.state["q0"][2]["queue_depth"] == "4"
    assert r.cycle().rpcs == 0


def test_reader_exceptions_do_not_escape_probe() -> None:
    # the real reader never raises: a bad adapter parameter becomes an unknown snapshot
    inv = inventory.parse({"version": 1, "devices": [
        {"name": "bad", "adapter": "qiskit", "qubits": 5, "params": {"backend": "no_such"}}]})
    target = RecordingTarget(["bad"])
    r = refresh.Refresher(inv, target, failure_threshold=1, timeout=60)
    rep = r.cycle()
    assert not rep.errors
    assert target.state["bad"][1] is False
    assert r.states["bad"].last_error


def test_device_missing_from_graph_is_skipped(caplog) -> None:
    inv = _inv(2)
    target = RecordingTarget(["q0"])
    script = Script()
    with caplog.at_level("WARNING"):
        r = refresh.Refresher(inv, target, reader=script)
    assert "q1 is in the inventory but not in the resource graph" in caplog.text
    script.all(inv, status="online")
    r.cycle()
    assert all("/cluster0/q1" not in c[1] for c in target.calls)


def test_graph_file_target_updates_atomically_and_diffs(tmp_path: Path) -> None:
    path = tmp_path / "R.json"
    path.write_bytes((GRAPHS / "demo.R.json").read_bytes())
    inv = inventory.load(GRAPHS / "local-devices.yaml")
    script = Script()
    script.all(inv, status="online", queue_depth=5)
    script.next["ddsim"] = DeviceSnapshot("ddsim", "qdmi", status="offline")
    r = refresh.Refresher(inv, refresh.GraphFileTarget(path), reader=script)
    r.cycle()
    g = graph.read(path)
    props = {q["name"]: q for q in g.qpus()}
    assert props["aer"]["properties"]["queue_depth"] == "5"
    assert props["ddsim"]["status"] == 1
    before = path.read_bytes()
    r2 = refresh.Refresher(inv, refresh.GraphFileTarget(path), reader=script)
    assert r2.cycle().rpcs == 0
    assert path.read_bytes() == before


def test_threshold_must_be_positive() -> None:
    with pytest.raises(FluxqrError, match="threshold"):
        refresh.Refresher(_inv(1), RecordingTarget(["q0"]), failure_threshold=0)


def test_status_table_lists_devices() -> None:
    inv, target, script, r = _loop(2)
    script.all(inv, status="online", queue_depth=1)
    r.cycle()
    text = refresh.format_status(r.status())
    assert "q0" in text and "q1" in text and "cycles: 1" in text


@pytest.mark.parametrize("conf,args,needle", [
    ({}, (), "no devices file configured"),
    ({"fluxqr": {"devices": "d.yaml", "colour": "red"}}, (), "unknown fluxqr setting(s): colour"),
    ({}, ("devices",), "not key=value"),
    ({}, ("devices=d.yaml", "interval=soon"), "bad fluxqr setting"),
    ({}, ("devices=d.yaml", "interval=0"), "interval must be > 0"),
])
def test_module_settings_errors(conf, args, needle) -> None:
    with pytest.raises(FluxqrError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        config.settings(conf, args)


@pytest.mark.parametrize("value", [-1, "soon", True, 1e9, float("nan")])
def test_view_ttl_must_be_seconds(value: object) -> None:
    with pytest.raises(FluxqrError, match="view-ttl"):
        config.settings({"fluxqr": {"devices": "a.yaml", "view-ttl": value}}, ())
    assert config.settings({"fluxqr": {"devices": "a.yaml", "view-ttl": 0}}, ())["view-ttl"] == 0


def test_module_settings_args_override_config() -> None:
    s = config.settings({"fluxqr": {"devices": "a.yaml", "interval": 30}},
                         ("interval=5", "failure_threshold=4", "timeout=2.5"))
    assert s == {"devices": "a.yaml", "interval": 5.0, "timeout": 2.5, "failure-threshold": 4,
                 "vendor-job-seconds": 60.0, "idle-timeout": 60.0,
                 "gateway": ("127.0.0.1", 0), "view-ttl": 1.0}
