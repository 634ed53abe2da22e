"""Device adapters: read live properties of quantum devices into :class:`DeviceSnapshot`.

One adapter per interface — QRMI, QDMI (mqt-core), Qiskit BackendV2, Amazon
Braket — chosen by a device's ``adapter:`` in devices.yaml. Vendor SDKs are
imported only when a device of that kind is read.

:func:`read` and :func:`probe` never raise: an exception, a timeout, an HTTP error
or a malformed payload becomes a snapshot with status ``unknown`` and the reason.
Reads run in daemon threads, so a hung SDK call neither delays the other devices
nor keeps the interpreter from exiting.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import FluxqrError
from .snapshot import STATUSES, DeviceSnapshot

if TYPE_CHECKING:
    from ..inventory import Device, Inventory
    from .base import Adapter

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
    from .base import scrub

    text = str(err) if isinstance(err, FluxqrError) else f"{type(err).__name__}: {err}"
    text = " ".join(scrub(text, _secrets(device)).split()) or type(err).__name__
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


class _Read:
    """One read of one device, running in its own daemon thread."""

    def __init__(self, device: Device, timeout: float | None):
        self.device = device
        self.timeout = device.timeout if timeout is None else float(timeout)
        self.result: DeviceSnapshot | None = None
        self.error: BaseException | None = None
        self.deadline = time.monotonic() + self.timeout
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"fluxqr-read-{device.name}")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = adapter_for(self.device).read()
        except BaseException as err:  # noqa: BLE001 - every failure becomes a snapshot
            self.error = err

    def finish(self) -> DeviceSnapshot:
        self.thread.join(max(0.0, self.deadline - time.monotonic()))
        dev = self.device
        if self.thread.is_alive():
            reason = f"timed out after {self.timeout:g} s"
        elif self.error is not None:
            reason = _reason(self.error, dev)
        elif not isinstance(self.result, DeviceSnapshot):
            reason = f"adapter returned {type(self.result).__name__}, not a DeviceSnapshot"
        elif self.result.device != dev.name:
            reason = f"adapter returned a snapshot of '{self.result.device}'"
        else:
            return self.result
        log.info("device %s (%s): read failed: %s", dev.name, dev.adapter, reason)
        return DeviceSnapshot.failed(dev.name, dev.adapter, reason)


def read(device: Device, timeout: float | None = None) -> DeviceSnapshot:
    """Read one device; never raises. ``timeout`` defaults to ``device.timeout`` (seconds)."""
    return _Read(device, timeout).finish()


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
            from .qdmi_adapter import register_libraries

            register_libraries(qdmi)
        except Exception as err:  # noqa: BLE001 - each read reports its own problem
            log.debug("registering QDMI libraries failed: %s", err)
    reads = [_Read(d, timeout) for d in devices]
    return [r.finish() for r in reads]


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
