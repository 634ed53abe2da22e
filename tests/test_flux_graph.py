"""Real Flux: an instance loads a fluxqr graph and Fluxion allocates nodes + QPUs in one match."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import GRAPHS, run_cli
from fluxinst import FluxInstance, requires_flux

pytestmark = [requires_flux, pytest.mark.flux]


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    work = tmp_path_factory.mktemp("flux-graph")
    r_path = work / "R.json"
    r = run_cli("graph", "build", "--nodes", "2", "--cores", "4",
                "--devices", str(GRAPHS / "local-devices.yaml"), "-o", str(r_path))
    assert r.returncode == 0, r.stderr
    with FluxInstance(work, r_path, size=2, hosts="node[0-1]") as instance:
        yield instance


def _jobspec(*quantum: dict, nodes: int = 2) -> dict:
    return {"version": 1,
            "resources": [{"type": "node", "count": nodes, "with": [
                {"type": "slot", "count": 1, "label": "task",
                 "with": [{"type": "core", "count": 1}]}]}, *quantum],
            "tasks": [{"command": ["true"], "slot": "task", "count": {"per_slot": 1}}],
            "attributes": {"system": {"duration": 60, "cwd": "/tmp", "environment": {}}}}


def _qpu(qubits: int, *markers: str, count: int = 1) -> dict:
    return {"type": "qpu", "count": count, "with": [
        {"type": "session", "count": 1, "exclusive": True,
         "with": [{"type": "qubit", "count": qubits}]},
        *({"type": m, "count": 1} for m in markers)]}


def _run(inst: FluxInstance, js: dict) -> dict:
    jobid = inst.submit(js)
    info = inst.wait_job(jobid)
    assert info["result"] == "COMPLETED", info
    return inst.job_R(jobid)


def _qpus(r: dict) -> dict[str, dict]:
    return {n["metadata"]["name"]: n["metadata"] for n in r["scheduling"]["graph"]["nodes"]
            if n["metadata"]["type"] == "qpu"}


def test_instance_sees_the_classical_nodes_and_fluxion_the_qpus(inst: FluxInstance) -> None:
    out = inst.run(["flux", "resource", "list", "-no", "{nnodes} {ncores}", "-s", "free"]).stdout
    assert out.split() == ["2", "8"]
    inst.run(["flux", "ion-resource", "find", "status=up"])
    jgf = json.loads(inst.run(["flux", "ion-resource", "find", "-q", "--format=jgf",
                               "status=up"]).stdout)
    types = {n["metadata"]["type"] for n in jgf["graph"]["nodes"]}
    assert {"qpu", "session", "qubit", "vendor.ibm", "device.fake_fez"} <= types


def test_nodes_and_a_qpu_in_one_job_whose_R_has_the_qpu_properties(inst: FluxInstance) -> None:
    r = _run(inst, _jobspec(_qpu(100)))
    assert r["execution"]["R_lite"][0]["rank"] == "0-1"
    qpus = _qpus(r)
    assert list(qpus) == ["fake_fez"]  # the only device with >= 100 qubits
    assert qpus["fake_fez"]["properties"]["vendor"] == "ibm"
    assert qpus["fake_fez"]["properties"]["num_qubits"] == "156"


def test_vendor_marker_selects_the_vendors_device(inst: FluxInstance) -> None:
    assert list(_qpus(_run(inst, _jobspec(_qpu(2, "vendor.iqm"))))) == ["iqm_garnet"]
    assert list(_qpus(_run(inst, _jobspec(_qpu(2, "vendor.amazon"))))) == ["braket_sv"]


def test_device_and_technology_markers(inst: FluxInstance) -> None:
    assert list(_qpus(_run(inst, _jobspec(_qpu(2, "device.ddsim"))))) == ["ddsim"]
    chosen = _qpus(_run(inst, _jobspec(_qpu(2, "tech.superconducting"))))
    assert len(chosen) == 1 and set(chosen) <= {"fake_fez", "iqm_garnet"}


def test_two_qpus_in_one_job(inst: FluxInstance) -> None:
    chosen = _qpus(_run(inst, _jobspec(_qpu(30, "tech.simulator", count=2))))
    assert len(chosen) == 2 and set(chosen) <= {"aer", "ddsim", "braket_sv"}


def test_impossible_qubit_count_is_unsatisfiable(inst: FluxInstance) -> None:
    spec = _jobspec(_qpu(500))
    # fluxqr's ingest plugins refuse it at submit, in one line naming the largest QPU ...
    r = inst.run(["flux", "job", "submit"], input=json.dumps(spec), check=False)
    assert r.returncode != 0 and "no QPU has 500 qubits" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # ... and the graph itself cannot satisfy it: Fluxion's own feasibility check says so.
    out = inst.python("import flux, json, sys\n"
                      "try:\n"
                      "    flux.Flux().rpc('feasibility.check', {'jobspec': json.loads("
                      "sys.stdin.read())}).get()\n"
                      "    print('satisfiable')\n"
                      "except OSError as e:\n"
                      "    print(e.strerror)\n", input=json.dumps(spec)).stdout
    assert "unsatisfiable" in out.lower(), out


def test_graph_file_reloads(inst: FluxInstance, tmp_path: Path) -> None:
    # The R the instance loaded, read back from the scheduler, still shows all five QPUs.
    jgf = json.loads(inst.run(["flux", "ion-resource", "find", "-q", "--format=jgf",
                               "status=up"]).stdout)
    names = sorted(n["metadata"]["name"] for n in jgf["graph"]["nodes"]
                   if n["metadata"]["type"] == "qpu")
    assert names == sorted(["aer", "fake_fez", "iqm_garnet", "ddsim", "braket_sv"])
