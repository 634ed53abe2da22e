"""Bounded vendor reads: hung endpoints, concurrency, admin downs, transitions, secrets.

The far end is the QCS stand-in (the real qrmi client talks to it over loopback); the
target is a graph file, so no Flux is needed here (tests/test_flux_reconcile.py does the
same against a real Fluxion).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import ROOT
from standins.qcs_server import QCSStandIn

from fluxqr import devices
from fluxqr.agent import refresh
from fluxqr.core import graph
from fluxqr.core.inventory import Device, Inventory

pytest.importorskip("qrmi")

KEY_VAR = "FLUXQR_TEST_BOUNDED_KEY"
SECRET = "bounded-secret-9c2e51"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv(KEY_VAR, SECRET)
    with QCSStandIn("fake_fez", apikey=SECRET) as srv:
        yield srv


def _device(server: QCSStandIn, name: str, timeout: float = 5.0) -> Device:
    return Device(name=name, adapter="qrmi", qubits=156, vendor="ibm", timeout=timeout,
                  params={"resource_id": "ibm_fez",
                          "resource_type": "ibm-quantum-compute-service",
                          "config": server.qrmi_config()},
                  credentials={"QRMI_IBM_QCS_IAM_APIKEY": KEY_VAR})


def _graph_target(tmp_path: Path, inv: Inventory) -> refresh.GraphFileTarget:
    g = graph.synthesize(1, 2)
    graph.add_devices(g, inv)
    path = tmp_path / "R.json"
    graph.write_r(g, path)
    return refresh.GraphFileTarget(path)


def _read_threads() -> int:
    return sum(t.name.startswith("fluxqr-read") for t in threading.enumerate())


def test_hung_endpoint_holds_one_thread_over_many_cycles(server, tmp_path: Path) -> None:
    """A hung vendor read is abandoned, not repeated: threads stay bounded."""
    inv = Inventory((_device(server, "hung_fez", timeout=0.3),))
    r = refresh.Refresher(inv, _graph_target(tmp_path, inv), failure_threshold=2,
                          read_budget=0.1)
    server.set(slow=120.0)
    before = _read_threads()
    for _ in range(25):
        r.cycle()
    # One hung read for the one device, plus at most one idle worker being reused.
    assert _read_threads() - before <= 2
    state = r.states["hung_fez"]
    assert not state.up and state.failures >= 2
    assert "still running" in (state.last_error or "")
    assert "hung_fez" in devices.outstanding()
    assert "read_running_s" in next(d for d in r.status()["devices"] if d["name"] == "hung_fez")
    server.set(slow=0.0)


def test_devices_are_read_concurrently(server) -> None:
    """Reads of different devices are in flight at the same time."""
    server.set(slow=120.0)
    inv = [_device(server, "conc_a", timeout=60), _device(server, "conc_b", timeout=60)]
    assert devices.poll(inv, budget=0.0) == []  # nothing finished, nothing timed out
    assert {"conc_a", "conc_b"} <= set(devices.outstanding())
    server.set(slow=0.0)


def test_poll_returns_fast_devices_and_leaves_slow_reads_running(server) -> None:
    server.set(slow=120.0)
    slow = _device(server, "slow_fez", timeout=60)
    fast = Device("sim", "qiskit", 3, params={"backend": "generic:3"}, timeout=60)
    assert devices.read(fast).ok  # imports done: the poll below waits for the read only
    snaps = devices.poll([slow, fast], budget=8)
    assert [s.device for s in snaps] == ["sim"] and snaps[0].ok
    assert "slow_fez" in devices.outstanding()
    server.set(slow=0.0)


def test_admin_down_stays_down_until_the_admin_lifts_it(server, tmp_path: Path) -> None:
    inv = Inventory((_device(server, "adm_fez"),))
    target = _graph_target(tmp_path, inv)
    r = refresh.Refresher(inv, target)
    r.cycle()
    assert r.states["adm_fez"].up
    # The admin: `flux ion-resource set-status PATH down` (no down_reason property).
    target.graph.set_qpu_status("adm_fez", up=False)
    for _ in range(3):
        r.cycle()
    assert target.qpus()["adm_fez"][1] is False and r.states["adm_fez"].admin_down
    # ... and lifts it.
    target.graph.set_qpu_status("adm_fez", up=True)
    r.cycle()
    assert target.qpus()["adm_fez"][1] is True and not r.states["adm_fez"].admin_down


def test_another_writers_wrong_status_is_corrected_next_cycle(server, tmp_path: Path) -> None:
    inv = Inventory((_device(server, "w2_fez"),))
    target = _graph_target(tmp_path, inv)
    r = refresh.Refresher(inv, target)
    r.cycle()
    # A second refresher with a stale view marks the healthy device down, with its reason.
    target.graph.set_qpu_properties("w2_fez", {"down_reason": "unreachable for 3 reads"})
    target.graph.set_qpu_status("w2_fez", up=False)
    r.cycle()
    assert target.qpus()["w2_fez"][1] is True
    assert "down_reason" not in target.qpus()["w2_fez"][2]


def test_transitions_are_one_scrubbed_log_line_each(server, tmp_path: Path, caplog) -> None:
    inv = Inventory((_device(server, "log_fez"),))
    r = refresh.Refresher(inv, _graph_target(tmp_path, inv), failure_threshold=1)
    r.cycle()
    server.set(offline=True, reason=f"maintenance: key {SECRET} rotated")
    with caplog.at_level(logging.WARNING, logger="fluxqr.agent.refresh"):
        r.cycle()
        server.set(offline=False)
        r.cycle()
    lines = [rec.getMessage() for rec in caplog.records if "log_fez" in rec.getMessage()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("device log_fez: down (device reports maintenance")
    assert lines[1].startswith("device log_fez: up")
    assert SECRET not in caplog.text
    assert all("\n" not in line for line in lines)


def test_native_stderr_is_scrubbed(tmp_path: Path) -> None:
    """What native code (qrmi is Rust) writes to fd 2 passes the scrubber."""
    code = ("import os\nfrom fluxqr.devices import scrubio\n"
            "with scrubio.scrubbed_stderr(lambda: [os.environ['K']]):\n"
            "    os.write(2, ('rust: POST /token apikey=' + os.environ['K'] + '\\n').encode())\n"
            "    import logging; logging.getLogger('qrmi').warning('key %s', os.environ['K'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env=dict(os.environ, K=SECRET, PYTHONPATH=str(ROOT)),
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "apikey=***" in out.stderr and "key ***" in out.stderr
    assert SECRET not in out.stderr


def test_ctrl_c_is_not_a_device_failure(server, tmp_path: Path) -> None:
    """KeyboardInterrupt while waiting for a read propagates; no failure is recorded."""
    inv = Inventory((_device(server, "int_fez", timeout=60),))
    r = refresh.Refresher(inv, _graph_target(tmp_path, inv))
    server.set(slow=120.0)
    import signal

    # A real SIGINT, as Ctrl-C sends (it interrupts the blocked wait, as a terminal's would).
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        r.cycle()
    timer.join()
    assert r.states["int_fez"].failures == 0 and r.cycles == 0
    server.set(slow=0.0)


def test_cli_refresh_interval_ctrl_c_exits_130_with_one_line(server, tmp_path: Path) -> None:
    import signal
    import time

    import yaml

    devices_yaml = tmp_path / "devices.yaml"
    devices_yaml.write_text(yaml.safe_dump({"version": 1, "devices": [
        {"name": "cli_fez", "adapter": "qrmi", "qubits": 156, "timeout": 60,
         "params": {"resource_id": "ibm_fez", "resource_type": "ibm-quantum-compute-service",
                    "config": server.qrmi_config()},
         "credentials": {"QRMI_IBM_QCS_IAM_APIKEY": KEY_VAR}}]}))
    inv_graph = tmp_path / "R.json"
    g = graph.synthesize(1, 2)
    from fluxqr.core import inventory

    graph.add_devices(g, inventory.load(devices_yaml))
    graph.write_r(g, inv_graph)
    server.set(slow=120.0)  # the interrupt lands while a read hangs
    proc = subprocess.Popen([sys.executable, "-m", "fluxqr.cli", "refresh", "-d",
                             str(devices_yaml), "--graph", str(inv_graph), "--interval", "1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    # Wait (hang guard only) until the first cycle has been reported, then interrupt.
    first = proc.stdout.readline()
    assert first.startswith("cycle 1:"), first
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    server.set(slow=0.0)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert lines == [lines[0]] and "interrupted after" in lines[0], err
    assert "Traceback" not in err and SECRET not in err + out
