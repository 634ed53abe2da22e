"""Adapters against real SDKs: Qiskit fake backends, mqt-core QDMI devices, Braket.

Expected numbers are computed here from the raw calibration data (IBM properties,
MQT's device JSON, a Braket capabilities document), not through the adapters'
code paths, so an adapter that mis-reads or mis-converts is caught.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap
import time
from datetime import UTC
from pathlib import Path

import pytest

from fluxqr.core.inventory import Device
from fluxqr.devices import DeviceSnapshot, adapter_for, format_table, probe, read
from fluxqr.devices.base import summarize, target_summary
from fluxqr.errors import FluxqrError, MissingExtraError

ROOT = Path(__file__).resolve().parents[1]


def dev(name: str, adapter: str, qubits: int = 5, **params) -> Device:
    return Device(name=name, adapter=adapter, qubits=qubits, params=params)


# -- Qiskit ------------------------------------------------------------------------------


def fez_expected() -> dict:
    """Medians of FakeFez computed from its BackendProperties, independently of Target."""
    from qiskit_ibm_runtime.fake_provider import FakeFez

    backend = FakeFez()
    props = backend.properties()
    ops = set(backend.target.operation_names)  # the gates the backend actually offers
    one_q, pairs = [], {}
    for gate in props.gates:
        if gate.gate not in ops or gate.gate in ("measure", "reset", "delay"):
            continue
        params = {p.name: p.value for p in gate.parameters}
        err = params.get("gate_error")
        if len(gate.qubits) == 1 and not (err == 0 and params.get("gate_length") == 0):
            one_q.append(err)
        elif len(gate.qubits) == 2:
            key = frozenset(gate.qubits)
            pairs[key] = min(err, pairs.get(key, err))
    good = [e for e in pairs.values() if e < 1.0]
    nduv = {q: {n.name: n for n in props.qubits[q]} for q in range(backend.num_qubits)}
    return {
        "num_qubits": backend.num_qubits,
        "median_1q_error": statistics.median(one_q),
        "median_2q_error": statistics.median(good),
        "dead_couplers": len(pairs) - len(good),
        "median_readout_error": statistics.median(props.readout_error(q)
                                                  for q in range(backend.num_qubits)),
        # raw Nduv values are stored in "us": no unit conversion on this side
        "median_t1_us": statistics.median(nduv[q]["T1"].value for q in nduv
                                          if nduv[q]["T1"].unit == "us"),
        "median_t2_us": statistics.median(nduv[q]["T2"].value for q in nduv
                                          if nduv[q]["T2"].unit == "us"),
        "coupling_edges": len({frozenset(e) for e in backend.configuration().coupling_map}),
        "max_shots": backend.configuration().max_shots,
        "calibrated_at": props.last_update_date.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@pytest.fixture(scope="module")
def fez_reference() -> dict:
    return fez_expected()


def test_qiskit_fake_backend_matches_its_own_properties(fez_reference):
    snap = read(dev("fez", "qiskit", 156, backend="fake_fez"), timeout=60)
    assert snap.ok, snap.error
    assert snap.status == "online" and snap.queue_depth == 0
    for key, value in fez_reference.items():
        assert getattr(snap, key) == pytest.approx(value), key
    assert snap.dead_couplers == 7  # FakeFez's calibration marks 7 couplers with error 1.0
    assert 10 < snap.median_t1_us < 1000  # microseconds, not seconds
    assert snap.coupling_components == 1


def test_qiskit_aer_simulator_is_ideal_and_fully_connected():
    from qiskit_aer import AerSimulator

    n = AerSimulator().num_qubits
    snap = read(dev("aer", "qiskit", 30, backend="aer_simulator"), timeout=60)
    assert snap.ok, snap.error
    assert (snap.status, snap.num_qubits, snap.queue_depth) == ("online", n, 0)
    assert snap.coupling_edges == n * (n - 1) // 2 and snap.coupling_components == 1
    assert snap.median_2q_error is None and snap.dead_couplers is None


def test_qiskit_generic_backend_is_reproducible_with_its_seed():
    from qiskit.providers.fake_provider import GenericBackendV2

    a = read(dev("g", "qiskit", backend="generic:5", seed=7), timeout=60)
    b = read(dev("g", "qiskit", backend="generic:5", seed=7), timeout=60)
    assert a.ok and a.median_2q_error == b.median_2q_error and a.median_t1_us == b.median_t1_us
    edges = {frozenset(e) for e in GenericBackendV2(5, seed=7).coupling_map.get_edges()}
    assert a.num_qubits == 5 and a.coupling_edges == len(edges)


@pytest.mark.parametrize("backend, message", [
    ("fake_nowhere", "no qiskit-ibm-runtime fake backend named 'fake_nowhere'"),
    ("generic:zero", "needs a positive qubit count"),
    ("ibm_fez", "unknown qiskit backend 'ibm_fez'"),
])
def test_qiskit_bad_backend_names_fail_in_one_line(backend, message):
    snap = read(dev("bad", "qiskit", backend=backend), timeout=60)
    assert snap.status == "unknown" and message in snap.error and "\n" not in snap.error
    with pytest.raises(FluxqrError, match=message):
        adapter_for(dev("bad", "qiskit", backend=backend)).backend()


def test_target_summary_on_a_handmade_target():
    from qiskit.circuit import Measure
    from qiskit.circuit.library import CZGate, RZGate, SXGate
    from qiskit.circuit.parameter import Parameter
    from qiskit.providers import QubitProperties
    from qiskit.transpiler import InstructionProperties, Target

    target = Target(num_qubits=4, qubit_properties=[
        QubitProperties(t1=t1 * 1e-6, t2=50e-6) for t1 in (100, 200, 300, 400)])
    target.add_instruction(SXGate(), {(q,): InstructionProperties(3.2e-8, e)
                                      for q, e in enumerate((1e-4, 2e-4, 3e-4, 9e-4))})
    target.add_instruction(RZGate(Parameter("t")), {(q,): InstructionProperties(0.0, 0.0)
                                                    for q in range(4)})
    target.add_instruction(CZGate(), {(0, 1): InstructionProperties(6e-8, 0.01),
                                      (1, 0): InstructionProperties(6e-8, 0.02),
                                      (1, 2): InstructionProperties(6e-8, 1.0),
                                      (2, 1): InstructionProperties(6e-8, 1.0)})
    target.add_instruction(Measure(), {(q,): InstructionProperties(1e-6, 0.01 * (q + 1))
                                       for q in range(4)})
    s = target_summary(target)
    assert s["median_1q_error"] == pytest.approx(2.5e-4)  # rz (virtual) left out
    assert s["median_2q_error"] == pytest.approx(0.01)  # best direction of coupler 0-1
    assert s["dead_couplers"] == 1  # 1-2, counted once for both directions
    assert s["median_readout_error"] == pytest.approx(0.025)
    assert s["median_t1_us"] == pytest.approx(250.0) and s["median_t2_us"] == pytest.approx(50)
    assert (s["coupling_edges"], s["coupling_components"]) == (2, 2)  # qubit 3 is alone


def test_summarize_without_any_known_error_claims_no_dead_couplers():
    s = summarize(num_qubits=3, errors_1q=[], errors_2q=[(0, 1, None), (1, 2, None)],
                  errors_readout=[], t1_us=[], t2_us=[])
    assert s["dead_couplers"] is None and s["median_2q_error"] is None
    assert (s["coupling_edges"], s["coupling_components"]) == (2, 1)


# -- QDMI --------------------------------------------------------------------------------


def mqt_data_file(name: str) -> Path:
    import mqt.core

    return Path(mqt.core.__file__).parent / "lib64" / name


def test_qdmi_lists_the_devices_mqt_core_ships():
    import mqt.core.qdmi as qdmi

    ids = set(qdmi.device_ids())
    assert {"mqt.ddsim.default", "mqt.sc.default", "mqt.sc.iqm.garnet"} <= ids


def test_qdmi_shipped_iqm_garnet_matches_its_calibration_file():
    raw = json.loads(mqt_data_file("iqm-garnet.json").read_text())
    unit, scale = raw["durationUnit"]["unit"], raw["durationUnit"]["scaleFactor"]
    assert unit == "us"
    ops = {op["name"]: op for op in raw["operations"]}

    def errors(op):
        return [1 - o["fidelity"] for o in ops[op]["siteOverrides"]]

    snap = read(dev("garnet", "qdmi", 20, device="mqt.sc.iqm.garnet"), timeout=60)
    assert snap.ok, snap.error
    assert (snap.status, snap.num_qubits, snap.coupling_edges) == (
        "online", raw["numQubits"], len({frozenset(c) for c in raw["couplings"]}))
    overrides = raw["qubitProperties"]["overrides"]
    assert snap.median_t1_us == pytest.approx(statistics.median(q["t1"] for q in overrides) * scale)
    assert snap.median_t2_us == pytest.approx(statistics.median(q["t2"] for q in overrides) * scale)
    assert snap.median_1q_error == pytest.approx(statistics.median(errors("r")))
    assert snap.median_2q_error == pytest.approx(statistics.median(errors("cz")))
    assert snap.median_readout_error == pytest.approx(statistics.median(errors("measure")))
    assert snap.dead_couplers == 0 and snap.coupling_components == 1


def test_qdmi_device_by_reported_name_and_the_ideal_simulator():
    by_name = read(dev("garnet", "qdmi", 20, device="IQM Garnet"), timeout=60)
    by_id = read(dev("garnet", "qdmi", 20, device="mqt.sc.iqm.garnet"), timeout=60)
    assert by_name.ok and by_name.median_2q_error == by_id.median_2q_error
    sim = read(dev("dd", "qdmi", 64, device="mqt.ddsim.default"), timeout=60)
    assert sim.ok and sim.status == "online" and sim.num_qubits > 1000
    assert sim.median_2q_error == 0.0 and sim.coupling_components == 1  # ideal, all-to-all


def tiny_config(tmp_path: Path, unit: str = "ns", scale: float = 1.0, t1: int = 50000) -> Path:
    cfg = {"schema-version": 1, "name": "Tiny", "numQubits": 3,
           "durationUnit": {"unit": unit, "scaleFactor": scale},
           "qubitProperties": {"defaults": {"t1": t1, "t2": 2 * t1}, "overrides": []},
           "couplings": [[0, 1], [1, 2]],
           "operations": [
               {"name": "r", "numParameters": 2, "numQubits": 1, "fidelity": 0.998},
               {"name": "cz", "numParameters": 0, "numQubits": 2, "fidelity": 0.97,
                "siteOverrides": [{"sites": [1, 2], "fidelity": 0.0}]},
               {"name": "measure", "numParameters": 0, "numQubits": 1, "fidelity": 0.95}]}
    path = tmp_path / f"tiny-{unit}.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("unit, scale, t1, t1_us", [
    ("ns", 1.0, 50000, 50.0), ("us", 0.001, 42000, 42.0), ("ms", 1.0, 1, 1000.0)])
def test_qdmi_config_file_units_and_dead_couplers(tmp_path, unit, scale, t1, t1_us):
    path = tiny_config(tmp_path, unit, scale, t1)
    snap = read(dev("tiny", "qdmi", 3, device="mqt.sc.default", config_file=str(path)),
                timeout=60)
    assert snap.ok, snap.error
    assert snap.num_qubits == 3 and snap.median_t1_us == pytest.approx(t1_us)
    assert snap.median_t2_us == pytest.approx(2 * t1_us)
    assert snap.dead_couplers == 1 and snap.median_2q_error == pytest.approx(0.03)
    assert snap.median_1q_error == pytest.approx(0.002)
    assert snap.median_readout_error == pytest.approx(0.05)
    assert (snap.coupling_edges, snap.coupling_components) == (2, 1)


def test_qdmi_unknown_device_and_missing_config_file(tmp_path):
    snap = read(dev("x", "qdmi", device="mqt.nowhere"), timeout=60)
    assert snap.status == "unknown" and "no QDMI device 'mqt.nowhere'" in snap.error
    assert "mqt.sc.default" in snap.error  # names the known IDs
    snap = read(dev("x", "qdmi", device="mqt.sc.default",
                    config_file=str(tmp_path / "absent.json")), timeout=60)
    assert "config_file" in snap.error and "not found" in snap.error


def test_qdmi_library_with_prefix_in_a_fresh_process(tmp_path):
    lib = mqt_data_file("libmqt-core-qdmi-sc-device.so")
    config = tiny_config(tmp_path)
    code = textwrap.dedent(f"""
        from fluxqr.devices import probe
        from fluxqr.core.inventory import Device
        devs = [Device("own", "qdmi", 3, params={{"device": "site.own.sc", "library": {str(lib)!r},
                       "prefix": "MQT_SC", "config_file": {str(config)!r}}}),
                Device("std", "qdmi", 100, params={{"device": "mqt.sc.default"}})]
        for s in probe(devs, timeout=60):
            print(s.device, s.status, s.num_qubits, s.dead_couplers, s.error)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["own online 3 1 None", "std online 100 0 None"]


def test_qdmi_library_after_the_driver_started_is_a_clear_error(tmp_path):
    import mqt.core.qdmi as qdmi

    qdmi.device_ids()  # the driver is now configured for this process
    lib = mqt_data_file("libmqt-core-qdmi-sc-device.so")
    snap = read(dev("late", "qdmi", device="site.late.sc", library=str(lib), prefix="MQT_SC"),
                timeout=60)
    assert snap.status == "unknown" and "already used in this process" in snap.error
    snap = read(dev("late", "qdmi", device="site.late2.sc", library=str(lib)), timeout=60)
    assert "needs params.prefix" in snap.error


# -- Braket ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["braket_sv", "braket_dm"])
def test_braket_local_simulators(name):
    from braket.devices import LocalSimulator

    n = LocalSimulator(name).properties.paradigm.qubitCount
    snap = read(dev("local", "braket", n, device=f"local:{name}"), timeout=60)
    assert snap.ok, snap.error
    assert (snap.status, snap.num_qubits, snap.queue_depth) == ("online", n, 0)
    assert snap.coupling_edges == n * (n - 1) // 2 and snap.max_shots is None  # unlimited


GARNET_ARN = "arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet"


def iqm_capabilities(n: int = 6) -> dict:
    """An IQM capabilities document (validated below with braket.device_schema)."""

    def fid(name, value):
        return {"fidelityType": {"name": name}, "fidelity": value}

    pairs = {"1-2": 0.991, "2-3": 0.0, "1-4": 0.985, "4-5": 0.996, "5-6": 0.993}
    return {
        "braketSchemaHeader": {"name": "braket.device_schema.iqm.iqm_device_capabilities",
                               "version": "1"},
        "service": {
            "braketSchemaHeader": {"name": "braket.device_schema.device_service_properties",
                                   "version": "1"},
            "executionWindows": [{"executionDay": "Everyday", "windowStartHour": "00:00",
                                  "windowEndHour": "23:59:59"}],
            "shotsRange": [1, 20000], "updatedAt": "2025-03-01T08:30:00"},
        "action": {"braket.ir.openqasm.program": {
            "actionType": "braket.ir.openqasm.program", "version": ["1"],
            "supportedOperations": ["cz", "prx"], "supportedResultTypes": []}},
        "paradigm": {
            "braketSchemaHeader": {
                "name": "braket.device_schema.gate_model_qpu_paradigm_properties",
                "version": "1"},
            "qubitCount": n, "nativeGateSet": ["cz", "prx"],
            "connectivity": {"fullyConnected": False, "connectivityGraph": {
                "1": ["2", "4"], "2": ["3"], "4": ["5"], "5": ["6"]}}},
        "deviceParameters": {},
        "standardized": {
            "braketSchemaHeader": {
                "name": "braket.device_schema.standardized_gate_model_qpu_device_properties",
                "version": "1"},
            "oneQubitProperties": {str(q): {
                "T1": {"value": 20.0 + 5 * q, "standardError": None, "unit": "us"},
                "T2": {"value": 4000.0 * q, "standardError": None, "unit": "ns"},
                "oneQubitFidelity": [
                    fid("SIMULTANEOUS_RANDOMIZED_BENCHMARKING", 0.99),
                    fid("RANDOMIZED_BENCHMARKING", 0.9995 - 1e-4 * q),
                    fid("READOUT", 0.98 - 0.002 * q)]} for q in range(1, n + 1)},
            "twoQubitProperties": {k: {"twoQubitGateFidelity": [
                {"gateName": "CZ", "fidelity": v,
                 "fidelityType": {"name": "CLIFFORD_RANDOMIZED_BENCHMARKING"}}]}
                for k, v in pairs.items()}},
    }


def stubbed_braket(monkeypatch, responses):
    """A real boto3 braket client whose far end is botocore's Stubber; AwsDevice unchanged."""
    import boto3
    from botocore.stub import Stubber
    from braket.aws import AwsSession

    from fluxqr.devices.braket_adapter import BraketAdapter

    client = boto3.client("braket", region_name="eu-north-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    stub = Stubber(client)
    for resp in responses:
        if isinstance(resp, str):
            stub.add_client_error("get_device", service_error_code=resp,
                                  service_message=f"stubbed {resp}", http_status_code=403)
        else:
            stub.add_response("get_device", resp, {"deviceArn": GARNET_ARN})
    stub.activate()
    monkeypatch.setattr(BraketAdapter, "aws_session",
                        lambda self: AwsSession(braket_client=client))
    return stub


def get_device_response(caps: dict, status: str = "ONLINE", normal: str = "7",
                        priority: str = "2") -> dict:
    return {"deviceArn": GARNET_ARN, "deviceName": "Garnet", "providerName": "IQM",
            "deviceType": "QPU", "deviceStatus": status, "deviceCapabilities": json.dumps(caps),
            "deviceQueueInfo": [
                {"queue": "QUANTUM_TASKS_QUEUE", "queueSize": normal, "queuePriority": "Normal"},
                {"queue": "QUANTUM_TASKS_QUEUE", "queueSize": priority,
                 "queuePriority": "Priority"},
                {"queue": "JOBS_QUEUE", "queueSize": "3"}]}


def test_braket_aws_device_through_a_stubbed_far_end(monkeypatch):
    from braket.device_schema.iqm import IqmDeviceCapabilities

    caps = iqm_capabilities()
    IqmDeviceCapabilities.parse_raw_schema(json.dumps(caps))  # a valid document
    resp = get_device_response(caps)
    stub = stubbed_braket(monkeypatch, [resp, resp])
    snap = read(dev("garnet", "braket", 6, device=GARNET_ARN), timeout=60)
    stub.assert_no_pending_responses()  # AwsDevice really called GetDevice (twice)
    assert snap.ok, snap.error
    std = caps["standardized"]["oneQubitProperties"]
    assert (snap.status, snap.num_qubits, snap.queue_depth) == ("online", 6, 9)
    assert snap.median_1q_error == pytest.approx(statistics.median(
        1 - (0.9995 - 1e-4 * q) for q in range(1, 7)))  # plain RB, not the simultaneous one
    assert snap.median_readout_error == pytest.approx(statistics.median(
        1 - (0.98 - 0.002 * q) for q in range(1, 7)))
    assert snap.median_2q_error == pytest.approx(statistics.median([0.009, 0.015, 0.004, 0.007]))
    assert snap.dead_couplers == 1
    assert snap.median_t1_us == pytest.approx(statistics.median(
        v["T1"]["value"] for v in std.values()))
    assert snap.median_t2_us == pytest.approx(statistics.median(
        v["T2"]["value"] / 1000 for v in std.values()))  # ns -> us
    assert (snap.coupling_edges, snap.coupling_components) == (5, 1)
    assert snap.calibrated_at == "2025-03-01T08:30:00Z" and snap.max_shots == 20000


def test_braket_retired_device_and_capped_queue(monkeypatch):
    resp = get_device_response(iqm_capabilities(), status="RETIRED", normal=">4000",
                               priority="0")
    stubbed_braket(monkeypatch, [resp, resp])
    snap = read(dev("garnet", "braket", 6, device=GARNET_ARN), timeout=60)
    assert (snap.status, snap.status_reason, snap.queue_depth) == ("offline", "retired", 4000)


def test_braket_far_end_error_becomes_a_failed_snapshot(monkeypatch):
    stubbed_braket(monkeypatch, ["AccessDeniedException"])
    snap = read(dev("garnet", "braket", 6, device=GARNET_ARN), timeout=60)
    assert snap.status == "unknown" and "AccessDeniedException" in snap.error


def test_braket_malformed_capabilities_become_a_failed_snapshot(monkeypatch):
    resp = get_device_response(iqm_capabilities())
    resp["deviceCapabilities"] = '{"braketSchemaHeader": {"name": '
    stubbed_braket(monkeypatch, [resp, resp])
    with pytest.warns(UserWarning):  # AwsDevice's own complaint
        snap = read(dev("garnet", "braket", 6, device=GARNET_ARN), timeout=60)
    assert snap.status == "unknown" and "cannot parse" in snap.error


def test_braket_session_takes_region_and_credentials_from_the_inventory(monkeypatch):
    monkeypatch.setenv("FLUXQR_TEST_AWS_ID", "AKIATESTID")
    monkeypatch.setenv("FLUXQR_TEST_AWS_SECRET", "test-secret-value")
    device = Device("garnet", "braket", 20, params={"device": GARNET_ARN},
                    credentials={"AWS_ACCESS_KEY_ID": "FLUXQR_TEST_AWS_ID",
                                 "aws_secret_access_key": "FLUXQR_TEST_AWS_SECRET"})
    session = adapter_for(device).aws_session()
    creds = session.boto_session.get_credentials()
    assert session.region == "eu-north-1"
    assert (creds.access_key, creds.secret_key) == ("AKIATESTID", "test-secret-value")
    other = Device("sv1", "braket", 34, params={
        "device": "arn:aws:braket:::device/quantum-simulator/amazon/sv1", "region": "us-west-2"})
    assert adapter_for(other).aws_session().region == "us-west-2"
    monkeypatch.delenv("FLUXQR_TEST_AWS_SECRET")
    snap = read(device, timeout=60)
    assert "FLUXQR_TEST_AWS_SECRET" in snap.error and "not set" in snap.error


def test_backend_objects_for_in_job_use():
    from braket.devices import LocalSimulator
    from qiskit.providers import BackendV2

    qk = adapter_for(dev("t", "qiskit", backend="fake_torino")).backend()
    qd = adapter_for(dev("g", "qdmi", 20, device="mqt.sc.iqm.garnet")).backend()
    bk = adapter_for(dev("s", "braket", device="local:braket_dm")).backend()
    assert isinstance(qk, BackendV2) and qk.num_qubits == 133
    assert isinstance(qd, BackendV2) and qd.num_qubits == 20
    assert isinstance(bk, LocalSimulator)


# -- missing SDKs, read() and probe() ----------------------------------------------------


@pytest.mark.parametrize("device, module, extra", [
    (dev("q", "qiskit", backend="generic:3"), "qiskit.providers.fake_provider", "qiskit"),
    (dev("q", "qiskit", backend="fake_fez"), "qiskit_ibm_runtime.fake_provider", "qiskit"),
    (dev("m", "qdmi", device="mqt.sc.default"), "mqt.core.qdmi", "qdmi"),
    (dev("b", "braket", device="local:braket_sv"), "braket.devices", "braket"),
    (dev("r", "qrmi", resource_id="ibm_fez", resource_type="ibm-quantum-platform"),
     "qrmi", "qrmi"),
])
def test_missing_sdk_names_the_extra(monkeypatch, device, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(MissingExtraError) as err:
        adapter_for(device).read()
    assert f"pip install 'fluxqr[{extra}]'" in str(err.value) and "\n" not in str(err.value)
    snap = read(device, timeout=60)
    assert snap.status == "unknown" and f"fluxqr[{extra}]" in snap.error


def test_read_never_raises_even_for_an_unknown_adapter():
    snap = read(dev("odd", "nonsense"))
    assert isinstance(snap, DeviceSnapshot) and snap.status == "unknown"
    assert "unknown adapter 'nonsense'" in snap.error


def test_probe_keeps_inventory_order_and_format_table():
    devices = [dev("sim", "braket", 26, device="local:braket_sv"),
               dev("fez", "qiskit", 156, backend="fake_fez"),
               dev("bad", "qdmi", device="mqt.nowhere"),
               dev("garnet", "qdmi", 20, device="mqt.sc.iqm.garnet")]
    snaps = probe(devices, timeout=60)
    assert [s.device for s in snaps] == ["sim", "fez", "bad", "garnet"]
    assert [s.status for s in snaps] == ["online", "online", "unknown", "online"]
    table = format_table(snaps).splitlines()
    assert table[0].split() == ["device", "adapter", "status", "qubits", "2q", "error",
                                "T1", "(us)", "queue", "calibrated", "error"]
    assert len(table) == 5 and table[2].split()[:4] == ["fez", "qiskit", "online", "156"]
    assert "no QDMI device" in table[3] and table[1].split()[4] == "-"


def test_timed_out_read_returns_on_time_in_a_daemon_thread(monkeypatch):
    import threading

    from fluxqr.devices.qiskit_adapter import QiskitAdapter

    release = threading.Event()
    monkeypatch.setattr(QiskitAdapter, "read", lambda self: release.wait(30))
    start = time.monotonic()
    snaps = probe([dev("hung", "qiskit", backend="generic:2"),
                   dev("hung2", "qiskit", backend="generic:2")], timeout=0.5)
    elapsed = time.monotonic() - start
    stuck = [t for t in threading.enumerate() if t.name.startswith("fluxqr-read-")]
    release.set()
    assert elapsed < 1.5  # concurrent: two 0.5 s timeouts, not one after the other
    assert [s.error for s in snaps] == ["timed out after 0.5 s"] * 2
    assert stuck and all(t.daemon for t in stuck)
