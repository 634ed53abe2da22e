"""What every adapter shares: the :class:`Adapter` base class and Target -> medians.

An adapter turns one inventory :class:`~fluxqr.core.inventory.Device` into a
:class:`DeviceSnapshot` (:meth:`Adapter.read`, which may raise — the caller,
:func:`fluxqr.devices.read`, turns any failure into a failed snapshot) and into a
ready SDK object for use inside a job (:meth:`Adapter.backend`).

Calibration from Qiskit (fake backends, QRMI's IBM JSON) arrives as a Qiskit
``Target``; :func:`target_summary` reduces it to the snapshot's medians. QDMI and
Braket report per-qubit/per-pair numbers instead and use :func:`summarize`.
Vendor SDKs are imported inside functions only.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from fluxqr.devices.snapshot import DeviceSnapshot, median, median_errors
from fluxqr.errors import FluxqrError, MissingExtraError

if TYPE_CHECKING:
    from fluxqr.core.inventory import Device

#: Target instructions that are not gates and so have no gate error.
NON_GATES = frozenset({"measure", "delay", "reset", "barrier"})

#: Microseconds per unit, for the time units SDKs report in.
US_PER_UNIT = {"s": 1e6, "ms": 1e3, "us": 1.0, "µs": 1.0, "ns": 1e-3, "ps": 1e-6}


#: Held while importing SDKs and while doing CPU-bound SDK work (building a Target).
#: Concurrent first imports of one package from several threads can deadlock or see a
#: half-initialized module; CPU-bound work gains nothing from threads under the GIL.
#: Network waits happen outside it, so a slow device never blocks the others.
SDK_LOCK = threading.RLock()


def require(module: str, extra: str) -> Any:
    """Import an optional SDK module, or raise the one-line :class:`MissingExtraError`."""
    with SDK_LOCK:
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as err:
            raise MissingExtraError(err.name or module, extra) from err
        except ImportError as err:
            parts = module.split(".")
            blocked = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
            if any(name in sys.modules and sys.modules[name] is None for name in blocked):
                raise MissingExtraError(module, extra) from err  # import disabled
            raise FluxqrError(f"importing '{module}' failed: {err}",
                              fix=f"reinstall it with: pip install --force-reinstall "
                                  f"'fluxqr[{extra}]'") from err


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value (and its URL-encoded form) replaced by ``***``."""
    from urllib.parse import quote, quote_plus

    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, "***")
    return text


def to_us(value: float | None, unit: str | None, scale: float = 1.0) -> float | None:
    """A time in ``unit`` (times ``scale``) as microseconds; None if unknown."""
    if value is None or unit is None:
        return None
    factor = US_PER_UNIT.get(unit.strip().lower())
    if factor is None:
        raise ValueError(f"unknown time unit {unit!r} (known: {', '.join(US_PER_UNIT)})")
    return float(value) * scale * factor


def iso_utc(value: datetime | str | None) -> str | None:
    """A calibration timestamp as the snapshot's ISO-8601 UTC form (naive means UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def coupling_summary(num_qubits: int | None, edges: Iterable[tuple[Any, Any]], *,
                     fully_connected: bool = False,
                     nodes: Iterable[Any] | None = None) -> tuple[int | None, int | None]:
    """(distinct undirected edges, connected components) of a coupling graph.

    Nodes are ``range(num_qubits)`` unless ``nodes`` names them (Braket's 1-based
    labels). A fully connected device has n(n-1)/2 edges and one component.
    """
    if fully_connected:
        if not num_qubits:
            return None, None
        return num_qubits * (num_qubits - 1) // 2, 1
    import networkx as nx

    graph = nx.Graph()
    if nodes is not None:
        graph.add_nodes_from(nodes)
    elif num_qubits:
        graph.add_nodes_from(range(num_qubits))
    graph.add_edges_from((a, b) for a, b in edges if a != b)
    if graph.number_of_nodes() == 0:
        return None, None
    return graph.number_of_edges(), nx.number_connected_components(graph)


def pair_errors(errors: Iterable[tuple[Any, Any, float | None]]) -> dict[frozenset, float | None]:
    """Per undirected coupler, the best (lowest) known 2-qubit error over gates and directions.

    IBM lists each coupler once per direction and per 2q gate; one number per coupler
    keeps the median and the dead-coupler count about physical couplers.
    """
    best: dict[frozenset, float | None] = {}
    for a, b, err in errors:
        key = frozenset((a, b))
        if err is not None and math.isnan(err):
            err = None
        old = best.get(key)
        if key not in best or (err is not None and (old is None or err < old)):
            best[key] = err
    return best


def summarize(*, num_qubits: int | None, errors_1q: Iterable[float | None],
              errors_2q: Iterable[tuple[Any, Any, float | None]],
              errors_readout: Iterable[float | None], t1_us: Iterable[float | None],
              t2_us: Iterable[float | None], fully_connected: bool = False,
              nodes: Iterable[Any] | None = None) -> dict[str, Any]:
    """Snapshot fields from per-qubit and per-pair numbers (errors are probabilities)."""
    pairs = pair_errors(errors_2q)
    med_2q, dead = median_errors(pairs.values())
    edges, components = coupling_summary(num_qubits, [tuple(p) for p in pairs if len(p) == 2],
                                         fully_connected=fully_connected, nodes=nodes)
    return {
        "num_qubits": num_qubits,
        "median_1q_error": median(errors_1q),
        "median_2q_error": med_2q,
        "dead_couplers": dead if any(v is not None for v in pairs.values()) else None,
        "median_readout_error": median(errors_readout),
        "median_t1_us": median(t1_us),
        "median_t2_us": median(t2_us),
        "coupling_edges": edges,
        "coupling_components": components,
    }


def target_summary(target: Any, extra: str = "qiskit") -> dict[str, Any]:
    """Reduce a Qiskit ``Target`` to snapshot fields.

    1q error: median over every (1-qubit gate, qubit) with a known error (measure,
    delay, reset and other non-gates excluded, and virtual gates — zero duration and
    zero error, like IBM's ``rz`` — too, as they would drag the median towards 0).
    2q error: median over couplers of their best 2-qubit gate error, dead couplers
    (error >= 1) left out and counted.
    Readout: median ``measure`` error. T1/T2: medians of ``target.qubit_properties``
    in microseconds. A 2-qubit gate defined on all qubits (a simulator) means fully
    connected.
    """
    Gate = require("qiskit.circuit", extra).Gate

    n = target.num_qubits
    errors_1q: list[float | None] = []
    errors_2q: list[tuple[int, int, float | None]] = []
    fully_connected = False
    for name in target.operation_names:
        op = target.operation_from_name(name)
        if isinstance(op, type) or not isinstance(op, Gate) or name in NON_GATES:
            continue  # variable-width classes, control flow, measure/delay/reset
        for qargs, props in target[name].items():
            error = props.error if props is not None else None
            if qargs is None:
                fully_connected |= op.num_qubits == 2
            elif len(qargs) == 1:
                if error == 0 and props.duration == 0:
                    continue  # virtual gate (IBM's rz): a frame change, not an operation
                errors_1q.append(error)
            elif len(qargs) == 2:
                errors_2q.append((qargs[0], qargs[1], error))
    readout: list[float | None] = []
    if "measure" in target:
        readout = [p.error for q, p in target["measure"].items()
                   if q is not None and p is not None]
    qprops = target.qubit_properties or []
    t1 = [q.t1 * 1e6 for q in qprops if q is not None and q.t1 is not None]
    t2 = [q.t2 * 1e6 for q in qprops if q is not None and q.t2 is not None]
    return summarize(num_qubits=n, errors_1q=errors_1q, errors_2q=errors_2q,
                     errors_readout=readout, t1_us=t1, t2_us=t2,
                     fully_connected=fully_connected)


class Adapter:
    """Reads one device through one SDK. Subclasses set ``name``/``extra`` and override."""

    #: The ``adapter:`` value in devices.yaml.
    name: ClassVar[str] = ""
    #: The pip extra that installs this adapter's SDK.
    extra: ClassVar[str] = ""

    def __init__(self, device: Device):
        if device.adapter != self.name:
            raise FluxqrError(f"device '{device.name}' uses adapter '{device.adapter}', "
                              f"not '{self.name}'")
        self.device = device

    def read(self) -> DeviceSnapshot:
        """Read live properties. May raise; :func:`fluxqr.devices.read` never does."""
        raise NotImplementedError

    def backend(self) -> Any:
        """The device's own SDK object for use inside a job (``sdk="native"``)."""
        raise FluxqrError(f"the '{self.name}' adapter has no in-job backend")

    def qiskit_backend(self) -> Any:
        """A Qiskit ``BackendV2`` for the device (``sdk="qiskit"``)."""
        raise self.unsupported("qiskit")

    def braket_device(self) -> Any:
        """An Amazon Braket device for the device (``sdk="braket"``)."""
        raise self.unsupported("braket")

    def sdks(self) -> list[str]:
        """The ``sdk=`` values :meth:`sdk_backend` accepts for this device."""
        return ["native"]

    def sdk_backend(self, sdk: str) -> Any:
        """The device as an object of ``sdk``: ``native``, ``qiskit`` or ``braket``."""
        if sdk == "native":
            return self.backend()
        if sdk == "qiskit":
            return self.qiskit_backend()
        if sdk == "braket":
            return self.braket_device()
        raise FluxqrError(f"unknown sdk '{sdk}' for device '{self.device.name}'",
                          fix=f"use one of: {', '.join(self.sdks())}")

    def unsupported(self, sdk: str, why: str = "") -> FluxqrError:
        """The one-line error for an SDK this device cannot be driven with."""
        return FluxqrError(f"device '{self.device.name}' ({self.name} adapter) has no {sdk} "
                           f"backend{': ' + why if why else ''}",
                           fix=f"it supports: {', '.join(self.sdks()) or 'none'}")

    @property
    def params(self) -> Mapping[str, Any]:
        return self.device.params

    def credential(self, setting: str) -> str | None:
        """The secret for a credentials setting, read from its environment variable now."""
        var = self.device.credentials.get(setting)
        return os.environ.get(var) if var else None

    def credential_values(self) -> dict[str, str]:
        """Every configured credential that is set: setting -> secret value."""
        values = {}
        for setting in self.device.credentials:
            value = self.credential(setting)
            if value:
                values[setting] = value
        return values

    def required_credentials(self) -> dict[str, str]:
        """All configured credentials (setting -> secret); an unset variable is an error."""
        values = self.credential_values()
        for setting, var in self.device.credentials.items():
            if setting not in values:
                raise FluxqrError(f"device '{self.device.name}': credential '{setting}' needs "
                                  f"the environment variable {var}, which is not set")
        return values

    def snapshot(self, **fields: Any) -> DeviceSnapshot:
        """A snapshot of this device with the given fields."""
        return DeviceSnapshot(device=self.device.name, adapter=self.name, **fields)
