"""Capability selection, simulator-aware policies, typed properties, the QRMI job contract
as qrmi reads it, and importing the Slurm QRMI plugin's config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import GRAPHS, ROOT, assert_user_error, run_cli

from fluxqr.core import graph, inventory, jobspec, qrmi_import, sessions
from fluxqr.devices.snapshot import DeviceSnapshot
from fluxqr.errors import FluxqrError, JobspecError
from fluxqr.job import AllocatedQPU

EXAMPLE_CONFIG = ROOT / "tests" / "data" / "qrmi_config.json.example"


def _view(**extra: DeviceSnapshot) -> jobspec.ResourceView:
    """The local devices as their adapters report them (formats/executes as probed)."""
    snaps = {
        "aer": DeviceSnapshot("aer", "qiskit", "online", formats="qiskit", executes=True),
        "fake_fez": DeviceSnapshot("fake_fez", "qiskit", "online", median_2q_error=0.0038,
                                   formats="qiskit", executes=True),
        "iqm_garnet": DeviceSnapshot("iqm_garnet", "qdmi", "online", median_2q_error=0.0063,
                                     executes=False),
        "ddsim": DeviceSnapshot("ddsim", "qdmi", "online", median_2q_error=0.0,
                                formats="qiskit,openqasm2,openqasm3,qir", executes=True),
        "braket_sv": DeviceSnapshot("braket_sv", "braket", "online",
                                    formats="braket,openqasm3,qiskit", executes=True),
        **extra,
    }
    g = graph.add_devices(graph.synthesize(1, 4), inventory.load(GRAPHS / "local-devices.yaml"),
                          snaps)
    return jobspec.view_from_graph(g)


def test_report_only_devices_never_run_a_job() -> None:
    with pytest.raises(JobspecError, match=r"executes=false"):
        jobspec.resolve(jobspec.QuantumRequest(device="iqm_garnet"), _view())
    res = jobspec.resolve(jobspec.QuantumRequest(qubits=20, policy="first"), _view())
    assert "iqm_garnet" not in res.candidates
    # a job that runs nothing (a calibration check) may have it
    res = jobspec.resolve(jobspec.QuantumRequest(device="iqm_garnet", sdk="none"), _view())
    assert res.candidates == ["iqm_garnet"]


@pytest.mark.parametrize("sdk,expected", [("braket", ["braket_sv"]),
                                          ("qiskit", ["aer", "fake_fez", "ddsim", "braket_sv"]),
                                          ("qir", ["ddsim"])])
def test_sdk_selects_devices_that_execute_it(sdk: str, expected: list[str]) -> None:
    res = jobspec.resolve(jobspec.QuantumRequest(qubits=2, sdk=sdk, policy="first"), _view())
    assert res.candidates == expected


def test_unknown_formats_do_not_match_an_sdk_and_say_so() -> None:
    view = _view(aer=DeviceSnapshot("aer", "qiskit", "online"))  # a read without formats
    with pytest.raises(JobspecError, match="aer: formats unknown"):
        jobspec.resolve(jobspec.QuantumRequest(device="aer", sdk="qiskit"), view)


def test_best_fidelity_ranks_hardware_before_ideal_simulators() -> None:
    req = jobspec.QuantumRequest(qubits=20, max_error_2q=0.01, policy="best_fidelity")
    res = jobspec.resolve(req, _view())
    assert res.pinned == ["fake_fez"]  # not ddsim, whose ideal error is 0
    assert res.decided_by[jobspec.SKIPPED] == {"aer": "error_2q unknown",
                                               "braket_sv": "error_2q unknown"}
    # asked for simulators: the best simulator
    req = jobspec.QuantumRequest(qubits=20, technology="simulator", policy="best_fidelity")
    assert jobspec.resolve(req, _view()).pinned == ["ddsim"]


def test_request_sdk_is_validated_in_yaml_and_cli_lists_agree() -> None:
    cliplugin = pytest.importorskip("fluxqr.flux.cliplugin")  # needs flux.cli
    choices = cliplugin.OPTIONS["--qpu-sdk"][1]["choices"]
    assert tuple(choices) == jobspec.REQUEST_SDKS
    schema_enum = jobspec.schema()["$defs"]["quantum"]["properties"]["sdk"]["enum"]
    assert tuple(schema_enum) == jobspec.REQUEST_SDKS
    with pytest.raises(JobspecError, match="sdk"):
        jobspec.parse_request({"version": 1, "command": "true", "quantum": {"sdk": "cirq"}})


def test_typed_properties() -> None:
    q = AllocatedQPU("fake_fez", {"num_qubits": "156", "error_2q": "0.0038",
                                  "formats": "qiskit", "executes": "true", "t1_us": "junk"})
    assert q.num_qubits == 156 and isinstance(q.num_qubits, int)
    assert q.error_2q == pytest.approx(0.0038) and isinstance(q.error_2q, float)
    assert q.formats == ["qiskit"] and q.executes is True
    assert q.t1_us is None and q.queue_depth is None  # unparsable, and unset
    assert q.properties["num_qubits"] == "156"  # raw strings kept
    with pytest.raises(AttributeError):
        _ = q.no_such_property


def test_backend_sdk_errors_are_one_line() -> None:
    inv = inventory.load(GRAPHS / "local-devices.yaml")
    q = AllocatedQPU("aer", {}, inv.get("aer"))
    with pytest.raises(FluxqrError) as err:
        q.backend("braket")
    assert "no braket backend" in str(err.value) and "native, qiskit" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(FluxqrError, match="unknown sdk"):
        q.backend("cirq")


# -- the QRMI job contract -----------------------------------------------------------------

READER = """
import json, qrmi
resources, types = qrmi.get_job_qpu_resources_and_types()
made = []
for rid, rtype in zip(resources, types):
    member = {"pasqal-local": qrmi.ResourceType.PasqalLocal}[rtype]
    made.append(str(qrmi.QuantumResource(rid, member).resource_type()))
print(json.dumps([resources, types, made]))
"""


def _qrmi_reader(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if "QRMI" not in k}
    return subprocess.run([sys.executable, "-c", READER], env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


def test_task_environment_is_what_qrmi_reads() -> None:
    pytest.importorskip("qrmi")
    inv = inventory.parse({"version": 1, "devices": [
        {"name": f"pasqal{i}", "adapter": "qrmi", "qubits": 100,
         "params": {"resource_id": f"PASQAL_{i}", "resource_type": "pasqal-local",
                    "config": {"QRMI_WARDEN_URL": "http://127.0.0.1:1"}}} for i in (1, 2)]})
    js = sessions.JobSessions("4242", [sessions.SessionRecord(f"pasqal{i}", "qrmi", "none")
                                       for i in (1, 2)], userid=1000)
    env = sessions.task_environment(js, list(inv))
    assert env["QRMI_JOB_ID"] == "4242" and env["QRMI_JOB_UID"] == "1000"
    assert env["QRMI_LIST_DELIMITER"] == ","
    r = _qrmi_reader(env)
    assert r.returncode == 0, r.stderr
    resources, types, made = json.loads(r.stdout)
    assert resources == ["PASQAL_1", "PASQAL_2"] and types == ["pasqal-local"] * 2
    assert made == ["ResourceType.PasqalLocal"] * 2
    # the job-id/uid keywords override the record's (the agent passes the job's own)
    env = sessions.task_environment(js, list(inv), jobid="77", userid=0)
    assert (env["QRMI_JOB_ID"], env["QRMI_JOB_UID"]) == ("77", "0")
    # without the uid, qrmi's own reader refuses Pasqal's on-premises type: the test can fail
    env.pop("QRMI_JOB_UID")
    r = _qrmi_reader(env)
    assert r.returncode != 0 and "QRMI_JOB_UID" in r.stderr


# -- importing the Slurm QRMI plugin's config ----------------------------------------------


def test_import_round_trips_the_slurm_plugin_example(tmp_path, monkeypatch) -> None:
    out = tmp_path / "devices.yaml"
    r = run_cli("devices", "import", str(EXAMPLE_CONFIG), "--qubits", "133",
                "--qubits", "test_heron=156", "--qubits", "FRESNEL=100", "-o", str(out))
    assert r.returncode == 0, r.stderr
    config = json.loads(EXAMPLE_CONFIG.read_text())
    text = out.read_text()
    inv = inventory.load(out)  # a valid devices.yaml
    assert [d.name for d in inv] == [res["name"] for res in config["resources"]]
    assert inv.get("test_heron").qubits == 156 and inv.get("test_eagle").qubits == 133
    # no secret value is written; the secrets' variables are named on stderr
    for res in config["resources"]:
        for key, value in res["environment"].items():
            if qrmi_import.is_secret(key) and value:
                assert value not in text, key
    assert "test_heron_QRMI_IBM_QS_IAM_APIKEY" in r.stderr
    # with those variables set, the job environment is the one the Slurm plugin exports
    # (<name>_<KEY> for every entry, and the QRMI resource/type lists) minus the secrets:
    # tasks reach those vendors through the agent's credential gateway, or not at all
    secrets = {}
    for dev in inv:
        for var in dev.credentials.values():
            secrets[var] = f"secret-of-{var}"
            monkeypatch.setenv(var, secrets[var])
    js = sessions.JobSessions("9", [sessions.SessionRecord(d.name, "qrmi", "none")
                                    for d in inv])
    env = sessions.task_environment(js, list(inv))
    for res in config["resources"]:
        for key, value in res["environment"].items():
            if qrmi_import.is_secret(key):
                assert f"{res['name']}_{key}" not in env, key
            else:
                assert env[f"{res['name']}_{key}"] == value, key
    assert not set(secrets.values()) & set(env.values())
    assert env["QRMI_JOB_QPU_RESOURCES"].split(",") == [r["name"] for r in config["resources"]]
    assert env["QRMI_JOB_QPU_TYPES"].split(",") == [r["type"] for r in config["resources"]]
    assert yaml.safe_load(text)["devices"][3]["vendor"] == "pasqal"


def test_import_errors_are_one_line(tmp_path) -> None:
    r = run_cli("devices", "import", str(EXAMPLE_CONFIG))
    assert_user_error(r, "no qubit count", "--qubits")
    bad = tmp_path / "bad.json"
    bad.write_text('{"resources": {}}')
    assert_user_error(run_cli("devices", "import", str(bad), "--qubits", "5"),
                      "not a Slurm QRMI config")
