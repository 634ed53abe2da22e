"""The in-job API: what a job's tasks call.

``fluxqr.allocation()`` returns the job's QPUs (from its R) with their properties and
``qpu.backend()`` a ready SDK object; ``with fluxqr.session()`` opens sessions from a
script when the agent did not.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from fluxqr.core.inventory import Device, Inventory
from fluxqr.core.sessions import JobSessions, SessionStore, close_sessions, open_sessions, qpus_in_R
from fluxqr.errors import FluxqrError

#: The ``sdk=`` values :meth:`AllocatedQPU.backend` knows.
SDKS = ("native", "qiskit", "braket")


@dataclass
class AllocatedQPU:
    """One QPU of the current job.

    ``properties`` are the QPU vertex's properties as Fluxion stores them (strings);
    the same values are also attributes with their Python types (``qpu.num_qubits`` an
    int, ``qpu.error_2q`` a float, ``qpu.formats`` a list, ``qpu.executes`` a bool),
    None when the device did not report them.
    """

    name: str
    properties: dict[str, str]
    device: Device | None = None

    @property
    def qubits(self) -> int:
        return int(self.properties.get("num_qubits", self.device.qubits if self.device else 0))

    def __getattr__(self, key: str) -> Any:
        # Only called for names that are not fields: the typed graph properties.
        from fluxqr.devices.snapshot import PROPERTY_TYPES, parse_value

        if key.startswith("_") or key not in PROPERTY_TYPES:
            raise AttributeError(f"{type(self).__name__} has no attribute {key!r}")
        return parse_value(key, self.__dict__.get("properties", {}).get(key))

    def backend(self, sdk: str = "native") -> Any:
        """The device as an SDK object.

        ``sdk="native"`` (the default, as before): the adapter's own object — a Qiskit
        ``BackendV2`` for ``qiskit``, ``qdmi`` and IBM ``qrmi`` devices, a Braket
        ``LocalSimulator``/``AwsDevice`` for ``braket`` devices, a ``qrmi.QuantumResource``
        for other QRMI resources. ``sdk="qiskit"``: a Qiskit ``BackendV2`` for every
        device that can run Qiskit circuits (Braket ones through qiskit-braket-provider).
        ``sdk="braket"``: a Braket device. Otherwise a one-line error naming what the
        device supports.
        """
        from fluxqr.devices import adapter_for

        if sdk not in SDKS:
            raise FluxqrError(f"unknown sdk '{sdk}'", fix=f"use one of: {', '.join(SDKS)}")
        if self.device is None:
            raise FluxqrError(f"QPU {self.name}: its device entry is unknown",
                              fix="set FLUXQR_DEVICES to the site's devices.yaml")
        dev = self.device
        if dev.adapter == "qrmi":
            # In a job, qrmi reads <resource_id>_QRMI_* variables the session layer exported.
            dev = replace(dev, params={k: v for k, v in dev.params.items() if k != "config"},
                          credentials={})
        elif dev.adapter == "braket" and os.environ.get("FLUXQR_BRAKET_GATEWAY"):
            # The agent's gateway serves it: boto3 finds the job's key and endpoints in
            # the AWS_* variables the session layer exported, never the site's key.
            dev = replace(dev, credentials={})
        return adapter_for(dev).sdk_backend(sdk)


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
    from fluxqr.flux import instance

    try:
        import flux.job

        h = instance.connect()
        return flux.job.job_kvs_lookup(h, flux.job.JobID(jobid), keys=["R"],
                                       decode=True)["R"]
    except (FluxqrError, OSError, ImportError, KeyError, TypeError):
        return None


def _devices_file() -> str | None:
    """The site's devices.yaml: ``$FLUXQR_DEVICES``, else the enclosing instance's
    ``[fluxqr] devices`` (it names credentials by variable only, so any user may read it)."""
    if os.environ.get("FLUXQR_DEVICES"):
        return os.environ["FLUXQR_DEVICES"]
    if not os.environ.get("FLUX_URI"):
        return None
    from fluxqr.flux import instance

    try:
        path = (instance.config(instance.connect()).get("fluxqr") or {}).get("devices")
    except FluxqrError:
        return None
    return str(path) if path else None


def allocation(r: dict[str, Any] | None = None) -> Allocation:
    """The current job's QPUs and their properties (from the job's R).

    Outside Flux, or when the R cannot be read, falls back to the ``FLUXQR_QPUS``
    variables the session layer exports.
    """
    from fluxqr.core import inventory

    r = r if r is not None else _job_R()
    inv = None
    path = _devices_file()
    if path:
        inv = inventory.load(path)
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

    def backend(self, name: str | None = None, sdk: str = "native") -> Any:
        """The named QPU (default: the first) as an SDK object; see :meth:`AllocatedQPU.backend`."""
        qpu = self.qpus[name] if name else self.qpus[0]
        return qpu.backend(sdk)

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

    from fluxqr.core import inventory

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
