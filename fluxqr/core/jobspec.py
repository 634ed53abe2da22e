"""Hybrid jobspecs: classical nodes and quantum devices as one Flux allocation.

A user writes a small YAML file (schema: ``fluxqr/schemas/hybrid-jobspec.schema.json``)
or passes ``--qpu`` options to ``flux submit``; this module turns that into a
canonical RFC 14 jobspec whose ``resources`` hold the classical
``node -> slot -> core(/gpu)`` tree *and* the QPU subtree (see :mod:`fluxqr.core.graph`),
so stock Fluxion allocates both in one match.

Live requirements (error rates, T1, queue depth, online) cannot be expressed to
Fluxion, which matches by vertex type only; they are resolved here, at submit
time, against the current device properties — from the running Fluxion or from
a graph file — and the choice and the values that decided it are recorded in
``attributes.system.quantum``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from fluxqr._io import json_path, load_structured
from fluxqr.core.model import MARKERS, QPU, QUBIT, SESSION, marker_type, type_token
from fluxqr.devices.snapshot import FORMATS
from fluxqr.errors import JobspecError

POLICIES = ("any", "first", "shortest_queue", "best_fidelity")
SESSION_MODES = ("dedicated", "batch", "none")
#: When the classical part may start (see :mod:`fluxqr.agent`): ``ready`` holds the job until
#: the vendor grants the device, ``predicted`` releases it so that the classical start meets
#: the vendor's predicted grant, ``now`` co-allocates at once (the session opens at start).
START_MODES = ("ready", "predicted", "now")
#: Start modes in which the job is submitted held (urgency 0) and released by the agent.
HELD_STARTS = ("ready", "predicted")
#: Adapters whose devices sit behind a vendor queue (and so default to ``ready``).
VENDOR_QUEUED_ADAPTERS = ("qrmi",)
#: ``quantum.sdk`` / ``--qpu-sdk``: a format the device must execute (see
#: :data:`fluxqr.devices.snapshot.FORMATS`), ``any`` (the default: it must execute
#: something) or ``none`` (the job only reads properties: report-only devices match too).
REQUEST_SDKS = ("any", "none", *FORMATS)
#: The technology that marks a simulator, ranked after hardware by ``best_fidelity``.
SIMULATOR = "simulator"

#: Bounds on a request (the schema states the same for YAML; these also cover --qpu* options).
MAX_QPUS = 64
MAX_QUBITS = 1_000_000
#: Longest vendor session (30 days) and job duration (one year) fluxqr accepts.
MAX_SESSION_SECONDS = 30 * 86400
MAX_DURATION = 365 * 86400
#: A task environment larger than this cannot be exec'd (Linux: 128 KiB per variable,
#: about 2 MiB for all arguments and variables together); refuse it at submit time.
MAX_ENV_VALUE = 128 * 1024
MAX_ENV_BYTES = 1 << 20
#: Device, vendor and technology names (as devices.yaml's schema has them).
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")

#: Environment variable names that look like secrets; never copied into a jobspec.
SECRET_ENV = re.compile(
    r"(API_?KEY|TOKEN|SECRET|PASSW(OR)?D|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY|_KEY$|^KEY$)",
    re.IGNORECASE)


@cache
def schema() -> dict[str, Any]:
    """The hybrid jobspec JSON Schema shipped with the package."""
    text = resources.files("fluxqr.schemas").joinpath("hybrid-jobspec.schema.json").read_text()
    return json.loads(text)


def parse_duration(value: float | int | str | None, where: str = "duration") -> float | None:
    """Seconds from a number or a Flux Standard Duration (``30s``, ``10m``, ``2h``, ``1d``)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise JobspecError(f"{where}: invalid duration {value!r}",
                           fix="use seconds or a duration like 30s, 10m, 2h, 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        m = re.fullmatch(r"([0-9]{0,12}\.?[0-9]{1,12})([smhd]?)", text)
        if not m:
            shown = text if len(text) <= 40 else text[:39] + "…"
            raise JobspecError(f"{where}: invalid duration {shown!r}",
                               fix="use seconds or a duration like 30s, 10m, 2h, 1d")
        scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        seconds = float(m.group(1)) * scale
    if not math.isfinite(seconds) or seconds < 0:
        raise JobspecError(f"{where}: invalid duration {value!r}",
                           fix="use a finite, non-negative duration")
    return seconds


# -- the request ---------------------------------------------------------------------------


@dataclass
class QuantumRequest:
    """The quantum part of a hybrid job (YAML ``quantum:``, or ``--qpu*`` options)."""

    qpus: int = 1
    qubits: int = 1
    vendor: str | None = None
    device: str | None = None
    technology: str | None = None
    max_error_2q: float | None = None
    min_t1_us: float | None = None
    max_queue: int | None = None
    online: bool = False
    policy: str = "any"
    exclusive: bool = False
    session_mode: str = "dedicated"
    session_max_time: float | None = None
    start: str | None = None
    #: named devices (``--qpu=ibm_fez,ibm_torino``, YAML ``qpus: [ibm_fez, ibm_torino]``):
    #: the job gets every one of them, so ``qpus`` is their number
    devices: list[str] | None = None
    #: schema-valid keys this class does not model, kept in the recorded request as given
    extra: dict[str, Any] = field(default_factory=dict)
    sdk: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> QuantumRequest:
        """From a YAML ``quantum:`` mapping or a recorded request (``session_mode`` keys)."""
        session = data.get("session") or {}
        qpus = data.get("qpus", 1)
        devices = data.get("devices")
        if isinstance(qpus, list | tuple):
            devices, qpus = list(qpus), len(qpus)
        elif devices is not None and "qpus" not in data:
            qpus = len(devices)
        return cls(
            qpus=int(qpus),
            qubits=int(data.get("qubits", 1)),
            vendor=data.get("vendor"),
            device=data.get("device"),
            technology=data.get("technology"),
            max_error_2q=data.get("max_error_2q"),
            min_t1_us=data.get("min_t1_us"),
            max_queue=data.get("max_queue"),
            online=bool(data.get("online", False)),
            policy=data.get("policy", "any"),
            exclusive=bool(data.get("exclusive", False)),
            session_mode=data.get("session_mode", session.get("mode", "dedicated")),
            session_max_time=parse_duration(data.get("session_max_time", session.get("max_time")),
                                            "quantum.session.max_time"),
            start=data.get("start"),
            devices=list(devices) if devices is not None else None,
            extra={k: copy.deepcopy(v) for k, v in data.items() if k not in _MODELLED},
            sdk=data.get("sdk"),
        )

    def validate(self) -> None:
        """Range checks shared by the YAML and the CLI options."""
        if not 1 <= self.qpus <= MAX_QPUS:
            raise JobspecError(f"qpus must be 1-{MAX_QPUS} (got {self.qpus})")
        if not 1 <= self.qubits <= MAX_QUBITS:
            raise JobspecError(f"qubits must be 1-{MAX_QUBITS} (got {self.qubits})")
        for attr in ("vendor", "device", "technology"):
            value = getattr(self, attr)
            if value is not None and (not isinstance(value, str) or not NAME_RE.fullmatch(value)):
                shown = str(value) if len(str(value)) <= 40 else str(value)[:39] + "…"
                raise JobspecError(f"{attr}: invalid name {shown!r}",
                                   fix="names are letters, digits, '_', '.', '-' (at most 64)")
        for attr, lo, hi in (("min_t1_us", 0, 1e9), ("max_queue", 0, 1e9)):
            value = getattr(self, attr)
            if value is not None and not (math.isfinite(value) and lo <= value <= hi):
                raise JobspecError(f"{attr} must be between {lo:g} and {hi:g} (got {value})")
        if self.session_max_time is not None and not (
                1 <= self.session_max_time <= MAX_SESSION_SECONDS):
            raise JobspecError(f"session max_time must be 1 s to {MAX_SESSION_SECONDS // 86400} "
                               f"days (got {self.session_max_time:g} s)",
                               fix="use e.g. 30m or 8h")
        if self.policy not in POLICIES:
            raise JobspecError(f"unknown QPU policy '{self.policy}'",
                               fix=f"use one of: {', '.join(POLICIES)}")
        if self.session_mode not in SESSION_MODES:
            raise JobspecError(f"unknown session mode '{self.session_mode}'",
                               fix=f"use one of: {', '.join(SESSION_MODES)}")
        if self.start is not None and self.start not in START_MODES:
            raise JobspecError(f"unknown start mode '{self.start}'",
                               fix=f"use one of: {', '.join(START_MODES)}")
        if self.sdk is not None and self.sdk not in REQUEST_SDKS:
            raise JobspecError(f"unknown sdk '{self.sdk}'",
                               fix=f"use one of: {', '.join(REQUEST_SDKS)}")
        if self.max_error_2q is not None and not (
                math.isfinite(self.max_error_2q) and 0 < self.max_error_2q <= 1):
            raise JobspecError(f"max_error_2q must be in (0, 1] (got {self.max_error_2q})")
        if self.device and self.qpus > 1:
            raise JobspecError(f"device '{self.device}' was named but {self.qpus} QPUs asked for",
                               fix="name no device, or ask for one QPU")
        if self.devices is not None:
            if not self.devices or not all(isinstance(d, str) and d for d in self.devices):
                raise JobspecError(f"QPU names must be non-empty (got {self.devices!r})",
                                   fix="e.g. --qpu=ibm_fez,ibm_torino or qpus: [ibm_fez]")
            if len(set(self.devices)) != len(self.devices):
                raise JobspecError(f"a QPU is named twice in {','.join(self.devices)}",
                                   fix="name each device once")
            if self.qpus != len(self.devices):
                raise JobspecError(f"{self.qpus} QPUs asked for but {len(self.devices)} named "
                                   f"({','.join(self.devices)})",
                                   fix="give either a count or the names")
            if self.device:
                raise JobspecError(f"both device '{self.device}' and QPU names "
                                   f"({','.join(self.devices)}) given", fix="give one of them")

    @property
    def live(self) -> dict[str, Any]:
        """The live requirements that are set (name -> limit)."""
        out: dict[str, Any] = {}
        for key in ("max_error_2q", "min_t1_us", "max_queue"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.online:
            out["online"] = True
        if self.sdk not in (None, "any", "none"):
            out["sdk"] = self.sdk
        return out

    @property
    def needs_execution(self) -> bool:
        """False only for ``sdk: none``: a job that reads a device's properties, runs nothing."""
        return self.sdk != "none"

    def to_dict(self) -> dict[str, Any]:
        """The request as recorded in ``attributes.system.quantum.request``."""
        known = {k: v for k, v in asdict(self).items() if v is not None and k != "extra"}
        return {**copy.deepcopy(self.extra), **known}


#: keys QuantumRequest reads (YAML and record forms); others pass through in ``extra``
_MODELLED = frozenset({"qpus", "qubits", "vendor", "device", "technology", "max_error_2q",
                       "min_t1_us", "max_queue", "online", "policy", "exclusive", "session",
                       "session_mode", "session_max_time", "devices", "start", "sdk"})


@dataclass
class HybridRequest:
    """A whole hybrid job as written in YAML."""

    command: list[str]
    name: str | None = None
    nodes: int | None = None
    tasks: int | None = None
    cores_per_task: int = 1
    gpus_per_task: int = 0
    exclusive: bool = False
    duration: float | None = None
    queue: str | None = None
    cwd: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    quantum: QuantumRequest | None = None


def _schema_check(sch: dict[str, Any], data: Any, where: str, prefix: str = "") -> None:
    """Raise the best one-line :class:`JobspecError` for ``data`` against ``sch``."""
    import jsonschema

    errors = list(jsonschema.Draft202012Validator(sch).iter_errors(data))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        loc = json_path(err.absolute_path)
        if prefix:
            loc = prefix if not err.absolute_path else \
                prefix + ("" if loc.startswith("[") else ".") + loc
        raise JobspecError(_schema_message(loc, err), where=where)


def _short(value: Any, limit: int = 40) -> str:
    """A value for an error line: repr'd, and cut (hostile input can be megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def _schema_message(loc: str, err: Any) -> str:
    """One line for a schema violation, phrased like fluxqr's own checks."""
    field = loc.rsplit(".", 1)[-1] if loc else loc
    value, kind = err.instance, err.validator
    if kind == "additionalProperties":
        return f"{loc}: {err.message} (unknown key: remove it or check its spelling)"
    if kind in ("minimum", "exclusiveMinimum"):
        return f"{field} must be >= {err.validator_value} (got {_short(value)})"
    if kind in ("maximum", "exclusiveMaximum"):
        return f"{field} must be <= {err.validator_value} (got {_short(value)})"
    if kind == "enum" and field == "policy":
        return f"unknown QPU policy {_short(value)}; use one of: {', '.join(POLICIES)}"
    if kind == "enum":
        return f"{loc}: {_short(value)} is not one of: {', '.join(map(str, err.validator_value))}"
    if kind == "pattern" and field in ("max_time", "duration"):
        return f"{loc}: invalid duration {_short(value)} (use seconds or 30s, 10m, 2h, 1d)"
    if kind == "pattern" or (kind == "maxLength" and isinstance(value, str)):
        return (f"{loc}: invalid name {_short(value)} (a letter, then letters, digits, "
                f"'_', '.' or '-'; at most 64)")
    if kind == "oneOf" and field == "qpus":
        return f"qpus must be a count from 1 to 64 or device names (got {_short(value)})"
    return f"{loc}: {err.message[:200]}"


def parse_request(data: Any, where: str = "<jobspec>") -> HybridRequest:
    """Validate a hybrid jobspec mapping against the schema and build a :class:`HybridRequest`."""

    if not isinstance(data, dict):
        raise JobspecError("expected a mapping with 'version: 1' and 'command:'", where=where)
    _schema_check(schema(), data, where)
    command = data["command"]
    if isinstance(command, str):
        try:
            command = shlex.split(command)
        except ValueError as exc:  # e.g. "No closing quotation"
            raise JobspecError(f"command: cannot split it into words: {exc}", where=where,
                               fix="balance the quotes, or write command: as a list") from None
        if not command:
            raise JobspecError("command: no words in it", where=where,
                               fix="name the program to run")
    if data.get("exclusive") and not data.get("nodes"):
        raise JobspecError("exclusive: true needs nodes:", where=where,
                           fix="set nodes: N, or drop exclusive")
    if data.get("nodes") and data.get("tasks") and data["nodes"] > data["tasks"]:
        raise JobspecError(f"nodes ({data['nodes']}) must not exceed tasks ({data['tasks']})",
                           where=where)
    quantum = None
    if data.get("quantum") is not None:
        try:
            quantum = QuantumRequest.from_mapping(data["quantum"])
            quantum.validate()
        except JobspecError as exc:
            raise JobspecError(f"quantum: {exc}", where=where) from None
    return HybridRequest(
        command=list(command), name=data.get("name"), nodes=data.get("nodes"),
        tasks=data.get("tasks"), cores_per_task=data.get("cores_per_task", 1),
        gpus_per_task=data.get("gpus_per_task", 0), exclusive=data.get("exclusive", False),
        duration=_duration(data.get("duration")), queue=data.get("queue"),
        cwd=data.get("cwd"), environment=dict(data.get("environment") or {}), quantum=quantum)


def _duration(value: Any) -> float | None:
    seconds = parse_duration(value, "duration")
    if seconds is not None and seconds > MAX_DURATION:
        raise JobspecError(f"duration: {seconds:g} s is over the {MAX_DURATION // 86400}-day "
                           "limit", fix="use 0 (no limit) or a realistic duration")
    return seconds


def load_request(path: str | os.PathLike) -> HybridRequest:
    """Read a hybrid jobspec YAML/JSON file."""
    return parse_request(load_structured(path, "jobspec"), str(path))


# -- what the devices look like now --------------------------------------------------------


@dataclass
class QpuInfo:
    """A QPU as the resolver sees it: its graph path, up/down, and current properties."""

    name: str
    path: str
    up: bool
    properties: dict[str, str]

    def num(self, key: str) -> float | None:
        try:
            return float(self.properties[key])
        except (KeyError, ValueError):
            return None

    @property
    def qubits(self) -> int:
        return int(self.num("num_qubits") or 0)

    def describe(self, keys: Iterable[str] = ("status", "error_2q", "t1_us", "queue_depth")) -> str:
        vals = [f"{k}={self.properties[k]}" for k in keys if k in self.properties]
        if not self.up:
            vals.insert(0, "down")
        return f"{self.name} ({', '.join(vals) or 'no live data'})"


@dataclass
class ResourceView:
    """Current devices plus the node shape needed to turn ``-n N`` into a node request."""

    qpus: list[QpuInfo]
    cores_per_node: int | None = None
    source: str = "graph"


def view_from_graph(graph: Any, source: str = "graph") -> ResourceView:
    """A :class:`ResourceView` of a :class:`~fluxqr.core.graph.ResourceGraph` (offline)."""
    qpus = [QpuInfo(m["name"], m["paths"]["containment"], not m.get("status"),
                    dict(m.get("properties") or {})) for m in graph.qpus()]
    cores = [len(ch.get("core", [])) for _, _, ch, _ in graph.ranks()]
    return ResourceView(qpus, max(cores) if cores else None, source)


# -- resolution ----------------------------------------------------------------------------


@dataclass
class Resolution:
    """What the resolver decided: pinned devices (or None: let Fluxion pick), and why."""

    pinned: list[str] | None
    candidates: list[str]
    decided_by: dict[str, dict[str, str]]
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"pinned": self.pinned, "candidates": self.candidates,
                "decided_by": self.decided_by, "source": self.source}


_DECISION_KEYS = ("num_qubits", "status", "technology", "error_2q", "t1_us", "queue_depth",
                  "formats", "calibrated_at", "updated")
#: ``decided_by`` key listing devices skipped because a value they were judged on is
#: unknown (device names start with a letter, so it never collides with one).
SKIPPED = "_skipped"


def _fails_live(q: QpuInfo, req: QuantumRequest) -> list[str]:
    """Why ``q`` misses the live requirements (empty: it meets them)."""
    why = []
    if req.needs_execution and q.properties.get("executes") == "false":
        why.append("reports properties only (executes=false)")
    if req.sdk not in (None, "any", "none"):
        formats = q.properties.get("formats")
        if formats is None:
            why.append("formats unknown")
        elif req.sdk not in formats.split(","):
            why.append(f"formats={formats}")
    status = q.properties.get("status", "unknown")
    if req.online and not q.up:
        why.append(f"down (status={status})")
    elif req.online and status != "online":
        why.append(f"status={status}")
    for key, prop, ok in (("max_error_2q", "error_2q", lambda v, lim: v <= lim),
                          ("min_t1_us", "t1_us", lambda v, lim: v >= lim),
                          ("max_queue", "queue_depth", lambda v, lim: v <= lim)):
        limit = getattr(req, key)
        if limit is None:
            continue
        value = q.num(prop)
        if value is None:
            why.append(f"{prop} unknown")
        elif not ok(value, limit):
            why.append(f"{prop}={q.properties[prop]}")
    return why


def default_start(req: QuantumRequest, qpus: Iterable[QpuInfo]) -> str:
    """The request's start mode, or its default: ``ready`` when any of the devices that may
    serve it sits behind a vendor queue, else ``now`` (local simulators need no wait)."""
    if req.start:
        return req.start
    vendor = any(q.properties.get("adapter") in VENDOR_QUEUED_ADAPTERS for q in qpus)
    return "ready" if vendor and req.session_mode != "none" else "now"


def _rank_key(req: QuantumRequest, q: QpuInfo) -> tuple:
    inf = math.inf
    if req.policy == "best_fidelity":
        # Hardware first: an ideal simulator's error of 0 says nothing about fidelity.
        # Asked for simulators (--qpu-tech=simulator), they are all that is left anyway.
        simulator = q.properties.get("technology", "").lower() == SIMULATOR
        return (simulator, q.num("error_2q") if q.num("error_2q") is not None else inf, q.name)
    if req.policy == "shortest_queue":
        return (q.num("queue_depth") if q.num("queue_depth") is not None else inf,
                q.num("error_2q") if q.num("error_2q") is not None else inf, q.name)
    return ()  # "first"/"any": keep graph order


def resolve(req: QuantumRequest, view: ResourceView) -> Resolution:
    """Check a quantum request against the devices and decide which may serve it.

    Raises:
        JobspecError: one line saying why nothing can serve the request, with the
            closest candidates and their values where live requirements failed.
    """
    req.validate()
    qpus = view.qpus
    if not qpus:
        raise JobspecError(f"this instance's resource graph has no QPUs ({view.source})",
                           fix="ask the admin to load a graph built with "
                               "'fluxqr graph build --devices devices.yaml'")
    pool = qpus
    for attr, prop, label in (("vendor", "vendor", "vendor"), ("technology", "technology",
                              "technology"), ("device", "device", "device")):
        want = getattr(req, attr)
        if not want:
            continue
        # compared as type tokens, as the marker vertices name them ("IBM" == "ibm")
        match = [q for q in pool if type_token(q.properties.get(
            prop, q.name if prop == "device" else "")) == type_token(want)]
        if not match:
            known = sorted({q.properties.get(prop, q.name if prop == "device" else "?")
                            for q in qpus})
            raise JobspecError(f"no QPU with {label} '{want}'",
                               fix=f"known {label}s: {', '.join(known)}")
        pool = match
    if req.devices:
        return _resolve_named(req, pool, qpus, view.source)
    big_enough = [q for q in pool if q.qubits >= req.qubits]
    if not big_enough:
        largest = max(pool, key=lambda q: q.qubits)
        scope = "" if pool is qpus else " matching the selection"
        raise JobspecError(f"no QPU{scope} has {req.qubits} qubits: largest is {largest.name} "
                           f"with {largest.qubits} qubits",
                           fix="ask for fewer qubits (--qubits / quantum.qubits)")
    pool = big_enough
    if len(pool) < req.qpus:
        raise JobspecError(f"{req.qpus} QPUs asked for but only {len(pool)} match "
                           f"({', '.join(q.name for q in pool)})", fix="ask for fewer QPUs")
    live = req.live
    qualified = [q for q in pool if not _fails_live(q, req)]
    if len(qualified) < req.qpus:
        limits = ", ".join([f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                            for k, v in live.items()]
                           + (["executes=true"] if req.needs_execution else []))
        # Closest first: fewest misses, and a known value ahead of an unknown one.
        closest = sorted(pool, key=lambda q: (len(_fails_live(q, req)), sum(
            "unknown" in w for w in _fails_live(q, req)), q.name))[:3]
        detail = "; ".join(f"{q.name}: {', '.join(_fails_live(q, req))}" for q in closest)
        raise JobspecError(f"no{'' if req.qpus == 1 else ' ' + str(req.qpus)} QPU meets the "
                           f"requirements ({limits}); closest: {detail}",
                           fix="relax the requirements or wait for the devices to recover")
    decided = {q.name: {k: q.properties[k] for k in _DECISION_KEYS if k in q.properties}
               for q in qualified}
    skipped = {}
    for q in pool:
        why = _fails_live(q, req)
        if any("unknown" in w for w in why):
            skipped[q.name] = ", ".join(why)
    # Fluxion can pick among the qualified devices by itself only when they are exactly the
    # devices its type markers select; otherwise pin the best ones.
    held = default_start(req, qualified) in HELD_STARTS
    if req.policy == "any" and len(qualified) == len(pool) and not held:
        return Resolution(None, [q.name for q in qualified], decided, view.source)
    if req.policy == "any" and held:
        # The agent opens the vendor session before Fluxion matches, so it must know the
        # device: pick the shortest vendor queue, as a user asking for "any" would want.
        ranked = sorted(qualified, key=lambda q: _rank_key(
            QuantumRequest(policy="shortest_queue"), q))
    elif req.policy != "any":
        ranked = sorted(qualified, key=lambda q: _rank_key(req, q)) \
            if req.policy != "first" else qualified
    else:
        ranked = qualified
    chosen = [q.name for q in ranked[:req.qpus]]
    decided_by = {n: decided[n] for n in chosen}
    if skipped:
        decided_by[SKIPPED] = skipped
    return Resolution(chosen, [q.name for q in qualified], decided_by, view.source)


def _resolve_named(req: QuantumRequest, pool: list[QpuInfo], qpus: list[QpuInfo],
                   source: str) -> Resolution:
    """Every named device must exist, match the selection, and meet the requirements."""
    by_name = {q.name.lower(): q for q in qpus}
    chosen = []
    for name in req.devices or []:
        q = by_name.get(name.lower())
        if q is None:
            raise JobspecError(f"no QPU named '{name}'",
                               fix=f"known QPUs: {', '.join(sorted(q.name for q in qpus))}")
        if q not in pool:
            raise JobspecError(f"QPU '{q.name}' does not match the vendor/technology asked for",
                               fix="drop the selection or name other devices")
        if q.qubits < req.qubits:
            raise JobspecError(f"QPU '{q.name}' has {q.qubits} qubits, {req.qubits} asked for",
                               fix="ask for fewer qubits (--qubits / quantum.qubits)")
        why = _fails_live(q, req)
        if why:
            raise JobspecError(f"QPU '{q.name}' misses the requirements: {', '.join(why)}",
                               fix="relax the requirements or name other devices")
        chosen.append(q)
    decided = {q.name: {k: q.properties[k] for k in _DECISION_KEYS if k in q.properties}
               for q in chosen}
    names = [q.name for q in chosen]
    return Resolution(names, names, decided, source)


# -- translation ---------------------------------------------------------------------------


def _qpu_resource(req: QuantumRequest, device: str | None,
                  info: QpuInfo | None = None) -> dict[str, Any]:
    """One ``qpu`` entry; with ``info``, every marker of that device (for nested instances)."""
    session: dict[str, Any] = {"type": SESSION, "count": 1, "exclusive": True,
                               "with": [{"type": QUBIT, "count": req.qubits}]}
    children: list[dict[str, Any]] = [session]
    vendor, technology = req.vendor, req.technology
    if info is not None:
        vendor = info.properties.get("vendor") or vendor
        technology = info.properties.get("technology") or technology
    for kind, value in (("vendor", vendor), ("technology", technology),
                        ("device", device or req.device)):
        if value:
            marker: dict[str, Any] = {"type": marker_type(kind, value), "count": 1}
            if info is not None:
                # Fluxion leaves non-exclusive leaves out of R, so a nested instance's graph
                # would lack the marker. Exclusive, it lands in R -- but Fluxion then holds
                # the whole marker vertex, so other jobs that select this device by marker
                # wait until the nested instance ends (verified on flux-sched 0.54).
                marker["exclusive"] = True
            children.append(marker)
    res: dict[str, Any] = {"type": QPU, "count": 1 if device else req.qpus, "with": children}
    if req.exclusive:
        res["exclusive"] = True
    return res


def quantum_resources(req: QuantumRequest, resolution: Resolution,
                      view: ResourceView | None = None) -> list[dict[str, Any]]:
    """The RFC 14 resource entries for the quantum part.

    With ``view``, each pinned device is asked for with all its markers, so that they land
    in the job's R and a nested instance can select by vendor/device/tech in its own graph.
    """
    if resolution.pinned:
        infos = {q.name: q for q in view.qpus} if view else {}
        return [_qpu_resource(req, name, infos.get(name)) for name in resolution.pinned]
    return [_qpu_resource(req, None)]


def classical_resources(nodes: int | None, tasks: int | None, cores_per_task: int = 1,
                        gpus_per_task: int = 0, exclusive: bool = False,
                        cores_per_node: int | None = None) -> tuple[dict[str, Any], dict]:
    """``node -> slot -> core(/gpu)`` and the task count, as ``flux submit`` builds them.

    Always a node request: Fluxion cannot satisfy a top-level ``slot`` beside a ``qpu``.
    Without a node count, the fewest nodes that hold the tasks are used.
    """
    if nodes is None:
        ntasks = tasks or 1
        if cores_per_node:
            per_node = max(1, cores_per_node // cores_per_task)
            nodes = max(1, math.ceil(ntasks / per_node))
        else:
            nodes = 1
        nodes = min(nodes, ntasks)
    ntasks = tasks or nodes
    if nodes > ntasks:
        raise JobspecError(f"node count ({nodes}) must not be greater than task count ({ntasks})")
    children: list[dict[str, Any]] = [{"type": "core", "count": cores_per_task}]
    if gpus_per_task:
        children.append({"type": "gpu", "count": gpus_per_task})
    slots = math.ceil(ntasks / nodes)
    node: dict[str, Any] = {"type": "node", "count": nodes,
                            "with": [{"type": "slot", "count": slots, "label": "task",
                                      "with": children}]}
    if exclusive:
        node["exclusive"] = True
    count = {"total": ntasks} if ntasks % nodes else {"per_slot": 1}
    return node, count


def check_environment(env: Mapping[str, str], where: str = "environment") -> None:
    """Refuse an environment that the tasks could not be started with, or that bloats KVS."""
    total = 0
    for key, value in env.items():
        size = len(key.encode()) + len(str(value).encode()) + 2
        if size > MAX_ENV_VALUE:
            raise JobspecError(f"{where}: variable {key[:40]} is {size} bytes, over the "
                               f"{MAX_ENV_VALUE // 1024} KiB limit",
                               fix="pass large data in a file, not the environment")
        total += size
    if total > MAX_ENV_BYTES:
        raise JobspecError(f"{where}: {total} bytes, over the {MAX_ENV_BYTES >> 20} MiB limit",
                           fix="unset large variables before submitting (or use env -i)")


def scrub_environment(env: Mapping[str, str], extra_secret_names: Iterable[str] = ()) -> dict:
    """Drop variables that hold secrets (by name) so they never land in a jobspec."""
    extra = set(extra_secret_names)
    return {k: v for k, v in env.items() if k not in extra and not SECRET_ENV.search(k)}


def apply_quantum(jobspec: dict[str, Any], req: QuantumRequest, view: ResourceView,
                  nested: bool = False) -> Resolution:
    """Add the quantum request to an existing canonical jobspec, in place.

    Used by the translator and by :func:`prepare`: a top-level slot (what
    ``flux submit -n N`` makes) is wrapped in a node request, the QPU entries are
    appended, and ``attributes.system.quantum`` records the request and the decision
    (other keys of that record, e.g. ``urgency``, are kept).

    ``nested``: the job is a Flux instance (``flux batch/alloc``). Its devices are pinned
    (the policy's first choice) and asked for with every marker, so the child's graph can
    select by vendor, device and technology.
    """
    resolution = resolve(req, view)
    if nested and resolution.pinned is None:
        chosen = resolution.candidates[:req.qpus]
        resolution = Resolution(chosen, resolution.candidates,
                                {n: resolution.decided_by.get(n, {}) for n in chosen},
                                resolution.source)
    res = jobspec["resources"]
    if len(res) == 1 and res[0].get("type") == "slot":
        slot = res[0]
        cores = next((c["count"] for c in slot.get("with", []) if c["type"] == "core"), 1)
        nslots = slot["count"] if isinstance(slot["count"], int) else 1
        per_node = max(1, (view.cores_per_node or cores * nslots) // max(1, cores))
        nnodes = max(1, math.ceil(nslots / per_node))
        slot = dict(slot, count=math.ceil(nslots / nnodes))
        res[0] = {"type": "node", "count": nnodes, "with": [slot]}
        for task in jobspec.get("tasks", []):
            if task.get("count") == {"per_slot": 1} and nslots % nnodes:
                task["count"] = {"total": nslots}
    res.extend(quantum_resources(req, resolution, view if nested else None))
    system = jobspec.setdefault("attributes", {}).setdefault("system", {})
    record = system.get("quantum") if isinstance(system.get("quantum"), dict) else {}
    chosen = [q for q in view.qpus if q.name in (resolution.pinned or resolution.candidates)]
    request = dict(req.to_dict(), start=default_start(req, chosen))
    system["quantum"] = {**record, "request": request, "resolution": resolution.to_dict()}
    return resolution


def start_mode(jobspec: Mapping[str, Any]) -> str | None:
    """The start mode recorded in a hybrid jobspec (None for a classical one)."""
    quantum = ((jobspec.get("attributes") or {}).get("system") or {}).get("quantum")
    if not isinstance(quantum, Mapping):
        return None
    request = quantum.get("request") or {}
    start = request.get("start") if isinstance(request, Mapping) else None
    return start if start in START_MODES else "now"


def might_hold(request: Mapping[str, Any], devices_file: str | None) -> str:
    """The default start mode of a recorded request, judged from the site's inventory
    (``ready`` when a device the request may get sits behind a vendor queue): what a
    client decides before the instance resolves the request. ``now`` if unknown."""
    if request.get("session_mode") == "none" or not devices_file:
        return "now"
    from fluxqr.core import inventory
    from fluxqr.errors import FluxqrError

    try:
        inv = inventory.load(devices_file)
    except (FluxqrError, OSError):
        return "now"  # unreadable here: the agent holds the job on sight if it must
    names = set(request.get("devices") or ([request["device"]] if request.get("device")
                                           else []))
    for dev in inv:
        if names and dev.name not in names:
            continue
        if request.get("vendor") and dev.vendor.lower() != str(request["vendor"]).lower():
            continue
        if request.get("technology") and \
                dev.technology.lower() != str(request["technology"]).lower():
            continue
        if dev.adapter in VENDOR_QUEUED_ADAPTERS and dev.qubits >= int(request.get("qubits", 1)):
            return "ready"
    return "now"

def translate(request: HybridRequest, view: ResourceView | None,
              environment: Mapping[str, str] | None = None,
              secret_names: Iterable[str] = ()) -> dict[str, Any]:
    """Build the canonical RFC 14 jobspec for a hybrid request.

    Args:
        request: the parsed YAML.
        view: current devices (needed when the request has a ``quantum:`` part).
        environment: the submitting environment (default ``os.environ``); variables whose
            names look secret, or are listed in ``secret_names``, are left out.
    """
    node, count = classical_resources(request.nodes, request.tasks, request.cores_per_task,
                                      request.gpus_per_task, request.exclusive,
                                      view.cores_per_node if view else None)
    env = scrub_environment(os.environ if environment is None else environment, secret_names)
    env.update(request.environment)
    check_environment(env, "environment (submitting environment plus the jobspec's)")
    system: dict[str, Any] = {"duration": request.duration or 0, "environment": env,
                              "cwd": request.cwd or os.getcwd()}
    if request.name:
        system["job"] = {"name": request.name}
    if request.queue:
        system["queue"] = request.queue
    jobspec: dict[str, Any] = {
        "version": 1,
        "resources": [node],
        "tasks": [{"command": list(request.command), "slot": "task", "count": count}],
        "attributes": {"system": system},
    }
    if request.quantum is not None:
        if view is None:
            raise JobspecError("a quantum request needs the current devices",
                               fix="run inside a Flux instance, or pass --graph FILE")
        apply_quantum(jobspec, request.quantum, view)
    return jobspec


def quantum_of(jobspec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``attributes.system.quantum`` record of a jobspec, if any."""
    return copy.deepcopy(((jobspec.get("attributes") or {}).get("system") or {}).get("quantum"))


# -- submitted jobspecs: the one path every submission takes (the ingest frobnicator) ------

#: keys of ``attributes.system.quantum`` that are the record, not the request
RECORD_KEYS = ("request", "resolution", "urgency")
ATTR = "attributes.system.quantum"


@cache
def _request_schema() -> dict[str, Any]:
    return {"$defs": schema()["$defs"], "$ref": "#/$defs/quantum"}


def _is_int(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _is_number(value: Any, lo: float, hi: float, low_open: bool = False) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return (lo < value if low_open else lo <= value) and value <= hi  # NaN fails both


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and NAME_RE.fullmatch(value) is not None


def _is_names(value: Any) -> bool:
    return (isinstance(value, list) and 1 <= len(value) <= MAX_QPUS
            and all(_is_name(v) for v in value) and len(set(value)) == len(value))


def _is_duration(value: Any) -> bool:
    return (_is_number(value, 1, MAX_SESSION_SECONDS) or
            (isinstance(value, str) and len(value) <= 32
             and re.fullmatch(r"[0-9.]+[smhd]?", value) is not None))


#: the quantum schema's properties (``$defs.quantum``), each as a strict test; a test
#: passes only values the schema accepts (a stricter test only costs the slow path)
_REQUEST_KEYS: dict[str, Callable[[Any], bool]] = {
    "qpus": lambda v: _is_int(v, 1, MAX_QPUS) or _is_names(v),
    "devices": _is_names,
    "qubits": lambda v: _is_int(v, 1, MAX_QUBITS),
    "vendor": _is_name, "device": _is_name, "technology": _is_name,
    "max_error_2q": lambda v: _is_number(v, 0, 1, low_open=True),
    "min_t1_us": lambda v: _is_number(v, 0, 1e9),
    "max_queue": lambda v: _is_int(v, 0, 1_000_000_000),
    "online": lambda v: isinstance(v, bool), "exclusive": lambda v: isinstance(v, bool),
    "policy": lambda v: isinstance(v, str) and v in POLICIES,
    "sdk": lambda v: isinstance(v, str) and v in REQUEST_SDKS,
    "start": lambda v: isinstance(v, str) and v in START_MODES,
    "session": lambda v: isinstance(v, dict) and set(v) <= {"mode", "max_time"} and (
        "mode" not in v or (isinstance(v["mode"], str) and v["mode"] in SESSION_MODES)) and (
        "max_time" not in v or _is_duration(v["max_time"])),
}


def request_ok(data: Any) -> bool:
    """True only if the quantum request ``data`` (YAML form) is valid against the schema's
    ``$defs.quantum``: explicit checks, microseconds instead of jsonschema's ~30 ms import
    and validation on every ``flux submit --qpu…``. False may also mean "not sure" (it is
    stricter than the schema in corners, e.g. a float 2.0 for an integer): then the schema
    decides, and words the error. tests/test_jobspec.py checks it never passes what the
    schema rejects."""
    return isinstance(data, dict) and all(
        isinstance(k, str) and k in _REQUEST_KEYS and _REQUEST_KEYS[k](v)
        for k, v in data.items())


def request_record(values: Mapping[str, Any], where: str = ATTR) -> dict[str, Any]:
    """A quantum request checked and put in the recorded form (``...quantum.request``).

    ``values`` may use the YAML keys (``session: {mode: ...}``, ``qpus: [names]``) or the
    recorded ones (``session_mode``, ``devices``). This is all a client (the CLI plugin,
    the Python API) needs to do; the instance's frobnicator does the rest.
    """
    yaml_form = dict(values)
    session = dict(yaml_form.pop("session", None) or {})
    for key, sub in (("session_mode", "mode"), ("session_max_time", "max_time")):
        if key in yaml_form:
            session[sub] = yaml_form.pop(key)
    if session:
        yaml_form["session"] = session
    if not request_ok(yaml_form):  # the common, valid case never loads jsonschema
        _schema_check(_request_schema(), yaml_form, where)
    try:
        req = QuantumRequest.from_mapping(yaml_form)
        req.validate()
    except JobspecError as exc:
        raise JobspecError(str(exc), where=where) from None
    return req.to_dict()


def _marker_value(rtype: str) -> tuple[str, str] | None:
    """``vendor.ibm`` -> ("vendor", "ibm"); None for other types."""
    prefix, dot, value = rtype.partition(".")
    kinds = {v: k for k, v in MARKERS.items()}
    return (kinds[prefix], value) if dot and prefix in kinds and value else None


def _bad_shape(msg: str) -> JobspecError:
    return JobspecError(f"resources: {msg}",
                        fix="write qpu -> qubit: N (optionally with vendor.X, device.X, tech.X "
                            "children), or use attributes.system.quantum instead")


def _count(entry: Mapping[str, Any], what: str) -> int:
    count = entry.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise _bad_shape(f"{what} count must be a positive integer (got {count!r})")
    return count


def _read_qpu_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What one hand-written ``qpu`` resource entry asks for, as request keys."""
    out: dict[str, Any] = {"qpus": _count(entry, "qpu")}
    if entry.get("exclusive"):
        out["exclusive"] = True
    children = list(entry.get("with") or [])
    while children:
        child = children.pop(0)
        if not isinstance(child, Mapping):
            raise _bad_shape("a qpu child must be a mapping")
        ctype = child.get("type")
        marker = _marker_value(str(ctype))
        if ctype == QUBIT:
            out["qubits"] = _count(child, "qubit")
        elif ctype == SESSION:
            if _count(child, "session") != 1:
                raise _bad_shape("a job holds one session per QPU (session count must be 1)")
            children.extend(child.get("with") or [])
        elif marker:
            kind, value = marker
            if kind in out and out[kind] != value:
                raise _bad_shape(f"two {kind} markers under one qpu ({out[kind]}, {value})")
            out[kind] = value
        else:
            raise _bad_shape(f"unknown resource type '{ctype}' under qpu")
    return out


def _request_from_resources(entries: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine the hand-written ``qpu`` entries into one request."""
    reads = [_read_qpu_entry(e) for e in entries]
    if len(reads) == 1:
        req = reads[0]
        if "device" in req and req["qpus"] > 1:
            raise _bad_shape(f"{req['qpus']} QPUs of device '{req['device']}' asked for")
        return req
    if not all("device" in r and r["qpus"] == 1 for r in reads):
        raise _bad_shape("several qpu entries must each name one device (device.NAME marker)")
    out: dict[str, Any] = {"devices": [r["device"] for r in reads], "qpus": len(reads)}
    for key in ("qubits", "vendor", "technology", "exclusive"):
        values = {r[key] for r in reads if key in r}
        if len(values) > 1:
            raise _bad_shape(f"the qpu entries disagree on {key} ({', '.join(map(str, values))})")
        if values:
            out[key] = values.pop()
    return out


def is_canonical(entries: list[Mapping[str, Any]]) -> bool:
    """True when every ``qpu`` entry holds a ``session -> qubit`` (the graph's shape)."""
    return all(any(c.get("type") == SESSION and any(q.get("type") == QUBIT
                                                    for q in c.get("with") or [])
                   for c in e.get("with") or []) for e in entries)


def _nested_qpus(res: Iterable[Any], depth: int = 0) -> bool:
    for entry in res:
        if isinstance(entry, Mapping):
            if depth and entry.get("type") == QPU:
                return True
            if _nested_qpus(entry.get("with") or [], depth + 1):
                return True
    return False


def is_nested_instance(jobspec: Mapping[str, Any]) -> bool:
    """True for ``flux batch``/``flux alloc`` jobs: their one task is a Flux broker."""
    tasks = jobspec.get("tasks") or []
    cmd = tasks[0].get("command") if tasks and isinstance(tasks[0], Mapping) else None
    return isinstance(cmd, list) and len(cmd) >= 2 and \
        os.path.basename(str(cmd[0])) == "flux" and cmd[1] == "broker"


def prepare(jobspec: dict[str, Any], view: Callable[[bool], ResourceView],
            secret_names: Iterable[str] = ()) -> Resolution | None:
    """Make a submitted jobspec's quantum part canonical, in place; None for classical jobs.

    The one path every hybrid submission takes (the instance's ingest frobnicator):

    - a request in ``attributes.system.quantum`` — recorded (``{"request": {...}}``, what the
      CLI plugin and the Python API set) or short (``--setattr=system.quantum.qubits=20``) —
      is checked, resolved against ``view(need_cores)`` and turned into resources;
    - hand-written ``qpu`` / ``qpu -> qubit`` / ``qpu -> session -> qubit`` entries are read
      back into a request (merged with the attribute's) and rebuilt the canonical way;
    - a jobspec that is already canonical and resolved (``fluxqr jobspec``, ``flux qr
      submit``) is checked and kept.

    A classical jobspec (no quantum attribute, no ``qpu`` resource) costs two lookups.
    """
    system = (jobspec.get("attributes") or {}).get("system") or {}
    attr = system.get("quantum")
    res = jobspec.get("resources") or []
    entries = [e for e in res if isinstance(e, Mapping) and e.get("type") == QPU]
    if attr is None and not entries:
        if _nested_qpus(res):
            raise _bad_shape("qpu must be a top-level resource, beside node or slot")
        return None
    if attr is not None and not isinstance(attr, Mapping):
        raise JobspecError(f"{ATTR} must be a mapping (got {json.dumps(attr)})",
                           fix="e.g. --setattr=system.quantum.qubits=20")
    attr = dict(attr or {})
    if _nested_qpus(res):
        raise _bad_shape("qpu must be a top-level resource, beside node or slot")
    short = {k: attr.pop(k) for k in list(attr) if k not in RECORD_KEYS}
    recorded = attr.get("request") or {}
    if not isinstance(recorded, Mapping):
        raise JobspecError(f"{ATTR}.request must be a mapping")
    values = {**recorded, **short}
    canonical = bool(entries) and "resolution" in attr and is_canonical(entries)
    if entries and not canonical:
        for key, value in _request_from_resources(entries).items():
            values.setdefault(key, value)
    record = request_record(values, ATTR)
    req = QuantumRequest.from_mapping(record)
    system = jobspec.setdefault("attributes", {}).setdefault("system", {})
    quantum = system["quantum"] = {**attr, "request": record}
    if canonical:
        resolution = attr["resolution"]
        result = Resolution(resolution.get("pinned"), resolution.get("candidates") or [],
                            resolution.get("decided_by") or {}, resolution.get("source", ""))
    else:
        quantum.pop("resolution", None)
        jobspec["resources"] = [e for e in res if e not in entries]
        if not jobspec["resources"]:
            raise JobspecError("a hybrid job needs classical resources too (a node or slot)",
                               fix="e.g. flux submit -n1 ... or resources: [node, qpu]")
        cores = jobspec["resources"][0].get("type") == "slot"
        result = apply_quantum(jobspec, req, view(cores),
                               nested=is_nested_instance(jobspec))
    if "environment" in system:
        system["environment"] = scrub_environment(system["environment"], secret_names)
    return result
