"""Quantum sessions tied to job lifetimes, and the in-job Python API.

Lifecycle (instance side, see the admin guide for the TOML):

* ``flux qr session prolog`` — the job-manager prolog, on rank 0, before any task
  starts: for each QPU in the job's R, open its session through the device's
  adapter (QRMI ``acquire()``; local simulators, QDMI and Braket on-demand need
  none). Tokens go to an owner-only state file, never to the KVS; the job gets a
  memo with device, session reference (a hash, not the token) and times. If an
  acquisition fails, what was acquired is released, the job gets a ``fluxqr``
  exception, and no task runs.
* ``flux qr session epilog`` — after the job ends however it ends (complete,
  fail, cancel, timeout, exception, or prolog failure): release every session
  still open, record the release, delete the state file.
* ``flux qr session env JOBID`` — what the job shell plugin (``fluxqr.lua``) runs
  to give the tasks their environment: the QRMI job contract
  (``QRMI_JOB_QPU_RESOURCES``, ``QRMI_JOB_QPU_TYPES``,
  ``<resource>_QRMI_JOB_ACQUISITION_TOKEN``, ``<resource>_QRMI_JOB_TIMEOUT_SECONDS``
  and the resource's endpoint settings) plus ``FLUXQR_*`` variables for every QPU.

Inside a job, :func:`allocation` returns the job's QPUs with their properties and
``qpu.backend()`` a ready SDK object; :func:`session` opens and closes sessions
from a script when no prolog did.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._io import atomic_write
from .devices.snapshot import utcnow
from .errors import FluxqrError
from .inventory import Device, Inventory
from .model import QPU

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
    from .devices.qrmi_adapter import RESOURCE_TYPES

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

    def to_json(self) -> str:
        return json.dumps({"jobid": self.jobid, "duration": self.duration,
                           "devices_file": self.devices_file, "userid": self.userid,
                           "records": [r.__dict__ for r in self.records]})

    @classmethod
    def from_json(cls, text: str) -> JobSessions:
        data = json.loads(text)
        return cls(data["jobid"], [SessionRecord(**r) for r in data["records"]],
                   data.get("duration", 0.0), data.get("devices_file"), data.get("userid"))


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


def _session_device(device: Device, mode: str, max_time: float | None) -> Device:
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
    from .devices import adapter_for

    js = JobSessions(jobid, duration=duration, devices_file=devices_file, userid=userid)
    for dev in devices:
        rec = SessionRecord(dev.name, dev.adapter, mode if dev.adapter == "qrmi" else "none")
        js.records.append(rec)
        if rec.mode == "none":
            continue
        try:
            rec.token = adapter_for(_session_device(dev, mode, max_time)).acquire()
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
    from .devices import adapter_for

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


def task_environment(js: JobSessions, devices: list[Device], timeout: float | None = None
                     ) -> dict[str, str]:
    """The variables a job's tasks get: the QRMI job contract plus ``FLUXQR_*``."""
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
        if dev.adapter != "qrmi":
            continue
        rid = str(dev.params["resource_id"])
        resources.append(rid)
        types.append(QRMI_TYPE_NAMES.get(_qrmi_member(dev), str(dev.params["resource_type"])))
        for suffix, value in (dev.params.get("config") or {}).items():
            env[f"{rid}_{suffix.removeprefix(rid + '_')}"] = str(value)
        for setting, value in _credential_values(dev).items():
            env[f"{rid}_{setting.removeprefix(rid + '_')}"] = value
        if rec.token:
            env[f"{rid}_QRMI_JOB_ACQUISITION_TOKEN"] = rec.token
        seconds = timeout or js.duration
        if seconds:
            env[f"{rid}_QRMI_JOB_TIMEOUT_SECONDS"] = str(int(seconds))
    if resources:
        env["QRMI_JOB_QPU_RESOURCES"] = ",".join(resources)
        env["QRMI_JOB_QPU_TYPES"] = ",".join(types)
    return env


def _credential_values(dev: Device) -> dict[str, str]:
    return {s: os.environ[v] for s, v in dev.credentials.items() if os.environ.get(v)}


# -- the in-job API ------------------------------------------------------------------------


@dataclass
class AllocatedQPU:
    """One QPU of the current job."""

    name: str
    properties: dict[str, str]
    device: Device | None = None

    @property
    def qubits(self) -> int:
        return int(self.properties.get("num_qubits", self.device.qubits if self.device else 0))

    def backend(self) -> Any:
        """A ready SDK object: Qiskit BackendV2 (QRMI, QDMI, Qiskit devices) or a Braket device."""
        from .devices import adapter_for

        if self.device is None:
            raise FluxqrError(f"QPU {self.name}: its device entry is unknown",
                              fix="set FLUXQR_DEVICES to the site's devices.yaml")
        dev = self.device
        if dev.adapter == "qrmi":
            # In a job, qrmi reads <resource_id>_QRMI_* variables the session layer exported.
            dev = replace(dev, params={k: v for k, v in dev.params.items() if k != "config"},
                          credentials={})
        return adapter_for(dev).backend()


class Allocation(list):
    """The job's QPUs (a list of :class:`AllocatedQPU`), with lookup by name."""

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            for q in self:
                if q.name == key:
                    return q
            raise KeyError(f"no QPU named {key!r} in this job ({', '.join(q.name for q in self)})")
        return super().__getitem__(key)


def _job_R() -> dict[str, Any] | None:
    jobid = os.environ.get("FLUX_JOB_ID")
    if not jobid or not os.environ.get("FLUX_URI"):
        return None
    from . import instance

    try:
        import flux.job

        h = instance.connect()
        return flux.job.job_kvs_lookup(h, flux.job.JobID(jobid), keys=["R"],
                                       decode=True)["R"]
    except (FluxqrError, OSError, ImportError, KeyError, TypeError):
        return None


def allocation(r: dict[str, Any] | None = None) -> Allocation:
    """The current job's QPUs and their properties (from the job's R).

    Outside Flux, or when the R cannot be read, falls back to the ``FLUXQR_QPUS``
    variables the session layer exports.
    """
    from . import inventory

    r = r if r is not None else _job_R()
    inv = None
    if os.environ.get("FLUXQR_DEVICES"):
        inv = inventory.load(os.environ["FLUXQR_DEVICES"])
    qpus = Allocation()
    if r is not None:
        metas = qpus_in_R(r)
    else:
        metas = [{"name": n, "properties": {}} for n in
                 filter(None, os.environ.get("FLUXQR_QPUS", "").split(","))]
    for meta in metas:
        dev = None
        if inv is not None:
            dev = next((d for d in inv if d.name == meta["name"]), None)
        qpus.append(AllocatedQPU(meta["name"], dict(meta.get("properties") or {}), dev))
    if not qpus:
        raise FluxqrError("this job has no QPUs", fix="submit it with --qpu or a quantum: part")
    return qpus


class Session:
    """Sessions opened by a script (``with fluxqr.session() as s``)."""

    def __init__(self, qpus: Allocation, js: JobSessions | None, inventory: Inventory | None):
        self.qpus = qpus
        self._js = js
        self._inventory = inventory

    def backend(self, name: str | None = None) -> Any:
        qpu = self.qpus[name] if name else self.qpus[0]
        return qpu.backend()

    def close(self) -> None:
        if self._js is not None:
            close_sessions(self._js, self._inventory)
            self._js = None


@contextmanager
def session(mode: str = "dedicated", max_time: float | None = None) -> Iterator[Session]:
    """Open the job's sessions for a script, and always release them.

    In a job whose prolog already opened them (``QRMI_JOB_QPU_RESOURCES`` is set)
    nothing is acquired twice: the session is simply used.
    """
    import tempfile

    from . import inventory

    qpus = allocation()
    if os.environ.get("QRMI_JOB_QPU_RESOURCES") is not None or not os.environ.get(
            "FLUXQR_DEVICES"):
        s = Session(qpus, None, None)
        yield s
        return
    inv = inventory.load(os.environ["FLUXQR_DEVICES"])
    devices = [q.device for q in qpus if q.device is not None]
    with tempfile.TemporaryDirectory(prefix="fluxqr-") as tmp:
        js = open_sessions(os.environ.get("FLUX_JOB_ID", "script"), devices, mode, max_time,
                           SessionStore(tmp))
        s = Session(qpus, js, inv)
        try:
            yield s
        finally:
            s.close()


# -- the instance side: prolog, epilog, task environment -----------------------------------


@dataclass
class InstanceContext:
    """What the prolog/epilog/env commands need from the instance."""

    handle: Any
    inventory: Inventory
    devices_file: str
    store: SessionStore


def instance_context(handle: Any, conf: dict[str, Any] | None = None) -> InstanceContext:
    """Settings (``conf``, or ``[fluxqr]`` from the instance config); the store defaults to
    rank 0's ``<rundir>/fluxqr`` (where the prolog runs)."""
    from . import inventory
    from .config import settings
    from .instance import config, rpc

    conf = conf if conf is not None else settings(config(handle), ())
    directory = conf.get("session-dir")
    if not directory:
        rundir = rpc(handle, "attr.get", {"name": "rundir"}, nodeid=0)["value"]
        directory = os.path.join(rundir, "fluxqr")
    return InstanceContext(handle, inventory.load(conf["devices"]), conf["devices"],
                           SessionStore(directory))


def _job(handle: Any, jobid: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    import flux.job

    jid = flux.job.JobID(jobid)
    info = flux.job.job_kvs_lookup(handle, jid, keys=["R", "jobspec"], decode=True)
    if not info or not info.get("R"):
        raise SessionError(f"job {jobid}: no R in the KVS (not running?)")
    return jid, info["R"], info.get("jobspec") or {}


def _memo(handle: Any, jid: Any, js: JobSessions) -> None:
    memo = {MEMO_KEY: {r.device: r.public() for r in js.records}}
    handle.rpc("job-manager.memo", {"id": int(jid), "volatile": False, "memo": memo}).get()


def prolog(ctx: InstanceContext, jobid: str) -> JobSessions | None:
    """Open the job's sessions (job-manager prolog). Raises :class:`SessionError`."""
    from .jobspec import quantum_of

    jid, r, spec = _job(ctx.handle, jobid)
    names = [m["name"] for m in qpus_in_R(r)]
    if not names:
        return None
    quantum = quantum_of(spec) or {}
    request = quantum.get("request") or {}
    mode = request.get("session_mode", "dedicated")
    max_time = request.get("session_max_time")
    duration = float(((spec.get("attributes") or {}).get("system") or {}).get("duration") or 0)
    devices = [ctx.inventory.get(n) for n in names]
    key = str(int(jid))
    userid = os.environ.get("FLUX_JOB_USERID")
    try:
        js = open_sessions(key, devices, mode, max_time, ctx.store, duration=duration,
                           devices_file=ctx.devices_file,
                           userid=int(userid) if userid else None)
    except SessionError as exc:
        failed = ctx.store.load(key)
        if failed is not None:
            _memo(ctx.handle, jid, failed)
            ctx.store.delete(key)
        ctx.handle.rpc("job-manager.raise", {"id": int(jid), "type": "fluxqr", "severity": 0,
                                             "note": str(exc)}).get()
        raise
    _memo(ctx.handle, jid, js)
    return js


def epilog(ctx: InstanceContext, jobid: str) -> list[str]:
    """Release whatever the job still holds (job-manager epilog). Never raises for releases."""
    import flux.job

    jid = flux.job.JobID(jobid)
    key = str(int(jid))
    js = ctx.store.load(key)
    if js is None:
        return []
    errors = close_sessions(js, ctx.inventory)
    try:
        _memo(ctx.handle, jid, js)
    except OSError as exc:
        errors.append(f"recording the release failed: {exc.strerror or exc}")
    if errors:
        ctx.store.save(js)  # keep it for a retry (fluxqr session sweep)
    else:
        ctx.store.delete(key)
    return errors


def remote_environment(handle: Any, jobid: str) -> dict[str, str] | None:
    """Ask rank 0's fluxqr module for the environment (works on every node); None when
    the module is not loaded."""
    import errno

    try:
        return handle.rpc("fluxqr.session-env", {"jobid": str(jobid)}, nodeid=0).get()["env"]
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return None
        raise SessionError(f"job {jobid}: {exc.strerror or exc}") from None


def job_environment(ctx: InstanceContext, jobid: str, userid: int | None = None
                    ) -> dict[str, str]:
    """The tasks' environment for a running job (``flux qr session env``).

    ``userid``: who asks (the broker module passes the requester); only the job's owner
    and the instance owner get an answer.
    """
    import flux.job

    key = str(int(flux.job.JobID(jobid)))
    js = ctx.store.load(key)
    if js is not None and userid is not None and userid not in (js.userid, os.getuid()):
        raise SessionError(f"job {jobid}: its session environment is for its owner only")
    if js is None:
        raise SessionError(f"job {jobid}: no session record in {ctx.store.dir}",
                           fix="is the fluxqr prolog configured? On multi-node instances set "
                               "[fluxqr] session-dir to a directory every node can read")
    devices = [ctx.inventory.get(r.device) for r in js.records]
    return task_environment(js, devices)


def _job_state(handle: Any, jobid: str) -> str | None:
    """The job's state name (``RUN``, ``CLEANUP``, ``INACTIVE``...), or None if unknown."""
    import flux.job

    try:
        info = flux.job.job_list_id(handle, flux.job.JobID(jobid), attrs=["state"]).get_jobinfo()
        return str(info.state)
    except (OSError, ValueError, AttributeError):
        return None


def sweep(ctx: InstanceContext, release: frozenset[str] = frozenset({"INACTIVE"})) -> list[str]:
    """Release the sessions of jobs in a state in ``release`` (or whose state is unknown).

    The broker module runs this when it is loaded (jobs already inactive: their epilog
    never ran) and when the broker terminates it at instance shutdown (then also jobs in
    CLEANUP, canceled while their epilogs may not get to run). Returns a line per job.
    """
    done = []
    for key in ctx.store.jobids():
        state = _job_state(ctx.handle, key)
        if state is not None and state not in release:
            continue
        js = ctx.store.load(key)
        if js is None:
            continue
        errors = close_sessions(js, ctx.inventory)
        try:
            _memo(ctx.handle, int(key), js)
        except (OSError, ValueError):
            pass  # the job-manager may be gone already; the release is what matters
        if errors:
            ctx.store.save(js)
            done.append(f"job {key}: {'; '.join(errors)}")
        else:
            ctx.store.delete(key)
            released = [r.device for r in js.records if r.released]
            done.append(f"job {key}: released {', '.join(released) or 'nothing'}")
    return done
