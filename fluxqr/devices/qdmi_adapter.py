"""The ``qdmi`` adapter: devices behind the Quantum Device Management Interface.

Uses mqt-core's ``mqt.core.qdmi`` with its built-in driver. mqt-core 4.1 ships these
device IDs: ``mqt.ddsim.default`` (decision-diagram simulator), ``mqt.sc.default``
(a 100-qubit superconducting model), ``mqt.sc.ibm.heron``, ``mqt.sc.ibm.nighthawk``
(topology only), ``mqt.sc.iqm.garnet`` and ``mqt.sc.iqm.emerald`` (with calibration).

``params.device`` is a stable device ID (or the name a device reports, e.g.
``IQM Garnet``). ``params.library`` + ``params.prefix`` add a device shared library
to the driver (through a generated manifest; this must happen before the driver is
first used in the process, which :func:`fluxqr.devices.probe` arranges).
``params.config_file`` opens the device with that configuration (calibration) file.
``credentials`` map QDMI session parameters (``token``, ``username``, ``password``,
``auth_file``, ``auth_url``, ``base_url``, ``custom1``…) to environment variables.

Normalization: times are in the device's duration unit times its scale factor and
become microseconds; fidelities become errors (1 - fidelity).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fluxqr.devices.base import SDK_LOCK, Adapter, require, summarize, to_us
from fluxqr.devices.snapshot import DeviceSnapshot, median
from fluxqr.errors import FluxqrError

if TYPE_CHECKING:
    from fluxqr.core.inventory import Device

EXTRA = "qdmi"

#: QDMI session parameters a credentials entry may set.
SESSION_PARAMETERS = ("token", "username", "password", "auth_file", "auth_url", "base_url",
                      "driver_path", "device_config", "custom1", "custom2", "custom3",
                      "custom4", "custom5")

#: QDMI device status -> snapshot status.
STATUS = {"IDLE": "online", "BUSY": "online", "CALIBRATION": "calibrating",
          "MAINTENANCE": "maintenance", "OFFLINE": "offline", "ERROR": "offline"}

#: Device ID -> manifest registered for it in this process.
_registered: dict[str, str] = {}
_manifest_dir: str | None = None


def _qdmi() -> Any:
    return require("mqt.core.qdmi", EXTRA)


def _write_manifest(device_id: str, library: str, prefix: str) -> str:
    global _manifest_dir
    if _manifest_dir is None:
        _manifest_dir = tempfile.mkdtemp(prefix="fluxqr-qdmi-")
        atexit.register(shutil.rmtree, _manifest_dir, ignore_errors=True)
    path = os.path.join(_manifest_dir, f"{len(_registered)}.qdmi.json")
    manifest = {"schema-version": 1, "qdmi": {"devices": [
        {"id": device_id, "library": os.path.abspath(library), "prefix": prefix,
         "enabled": True}]}}
    with open(path, "w", encoding="utf-8") as fp:
        json.dump(manifest, fp)
    return path


def register_library(device: Device) -> None:
    """Add the device library of one inventory device to the QDMI driver (once)."""
    params = device.params
    library = params.get("library")
    if not library:
        return
    device_id = str(params["device"])
    with SDK_LOCK:
        if device_id in _registered:
            return
        prefix = params.get("prefix")
        if not prefix:
            raise FluxqrError(f"device '{device.name}': params.library needs params.prefix "
                              f"(the library's QDMI symbol prefix, e.g. MQT_SC)")
        if not os.path.isfile(library):
            raise FluxqrError(f"device '{device.name}': QDMI library '{library}' not found")
        driver = require("mqt.core.qdmi.builtin_driver", EXTRA)
        path = _write_manifest(device_id, library, prefix)
        try:
            driver.add_manifest(path)
        except RuntimeError as err:
            raise FluxqrError(
                f"device '{device.name}': cannot add QDMI library '{library}' ({err}): the "
                f"QDMI driver was already used in this process",
                fix="read QDMI devices with a library before any other QDMI device "
                    "(fluxqr.devices.probe does), or in a fresh process") from None
        _registered[device_id] = path


def register_libraries(devices: Iterable[Device]) -> None:
    """Register the libraries of all these devices, before the driver is first used."""
    for device in devices:
        if device.adapter == "qdmi":
            register_library(device)


class QdmiAdapter(Adapter):
    """A QDMI device read through mqt-core's built-in driver."""

    name = "qdmi"
    extra = EXTRA

    def _session_parameters(self) -> dict[str, str]:
        kwargs = {}
        for setting, value in self.required_credentials().items():
            if setting not in SESSION_PARAMETERS:
                raise FluxqrError(f"device '{self.device.name}': credentials.{setting} is not a "
                                  f"QDMI session parameter (use: {', '.join(SESSION_PARAMETERS)})")
            kwargs[setting] = value
        config_file = self.params.get("config_file")
        if config_file:
            if not os.path.isfile(config_file):
                raise FluxqrError(f"device '{self.device.name}': QDMI config_file "
                                  f"'{config_file}' not found")
            kwargs["device_config_file"] = str(config_file)
        return kwargs

    def _device_id(self, qdmi: Any) -> str:
        """params.device as a stable ID: an ID as given, else the ID of the device of that name."""
        wanted = str(self.params["device"])
        ids = qdmi.builtin_driver.registered_device_ids()
        if wanted in ids:
            return wanted
        for dev in qdmi.Session().devices:
            if dev.name() == wanted:
                return dev.id
        raise FluxqrError(f"device '{self.device.name}': no QDMI device '{wanted}'",
                          fix=f"known device IDs: {', '.join(ids) or 'none'}")

    def open(self) -> Any:
        """Open a fresh session on the device: an ``mqt.core.qdmi.Device``."""
        with SDK_LOCK:
            qdmi = _qdmi()
            register_library(self.device)
            device_id = self._device_id(qdmi)
            kwargs = self._session_parameters()
            if kwargs:
                return qdmi.builtin_driver.open_device(device_id, **kwargs)
            return qdmi.open_device(device_id)

    def backend(self) -> Any:
        """mqt-core's Qiskit ``QDMIBackend`` for the device (needs qiskit too)."""
        plugin = require("mqt.core.plugins.qiskit", EXTRA)
        return plugin.QDMIBackend(self.open(), device_id=self._device_id(_qdmi()))

    def qiskit_backend(self) -> Any:
        """The ``QDMIBackend``, but only for a device that accepts programs at all."""
        dev = self.open()
        if not dev.supported_program_formats():
            raise self.unsupported("qiskit", "it reports properties only (its QDMI device "
                                   "accepts no program format)")
        plugin = require("mqt.core.plugins.qiskit", EXTRA)
        return plugin.QDMIBackend(dev, device_id=self._device_id(_qdmi()))

    def sdks(self) -> list[str]:
        if self.open().supported_program_formats():
            return ["native", "qiskit"]
        return ["native (its QDMIBackend: properties and target only)"]

    def read(self) -> DeviceSnapshot:
        with SDK_LOCK:  # a local C library: nothing to overlap, and keep it single-threaded
            return self._read(self.open())

    def _read(self, dev: Any) -> DeviceSnapshot:
        status_name = dev.status().name
        status = STATUS.get(status_name, "unknown")
        unit, scale = dev.duration_unit(), dev.duration_scale_factor() or 1.0
        sites = list(dev.regular_sites())
        num_qubits = dev.qubits_num()
        t1 = [to_us(s.t1(), unit, scale) for s in sites]
        t2 = [to_us(s.t2(), unit, scale) for s in sites]

        errors_1q: list[float | None] = []
        readout: list[float | None] = []
        errors_2q: list[tuple[int, int, float | None]] = []
        global_2q: list[float | None] = []
        any_global_2q = False
        for op in dev.operations():
            if op.is_zoned():
                continue  # zone operations (neutral atoms) act on regions, not qubits
            nq, name = op.qubits_num(), op.name()
            if nq == 1:
                if name in ("reset", "barrier", "delay"):
                    continue
                target = readout if name == "measure" else errors_1q
                op_sites = op.sites()
                if op_sites:
                    target.extend(_error(op.fidelity([s])) for s in op_sites)
                else:
                    target.append(_error(op.fidelity()))
            elif nq == 2:
                pairs = op.site_pairs()
                if pairs:
                    errors_2q.extend((a.index(), b.index(), _error(op.fidelity([a, b])))
                                     for a, b in pairs)
                else:
                    any_global_2q = True
                    global_2q.append(_error(op.fidelity()))
        coupling = dev.coupling_map()
        if coupling:
            errors_2q.extend((a.index(), b.index(), None) for a, b in coupling)
        fields = summarize(num_qubits=num_qubits, errors_1q=errors_1q, errors_2q=errors_2q,
                           errors_readout=readout, t1_us=t1, t2_us=t2,
                           fully_connected=any_global_2q and not coupling)
        if fields["median_2q_error"] is None and global_2q:
            fields["median_2q_error"] = median(global_2q)
        formats = program_formats(dev.supported_program_formats())
        return self.snapshot(status=status, queue_depth=dev.queue_length(),
                             formats=",".join(formats) or None, executes=bool(formats),
                             status_reason="" if status == "online"
                             else f"QDMI device status {status_name}", **fields)


def _error(fidelity: float | None) -> float | None:
    return None if fidelity is None else max(0.0, 1.0 - float(fidelity))


#: QDMI program format name prefix -> the ``formats`` property's name for it
PROGRAM_FORMATS = {"QASM2": "openqasm2", "QASM3": "openqasm3", "QIR": "qir"}


def program_formats(supported: Iterable[Any]) -> list[str]:
    """The ``formats`` a QDMI device executes: ``qiskit`` (through mqt-core's
    ``QDMIBackend``, which serializes to QASM) plus the program formats it takes directly.
    Empty for a device that accepts no program: it only reports properties."""
    names: list[str] = []
    for fmt in supported:
        text = str(getattr(fmt, "name", fmt)).rsplit(".", 1)[-1]
        name = next((v for k, v in PROGRAM_FORMATS.items() if text.startswith(k)), None)
        if name and name not in names:
            names.append(name)
    if any(n in ("openqasm2", "openqasm3") for n in names):
        names.insert(0, "qiskit")
    return names
