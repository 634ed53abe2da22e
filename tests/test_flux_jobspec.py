"""Real Flux: the three submit interfaces, selections, and bad input rejected at submit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import GRAPHS, JOBSPECS
from fluxinst import (
    FluxInstance,
    build_r,
    fluxqr_env,
    njobs,
    qpus_of,
    requires_flux,
)

pytestmark = [requires_flux, pytest.mark.flux]

DEVICES = GRAPHS / "local-devices.yaml"


# `inst`: the local-devices instance of tests/conftest.py


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text('version: 1\ncommand: ["true"]\n' + text)
    return path


# -- the three interfaces ------------------------------------------------------------------


def test_fluxqr_jobspec_piped_to_flux_job_submit(inst: FluxInstance) -> None:
    js = inst.run([sys.executable, "-m", "fluxqr.cli", "jobspec",
                   str(JOBSPECS / "examples" / "device.json")]).stdout
    spec = json.loads(js)
    spec["tasks"][0]["command"] = ["true"]
    jobid = inst.run(["flux", "job", "submit"], input=json.dumps(spec)).stdout.strip()
    assert qpus_of(inst, jobid) == ["iqm_garnet"]


def test_flux_qr_submit_two_qpus(inst: FluxInstance, tmp_path: Path) -> None:
    job = _yaml(tmp_path, "nodes: 2\nquantum: {qpus: 2, qubits: 20, technology: simulator}\n")
    r = inst.run(["flux", "qr", "submit", str(job)])
    jobid = r.stdout.strip()
    assert jobid.startswith("ƒ") and len(r.stdout.splitlines()) == 1
    chosen = qpus_of(inst, jobid)
    assert len(chosen) == 2 and set(chosen) <= {"aer", "ddsim", "braket_sv"}
    spec = json.loads(inst.run(["flux", "job", "info", jobid, "jobspec"]).stdout)
    assert spec["attributes"]["system"]["quantum"]["request"]["qpus"] == 2


def test_submit_plugin_options_listed_in_help(inst: FluxInstance) -> None:
    text = inst.run(["flux", "submit", "--help"]).stdout
    for opt in ("--qpu=COUNT", "--qubits=N", "--qpu-vendor", "--qpu-device", "--qpu-tech",
                "--qpu-max-error", "--qpu-max-queue", "--qpu-policy"):
        assert opt in text, opt


@pytest.mark.parametrize("argv,expected", [
    (["--qpu-vendor=iqm", "--qubits=4"], ["iqm_garnet"]),
    (["--qpu-device=ddsim"], ["ddsim"]),
    (["--qpu=1", "--qubits=100"], ["fake_fez"]),
    (["--qpu-max-error=0.005"], ["fake_fez"]),            # live: only fake_fez qualifies
    (["--qpu-max-queue=0", "--qpu-tech=superconducting"], ["iqm_garnet"]),
    (["--qpu=2", "--qpu-tech=superconducting"], ["fake_fez", "iqm_garnet"]),
])
def test_flux_submit_plugin_selects(inst: FluxInstance, argv: list[str],
                                    expected: list[str]) -> None:
    jobid = inst.run(["flux", "submit", "-n1", *argv, "true"]).stdout.strip()
    assert qpus_of(inst, jobid) == expected


def test_flux_run_and_batch_with_the_plugin(inst: FluxInstance) -> None:
    out = inst.run(["flux", "run", "-N1", "--qpu-device=aer", "echo", "ran"]).stdout
    assert out.strip() == "ran"
    jobid = inst.run(["flux", "batch", "-N1", "--qpu-vendor=amazon",
                      f"--output={inst.workdir}/batch-{{{{id}}}}.out", "--wrap", "true"]
                     ).stdout.strip()
    assert qpus_of(inst, jobid) == ["braket_sv"]


def test_classical_submit_is_untouched_by_the_plugin(inst: FluxInstance) -> None:
    spec = json.loads(inst.run(["flux", "submit", "--dry-run", "-n1", "true"]).stdout)
    assert spec["resources"][0]["type"] == "slot"
    assert "quantum" not in spec["attributes"]["system"]


# -- bad input at submit -------------------------------------------------------------------

BAD_OPTIONS = {
    "qubits": (["-n1", "--qubits=500"], "largest is fake_fez with 156 qubits"),
    "vendor": (["-n1", "--qpu-vendor=rigetti"], "no QPU with vendor 'rigetti'"),
    "device": (["-n1", "--qpu-device=ibm_kyiv"], "no QPU with device 'ibm_kyiv'"),
    "live": (["-n1", "--qpu-max-error=0.001"], "closest: fake_fez: error_2q=0.0042"),
    # the QPU part resolves, but the instance has only 2 nodes: Fluxion's feasibility says no
    "feasibility": (["-N3", "--qpu=1"], "can never be satisfied"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_plugin_rejects_at_submit_with_one_line(inst: FluxInstance, case: str) -> None:
    argv, needle = BAD_OPTIONS[case]
    before = njobs(inst)
    r = inst.run(["flux", "submit", *argv, "true"], check=False)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert njobs(inst) == before


@pytest.mark.parametrize("text,needle", [
    ("quantum: {qubits: 500}\n", "largest is fake_fez with 156 qubits"),
    ("quantum: {qubitz: 5}\n", "'qubitz'"),
    ("quantum: {vendor: ibm, max_error_2q: 0.0001}\n", "closest: fake_fez"),
])
def test_flux_qr_submit_rejects_with_one_line(inst: FluxInstance, tmp_path: Path, text: str,
                                              needle: str) -> None:
    before = njobs(inst)
    r = inst.run(["flux", "qr", "submit", str(_yaml(tmp_path, text))], check=False)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert njobs(inst) == before


def test_instance_without_qpus_and_without_validator(tmp_path: Path) -> None:
    env = fluxqr_env(tmp_path / "fluxqr")
    job = _yaml(tmp_path, "quantum: {qubits: 2}\n")
    with FluxInstance(tmp_path / "a", build_r(tmp_path / "classical.json"), hosts="node[0-1]",
                      env=env) as plain:
        r = plain.run(["flux", "qr", "submit", str(job)], check=False)
        assert r.returncode == 2 and "has no QPUs" in r.stderr, r.stderr
        r = plain.run(["flux", "submit", "-n1", "--qpu=1", "true"], check=False)
        assert r.returncode != 0 and "has no QPUs" in r.stderr, r.stderr
    with FluxInstance(tmp_path / "b", build_r(tmp_path / "q.json", devices=DEVICES),
                      hosts="node[0-1]", env=env, validator=False) as strict:
        r = strict.run(["flux", "qr", "submit", str(job)], check=False)
        assert r.returncode == 2 and "[ingest.frobnicator] plugins" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        r = strict.run(["flux", "submit", "-n1", "--qpu=1", "true"], check=False)
        assert r.returncode != 0 and "[ingest.frobnicator] plugins" in r.stderr, r.stderr
        assert strict.run(["flux", "jobs", "-a", "-no", "{id}"]).stdout.strip() == ""
