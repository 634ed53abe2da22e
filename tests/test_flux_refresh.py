"""Real Flux: the refresh broker module keeps Fluxion's QPU properties and status live."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml
from fluxinst import FluxInstance, build_r, fluxqr_env, requires_flux
from standins.qcs_server import QCSStandIn

pytestmark = [requires_flux, pytest.mark.flux]

INTERVAL = 1.0
KEY_VAR = "FLUXQR_TEST_IBM_KEY"
SECRET = "standin-secret-4f7c1e"


def _inventory(path: Path, server: QCSStandIn) -> Path:
    data = {"version": 1, "devices": [
        {"name": "ibm_fez", "adapter": "qrmi", "qubits": 156, "vendor": "ibm",
         "technology": "superconducting", "timeout": 20,
         "params": {"resource_id": "ibm_fez", "resource_type": "ibm-quantum-compute-service",
                    "config": server.qrmi_config()},
         "credentials": {"QRMI_IBM_QCS_IAM_APIKEY": KEY_VAR}},
        {"name": "iqm_garnet", "adapter": "qdmi", "qubits": 20, "vendor": "iqm",
         "technology": "superconducting", "params": {"device": "mqt.sc.iqm.garnet"}},
        {"name": "braket_sv", "adapter": "braket", "qubits": 34, "vendor": "amazon",
         "technology": "simulator", "params": {"device": "local:braket_sv"}},
    ]}
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("flux-refresh")
    server = QCSStandIn("fake_fez", apikey=SECRET).start()
    devices = _inventory(work / "devices.yaml", server)
    fenv = fluxqr_env(work / "fluxqr")
    fenv[KEY_VAR] = SECRET
    inst = FluxInstance(work, build_r(work / "R.json", devices=devices), hosts="node[0-1]",
                        env=fenv).start()
    inst.run(["flux", "module", "load", fenv["FLUXQR_MODULE"], f"devices={devices}",
              f"interval={INTERVAL}", "failure-threshold=2"])
    yield inst, server, devices
    inst.stop()
    server.stop()


def _prop(inst: FluxInstance, key: str, path: str = "/cluster0/ibm_fez") -> str | None:
    r = inst.run(["flux", "ion-resource", "get-property", path, key], check=False)
    if r.returncode != 0:
        return None
    # prints: key = ['value']
    return r.stdout.split("=", 1)[1].strip().strip("[]'")


def _wait(pred, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _down(inst: FluxInstance) -> set[str]:
    out = inst.run(["flux", "ion-resource", "find", "-q", "--format=jgf", "status=down"],
                   check=False).stdout
    jgf = json.loads(out) if out.strip() else None
    if not jgf:  # Fluxion prints null when nothing is down
        return set()
    return {n["metadata"].get("name") for n in jgf["graph"]["nodes"]
            if n["metadata"]["type"] == "qpu"}


def test_first_cycle_fills_live_properties(env) -> None:
    inst, server, _ = env
    _wait(lambda: _prop(inst, "error_2q") is not None, 60, "ibm_fez error_2q")
    assert 0 < float(_prop(inst, "error_2q")) < 0.05
    assert float(_prop(inst, "t1_us")) > 10
    assert _prop(inst, "status") == "online"
    _wait(lambda: _prop(inst, "status", "/cluster0/iqm_garnet") == "online", 30, "qdmi")
    _wait(lambda: _prop(inst, "status", "/cluster0/braket_sv") == "online", 30, "braket")
    assert _prop(inst, "updated")


def test_queue_change_visible_within_interval_plus_one_second(env) -> None:
    inst, server, _ = env
    _wait(lambda: _prop(inst, "queue_depth") is not None, 60, "queue_depth")
    server.set(queue_length=17)
    # a cycle may be mid-read when the knob flips; the next one must show it
    took = _wait(lambda: _prop(inst, "queue_depth") == "17", 2 * INTERVAL + 10, "queue 17")
    print(f"queue change visible after {took:.2f} s")
    assert took <= INTERVAL + 1 + _read_time(inst)


def _read_time(inst: FluxInstance) -> float:
    status = json.loads(inst.run(["flux", "qr", "status", "--json"]).stdout)
    return float(status["last_cycle"]["seconds"])


def test_offline_device_goes_down_jobs_wait_then_run(env, tmp_path: Path) -> None:
    inst, server, _ = env
    server.set(offline=True, reason="maintenance window")
    _wait(lambda: "ibm_fez" in _down(inst), 30, "ibm_fez down")
    assert "maintenance" in (_prop(inst, "down_reason") or "")
    hybrid = inst.run(["flux", "submit", "-n1", "--qpu-device=ibm_fez", "true"]).stdout.strip()
    other = inst.run(["flux", "submit", "-n1", "--qpu-device=braket_sv", "true"]).stdout.strip()
    assert inst.wait_job(other)["result"] == "COMPLETED"
    time.sleep(2 * INTERVAL)
    assert inst.job_info(hybrid)["state"] == "SCHED"
    server.set(offline=False)
    _wait(lambda: "ibm_fez" not in _down(inst), 30, "ibm_fez up")
    info = inst.wait_job(hybrid, timeout=60)
    assert info["result"] == "COMPLETED"
    assert _prop(inst, "down_reason") is None


def test_unreachable_device_goes_down_after_threshold(env) -> None:
    inst, server, _ = env
    server.set(down=True)
    _wait(lambda: "ibm_fez" in _down(inst), 30, "unreachable ibm_fez down")
    assert "unreachable for 2 reads" in (_prop(inst, "down_reason") or "")
    status = json.loads(inst.run(["flux", "qr", "status", "--json"]).stdout)
    fez = next(d for d in status["devices"] if d["name"] == "ibm_fez")
    assert fez["failures"] >= 2 and fez["last_error"]
    server.set(down=False)
    _wait(lambda: "ibm_fez" not in _down(inst), 30, "ibm_fez back up")


def test_flux_qr_status_table(env) -> None:
    inst, _, _ = env
    out = inst.run(["flux", "qr", "status"]).stdout
    for name in ("ibm_fez", "iqm_garnet", "braket_sv"):
        assert name in out
    assert "cycles:" in out


def test_secret_never_reaches_the_instance(env) -> None:
    inst, server, _ = env
    server.set(down=True)
    _wait(lambda: "ibm_fez" in _down(inst), 30, "down")
    server.set(down=False)
    dump = inst.run(["flux", "dmesg"]).stdout
    dump += inst.run(["flux", "qr", "status", "--json"]).stdout
    dump += inst.run(["flux", "ion-resource", "find", "-q", "--format=jgf", "status=up or "
                      "status=down"]).stdout
    assert SECRET not in dump


def test_module_unloads_and_reloads(env) -> None:
    inst, _, devices = env
    module = inst.env["FLUXQR_MODULE"]
    inst.run(["flux", "module", "remove", "fluxqr"])
    r = inst.run(["flux", "qr", "status"], check=False)
    assert r.returncode == 2 and "not loaded" in r.stderr
    inst.run(["flux", "module", "load", module, f"devices={devices}", f"interval={INTERVAL}"])
    _wait(lambda: json.loads(inst.run(["flux", "qr", "status", "--json"]).stdout)["cycles"] > 0,
          30, "a cycle after reload")


def test_bad_devices_file_is_reported_and_never_fatal(env, tmp_path: Path) -> None:
    """A broken devices file must not stop the agent (or an instance start): it loads,
    says why in one dmesg line, and answers status with the error."""
    inst, _, _ = env
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ndevices:\n- {name: x, adapter: nope, qubits: 1}\n")
    inst.run(["flux", "module", "load", "--name=fluxqr-bad", inst.env["FLUXQR_MODULE"],
              f"devices={bad}"])
    try:
        log = [line for line in inst.run(["flux", "dmesg"]).stdout.splitlines()
               if "unknown adapter 'nope'" in line]
        assert log and str(bad) in log[-1] and "agent not configured" in log[-1]
        status = json.loads(inst.python(
            "import flux, json; print(json.dumps(flux.Flux().rpc('fluxqr-bad.status')"
            ".get()))").stdout)
        assert "unknown adapter 'nope'" in status["error"]
    finally:
        inst.run(["flux", "module", "remove", "fluxqr-bad"])


def test_cli_refresh_once_against_the_instance(env) -> None:
    inst, _, devices = env
    r = inst.run([sys.executable, "-m", "fluxqr.cli", "refresh",
                  "--once", "--devices", str(devices)], check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("cycle 1:")
