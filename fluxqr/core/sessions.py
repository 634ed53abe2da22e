"""Vendor sessions as data: what a job holds, opening and closing them, and the
environment a job's tasks get (the QRMI job contract). No Flux import: the agent
(:mod:`fluxqr.agent`) decides *when*, this module does it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fluxqr._io import atomic_write
from fluxqr.core.inventory import Device, Inventory
from fluxqr.core.model import QPU
from fluxqr.devices.snapshot import utcnow
from fluxqr.errors import FluxqrError

log = logging.getLogger(__name__)

MEMO_KEY = "qpu_sessions"
#: qrmi.ResourceType member -> the type string qrmi's job environment uses
QRMI_TYPE_NAMES = {
    "IBMQuantumSystem": "ibm-quantum-system",
    "IBMQiskitRuntimeService": "qiskit-runtime-service",
    "IBMQuantumComputeService": "ibm-quantum-compute-service",
    "PasqalCloud": "pasqal-cloud",
    "PasqalLocal": "pasqal-local",
    "AliceBobFelis": "alice-bob-felis",
    "IQMServer": "iqm-server",
    "OQTOPUS": "oqtopus",
}
#: qrmi.ResourceType member -> prefix of its session settings
QRMI_SESSION_PREFIX = {"IBMQuantumComputeService": "QRMI_IBM_QCS",
                       "IBMQiskitRuntimeService": "QRMI_IBM_QRS"}



class SessionError(FluxqrError):
    """A session could not be opened (or its record is missing)."""


# -- what the job holds --------------------------------------------------------------------


def qpus_in_R(r: dict[str, Any]) -> list[dict[str, Any]]:
    """QPU vertex metadata of a job's R (its ``scheduling`` JGF), in R order."""
    sched = r.get("scheduling") or {}
    return [n["metadata"] for n in (sched.get("graph") or {}).get("nodes", [])
            if n.get("metadata", {}).get("type") == QPU]


def _qrmi_member(device: Device) -> str:
    from fluxqr.devices.qrmi_adapter import RESOURCE_TYPES

    text = str(device.params.get("resource_type", ""))
    return RESOURCE_TYPES.get(text.lower(), text)


def _ref(token: str) -> str:
    """A reference to a session that identifies it in records without revealing the token."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name).upper()


@dataclass
class SessionRecord:
    """One QPU of one job: its session (if any) and timing. ``token`` stays private."""

    device: str
    adapter: str
    mode: str
    token: str | None = None
    acquired: str | None = None
    released: str | None = None
    error: str | None = None

    def public(self) -> dict[str, Any]:
        """What may be recorded on the job: no token."""
        out = {"adapter": self.adapter, "mode": self.mode,
               "session": _ref(self.token) if self.token else None,
               "acquired": self.acquired, "released": self.released}
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class JobSessions:
    """The sessions of one job, persisted in an owner-only file while the job runs."""

    jobid: str
    records: list[SessionRecord] = field(default_factory=list)
    duration: float = 0.0
    devices_file: str | None = None
    userid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the agent's own state of the job

    def to_json(self) -> str:
        return json.dumps({"jobid": self.jobid, "duration": self.duration,
                           "devices_file": self.devices_file, "userid": self.userid,
                           "records": [r.__dict__ for r in self.records],
                           "extra": self.extra})

    @classmethod
    def from_json(cls, text: str) -> JobSessions:
        data = json.loads(text)
        return cls(data["jobid"], [SessionRecord(**r) for r in data["records"]],
                   data.get("duration", 0.0), data.get("devices_file"), data.get("userid"),
                   data.get("extra") or {})


class SessionStore:
    """Owner-only session state files, one per job, in ``directory``."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)

    def path(self, jobid: str) -> Path:
        return self.dir / f"{jobid}.json"

    def save(self, js: JobSessions) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self.path(js.jobid)
        # atomic_write creates the temp file with mkstemp (0600); keep it that way.
        atomic_write(target, lambda fp: fp.write(js.to_json()))
        os.chmod(target, 0o600)

    def load(self, jobid: str) -> JobSessions | None:
        try:
            return JobSessions.from_json(self.path(jobid).read_text())
        except FileNotFoundError:
            return None

    def delete(self, jobid: str) -> None:
        self.path(jobid).unlink(missing_ok=True)

    def jobids(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.json")) if self.dir.is_dir() else []


# -- opening and closing -------------------------------------------------------------------


def session_device(device: Device, mode: str, max_time: float | None) -> Device:
    """The device with the job's session settings added to its QRMI config."""
    if device.adapter != "qrmi":
        return device
    prefix = QRMI_SESSION_PREFIX.get(_qrmi_member(device))
    if not prefix:
        return device
    config = dict(device.params.get("config") or {})
    if mode in ("dedicated", "batch"):
        config[f"{prefix}_SESSION_MODE"] = mode
    if max_time:
        config[f"{prefix}_SESSION_MAX_TTL"] = str(int(max_time))
    return replace(device, params={**device.params, "config": config})


def open_sessions(jobid: str, devices: list[Device], mode: str, max_time: float | None,
                  store: SessionStore, duration: float = 0.0,
                  devices_file: str | None = None, userid: int | None = None) -> JobSessions:
    """Acquire a session on every device that has them; all or nothing.

    The state file is rewritten after each acquisition, so that an epilog can release
    whatever a killed prolog had already acquired.
    """
    from fluxqr.devices import adapter_for

    js = JobSessions(jobid, duration=duration, devices_file=devices_file, userid=userid)
    for dev in devices:
        rec = SessionRecord(dev.name, dev.adapter, mode if dev.adapter == "qrmi" else "none")
        js.records.append(rec)
        if rec.mode == "none":
            continue
        try:
            rec.token = adapter_for(session_device(dev, mode, max_time)).acquire()
            rec.acquired = utcnow()
        except FluxqrError as exc:
            rec.error = str(exc)
            close_sessions(js)
            store.save(js)
            raise SessionError(f"cannot open a session on {dev.name}: {exc}") from None
        store.save(js)
    store.save(js)
    return js


def close_sessions(js: JobSessions, inventory: Inventory | None = None) -> list[str]:
    """Release every acquired, unreleased session; returns the errors (never raises)."""
    from fluxqr.devices import adapter_for

    errors = []
    for rec in js.records:
        if not rec.token or rec.released:
            continue
        try:
            dev = inventory.get(rec.device) if inventory else None
            if dev is None:
                raise SessionError(f"device {rec.device} is no longer in the inventory")
            adapter_for(dev).release(rec.token)
            rec.released = utcnow()
        except FluxqrError as exc:
            errors.append(f"release of {rec.device} failed: {exc}")
            log.error("job %s: release of %s failed: %s", js.jobid, rec.device, exc)
    return errors


#: The separator of QRMI's job lists; exported so that qrmi never has to guess it.
QRMI_LIST_DELIMITER = ","


def task_environment(js: JobSessions, devices: list[Device], timeout: float | None = None,
                     *, jobid: str | int | None = None, userid: int | None = None,
                     gateway: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """The variables a job's tasks get: the QRMI job contract plus ``FLUXQR_*``.

    The QRMI part is what qrmi reads (``qrmi.get_job_qpu_resources_and_types`` and the
    resource constructors): ``QRMI_JOB_QPU_RESOURCES``/``QRMI_JOB_QPU_TYPES`` split on
    ``QRMI_LIST_DELIMITER``, ``QRMI_JOB_ID`` and ``QRMI_JOB_UID`` (the job and its
    owner's numeric uid: Pasqal's on-premises type needs them), and per resource
    ``<resource_id>_QRMI_*`` settings, the acquisition token and the time limit.
    ``jobid`` and ``userid`` default to the job's own (``js.jobid``, ``js.userid``).

    Vendor credentials are never part of it: ``gateway`` maps a device name to the QRMI
    settings (suffix -> value) of the agent's credential gateway
    (:mod:`fluxqr.agent.gateway`: its endpoints and the job's own token), which replace
    the device's own; a device the gateway does not serve gets no credential. For a
    ``braket`` device the gateway's settings are boto3's own variables
    (``AWS_ENDPOINT_URL_BRAKET``/``_S3``, the job's ``AWS_ACCESS_KEY_ID``/``_SECRET_ACCESS_KEY``,
    ``AWS_DEFAULT_REGION``, ``AMZN_BRAKET_OUT_S3_BUCKET``) and are exported as they are.
    """
    by_name = {d.name: d for d in devices}
    env: dict[str, str] = {"FLUXQR_QPUS": ",".join(r.device for r in js.records)}
    if js.devices_file:
        env["FLUXQR_DEVICES"] = js.devices_file
    resources, types = [], []
    for rec in js.records:
        dev = by_name[rec.device]
        key = f"FLUXQR_QPU_{_env_name(dev.name)}"
        env[f"{key}_ADAPTER"] = dev.adapter
        env[f"{key}_QUBITS"] = str(dev.qubits)
        env[f"{key}_SESSION"] = _ref(rec.token) if rec.token else "none"
        if dev.adapter == "braket":
            # boto3's own variables (endpoints, the job's key): process-wide, so every
            # Braket device of the job shares them; the gateway picks the account per call
            env.update((gateway or {}).get(dev.name) or {})
            continue
        if dev.adapter != "qrmi":
            continue
        rid = str(dev.params["resource_id"])
        resources.append(rid)
        types.append(QRMI_TYPE_NAMES.get(_qrmi_member(dev), str(dev.params["resource_type"])))
        for suffix, value in (dev.params.get("config") or {}).items():
            env[f"{rid}_{suffix.removeprefix(rid + '_')}"] = str(value)
        for secret in dev.credentials:  # a setting named in both: the secret is left out
            env.pop(f"{rid}_{secret.removeprefix(rid + '_')}", None)
        for suffix, value in ((gateway or {}).get(dev.name) or {}).items():
            env[f"{rid}_{suffix}"] = value
        if rec.token:
            env[f"{rid}_QRMI_JOB_ACQUISITION_TOKEN"] = rec.token
        seconds = timeout or js.duration
        if seconds:
            env[f"{rid}_QRMI_JOB_TIMEOUT_SECONDS"] = str(int(seconds))
    if resources:
        sep = QRMI_LIST_DELIMITER
        env["QRMI_LIST_DELIMITER"] = sep
        env["QRMI_JOB_QPU_RESOURCES"] = sep.join(resources)
        env["QRMI_JOB_QPU_TYPES"] = sep.join(types)
        job = jobid if jobid is not None else js.jobid
        if job is not None and str(job):
            env["QRMI_JOB_ID"] = str(job)
        uid = userid if userid is not None else js.userid
        if uid is not None:
            env["QRMI_JOB_UID"] = str(int(uid))  # qrmi parses it as an i32
    return env

