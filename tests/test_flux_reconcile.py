"""Real Flux: a running ``fluxqr refresh --interval`` reconciles with what Fluxion holds.

A second writer (an admin's ``flux ion-resource set-status``, or another refresher) changes
a QPU's status behind the loop's back; every cycle starts from Fluxion's state, so

- an admin's down (no ``down_reason``) stays down until the admin lifts it;
- a healthy QPU marked down by a stale writer comes back up at the next cycle;
- an unreachable QPU set up by a stale writer goes down again at the next cycle.

The waits below poll Fluxion with a deadline (a hang guard, not a speed assertion).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fluxinst import FluxInstance, build_r, fluxqr_env, requires_flux
from standins.qcs_server import QCSStandIn

pytestmark = [requires_flux, pytest.mark.flux]

KEY_VAR = "FLUXQR_TEST_RECONCILE_KEY"
SECRET = "reconcile-secret-3b8d07"
QPU = "/cluster0/ibm_fez"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("flux-reconcile")
    server = QCSStandIn("fake_fez", apikey=SECRET).start()
    devices = work / "devices.yaml"
    devices.write_text(yaml.safe_dump({"version": 1, "devices": [
        {"name": "ibm_fez", "adapter": "qrmi", "qubits": 156, "vendor": "ibm", "timeout": 5,
         "params": {"resource_id": "ibm_fez", "resource_type": "ibm-quantum-compute-service",
                    "config": server.qrmi_config()},
         "credentials": {"QRMI_IBM_QCS_IAM_APIKEY": KEY_VAR}}]}))
    fenv = fluxqr_env(work / "fluxqr")
    fenv[KEY_VAR] = SECRET
    inst = FluxInstance(work, build_r(work / "R.json", devices=devices), hosts="node[0-1]",
                        env=fenv).start()
    proc = subprocess.Popen([sys.executable, "-m", "fluxqr.cli", "refresh", "-d", str(devices),
                             "--interval", "1", "--failure-threshold", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=inst.env)
    try:
        yield inst, server, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        inst.stop()
        server.stop()


def _up(inst: FluxInstance) -> bool:
    out = inst.run(["flux", "ion-resource", "find", "-q", "--format=jgf", "status=down"],
                   check=False).stdout
    return "ibm_fez" not in out


def _reason(inst: FluxInstance) -> str | None:
    r = inst.run(["flux", "ion-resource", "get-property", QPU, "down_reason"], check=False)
    return r.stdout.split("=", 1)[1].strip() if r.returncode == 0 else None


def _wait(pred, what: str, guard: float = 60) -> None:
    end = time.monotonic() + guard
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"hang guard: {what} did not happen within {guard} s")


def _cycles_pass(proc: subprocess.Popen, n: int = 3) -> None:
    """Let ``n`` of the refresher's cycles run (it prints one line per cycle)."""
    for _ in range(n):
        line = proc.stdout.readline()
        assert line.startswith("cycle "), line


def test_admin_down_stays_down_until_lifted(env) -> None:
    inst, _server, proc = env
    _cycles_pass(proc, 1)
    assert _up(inst)
    inst.run(["flux", "ion-resource", "set-status", QPU, "down"])
    _cycles_pass(proc)
    assert not _up(inst), "the refresher lifted an admin's down"
    assert _reason(inst) is None
    inst.run(["flux", "ion-resource", "set-status", QPU, "up"])
    _cycles_pass(proc)
    assert _up(inst)


def test_stale_writers_down_is_corrected(env) -> None:
    inst, _server, proc = env
    # Another refresher with a stale view marks the healthy device down, with its reason.
    inst.run(["flux", "ion-resource", "set-property", QPU, "down_reason=unreachable for 3 reads"])
    inst.run(["flux", "ion-resource", "set-status", QPU, "down"])
    _wait(lambda: _up(inst), "the healthy QPU coming back up")
    _wait(lambda: _reason(inst) is None, "down_reason being removed")


def test_stale_writers_up_is_corrected(env) -> None:
    inst, server, proc = env
    server.set(down=True)
    try:
        _wait(lambda: not _up(inst), "the unreachable QPU going down")
        assert "unreachable" in (_reason(inst) or "")
        inst.run(["flux", "ion-resource", "set-status", QPU, "up"])  # a stale writer
        _cycles_pass(proc, 2)
        _wait(lambda: not _up(inst), "the unreachable QPU going down again")
    finally:
        server.set(down=False)
    _wait(lambda: _up(inst), "the QPU coming back up")


def test_ctrl_c_stops_cleanly_and_secrets_stay_out(env) -> None:
    inst, _server, proc = env
    _cycles_pass(proc, 1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert "interrupted after" in lines[-1] and "Traceback" not in err
    # Transitions were logged, one line each with the reason; the key never was.
    assert any(line.startswith("fluxqr: device ibm_fez: down (") for line in lines), err
    assert any(line.startswith("fluxqr: device ibm_fez: up (") for line in lines), err
    assert any("found down in the scheduler (set by an administrator)" in line
               for line in lines), err
    assert SECRET not in out + err
    dump = inst.run(["flux", "ion-resource", "get-property", QPU, "down_reason"], check=False)
    assert SECRET not in dump.stdout


def test_interval_below_minimum_is_rejected(env, tmp_path: Path) -> None:
    inst, _server, _proc = env
    r = inst.run([sys.executable, "-m", "fluxqr.cli", "refresh", "-d", "x", "--interval",
                  "0.1"], check=False)
    assert r.returncode == 2 and "minimum of 1 s" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
