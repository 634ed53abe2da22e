"""Session bookkeeping and the in-job API without Flux (the real-Flux tests cover the rest)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import GRAPHS

from fluxqr import job
from fluxqr.core import graph, inventory, sessions
from fluxqr.errors import FluxqrError


def _inv() -> inventory.Inventory:
    return inventory.parse({"version": 1, "devices": [
        {"name": "ibm_fez", "adapter": "qrmi", "qubits": 156,
         "params": {"resource_id": "ibm_fez", "resource_type": "ibm-quantum-compute-service",
                    "config": {"QRMI_IBM_QCS_ENDPOINT": "http://127.0.0.1:1"}},
         "credentials": {"QRMI_IBM_QCS_IAM_APIKEY": "SITE_KEY"}},
        {"name": "aer", "adapter": "qiskit", "qubits": 30,
         "params": {"backend": "aer_simulator"}}]})


def test_task_environment_is_the_qrmi_contract(monkeypatch) -> None:
    monkeypatch.setenv("SITE_KEY", "k-123")
    inv = _inv()
    js = sessions.JobSessions("42", [
        sessions.SessionRecord("ibm_fez", "qrmi", "dedicated", token="tok-9"),
        sessions.SessionRecord("aer", "qiskit", "none")], duration=600, devices_file="/d.yaml")
    env = sessions.task_environment(js, list(inv))
    assert env["QRMI_JOB_QPU_RESOURCES"] == "ibm_fez"
    assert env["QRMI_JOB_QPU_TYPES"] == "ibm-quantum-compute-service"
    assert env["ibm_fez_QRMI_JOB_ACQUISITION_TOKEN"] == "tok-9"
    assert env["ibm_fez_QRMI_JOB_TIMEOUT_SECONDS"] == "600"
    assert env["ibm_fez_QRMI_IBM_QCS_ENDPOINT"] == "http://127.0.0.1:1"
    # the site key never reaches a task: without the gateway there is no credential at all
    assert "ibm_fez_QRMI_IBM_QCS_IAM_APIKEY" not in env and "k-123" not in json.dumps(env)
    assert env["FLUXQR_QPUS"] == "ibm_fez,aer" and env["FLUXQR_DEVICES"] == "/d.yaml"
    assert env["FLUXQR_QPU_AER_SESSION"] == "none"
    assert env["FLUXQR_QPU_IBM_FEZ_SESSION"].startswith("sha256:")
    # what may be recorded on the job never holds the token
    assert "tok-9" not in json.dumps(js.records[0].public())
    # with the gateway, its settings replace the device's endpoints and carry the job token
    access = {"ibm_fez": {"QRMI_IBM_QCS_ENDPOINT": "http://gw:1/ibm_fez/api",
                          "QRMI_IBM_QCS_IAM_APIKEY": "job-token"}}
    env = sessions.task_environment(js, list(inv), gateway=access)
    assert env["ibm_fez_QRMI_IBM_QCS_ENDPOINT"] == "http://gw:1/ibm_fez/api"
    assert env["ibm_fez_QRMI_IBM_QCS_IAM_APIKEY"] == "job-token"
    assert "k-123" not in json.dumps(env)


def test_state_files_are_owner_only_and_round_trip(tmp_path: Path) -> None:
    store = sessions.SessionStore(tmp_path / "s")
    js = sessions.JobSessions("7", [sessions.SessionRecord("aer", "qiskit", "none")],
                              userid=1000)
    store.save(js)
    assert stat.S_IMODE(os.stat(store.path("7")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "s").st_mode) == 0o700
    assert store.load("7") == js and store.jobids() == ["7"]
    store.delete("7")
    assert store.load("7") is None


def test_open_sessions_without_session_devices_acquires_nothing(tmp_path: Path) -> None:
    store = sessions.SessionStore(tmp_path)
    js = sessions.open_sessions("1", [_inv().get("aer")], "dedicated", None, store)
    assert [r.mode for r in js.records] == ["none"] and js.records[0].token is None


def test_failed_acquire_raises_and_keeps_the_record(tmp_path: Path, monkeypatch) -> None:
    # the endpoint (port 1) refuses: the real qrmi client fails to acquire
    monkeypatch.setenv("SITE_KEY", "k-123")
    store = sessions.SessionStore(tmp_path)
    with pytest.raises(sessions.SessionError, match="cannot open a session on ibm_fez"):
        sessions.open_sessions("5", [_inv().get("ibm_fez")], "dedicated", None, store)
    rec = store.load("5").records[0]
    assert rec.error and rec.token is None and "k-123" not in rec.error


def test_allocation_reads_the_jobs_R(monkeypatch) -> None:
    g = graph.add_devices(graph.synthesize(1, 2), inventory.load(GRAPHS / "local-devices.yaml"))
    r = g.to_r()
    r["scheduling"]["graph"]["nodes"] = [n for n in r["scheduling"]["graph"]["nodes"]
                                         if n["metadata"].get("name") in (None, "aer", "node0")
                                         or n["metadata"]["type"] != "qpu"]
    monkeypatch.setenv("FLUXQR_DEVICES", str(GRAPHS / "local-devices.yaml"))
    qpus = job.allocation(r)
    assert [q.name for q in qpus] == ["aer"]
    assert qpus["aer"].qubits == 30 and qpus["aer"].device.adapter == "qiskit"
    assert qpus[0].properties["vendor"] == "qiskit"
    assert qpus["aer"].backend().name == "aer_simulator"
    with pytest.raises(KeyError, match="no QPU named 'x'"):
        qpus["x"]


def test_allocation_outside_a_job_says_so(monkeypatch) -> None:
    for var in ("FLUX_JOB_ID", "FLUXQR_QPUS", "FLUXQR_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(FluxqrError, match="this job has no QPUs"):
        job.allocation()
