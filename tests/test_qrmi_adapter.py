"""The QRMI adapter with the real qrmi client against the loopback QCS stand-in."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from standins.qcs_server import QCSControl, QCSStandIn  # tests/ is on sys.path (conftest)

from fluxqr.core.inventory import Device
from fluxqr.devices import adapter_for, probe, read
from fluxqr.errors import FluxqrError

pytest.importorskip("qrmi")
ROOT = Path(__file__).resolve().parents[1]
KEY_VAR = "FLUXQR_TEST_QCS_APIKEY"


@pytest.fixture(scope="module")
def server():
    with QCSStandIn("fake_fez") as srv:
        yield srv


@pytest.fixture
def qcs(server, monkeypatch):
    """The stand-in with default knobs and empty logs, and an API key in the environment."""
    server.set(**{"queue_length": 0, "offline": False, "reason": "offline for repairs",
                  "slow": 0.0, "garbage": False, "down": False, "calibration_down": False,
                  "apikey": None})
    server.reset()
    monkeypatch.setenv(KEY_VAR, "standin-key")
    return server


def qrmi_device(server: QCSStandIn, resource_type: str = "ibm-quantum-compute-service",
                timeout: float = 30.0, **credentials: str) -> Device:
    return Device(name="fez", adapter="qrmi", qubits=156, timeout=timeout,
                  params={"resource_id": server.name, "resource_type": resource_type,
                          "config": server.qrmi_config()},
                  credentials=credentials or {"QRMI_IBM_QCS_IAM_APIKEY": KEY_VAR})


def test_status_queue_and_calibration_through_qrmi(qcs):
    qcs.set(queue_length=3)
    snap = read(qrmi_device(qcs))
    assert snap.ok, snap.error
    assert (snap.status, snap.queue_depth, snap.num_qubits) == ("online", 3, 156)
    # The stand-in serves FakeFez's calibration JSON: same numbers as the qiskit adapter.
    local = read(Device("fez", "qiskit", 156, params={"backend": "fake_fez"}), timeout=60)
    for field in ("median_1q_error", "median_2q_error", "median_readout_error", "dead_couplers",
                  "median_t1_us", "median_t2_us", "coupling_edges", "calibrated_at",
                  "max_shots"):
        assert getattr(snap, field) == pytest.approx(getattr(local, field)), field
    paths = [(r["method"], r["path"]) for r in qcs.log()["requests"]]
    assert ("POST", "/identity/token") in paths
    assert ("GET", "/backends/ibm_fez/properties") in paths
    assert all(r["authorized"] for r in qcs.log()["requests"] if r["path"] != "/identity/token")


def test_queue_depth_follows_the_knob(qcs):
    device = qrmi_device(qcs)
    depths = []
    for n in (0, 5, 12):
        qcs.set(queue_length=n)
        depths.append(read(device).queue_depth)
    assert depths == [0, 5, 12]


@pytest.mark.parametrize("reason, status", [("offline for repairs", "offline"),
                                            ("calibration in progress", "calibrating"),
                                            ("scheduled maintenance", "maintenance")])
def test_offline_backend_keeps_the_reason(qcs, reason, status):
    qcs.set(offline=True, reason=reason)
    snap = read(qrmi_device(qcs))
    assert snap.ok and (snap.status, snap.status_reason) == (status, reason)


def test_slow_service_times_out_within_the_timeout(qcs):
    qcs.set(slow=5.0)
    start = time.monotonic()
    snap = read(qrmi_device(qcs, timeout=1.0))
    assert time.monotonic() - start < 1.5
    assert (snap.status, snap.error) == ("unknown", "timed out after 1 s")


@pytest.mark.parametrize("knob, words", [("garbage", "EOF while parsing"),
                                         ("down", "503"),
                                         ("calibration_down", "returned no configuration")])
def test_broken_service_gives_unknown_with_the_reason(qcs, knob, words):
    qcs.set(**{knob: True})
    snap = read(qrmi_device(qcs))
    assert snap.status == "unknown" and words in snap.error and "\n" not in snap.error


def test_acquire_and_release_open_and_close_a_session(qcs):
    adapter = adapter_for(qrmi_device(qcs))
    token = adapter.acquire()
    adapter.release(token)
    log = qcs.log()["sessions"]
    assert [(e["op"], e["session_id"]) for e in log] == [("acquire", token), ("release", token)]
    assert log[0]["backend"] == "ibm_fez"


def test_session_jobs_lists_every_task_of_the_session_page_by_page(qcs):
    """The agent's task count: ``GET /jobs?session_id=`` read past the API's 200-job page,
    only the session's jobs (not another session's, not other users'), and a broken
    endpoint gives None through the VendorSide hook (never an exception)."""
    from fluxqr.agent.vendor import side_for
    from fluxqr.devices.qrmi_adapter import ibm_session_jobs

    device = qrmi_device(qcs)
    adapter = adapter_for(device)
    mine, other = adapter.acquire(), adapter_for(device).acquire()
    with qcs._lock:  # straight into the simulation: 250 tasks through qrmi would be slow
        ids = [qcs.sim.submit(session_id=mine, service=1.0).id for _ in range(250)]
        qcs.sim.submit(session_id=other, service=1.0)
        qcs.sim.submit(service=1.0)  # another user's job, in no session
    listed = ibm_session_jobs(adapter, mine)
    assert sorted(listed) == sorted(ids)
    pages = [r["query"] for r in qcs.log()["requests"]
             if r["path"] == "/jobs" and "session_id=" in r["query"]]
    assert len(pages) == 2 and "offset=200" in pages[1], pages  # two pages: 200 + 50
    side = side_for(device)
    assert sorted(side.session_jobs(mine)) == sorted(ids)
    assert side.session_jobs(other) is not None and len(side.session_jobs(other)) == 1
    qcs.set(garbage=True)
    assert side.session_jobs(mine) is None
    qcs.set(garbage=False)
    for token in (mine, other):
        adapter.release(token)


def test_backend_is_a_qiskit_backend_from_the_live_target(qcs):
    from qiskit.providers import BackendV2

    backend = adapter_for(qrmi_device(qcs)).backend()
    assert isinstance(backend, BackendV2) and backend.num_qubits == 156


def test_env_var_configuration_when_the_inventory_has_none(qcs, monkeypatch):
    for key, value in qcs.qrmi_env().items():
        monkeypatch.setenv(key, value)
    device = Device(name="fez", adapter="qrmi", qubits=156,
                    params={"resource_id": qcs.name, "resource_type": "IBMQuantumComputeService"})
    qcs.set(queue_length=2)
    snap = read(device, timeout=30)
    assert snap.ok and snap.queue_depth == 2


@pytest.mark.parametrize("text, member", [
    ("direct-access", "IBMQuantumSystem"), ("ibm-direct-access", "IBMQuantumSystem"),
    ("ibm-quantum-system", "IBMQuantumSystem"),
    ("ibm-quantum-platform", "IBMQuantumComputeService"),
    ("ibm-quantum-compute-service", "IBMQuantumComputeService"),
    ("qiskit-runtime-service", "IBMQiskitRuntimeService"), ("pasqal-cloud", "PasqalCloud"),
    ("PasqalLocal", "PasqalLocal"), ("iqmserver", "IQMServer")])
def test_resource_type_names(text, member):
    import qrmi

    from fluxqr.devices.qrmi_adapter import resource_type_member

    assert resource_type_member(qrmi, text) == getattr(qrmi.ResourceType, member)


def test_unknown_resource_type_lists_the_valid_ones():
    import qrmi

    from fluxqr.devices.qrmi_adapter import resource_type_member

    with pytest.raises(FluxqrError) as err:
        resource_type_member(qrmi, "ibm-cloud-thing")
    text = str(err.value)
    assert "unknown QRMI resource_type 'ibm-cloud-thing'" in text and "\n" not in text
    assert "ibm-quantum-compute-service" in text and "pasqal-cloud" in text


def test_missing_credential_variable_is_named(qcs, monkeypatch):
    monkeypatch.delenv(KEY_VAR)
    snap = read(qrmi_device(qcs))
    assert snap.status == "unknown" and KEY_VAR in snap.error and "not set" in snap.error


def test_api_key_never_leaks(qcs, monkeypatch, caplog):
    secret = "fluxqr-SECRET-7f3a9c"
    monkeypatch.setenv(KEY_VAR, secret)
    qcs.set(apikey="the-right-key")  # our key is refused: IAM 400, then API 401
    with caplog.at_level(logging.DEBUG):
        snap = read(qrmi_device(qcs))
        with pytest.raises(FluxqrError) as err:
            adapter_for(qrmi_device(qcs)).acquire()
    assert snap.status == "unknown" and "authentication failed" in snap.error.lower()
    assert secret not in repr(snap.to_dict()) and secret not in str(err.value)
    assert secret not in caplog.text and secret not in repr(qcs.log())


def test_secret_in_an_error_message_is_scrubbed(qcs, monkeypatch, caplog):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    secret = "tok-S3CR3T-in-url"
    monkeypatch.setenv("FLUXQR_TEST_QCS_URL", f"http://127.0.0.1:{port}/{secret}")
    device = Device(name="fez", adapter="qrmi", qubits=156, timeout=30,
                    params={"resource_id": qcs.name, "resource_type": "ibm-quantum-platform",
                            "config": {"QRMI_IBM_QCS_IAM_ENDPOINT": qcs.url,
                                       "QRMI_IBM_QCS_SERVICE_CRN": qcs.crn}},
                    credentials={"QRMI_IBM_QCS_ENDPOINT": "FLUXQR_TEST_QCS_URL",
                                 "QRMI_IBM_QCS_IAM_APIKEY": KEY_VAR})
    with caplog.at_level(logging.DEBUG):
        snap = read(device)
    assert snap.status == "unknown" and "***" in snap.error  # the URL was in the message
    assert secret not in repr(snap.to_dict()) and secret not in caplog.text


def test_probe_does_not_wait_for_a_slow_device(qcs):
    qcs.set(slow=5.0)
    start = time.monotonic()
    snaps = probe([qrmi_device(qcs, timeout=1.5),
                   Device("sim", "qiskit", 3, params={"backend": "generic:3"}, timeout=30)])
    assert time.monotonic() - start < 2.5
    assert [s.status for s in snaps] == ["unknown", "online"]


def test_hung_read_does_not_block_interpreter_exit(qcs):
    qcs.set(slow=60.0)
    code = (f"from fluxqr.devices import read\nfrom fluxqr.core.inventory import Device\n"
            f"d = Device('fez', 'qrmi', 156, params={{'resource_id': 'ibm_fez', "
            f"'resource_type': 'ibm-quantum-platform', 'config': {qcs.qrmi_config()!r}}}, "
            f"credentials={{'QRMI_IBM_QCS_IAM_APIKEY': {KEY_VAR!r}}})\n"
            f"print(read(d, timeout=1).error)\n")
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, env=os.environ)
    assert out.stdout.strip() == "timed out after 1 s", out.stderr
    assert out.returncode == 0 and time.monotonic() - start < 30


def test_stand_in_runs_out_of_process_with_control_endpoints(monkeypatch):
    monkeypatch.setenv(KEY_VAR, "standin-key")
    proc = subprocess.Popen([sys.executable, "-m", "tests.standins.qcs_server", "--port", "0",
                             "--backend", "fake_fez", "--queue-length", "4"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read()
        control = QCSControl(url)
        device = Device(name="fez", adapter="qrmi", qubits=156, timeout=30,
                        params={"resource_id": "ibm_fez", "resource_type": "ibm-quantum-platform",
                                "config": {"QRMI_IBM_QCS_ENDPOINT": url,
                                           "QRMI_IBM_QCS_IAM_ENDPOINT": url,
                                           "QRMI_IBM_QCS_SERVICE_CRN": "crn:standin"}},
                        credentials={"QRMI_IBM_QCS_IAM_APIKEY": KEY_VAR})
        assert read(device).queue_depth == 4
        control.set(queue_length=9, offline=True)
        snap = read(device)
        assert (snap.status, snap.queue_depth) == ("offline", 9)
        adapter = adapter_for(device)
        adapter.release(adapter.acquire())
        assert [e["op"] for e in control.log()["sessions"]] == ["acquire", "release"]
        with pytest.raises(Exception, match="400"):
            control.set(no_such_knob=1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
