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
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from fluxqr._io import json_path, load_structured
from fluxqr.core.model import QPU, QUBIT, SESSION, marker_type
from fluxqr.errors import JobspecError

POLICIES = ("any", "first", "shortest_queue", "best_fidelity")
SESSION_MODES = ("dedicated", "batch", "none")

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

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> QuantumRequest:
        session = data.get("session") or {}
        return cls(
            qpus=int(data.get("qpus", 1)),
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
            session_mode=session.get("mode", "dedicated"),
            session_max_time=parse_duration(session.get("max_time"), "quantum.session.max_time"),
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
        if self.max_error_2q is not None and not (
                math.isfinite(self.max_error_2q) and 0 < self.max_error_2q <= 1):
            raise JobspecError(f"max_error_2q must be in (0, 1] (got {self.max_error_2q})")
        if self.device and self.qpus > 1:
            raise JobspecError(f"device '{self.device}' was named but {self.qpus} QPUs asked for",
                               fix="name no device, or ask for one QPU")

    @property
    def live(self) -> dict[str, Any]:
        """The live requirements that are set (name -> limit)."""
        out: dict[str, Any] = {}
        for key in ("max_error_2q", "min_t1_us", "max_queue"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.online:
            out["online"] = True
        return out

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


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


def parse_request(data: Any, where: str = "<jobspec>") -> HybridRequest:
    """Validate a hybrid jobspec mapping against the schema and build a :class:`HybridRequest`."""
    import jsonschema

    if not isinstance(data, dict):
        raise JobspecError("expected a mapping with 'version: 1' and 'command:'", where=where)
    validator = jsonschema.Draft202012Validator(schema())
    errors = list(validator.iter_errors(data))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        loc = json_path(err.absolute_path)
        hint = " (unknown key: remove it or check its spelling)" \
            if err.validator == "additionalProperties" else ""
        raise JobspecError(f"{loc}: {err.message}{hint}", where=where)
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


_DECISION_KEYS = ("num_qubits", "status", "error_2q", "t1_us", "queue_depth", "calibrated_at",
                  "updated")


def _fails_live(q: QpuInfo, req: QuantumRequest) -> list[str]:
    """Why ``q`` misses the live requirements (empty: it meets them)."""
    why = []
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


def _rank_key(req: QuantumRequest, q: QpuInfo) -> tuple:
    inf = math.inf
    if req.policy == "best_fidelity":
        return (q.num("error_2q") if q.num("error_2q") is not None else inf, q.name)
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
        match = [q for q in pool if q.properties.get(prop, q.name if prop == "device" else "")
                 .lower() == want.lower()]
        if not match:
            known = sorted({q.properties.get(prop, q.name if prop == "device" else "?")
                            for q in qpus})
            raise JobspecError(f"no QPU with {label} '{want}'",
                               fix=f"known {label}s: {', '.join(known)}")
        pool = match
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
    qualified = [q for q in pool if not _fails_live(q, req)] if live else list(pool)
    if len(qualified) < req.qpus:
        limits = ", ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                           for k, v in live.items())
        # Closest first: fewest misses, and a known value ahead of an unknown one.
        closest = sorted(pool, key=lambda q: (len(_fails_live(q, req)), sum(
            "unknown" in w for w in _fails_live(q, req)), q.name))[:3]
        detail = "; ".join(f"{q.name}: {', '.join(_fails_live(q, req))}" for q in closest)
        raise JobspecError(f"no{'' if req.qpus == 1 else ' ' + str(req.qpus)} QPU meets the "
                           f"requirements ({limits}); closest: {detail}",
                           fix="relax the requirements or wait for the devices to recover")
    decided = {q.name: {k: q.properties[k] for k in _DECISION_KEYS if k in q.properties}
               for q in qualified}
    # Fluxion can pick among the qualified devices by itself only when they are exactly the
    # devices its type markers select; otherwise pin the best ones.
    if req.policy == "any" and len(qualified) == len(pool):
        return Resolution(None, [q.name for q in qualified], decided, view.source)
    if req.policy != "any":
        ranked = sorted(qualified, key=lambda q: _rank_key(req, q)) \
            if req.policy != "first" else qualified
    else:
        ranked = qualified
    chosen = [q.name for q in ranked[:req.qpus]]
    return Resolution(chosen, [q.name for q in qualified],
                      {n: decided[n] for n in chosen}, view.source)


# -- translation ---------------------------------------------------------------------------


def _qpu_resource(req: QuantumRequest, device: str | None) -> dict[str, Any]:
    session: dict[str, Any] = {"type": SESSION, "count": 1, "exclusive": True,
                               "with": [{"type": QUBIT, "count": req.qubits}]}
    children: list[dict[str, Any]] = [session]
    for kind, value in (("vendor", req.vendor), ("technology", req.technology),
                        ("device", device or req.device)):
        if value:
            children.append({"type": marker_type(kind, value), "count": 1})
    res: dict[str, Any] = {"type": QPU, "count": 1 if device else req.qpus, "with": children}
    if req.exclusive:
        res["exclusive"] = True
    return res


def quantum_resources(req: QuantumRequest, resolution: Resolution) -> list[dict[str, Any]]:
    """The RFC 14 resource entries for the quantum part."""
    if resolution.pinned:
        return [_qpu_resource(req, name) for name in resolution.pinned]
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


def apply_quantum(jobspec: dict[str, Any], req: QuantumRequest, view: ResourceView) -> Resolution:
    """Add the quantum request to an existing canonical jobspec, in place.

    Used by the translator and by the ``flux submit`` plugin: a top-level slot (what
    ``flux submit -n N`` makes) is wrapped in a node request, the QPU entries are
    appended, and ``attributes.system.quantum`` records the request and the decision.
    """
    resolution = resolve(req, view)
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
    res.extend(quantum_resources(req, resolution))
    system = jobspec.setdefault("attributes", {}).setdefault("system", {})
    system["quantum"] = {"request": req.to_dict(), "resolution": resolution.to_dict()}
    return resolution


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
