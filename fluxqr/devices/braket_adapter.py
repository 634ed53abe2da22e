"""The ``braket`` adapter: Amazon Braket devices and local simulators.

``params.device`` is a device ARN (an ``AwsDevice``: status, queue depth and the
capabilities document with Braket's standardized calibration) or
``local:braket_sv`` / ``local:braket_dm`` (a ``LocalSimulator``: online, no queue).
``params.region`` overrides the region an ARN implies. ``credentials`` may map
``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token`` and
``profile_name`` (any case; ``AWS_PROFILE`` too) to environment variables; without
them boto3 finds credentials the usual way.
"""

from __future__ import annotations

from typing import Any

from fluxqr.devices.base import SDK_LOCK, Adapter, iso_utc, require, summarize, to_us
from fluxqr.devices.snapshot import DeviceSnapshot, median
from fluxqr.errors import FluxqrError

EXTRA = "braket"
BOTO_SETTINGS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token",
                 "profile_name")
#: Credential setting names also accepted, as AWS spells them in the environment.
BOTO_ALIASES = {"aws_profile": "profile_name"}
STATUS = {"ONLINE": "online", "OFFLINE": "offline", "RETIRED": "offline"}
#: A shots limit this large means "no limit" (local simulators say 2**63 - 1).
UNLIMITED_SHOTS = 2**53


def _text(value: Any) -> str:
    """An enum or string as its plain string value."""
    return str(getattr(value, "value", value) or "")


def _error(fidelity: float | None) -> float | None:
    return None if fidelity is None else max(0.0, 1.0 - float(fidelity))


def _duration_us(duration: Any) -> float | None:
    if duration is None or duration.value is None:
        return None
    return to_us(duration.value, _text(duration.unit))


def _queue_size(text: Any) -> int:
    """Braket queue sizes are strings, and '>4000' beyond its reporting limit."""
    digits = "".join(ch for ch in str(text) if ch.isdigit())
    return int(digits) if digits else 0


def _best_1q_fidelity(fidelities: list[Any]) -> tuple[float | None, float | None]:
    """(gate fidelity, readout fidelity) of one qubit; plain RB preferred over variants."""
    gate: float | None = None
    gate_rank = 9
    readout: float | None = None
    for fid in fidelities:
        name = _text(fid.fidelityType.name if fid.fidelityType else "").upper()
        if "READOUT" in name:
            readout = fid.fidelity
            continue
        rank = 0 if name == "RANDOMIZED_BENCHMARKING" else 1
        if rank < gate_rank:
            gate, gate_rank = fid.fidelity, rank
    return gate, readout


def _device_level(fidelities: list[Any] | None) -> float | None:
    """One error from a v3 device-level fidelity list (its median when given)."""
    values = [_error(f.median if getattr(f, "median", None) is not None else f.fidelity)
              for f in fidelities or []]
    return median(values)


def capabilities_summary(props: Any) -> dict[str, Any]:
    """Snapshot fields from a Braket capabilities object (``device.properties``)."""
    paradigm = getattr(props, "paradigm", None)
    num_qubits = getattr(paradigm, "qubitCount", None)
    connectivity = getattr(paradigm, "connectivity", None)
    fully_connected = bool(getattr(connectivity, "fullyConnected", False)) or (
        paradigm is not None and connectivity is None)  # simulators: any pair
    std = getattr(props, "standardized", None)

    nodes: set[str] = set()
    edges: list[tuple[str, str, float | None]] = []
    if connectivity is not None and not fully_connected:
        for a, targets in (connectivity.connectivityGraph or {}).items():
            nodes.add(str(a))
            for b in targets:
                nodes.add(str(b))
                edges.append((str(a), str(b), None))
    errors_1q: list[float | None] = []
    readout: list[float | None] = []
    t1: list[float | None] = []
    t2: list[float | None] = []
    for qubit, qprops in (getattr(std, "oneQubitProperties", None) or {}).items():
        nodes.add(str(qubit))
        gate, ro = _best_1q_fidelity(qprops.oneQubitFidelity)
        errors_1q.append(_error(gate))
        readout.append(_error(ro))
        t1.append(_duration_us(getattr(qprops, "T1", None)))  # v1/v2: per qubit
        t2.append(_duration_us(getattr(qprops, "T2", None)))
    for pair, pprops in (getattr(std, "twoQubitProperties", None) or {}).items():
        a, _, b = str(pair).partition("-")
        nodes.update((a, b))
        edges.extend((a, b, _error(g.fidelity)) for g in pprops.twoQubitGateFidelity)

    fields = summarize(num_qubits=num_qubits, errors_1q=errors_1q, errors_2q=edges,
                       errors_readout=readout, t1_us=t1, t2_us=t2,
                       fully_connected=fully_connected,
                       nodes=None if fully_connected or not nodes else sorted(nodes))
    if std is not None:  # v3: device-level numbers where per-qubit ones are absent
        fallbacks = {
            "median_1q_error": lambda: _device_level(getattr(std, "singleQubitFidelity", None)),
            "median_2q_error": lambda: _device_level(getattr(std, "twoQubitGateFidelity", None)),
            "median_readout_error": lambda: _device_level(getattr(std, "readoutFidelity", None)),
            "median_t1_us": lambda: _duration_us(getattr(std, "T1", None)),
            "median_t2_us": lambda: _duration_us(getattr(std, "T2", None)),
        }
        for key, value in fallbacks.items():
            if fields[key] is None:
                fields[key] = value()
    service = getattr(props, "service", None)
    updated = getattr(std, "updatedAt", None) or getattr(service, "updatedAt", None)
    fields["calibrated_at"] = iso_utc(updated)
    shots = getattr(service, "shotsRange", None)
    if shots and isinstance(shots[1], int) and 0 < shots[1] < UNLIMITED_SHOTS:
        fields["max_shots"] = shots[1]
    return fields


def execution_formats(props: Any) -> dict[str, Any]:
    """``formats``/``executes`` from the actions a Braket device accepts.

    Gate-model actions (OpenQASM 3, JAQCD) take Braket circuits, OpenQASM 3 and, through
    qiskit-braket-provider when it is installed, Qiskit circuits; analog (AHS) devices
    take Braket programs only.
    """
    import importlib.util

    actions = [str(getattr(k, "value", k)) for k in (getattr(props, "action", None) or {})]
    gate = any(a.startswith(("braket.ir.openqasm", "braket.ir.jaqcd")) for a in actions)
    formats = ["braket"] if actions else []
    if gate:
        formats.append("openqasm3")
        if importlib.util.find_spec("qiskit_braket_provider") is not None:
            formats.append("qiskit")
    return {"formats": ",".join(formats) or None, "executes": bool(actions)}


class BraketAdapter(Adapter):
    """An Amazon Braket device (by ARN) or a local Braket simulator."""

    name = "braket"
    extra = EXTRA

    @property
    def spec(self) -> str:
        return str(self.params["device"])

    @property
    def is_local(self) -> bool:
        return self.spec.startswith("local:")

    def aws_session(self) -> Any:
        """The ``AwsSession`` AwsDevice uses: region from params or the ARN, credentials."""
        aws = require("braket.aws", EXTRA)
        return aws.AwsSession(boto_session=self.boto_session())

    def boto_session(self, default_region: str | None = None) -> Any:
        """A ``boto3.Session`` with the device's credentials and region."""
        boto3 = require("boto3", EXTRA)
        kwargs: dict[str, Any] = {}
        for setting, value in self.required_credentials().items():
            name = BOTO_ALIASES.get(setting.lower(), setting.lower())
            if name not in BOTO_SETTINGS:
                raise FluxqrError(f"device '{self.device.name}': credentials.{setting} is not a "
                                  f"boto3 setting (use: {', '.join(BOTO_SETTINGS)})")
            kwargs[name] = value
        parts = self.spec.split(":")  # arn:aws:braket:<region>::device/...
        region = self.params.get("region") or (parts[3] if len(parts) > 3 else "") or \
            default_region
        return boto3.Session(region_name=region, **kwargs)

    def backend(self) -> Any:
        """A Braket device: ``LocalSimulator`` or ``AwsDevice`` (which calls GetDevice)."""
        if self.is_local:
            devices = require("braket.devices", EXTRA)
            return devices.LocalSimulator(self.spec.removeprefix("local:"))
        aws = require("braket.aws", EXTRA)
        return aws.AwsDevice(self.spec, aws_session=self.aws_session())

    def braket_device(self) -> Any:
        return self.backend()

    def qiskit_backend(self) -> Any:
        """A Qiskit ``BackendV2`` through the maintained qiskit-braket-provider."""
        provider = require("qiskit_braket_provider", EXTRA)
        if self.is_local:
            return provider.BraketLocalBackend(self.spec.removeprefix("local:"))
        return provider.BraketAwsBackend(device=self.backend())

    def sdks(self) -> list[str]:
        return ["native", "braket", "qiskit"]

    def read(self) -> DeviceSnapshot:
        if self.is_local:
            with SDK_LOCK:  # local: CPU work only
                device = self.backend()
                fields = capabilities_summary(device.properties)
                fields.update(execution_formats(device.properties))
            return self.snapshot(status="online", queue_depth=0, **fields)
        with SDK_LOCK:
            require("braket.aws", EXTRA)
        device = self.backend()  # network: GetDevice, outside the lock
        props = device.properties
        if props is None:  # AwsDevice only warns when the document does not parse
            raise FluxqrError(f"device '{self.device.name}': Braket returned a capabilities "
                              f"document that amazon-braket-schemas cannot parse")
        raw = _text(device.status).upper()
        queue = device.queue_depth()  # network: GetDevice again, for the live queue
        with SDK_LOCK:
            fields = capabilities_summary(props)
            fields.update(execution_formats(props))
        reason = "retired" if raw == "RETIRED" else ""
        status = STATUS.get(raw, "unknown")
        if status == "online" and not device.is_available:
            reason = "outside its execution windows"
        depth = sum(_queue_size(v) for v in (queue.quantum_tasks or {}).values())
        return self.snapshot(status=status, status_reason=reason or
                             ("" if status != "unknown" else f"Braket status {raw or 'missing'}"),
                             queue_depth=depth, **fields)



def usage(arn: str, price: dict[str, float] | None, tasks: list[dict[str, Any]]
          ) -> dict[str, Any]:
    """A job's usage of one Braket device from its tasks (each: ``status``, ``shots``,
    ``execution_ms`` as Braket reported them), charged the way the SDK's cost tracker
    (``braket.tracking.Tracker``) does, with the site's ``params.price`` instead of AWS's
    price list (which the Tracker downloads, and which a site's negotiated prices and
    offline clusters do not match):

    - QPU tasks: ``task`` per task plus ``shot`` per shot, nothing for FAILED or
      CANCELLED tasks;
    - managed simulators (``quantum-simulator`` ARNs): ``minute`` per minute of billed
      duration, the execution duration but at least the SDK's ``MIN_SIMULATOR_DURATION``.

    Returns ``tasks`` and ``shots`` (all tasks created), ``qpu_seconds`` (the summed
    vendor-reported execution durations, None when Braket reported none, as for QPUs)
    and ``cost`` (None without a price)."""
    try:
        from braket.tracking.tracker import MIN_SIMULATOR_DURATION

        minimum = MIN_SIMULATOR_DURATION.total_seconds()
    except ImportError:  # the SDK's value (3 s) when it is not installed here
        minimum = 3.0
    simulator = "quantum-simulator" in arn
    seconds: float | None = None
    cost = 0.0
    for task in tasks:
        ms = task.get("execution_ms")
        if isinstance(ms, int | float):
            seconds = (seconds or 0.0) + ms / 1000.0
        if not price:
            continue
        if simulator:
            if isinstance(ms, int | float) and ms > 0:
                cost += float(price.get("minute", 0)) * max(ms / 1000.0, minimum) / 60.0
        elif task.get("status") not in ("FAILED", "CANCELLED"):
            cost += float(price.get("task", 0)) + float(price.get("shot", 0)) * \
                int(task.get("shots") or 0)
    return {"tasks": len(tasks), "shots": sum(int(t.get("shots") or 0) for t in tasks),
            "qpu_seconds": seconds, "cost": round(cost, 6) if price else None}
