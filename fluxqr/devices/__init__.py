"""Device adapters: read live properties of quantum devices into :class:`DeviceSnapshot`.

One adapter per interface — QRMI, QDMI (mqt-core), Qiskit BackendV2, Amazon
Braket — chosen by a device's ``adapter:`` in devices.yaml. Vendor SDKs are
imported only when a device of that kind is read.

:func:`read` and :func:`probe` never raise: an exception, a timeout, an HTTP error
or a malformed payload becomes a snapshot with status ``unknown`` and the reason.
Reads run in daemon threads, so a hung SDK call neither delays the other devices
nor keeps the interpreter from exiting. Those threads are reused and never exit:
qiskit 2.6 crashes the process when a thread that first built a ``Target`` or a
``Parameter`` exits, so SDK work must only ever happen in long-lived threads.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from fluxqr.devices.snapshot import STATUSES, DeviceSnapshot
from fluxqr.errors import FluxqrError

if TYPE_CHECKING:
    from fluxqr.core.inventory import Device, Inventory
    from fluxqr.devices.base import Adapter

__all__ = ["STATUSES", "DeviceSnapshot", "adapter_for", "format_table", "probe", "read"]

log = logging.getLogger(__name__)

#: adapter name -> (module in this package, class name)
ADAPTER_CLASSES = {
    "qiskit": ("qiskit_adapter", "QiskitAdapter"),
    "qrmi": ("qrmi_adapter", "QrmiAdapter"),
    "qdmi": ("qdmi_adapter", "QdmiAdapter"),
    "braket": ("braket_adapter", "BraketAdapter"),
}

#: Longest failure reason kept in a snapshot (one line; SDK errors can be huge).
MAX_REASON = 500


def adapter_for(device: Device) -> Adapter:
    """The adapter for ``device`` (by ``device.adapter``); imports only that adapter module."""
    try:
        module_name, class_name = ADAPTER_CLASSES[device.adapter]
    except KeyError:
        raise FluxqrError(f"device '{device.name}': unknown adapter '{device.adapter}'",
                          fix=f"use one of: {', '.join(ADAPTER_CLASSES)}") from None
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)(device)


def _secrets(device: Device) -> list[str]:
    return [os.environ[v] for v in device.credentials.values() if os.environ.get(v)]


def _reason(err: BaseException, device: Device) -> str:
    """One line, secrets removed, for a failed read."""
    from fluxqr.devices.base import scrub

    text = str(err) if isinstance(err, FluxqrError) else f"{type(err).__name__}: {err}"
    text = " ".join(scrub(text, _secrets(device)).split()) or type(err).__name__
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


class _DaemonPool:
    """Daemon worker threads that are reused and never exit; grows when all are busy.

    A worker stuck in a hung SDK call stays stuck (and counts as busy); the next job
    gets a fresh worker. Unlike ``ThreadPoolExecutor``, nothing joins these threads
    at interpreter exit.
    """

    def __init__(self, prefix: str):
        self._prefix = prefix
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._ids = itertools.count(1)

    def submit(self, fn: Callable[[], Any]) -> Future:
        future: Future = Future()
        with self._lock:
            self._jobs.put((future, fn))
            if self._idle:
                self._idle -= 1  # an idle worker will take it
            else:
                threading.Thread(target=self._work, daemon=True,
                                 name=f"{self._prefix}-{next(self._ids)}").start()
        return future

    def _work(self) -> None:
        while True:
            future, fn = self._jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as err:  # handed to the waiting reader
                    future.set_exception(err)
            with self._lock:
                self._idle += 1


_POOL = _DaemonPool("fluxqr-read")


def _start(device: Device) -> Future:
    return _POOL.submit(lambda: adapter_for(device).read())


def _finish(device: Device, future: Future, timeout: float, start: float) -> DeviceSnapshot:
    """The snapshot of a read started at ``start``, or a failed one (error, timeout, …)."""
    try:
        result = future.result(timeout=max(0.0, start + timeout - time.monotonic()))
        if not isinstance(result, DeviceSnapshot):
            reason = f"adapter returned {type(result).__name__}, not a DeviceSnapshot"
        elif result.device != device.name:
            reason = f"adapter returned a snapshot of '{result.device}'"
        else:
            if result.status_reason:  # vendor text: keep secrets out of it too
                from fluxqr.devices.base import scrub

                result.status_reason = scrub(result.status_reason, _secrets(device))
            return result
    except FutureTimeout:
        future.cancel()  # a read still queued never starts; a running one is abandoned
        reason = f"timed out after {timeout:g} s"
    except BaseException as err:  # every failure becomes a snapshot
        reason = _reason(err, device)
    log.info("device %s (%s): read failed: %s", device.name, device.adapter, reason)
    return DeviceSnapshot.failed(device.name, device.adapter, reason)


def _timeout(device: Device, timeout: float | None) -> float:
    return device.timeout if timeout is None else float(timeout)


def read(device: Device, timeout: float | None = None) -> DeviceSnapshot:
    """Read one device; never raises. ``timeout`` defaults to ``device.timeout`` (seconds)."""
    start = time.monotonic()
    return _finish(device, _start(device), _timeout(device, timeout), start)


def probe(devices: Inventory | Iterable[Device],
          timeout: float | None = None) -> list[DeviceSnapshot]:
    """Read every device concurrently; snapshots in inventory order. Never raises.

    Each device gets its own timeout (``timeout`` or ``device.timeout``), counted from
    the common start, so the whole probe takes about the longest timeout at worst.
    """
    devices = list(devices)
    qdmi = [d for d in devices if d.adapter == "qdmi"]
    if qdmi:
        # QDMI device libraries must be registered before the driver is first used.
        try:
            from fluxqr.devices.qdmi_adapter import register_libraries

            register_libraries(qdmi)
        except Exception as err:  # each read reports its own problem
            log.debug("registering QDMI libraries failed: %s", err)
    start = time.monotonic()
    futures = [_start(d) for d in devices]
    return [_finish(d, f, _timeout(d, timeout), start)
            for d, f in zip(devices, futures, strict=True)]


def _cell(value: Any, kind: str = "") -> str:
    if value is None or value == "":
        return "-"
    if kind == "error" and isinstance(value, float):
        return f"{value:.2e}"
    if kind == "us" and isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def format_table(snapshots: Iterable[DeviceSnapshot]) -> str:
    """A plain-text table of snapshots, as ``fluxqr devices probe`` prints it."""
    header = ("device", "adapter", "status", "qubits", "2q error", "T1 (us)", "queue",
              "calibrated", "error")
    rows = [header]
    for s in snapshots:
        error = s.error or ""
        if len(error) > 80:
            error = error[:79] + "…"
        rows.append((s.device, s.adapter, s.status, _cell(s.num_qubits),
                     _cell(s.median_2q_error, "error"), _cell(s.median_t1_us, "us"),
                     _cell(s.queue_depth), _cell(s.calibrated_at), error))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    return "\n".join(lines)
