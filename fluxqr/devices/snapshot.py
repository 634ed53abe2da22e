"""The normalized device model: one :class:`DeviceSnapshot` per device per read.

Every adapter (QRMI, QDMI, Qiskit, Braket) fills in the same fields, in the same
units, so the graph, the refresh loop and the jobspec resolver never care which
SDK a number came from — the role Qiskit's ``Target`` plays for backends.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

STATUSES = ("online", "offline", "maintenance", "calibrating", "unknown")

#: Graph property name for each snapshot field (Fluxion stores strings).
PROPERTY_FIELDS = {
    "status": "status",
    "status_reason": "status_reason",
    "median_1q_error": "error_1q",
    "median_2q_error": "error_2q",
    "median_readout_error": "error_readout",
    "dead_couplers": "dead_couplers",
    "median_t1_us": "t1_us",
    "median_t2_us": "t2_us",
    "queue_depth": "queue_depth",
    "expected_wait_s": "expected_wait_s",
    "calibrated_at": "calibrated_at",
    "coupling_edges": "coupling_edges",
    "coupling_components": "coupling_components",
    "max_shots": "max_shots",
    "session_capacity": "session_capacity",
    "formats": "formats",
    "executes": "executes",
}

#: What a QPU can execute, as the ``formats`` property lists it: SDKs whose circuits
#: ``qpu.backend(sdk)`` accepts, and program formats the device takes directly.
FORMATS = ("qiskit", "braket", "pulser", "qrmi", "openqasm2", "openqasm3", "qir")

#: Python type of each graph property, for the typed in-job API (``qpu.error_2q``).
#: ``formats`` is a list and ``executes`` a bool; anything else is a string.
PROPERTY_TYPES: dict[str, type] = {
    "num_qubits": int, "sessions": int, "coupling_edges": int, "coupling_components": int,
    "dead_couplers": int, "queue_depth": int, "max_shots": int, "session_capacity": int,
    "error_1q": float, "error_2q": float, "error_readout": float, "t1_us": float,
    "t2_us": float, "expected_wait_s": float, "executes": bool, "formats": list,
    "status": str, "status_reason": str, "calibrated_at": str, "vendor": str,
    "technology": str, "adapter": str, "device": str,
}


def parse_value(key: str, text: str | None) -> object:
    """A graph property string as its Python value (see :data:`PROPERTY_TYPES`); None if unset.

    A value that does not parse as its type is None too: properties come from vendors.
    """
    if text is None or text == "":
        return None
    kind = PROPERTY_TYPES.get(key, str)
    try:
        if kind is bool:
            return {"true": True, "false": False}.get(str(text).lower())
        if kind is list:
            return [f for f in str(text).split(",") if f]
        if kind is int:
            return int(float(text))
        return kind(text)
    except (TypeError, ValueError):
        return None


def utcnow() -> str:
    """Now, as the ISO-8601 UTC string every snapshot timestamp uses."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_value(value: object) -> str:
    """Render a property value deterministically (floats to 6 significant digits)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def median_errors(values: Iterable[float | None]) -> tuple[float | None, int]:
    """Median of gate errors, leaving out dead couplers (error >= 1.0), and their count.

    A 2-qubit error of 1.0 is how IBM calibration marks a coupler that is off; mixing
    it into the median would make a healthy device look broken.
    """
    good: list[float] = []
    dead = 0
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if v >= 1.0:
            dead += 1
        else:
            good.append(float(v))
    return (statistics.median(good) if good else None), dead


def median(values: Iterable[float | None]) -> float | None:
    """Median of the known values, or None."""
    good = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return statistics.median(good) if good else None


@dataclass
class DeviceSnapshot:
    """What one read of one device found. Times are microseconds; errors are probabilities."""

    device: str
    adapter: str
    status: str = "unknown"
    status_reason: str = ""
    num_qubits: int | None = None
    coupling_edges: int | None = None
    coupling_components: int | None = None
    median_1q_error: float | None = None
    median_2q_error: float | None = None
    median_readout_error: float | None = None
    dead_couplers: int | None = None
    median_t1_us: float | None = None
    median_t2_us: float | None = None
    queue_depth: int | None = None
    expected_wait_s: float | None = None
    calibrated_at: str | None = None
    max_shots: int | None = None
    session_capacity: int | None = None
    #: what the device executes: comma-separated :data:`FORMATS` (None: not known)
    formats: str | None = None
    #: False for a device that only reports properties (e.g. a QDMI calibration model)
    executes: bool | None = None
    fetched_at: str = field(default_factory=utcnow)
    error: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")

    @property
    def ok(self) -> bool:
        """True when the read succeeded (the device itself may still be offline)."""
        return self.error is None

    @classmethod
    def failed(cls, device: str, adapter: str, error: str) -> DeviceSnapshot:
        """A snapshot for a read that failed: status unknown, the reason kept."""
        return cls(device=device, adapter=adapter, status="unknown",
                   status_reason=error, error=error)

    def properties(self) -> dict[str, str]:
        """The graph properties this snapshot sets (fields that are known)."""
        props: dict[str, str] = {}
        for fname, pname in PROPERTY_FIELDS.items():
            value = getattr(self, fname)
            if value is None or value == "":
                continue
            props[pname] = format_value(value)
        return props

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
