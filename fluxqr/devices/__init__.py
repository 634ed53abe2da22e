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

At most one read per device is outstanding: while a device's read hangs, later reads
of it wait on that same read (and time out against its start) instead of starting
another, so a hung vendor endpoint holds one thread, not one per refresh cycle.
:func:`poll` is the refresh loop's non-blocking form: it waits at most a given budget
and leaves reads that are still within their timeout running for the next cycle.
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

__all__ = ["STATUSES", "DeviceSnapshot", "adapter_for", "format_table", "outstanding", "poll",
           "probe", "read"]

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
_LOCK = threading.Lock()
#: device name -> (the device as read, the read in flight, when it started)
_OUTSTANDING: dict[str, tuple[Device, Future, float]] = {}
#: device name -> (device, adapter) for adapters that keep a client between reads
_ADAPTERS: dict[str, tuple[Device, Adapter]] = {}


def _adapter(device: Device) -> Adapter:
    """The device's adapter: reused between reads when the adapter allows it (qrmi keeps
    its client and token), rebuilt when the inventory entry changed."""
    with _LOCK:
        cached = _ADAPTERS.get(device.name)
    if cached is not None and cached[0] == device:
        return cached[1]
    adapter = adapter_for(device)
    if getattr(adapter, "reusable", False):
        with _LOCK:
            _ADAPTERS[device.name] = (device, adapter)
    return adapter


def _read_now(device: Device) -> DeviceSnapshot:
    try:
        return _adapter(device).read()
    except BaseException:
        with _LOCK:  # a client in a bad state is rebuilt on the next read
            _ADAPTERS.pop(device.name, None)
        raise


def _start(device: Device) -> tuple[Future, float, bool]:
    """The device's read in flight, or a new one: ``(future, start time, joined)``."""
    with _LOCK:
        current = _OUTSTANDING.get(device.name)
        # The same device (an edited inventory entry is another device) with a read in flight.
        if current is not None and not current[1].done() and current[0] == device:
            return current[1], current[2], True
        future = _POOL.submit(lambda: _read_now(device))
        _OUTSTANDING[device.name] = (device, future, time.monotonic())
        return future, _OUTSTANDING[device.name][2], False


def outstanding() -> dict[str, float]:
    """Devices whose read is still running: name -> seconds since it started."""
    now = time.monotonic()
    with _LOCK:
        return {name: now - start for name, (_d, f, start) in _OUTSTANDING.items()
                if not f.done()}


def _finish(device: Device, future: Future, timeout: float, start: float,
            joined: bool = False) -> DeviceSnapshot:
    """The snapshot of a read started at ``start``, or a failed one (error, timeout, …).

    ``joined``: the read was started by an earlier call (it was still in flight).
    """
    try:
        if joined and not future.done() and time.monotonic() >= start + timeout:
            # A read from an earlier call is still hanging: do not wait on it again.
            raise _StillRunning(time.monotonic() - start)
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
    except _StillRunning as hung:
        reason = (f"timed out after {timeout:g} s (the read started {hung.seconds:.0f} s ago "
                  f"is still running; no new read is started until it ends)")
    except KeyboardInterrupt:
        raise  # Ctrl-C in the waiting thread: the caller stops, the device did not fail
    except BaseException as err:  # every failure becomes a snapshot
        reason = _reason(err, device)
    log.info("device %s (%s): read failed: %s", device.name, device.adapter, reason)
    return DeviceSnapshot.failed(device.name, device.adapter, reason)


class _StillRunning(Exception):
    def __init__(self, seconds: float):
        super().__init__(seconds)
        self.seconds = seconds


def _timeout(device: Device, timeout: float | None) -> float:
    return device.timeout if timeout is None else float(timeout)


def read(device: Device, timeout: float | None = None) -> DeviceSnapshot:
    """Read one device; never raises. ``timeout`` defaults to ``device.timeout`` (seconds)."""
    future, start, joined = _start(device)
    return _finish(device, future, _timeout(device, timeout), start, joined)


def probe(devices: Inventory | Iterable[Device],
          timeout: float | None = None) -> list[DeviceSnapshot]:
    """Read every device concurrently; snapshots in inventory order. Never raises.

    Each device gets its own timeout (``timeout`` or ``device.timeout``), counted from
    the common start, so the whole probe takes about the longest timeout at worst.
    """
    devices = list(devices)
    _register_qdmi(devices)
    started = [_start(d) for d in devices]
    return [_finish(d, f, _timeout(d, timeout), start, joined)
            for d, (f, start, joined) in zip(devices, started, strict=True)]


def poll(devices: Inventory | Iterable[Device], budget: float,
         timeout: float | None = None) -> list[DeviceSnapshot]:
    """Snapshots of the devices whose reads end within ``budget`` seconds. Never raises.

    Starts a read of every device that has none in flight, waits until all are done or
    ``budget`` has passed, and returns (in inventory order) a snapshot for each finished
    read and a failed one for each read past its own timeout. Reads that are still within
    their timeout are left running and give no snapshot: the next call picks them up.
    This keeps a refresh loop on its interval however slow a vendor is.
    """
    devices = list(devices)
    _register_qdmi(devices)
    started = [_start(d) for d in devices]
    deadline = time.monotonic() + max(0.0, budget)
    out = []
    for d, (future, start, joined) in zip(devices, started, strict=True):
        limit = _timeout(d, timeout)
        wait = min(deadline, start + limit) - time.monotonic()
        if not future.done() and wait > 0:
            try:
                future.result(timeout=wait)
            except KeyboardInterrupt:
                raise
            except BaseException:  # noqa: BLE001 - _finish reports it
                pass
        if future.done() or time.monotonic() >= start + limit:
            out.append(_finish(d, future, limit, start, joined))
    return out


def _register_qdmi(devices: list[Device]) -> None:
    qdmi = [d for d in devices if d.adapter == "qdmi"]
    if qdmi:
        # QDMI device libraries must be registered before the driver is first used.
        try:
            from fluxqr.devices.qdmi_adapter import register_libraries

            register_libraries(qdmi)
        except Exception as err:  # each read reports its own problem
            log.debug("registering QDMI libraries failed: %s", err)


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
