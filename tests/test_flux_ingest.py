"""Real Flux: every submission path gets the same quantum handling (fluxqr's ingest plugins).

The instance is configured exactly as the admin guide says (LocalInstance writes the
[ingest.frobnicator]/[ingest.validator] plugins, no --require-version=any).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
from conftest import GRAPHS, ROOT
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


def _classical(inst: FluxInstance, *argv: str) -> dict:
    """A plain V1 jobspec as flux submit makes it (the plugin sees no --qpu option)."""
    return json.loads(inst.run(["flux", "submit", "--dry-run", *argv, "true"]).stdout)


def _quantum(inst: FluxInstance, jobid: str) -> dict:
    spec = json.loads(inst.run(["flux", "job", "info", jobid, "jobspec"]).stdout)
    return spec["attributes"]["system"]["quantum"]


# -- every path -----------------------------------------------------------------------------


def test_cli_plugin_only_sets_the_request(inst: FluxInstance) -> None:
    spec = json.loads(inst.run(["flux", "submit", "--dry-run", "-n1", "--qpu-vendor=iqm",
                                "--qubits=4", "true"]).stdout)
    assert [r["type"] for r in spec["resources"]] == ["slot"]
    assert spec["attributes"]["system"]["quantum"] == {
        "request": {"qpus": 1, "qubits": 4, "vendor": "iqm", "online": False, "policy": "any",
                    "exclusive": False, "session_mode": "dedicated"}}
    jobid = inst.run(["flux", "submit", "-n1", "--qpu-vendor=iqm", "--qubits=4", "true"]
                     ).stdout.strip()
    assert qpus_of(inst, jobid) == ["iqm_garnet"]
    assert _quantum(inst, jobid)["resolution"]["source"] == "running Fluxion"


def test_setattr_without_the_plugin(inst: FluxInstance) -> None:
    # FLUX_CLI_PLUGINPATH_OVERRIDE="" hides fluxqr's CLI plugin: plain flux-core
    jobid = inst.run(["flux", "submit", "-n1", "--setattr=system.quantum.qubits=100",
                      "--setattr=system.quantum.max_error_2q=0.005", "true"],
                     env={"FLUX_CLI_PLUGINPATH_OVERRIDE": ""}).stdout.strip()
    assert qpus_of(inst, jobid) == ["fake_fez"]
    assert _quantum(inst, jobid)["request"]["qubits"] == 100


def test_raw_canonical_jobspec(inst: FluxInstance, tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text('version: 1\ncommand: ["true"]\nquantum: {device: ddsim}\n')
    spec = json.loads(inst.run(["flux", "qr", "submit", "--dry-run", str(job)]).stdout)
    assert qpus_of(inst, inst.submit(spec)) == ["ddsim"]


@pytest.mark.parametrize("qpu,expected", [
    ({"type": "qpu", "count": 1, "with": [{"type": "qubit", "count": 2}]}, None),
    ({"type": "qpu", "count": 1}, None),
    ({"type": "qpu", "count": 1, "with": [{"type": "qubit", "count": 2},
                                          {"type": "vendor.amazon", "count": 1}]},
     ["braket_sv"]),
])
def test_raw_hand_written_qpu(inst: FluxInstance, qpu: dict, expected: list | None) -> None:
    spec = _classical(inst, "-N1")
    spec["resources"].append(qpu)
    jobid = inst.submit(spec)
    chosen = qpus_of(inst, jobid)
    assert chosen == expected if expected else len(chosen) == 1
    assert "resolution" in _quantum(inst, jobid)


def test_python_api_example(inst: FluxInstance) -> None:
    out = inst.run([sys.executable, str(ROOT / "docs" / "examples" / "python_submit.py")]
                   ).stdout.split()
    assert out[0].startswith("ƒ") and out[1] in {"aer", "ddsim", "braket_sv"}, out


def test_qpu_names(inst: FluxInstance, tmp_path: Path) -> None:
    jobid = inst.run(["flux", "submit", "-N1", "--qpu=ddsim", "true"]).stdout.strip()
    assert qpus_of(inst, jobid) == ["ddsim"]
    job = tmp_path / "job.yaml"
    job.write_text('version: 1\ncommand: ["true"]\nquantum: {qpus: [braket_sv]}\n')
    jobid = inst.run(["flux", "qr", "submit", str(job)]).stdout.strip()
    assert qpus_of(inst, jobid) == ["braket_sv"]


def test_vendor_selection_inside_a_batch_child(inst: FluxInstance) -> None:
    script = inst.workdir / "child.sh"
    script.write_text("#!/bin/sh\nset -e\n"
                      "flux run -n1 --qpu-vendor=amazon --qubits=2 true\n"
                      "flux run -n1 --qpu-tech=simulator true\n"
                      "flux jobs -a -no '{result}' > " + str(inst.workdir / "child.out") + "\n")
    script.chmod(0o755)
    jobid = inst.run(["flux", "batch", "-N1", "--qpu-vendor=amazon",
                      f"--output={inst.workdir}/batch.log", str(script)]).stdout.strip()
    info = inst.wait_job(jobid)
    log = (inst.workdir / "batch.log").read_text() if (inst.workdir / "batch.log").exists() else ""
    assert info["result"] == "COMPLETED", (info, log)
    assert (inst.workdir / "child.out").read_text().split() == ["COMPLETED", "COMPLETED"]
    assert qpus_of(inst, jobid) == ["braket_sv"]


def test_classical_v1_violation_still_rejected(inst: FluxInstance) -> None:
    spec = _classical(inst, "-n1")
    del spec["attributes"]["system"]["duration"]
    before = njobs(inst)
    r = inst.run(["flux", "job", "submit"], input=json.dumps(spec), check=False)
    assert r.returncode != 0 and "duration" in r.stderr, r.stderr
    assert njobs(inst) == before


# -- the same one-line errors on every path --------------------------------------------------

BAD = {
    "qubits": ({"qubits": 500}, "largest is fake_fez with 156 qubits"),
    "vendor": ({"vendor": "rigetti"}, "no QPU with vendor 'rigetti'"),
    "device": ({"device": "ibm_kyiv"}, "no QPU with device 'ibm_kyiv'"),
    "live": ({"max_error_2q": 0.001}, "closest: fake_fez: error_2q=0.0042"),
    "name": ({"qpus": ["aer", "ibm_kyiv"]}, "no QPU named 'ibm_kyiv'"),
}
CLI = {"qubits": "--qubits=500", "vendor": "--qpu-vendor=rigetti",
       "device": "--qpu-device=ibm_kyiv", "live": "--qpu-max-error=0.001",
       "name": "--qpu=aer,ibm_kyiv"}


def _one_line(r, needle: str) -> None:
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_fails_alike_on_every_path(inst: FluxInstance, case: str) -> None:
    request, needle = BAD[case]
    before = njobs(inst)
    _one_line(inst.run(["flux", "submit", "-n1", CLI[case], "true"], check=False), needle)
    setattrs = [f"--setattr=system.quantum.{k}={json.dumps(v)}" for k, v in request.items()]
    _one_line(inst.run(["flux", "submit", "-n1", *setattrs, "true"], check=False,
                       env={"FLUX_CLI_PLUGINPATH_OVERRIDE": ""}), needle)
    spec = _classical(inst, "-n1")
    raw = copy.deepcopy(spec)
    raw["attributes"]["system"]["quantum"] = {"request": request}
    _one_line(inst.run(["flux", "job", "submit"], input=json.dumps(raw), check=False), needle)
    code = ("import sys\nfrom flux.job import JobspecV1\n"
            "from fluxqr.errors import FluxqrError\n"
            "from fluxqr.flux.submit import add_quantum, submit\n"
            "spec = JobspecV1.from_command(['true'])\n"
            f"try:\n    submit(add_quantum(spec, **{request!r}))\n"
            "except FluxqrError as exc:\n    sys.exit(f'{exc}')\n")
    _one_line(inst.python(code, check=False), needle)
    assert njobs(inst) == before


def test_bad_hand_written_shape(inst: FluxInstance) -> None:
    spec = _classical(inst, "-N1")
    spec["resources"].append({"type": "qpu", "count": 1, "with": [{"type": "gpu", "count": 1}]})
    before = njobs(inst)
    _one_line(inst.run(["flux", "job", "submit"], input=json.dumps(spec), check=False),
              "unknown resource type 'gpu' under qpu")
    assert njobs(inst) == before


def test_plain_instance_says_how_to_fix(tmp_path: Path) -> None:
    env = fluxqr_env(tmp_path / "fluxqr")
    with FluxInstance(tmp_path / "b", build_r(tmp_path / "q.json", devices=DEVICES),
                      hosts="node[0-1]", env=env, validator=False) as plain:
        r = plain.run(["flux", "submit", "-n1", "--qpu=1", "true"], check=False)
        _one_line(r, "[ingest.frobnicator] plugins")
        assert plain.run(["flux", "jobs", "-a", "-no", "{id}"]).stdout.strip() == ""


def test_ingest_view_cache_sees_fluxqr_changes_at_once_and_others_within_its_ttl(
        inst: FluxInstance) -> None:
    """The frobnicator reuses its view of the QPUs (``[fluxqr] view-ttl``, 1 s) — but a
    change by fluxqr's refresh loop (which replaces the view stamp) counts from the very
    next job, and an admin's ``flux ion-resource set-status`` once the TTL has passed."""
    import time

    import flux

    from fluxqr.agent.refresh import FluxionTarget

    target = FluxionTarget(flux.Flux(inst.uri))
    path = target.qpus()["iqm_garnet"][0]  # online in LIVE_VALUES
    argv = ["flux", "submit", "-n1", "--qpu-device=iqm_garnet", "--qpu-online", "true"]

    def accepted() -> bool:
        r = inst.run(argv, check=False)
        if r.returncode:
            assert "down" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        return r.returncode == 0

    try:
        assert accepted()                        # fills the cache
        target.set_status(path, False)
        target.flush()                           # what the refresh loop does each cycle
        assert not accepted()                    # the next job sees it, TTL or not
        target.set_status(path, True)
        target.flush()
        assert accepted()
        inst.run(["flux", "ion-resource", "set-status", path, "down"])  # behind fluxqr's back
        time.sleep(1.2)                          # the TTL
        assert not accepted()
    finally:
        inst.run(["flux", "ion-resource", "set-status", path, "up"])
        inst.run(["flux", "cancel", "--all"], check=False)
