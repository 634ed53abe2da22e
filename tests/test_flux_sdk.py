"""One programming model on every device: each local device, allocated in a real instance,
runs the same Qiskit Bell circuit through ``qpu.backend("qiskit")`` (and its native SDK).

The instance is the researcher's sandbox (:func:`fluxqr.sandbox.local_instance`): the
built-in devices probed, their live properties (``formats``, ``executes``) in Fluxion.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import GRAPHS, JOBSPECS
from fluxinst import requires_flux

from fluxqr.core import inventory

pytestmark = [pytest.mark.flux, requires_flux]

DEVICES = GRAPHS / "local-devices.yaml"
#: device -> the sdk= values its job must run the Bell circuit with
RUNS = {"aer": ("qiskit", "native"), "fake_fez": ("qiskit", "native"),
        "ddsim": ("qiskit", "native"), "braket_sv": ("qiskit", "native", "braket")}
REPORT_ONLY = {"iqm_garnet"}


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    from fluxqr import sandbox

    with sandbox.local_instance(DEVICES, tmp_path_factory.mktemp("sdk"), echo=False) as i:
        yield i


def test_every_local_device_is_covered() -> None:
    assert {d.name for d in inventory.load(DEVICES)} == set(RUNS) | REPORT_ONLY


@pytest.mark.parametrize("device", sorted(RUNS))
def test_bell_circuit_runs_on_each_device(inst, device: str) -> None:
    for sdk in RUNS[device]:
        r = inst.run(["flux", "run", "-N1", f"--qpu-device={device}", "--qpu-sdk=qiskit"
                      if sdk == "qiskit" else f"--qpu-device={device}", sys.executable, "-m",
                      "fluxqr.demo_task", "--sdk", sdk], timeout=600)
        assert r.returncode == 0, f"{device} ({sdk}): {r.stdout}\n{r.stderr[-2000:]}"
        assert f"QPU {device} " in r.stdout and f"Bell circuit ({sdk})" in r.stdout, r.stdout


def test_report_only_device_is_refused_unless_the_job_runs_nothing(inst) -> None:
    r = inst.run(["flux", "submit", "-N1", "--qpu-device=iqm_garnet", "true"])
    assert r.returncode != 0 and "executes=false" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    # sdk none: a calibration check runs nothing on it, so it may have it; a circuit fails
    # with one line naming what the device supports
    r = inst.run(["flux", "run", "-N1", "--qpu-device=iqm_garnet", "--qpu-sdk=none",
                  sys.executable, "-m", "fluxqr.demo_task", "--sdk", "qiskit"], timeout=600)
    assert r.returncode != 0
    assert "iqm_garnet' (qdmi adapter) has no qiskit backend" in r.stderr, r.stderr


def test_sdk_request_selects_devices_that_execute_it(inst) -> None:
    # braket circuits: only braket_sv executes them, whatever else is a simulator
    r = inst.run(["flux", "run", "-N1", "--qpu-tech=simulator", "--qpu-sdk=braket",
                  sys.executable, "-m", "fluxqr.demo_task", "--sdk", "braket"], timeout=600)
    assert r.returncode == 0 and "QPU braket_sv " in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("job", ["bell.yaml", "two-simulators.yaml", "device.json",
                                 "vqe-ibm.yaml"])
def test_example_jobspecs_run_their_own_scripts(inst, job: str, tmp_path: Path) -> None:
    from fluxqr import sandbox

    jobfile = sandbox.job_for_instance(JOBSPECS / "examples" / job, tmp_path)
    sub = inst.fluxqr("submit", str(jobfile))
    assert sub.returncode == 0, sub.stderr
    jobid = sub.stdout.strip()
    info = inst.wait_job(jobid, timeout=900)
    out = inst.run(["flux", "job", "attach", jobid])
    assert info["result"] == "COMPLETED", f"{job}: {out.stdout}\n{out.stderr[-2000:]}"
