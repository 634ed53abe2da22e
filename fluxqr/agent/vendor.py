"""The vendor side of a hybrid job: open a session, queue an anchor task, watch the grant.

The agent holds a hybrid job while it takes the vendor side. A :class:`VendorSide` is the
small set of hooks it needs per device kind, each a blocking call the agent runs in a
worker thread (never in the broker's reactor):

* :meth:`~VendorSide.open` — open a session (QRMI ``acquire()``): it only creates it; the
  vendor activates it when its first job reaches the head of the device's queue;
* :meth:`~VendorSide.anchor` — put a minimal task into the session (a 1-qubit, 1-shot
  sampler job) so the session enters the vendor's queue now, not when the nodes start;
* :meth:`~VendorSide.poll` — where the anchor is: queued (with the device's queue length)
  or running/done, which means the vendor has granted the device;
* :meth:`~VendorSide.cancel` and :meth:`~VendorSide.close` — stop the anchor, close the
  session (QRMI ``release()`` cancels a session with queued or running jobs, else closes);
* :meth:`~VendorSide.session` and :meth:`~VendorSide.session_jobs` — what the vendor
  recorded for the session (billed seconds; the tasks submitted in it), for accounting.

Local devices (simulators, QDMI, Braket's local simulator) have no vendor queue:
:class:`LocalSide` grants at once.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from fluxqr.core.inventory import Device
from fluxqr.core.sessions import session_device
from fluxqr.errors import FluxqrError

#: The anchor: one qubit, one shot. OpenQASM 3 text, so building it needs no Qiskit.
ANCHOR_QASM = ('OPENQASM 3.0; include "stdgates.inc"; bit[1] c; qubit[1] q; '
               'c[0] = measure q[0];')
ANCHOR_INPUT = json.dumps({"pubs": [[ANCHOR_QASM]], "shots": 1, "version": 2})


@dataclass
class VendorState:
    """One look at the vendor side of a job."""

    granted: bool
    state: str                      # "queued", "running", "done", "failed", "canceled", ...
    error: str | None = None


class VendorSide:
    """Hooks for one device's vendor; the defaults describe a device with no vendor queue."""

    queued = False  # True when the device sits behind a vendor queue

    def __init__(self, device: Device):
        self.device = device

    def open(self, mode: str, max_time: float | None) -> str | None:
        """Open a session; its token (None when the device has no sessions)."""
        return None

    def anchor(self, token: str | None) -> str | None:
        """Queue the anchor task in the session; its id (None: no anchor for this device)."""
        return None

    def poll(self, token: str | None, anchor: str | None) -> VendorState:
        return VendorState(True, "granted")

    def queue_length(self) -> int | None:
        """The device's queue for all users, now (None if unknown)."""
        return None

    def cancel(self, anchor: str) -> None:
        """Stop the anchor task (best effort)."""

    def close(self, token: str) -> None:
        """Close (or cancel) the session."""

    def session(self, token: str) -> dict[str, Any] | None:
        """The vendor's record of the session (``interactive_ttl``, ``elapsed_time`` = billed
        seconds, ``state``), where the vendor offers one; None otherwise."""
        return None

    def session_jobs(self, token: str) -> list[str] | None:
        """The ids of every task submitted to the vendor in the session (the agent's own
        anchors included: it subtracts those), where the vendor lists them; None when it
        does not, or the list could not be read (then no task count is recorded)."""
        return None


class LocalSide(VendorSide):
    """A device without a vendor queue: granted at once, nothing to open."""


class QrmiSide(VendorSide):
    """A QRMI resource (IBM Quantum Compute Service and the other session-based types)."""

    queued = True

    def __init__(self, device: Device):
        super().__init__(device)
        self._lock = threading.Lock()  # the shared qrmi resource object: calls in sequence
        self._adapter: Any = None
        # One qrmi resource per open session, each with its own lock: a job's anchors,
        # keepalives and polls never wait behind another job's vendor calls (a qrmi
        # resource takes one call at a time). Measured: with eight held jobs on one
        # device a keepalive queued behind the others' polls came too late, and the
        # session lapsed (benchmarks/bench_two_queue.py, `minutes`).
        self._meta = threading.Lock()
        self._sessions: dict[str, tuple[Any, threading.Lock]] = {}

    def _resource(self) -> Any:
        """The shared adapter, for calls that name their task or session explicitly
        (status, task status/stop, release)."""
        from fluxqr.devices import adapter_for

        if self._adapter is None:
            self._adapter = adapter_for(self.device)
        return self._adapter

    def _fail(self, action: str, err: Exception) -> FluxqrError:
        if isinstance(err, FluxqrError):
            return err
        return self._resource()._fail(action, err)

    def open(self, mode: str, max_time: float | None) -> str | None:
        from fluxqr.devices import adapter_for

        # A fresh qrmi resource per session: qrmi's acquire() hands back the session a
        # resource object already holds while that session is open.
        return adapter_for(session_device(self.device, mode, max_time)).acquire()

    def _for_session(self, token: str) -> Any:
        """A qrmi resource bound to session ``token`` (qrmi sends tasks into the session it
        holds: the one it acquired, or one named by ``QRMI_IBM_QCS_SESSION_ID``)."""
        from fluxqr.devices import adapter_for

        dev = session_device(self.device, "dedicated", None)
        config = dict(dev.params.get("config") or {})
        config["QRMI_IBM_QCS_SESSION_ID"] = token
        return adapter_for(Device(**{**dev.__dict__,
                                     "params": {**dev.params, "config": config}}))

    def _session(self, token: str) -> tuple[Any, threading.Lock]:
        """Session ``token``'s own qrmi resource and its lock (made once per session)."""
        with self._meta:
            held = self._sessions.get(token)
        if held is None:
            made = (self._for_session(token), threading.Lock())  # outside: it may be slow
            with self._meta:
                held = self._sessions.setdefault(token, made)
        return held

    def anchor(self, token: str | None) -> str | None:
        if token is None:
            return None
        import qrmi

        adapter, lock = self._session(token)
        with lock:
            try:
                payload = qrmi.Payload.QiskitPrimitive(input=ANCHOR_INPUT, program_id="sampler")
                return str(adapter.resource().task_start(payload))
            except Exception as err:  # noqa: BLE001 - qrmi raises its own exception types
                raise self._fail("task_start() of the anchor", err) from None

    def poll(self, token: str | None, anchor: str | None) -> VendorState:
        if anchor is None:
            return VendorState(False, "no anchor")
        adapter, lock = self._session(token) if token else (self._resource(), self._lock)
        with lock:
            try:
                status = str(adapter.resource().task_status(anchor))
            except Exception as err:  # noqa: BLE001
                return VendorState(False, "unknown", str(self._fail("task_status()", err)))
        state = status.rsplit(".", 1)[-1].lower()
        if state in ("running", "completed"):
            return VendorState(True, "running" if state == "running" else "done")
        if state in ("failed", "cancelled", "canceled"):
            return VendorState(False, "failed" if state == "failed" else "canceled",
                               f"the anchor task ended {state} before the device was granted")
        return VendorState(False, "queued")

    def queue_length(self) -> int | None:
        with self._lock:
            try:
                status = self._resource().resource().status().to_dict()
            except Exception:  # noqa: BLE001 - the queue length is informative only
                return None
        value = status.get("pending_job_count")
        return int(value) if isinstance(value, int) else None

    def cancel(self, anchor: str) -> None:
        with self._lock:
            try:
                self._resource().resource().task_stop(anchor)
            except Exception as err:  # noqa: BLE001
                raise self._fail("task_stop() of the anchor", err) from None

    def close(self, token: str) -> None:
        with self._lock:
            self._resource().release(token)
        with self._meta:
            self._sessions.pop(token, None)

    def session(self, token: str) -> dict[str, Any] | None:
        from fluxqr.devices.qrmi_adapter import ibm_session_info

        with self._lock:
            adapter = self._resource()
            if not adapter._is_ibm():
                return None
        try:
            return ibm_session_info(adapter, token, timeout=min(10.0, self.device.timeout))
        except FluxqrError:
            return None  # informative only: usage falls back to wall time

    def session_jobs(self, token: str) -> list[str] | None:
        from fluxqr.devices.qrmi_adapter import ibm_session_jobs

        with self._lock:
            adapter = self._resource()
            if not adapter._is_ibm():
                return None  # other QRMI types (Pasqal, IQM, ...): no session job list
        try:
            return ibm_session_jobs(adapter, token, timeout=min(10.0, self.device.timeout))
        except FluxqrError:
            return None  # informative only: the row keeps no task count


def side_for(device: Device) -> VendorSide:
    """The vendor hooks for ``device``."""
    return QrmiSide(device) if device.adapter == "qrmi" else LocalSide(device)
