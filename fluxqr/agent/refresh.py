"""Live refresh: push device properties and up/down status into Fluxion, diffs only.

Each cycle reads every device through its adapter (:func:`fluxqr.devices.probe`),
compares the snapshot with what the scheduler already holds, and sends only the
changes with Fluxion's RPCs: ``set_property`` (one RPC per distinct key=value, for
all devices that share it), ``remove_property`` and ``set_status``. Nothing else
is ever changed — in particular no vertex is added or removed, which is unsafe
while jobs hold resources.

A device whose reads fail ``failure_threshold`` times in a row goes down with a
``down_reason`` property; a device that reports itself offline or in maintenance
goes down at once. It comes back up when a read says it is usable again. The
``updated`` property is the time of the device's last property change (so an
unchanged device costs no RPC); the last successful read is kept in the loop's
state, which ``flux qr status`` shows. Every up/down transition is one log line
with the reason (secret values scrubbed).

Every cycle starts from what the scheduler holds now (one read of the QPU
vertices), not from what the loop last wrote, so a second writer cannot leave a
device in the wrong state for more than a cycle. **Admin down**: a QPU that is down
without a ``down_reason`` property (``flux ion-resource set-status PATH down``), or
whose ``down_reason`` starts with ``admin``, was put down by an administrator; the
loop keeps it down and never lifts it — the administrator does, with ``set-status
PATH up``. The loop itself always writes ``down_reason`` before it sets a QPU down,
and sets it up before it removes ``down_reason``, so its own marks are never taken
for an admin's.

The same cycle can update a graph file instead of a running instance
(:class:`GraphFileTarget`), for building graphs ahead of instance start.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from fluxqr.core.inventory import Inventory
from fluxqr.devices.snapshot import PROPERTY_FIELDS, DeviceSnapshot, utcnow
from fluxqr.errors import FluxqrError

log = logging.getLogger(__name__)

#: Properties the loop owns (it may set and remove them). Static ones (vendor,
#: num_qubits, ...) come from the graph build and are never touched.
MANAGED = frozenset(PROPERTY_FIELDS.values()) | {"updated", "down_reason"}
DOWN_STATUSES = frozenset({"offline", "maintenance"})
#: A ``down_reason`` starting with this marks an administrator's down (never lifted here).
ADMIN_PREFIX = "admin"


def is_admin_down(up: bool, properties: dict[str, str]) -> bool:
    """True if a QPU's down status is an administrator's (see the module docstring)."""
    if up:
        return False
    reason = properties.get("down_reason")
    return reason is None or reason.strip().lower().startswith(ADMIN_PREFIX)


class Target(Protocol):
    """Where a cycle's changes go: a running Fluxion, or a graph file."""

    def qpus(self) -> dict[str, tuple[str, bool, dict[str, str]]]:
        """name -> (vertex path, up, current properties)."""

    def set_property(self, paths: list[str], key: str, value: str) -> None: ...

    def remove_property(self, paths: list[str], key: str) -> None: ...

    def set_status(self, path: str, up: bool) -> None: ...

    def flush(self) -> None:
        """End of cycle (a file target writes here)."""


class FluxionTarget:
    """A running instance, through ``sched-fluxion-resource`` RPCs."""

    def __init__(self, handle: Any):
        self.handle = handle
        self.changed = False
        self._stamp: str | None = None  # the view stamp's path, once asked

    def _touch(self) -> None:
        from fluxqr.flux import instance

        if self._stamp is None:
            self._stamp = instance.view_stamp_path(self.handle) or ""
        instance.touch_view(self._stamp)

    def qpus(self) -> dict[str, tuple[str, bool, dict[str, str]]]:
        from fluxqr.flux import instance

        view = instance.resource_view(self.handle)
        return {q.name: (q.path, q.up, dict(q.properties)) for q in view.qpus}

    def set_property(self, paths: list[str], key: str, value: str) -> None:
        from fluxqr.flux import instance

        instance.set_property(self.handle, paths, key, value)
        self.changed = True

    def remove_property(self, paths: list[str], key: str) -> None:
        from fluxqr.flux import instance

        instance.remove_property(self.handle, paths, key)
        self.changed = True

    def set_status(self, path: str, up: bool) -> None:
        from fluxqr.flux import instance

        instance.set_status(self.handle, path, up)
        if not up:  # readers must not resolve jobs onto it a moment longer than needed
            self._touch()
        self.changed = True

    def flush(self) -> None:
        """End of a cycle: if anything changed, readers' cached views are stale."""
        if self.changed:
            self._touch()
            self.changed = False


class GraphFileTarget:
    """An R or JGF file, rewritten atomically at the end of each cycle that changed it."""

    def __init__(self, path: str | os.PathLike):
        from fluxqr.core import graph

        self.path = str(path)
        self.graph = graph.read(self.path)
        self.is_r = self._is_r()
        self.dirty = False

    def _is_r(self) -> bool:
        with open(self.path, encoding="utf-8") as fp:
            head = fp.read(4096)
        return '"execution"' in head

    def _name(self, path: str) -> str:
        return path.rsplit("/", 1)[-1]

    def qpus(self) -> dict[str, tuple[str, bool, dict[str, str]]]:
        return {m["name"]: (m["paths"]["containment"], not m.get("status"),
                            dict(m.get("properties") or {})) for m in self.graph.qpus()}

    def set_property(self, paths: list[str], key: str, value: str) -> None:
        for p in paths:
            self.graph.set_qpu_properties(self._name(p), {key: value})
        self.dirty = True

    def remove_property(self, paths: list[str], key: str) -> None:
        for p in paths:
            self.graph.set_qpu_properties(self._name(p), {}, remove=[key])
        self.dirty = True

    def set_status(self, path: str, up: bool) -> None:
        self.graph.set_qpu_status(self._name(path), up)
        self.dirty = True

    def flush(self) -> None:
        from fluxqr.core import graph

        if self.dirty:
            (graph.write_r if self.is_r else graph.write_jgf)(self.graph, self.path)
            self.dirty = False


@dataclass
class DeviceState:
    """What the loop knows about one device."""

    name: str
    adapter: str
    path: str | None = None
    up: bool = True
    properties: dict[str, str] = field(default_factory=dict)
    failures: int = 0
    last_ok: str | None = None
    last_error: str | None = None
    last_status: str | None = None
    admin_down: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CycleReport:
    """What one cycle did (also the benchmark's measure)."""

    rpcs: int = 0
    changes: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class Op:
    """One RPC: set/remove a property on paths, or set a vertex's status."""

    kind: str  # "set" | "remove" | "status"
    paths: tuple[str, ...]
    key: str = ""
    value: str = ""
    up: bool = True


class Refresher:
    """The refresh loop's state and one-cycle logic, independent of how it is run."""

    def __init__(self, inventory: Inventory, target: Target, *, failure_threshold: int = 3,
                 timeout: float | None = None,
                 reader: Callable[[Inventory, float | None], list[DeviceSnapshot]] | None = None,
                 read_budget: float | None = None):
        if failure_threshold < 1:
            raise FluxqrError(f"failure threshold must be >= 1 (got {failure_threshold})")
        self.inventory = inventory
        self.target = target
        self.failure_threshold = failure_threshold
        self.timeout = timeout
        #: Longest a cycle waits for reads (None: each device's whole timeout). Reads still
        #: within their timeout then stay in flight for the next cycle (devices.poll).
        self.read_budget = read_budget
        self.reader = reader or self.read_devices
        self.states = {d.name: DeviceState(d.name, d.adapter) for d in inventory}
        self.cycles = 0
        self.last_report: CycleReport | None = None
        self.sync()

    def sync(self) -> None:
        """Learn the target's current QPU paths, status and properties (start, or after errors)."""
        current = self.target.qpus()
        for name, state in self.states.items():
            if name not in current:
                if state.path is None:
                    log.warning("device %s is in the inventory but not in the resource graph; "
                                "it is skipped (rebuild the graph to add it)", name)
                state.path = None
                continue
            path, up, props = current[name]
            if state.path is not None and up != state.up:
                who = "an administrator" if is_admin_down(up, props) else "another writer"
                log.warning("device %s: found %s in the scheduler (set by %s)%s", name,
                            "up" if up else "down", who,
                            f": {props['down_reason']}" if not up and props.get("down_reason")
                            else "")
            state.path, state.up = path, up
            state.admin_down = is_admin_down(up, props)
            state.properties = {k: v for k, v in props.items() if k in MANAGED}

    # -- planning (pure) -----------------------------------------------------------------

    def plan(self, snapshots: Iterable[DeviceSnapshot], now: str) -> list[Op]:
        """The RPCs that bring the target in line with ``snapshots`` (state not changed)."""
        sets: dict[tuple[str, str], list[str]] = {}
        removes: dict[str, list[str]] = {}
        ups: list[Op] = []
        downs: list[Op] = []
        for snap in snapshots:
            state = self.states.get(snap.device)
            if state is None or state.path is None:
                continue
            want_up, desired = self._desired(state, snap)
            changed = False
            for key, value in desired.items():
                if state.properties.get(key) != value:
                    sets.setdefault((key, value), []).append(state.path)
                    changed = True
            for key in state.properties:
                if key not in desired and key != "updated":
                    removes.setdefault(key, []).append(state.path)
                    changed = True
            if changed:
                sets.setdefault(("updated", now), []).append(state.path)
            if want_up != state.up:
                (ups if want_up else downs).append(Op("status", (state.path,), up=want_up))
        # down_reason is written before a QPU goes down and removed after it comes up:
        # a QPU down without one is an administrator's (is_admin_down).
        ops = [Op("set", tuple(p), key=k, value=v) for (k, v), p in sets.items()]
        ops += ups
        ops += [Op("remove", tuple(p), key=k) for k, p in removes.items()]
        return ops + downs

    def _desired(self, state: DeviceState, snap: DeviceSnapshot) -> tuple[bool, dict[str, str]]:
        """Up/down and the managed properties this snapshot asks for."""
        up, props = self._desired_by_device(state, snap)
        if state.admin_down:
            # The administrator's down stands: live values are still kept current.
            props.pop("down_reason", None)
            if "down_reason" in state.properties:
                props["down_reason"] = state.properties["down_reason"]
            return False, props
        if "down_reason" in props:
            props["down_reason"] = self._scrub(props["down_reason"])
        return up, props

    def _scrub(self, text: str) -> str:
        """Secret values of every device's credentials removed (down_reason is public)."""
        from fluxqr.devices.base import scrub

        secrets = [os.environ[v] for d in self.inventory for v in d.credentials.values()
                   if os.environ.get(v)]
        return " ".join(scrub(text, secrets).split())

    def _desired_by_device(self, state: DeviceState,
                           snap: DeviceSnapshot) -> tuple[bool, dict[str, str]]:
        if snap.ok:
            props = snap.properties()
            up = snap.status not in DOWN_STATUSES
            if not up:
                props["down_reason"] = f"device reports {snap.status}" + (
                    f": {snap.status_reason}" if snap.status_reason else "")
            return up, props
        # A failed read: keep the last known values until the threshold, then go down.
        failures = state.failures + 1
        props = {k: v for k, v in state.properties.items() if k != "updated"}
        if failures >= self.failure_threshold:
            props["status"] = "unknown"
            props["down_reason"] = f"unreachable for {failures} reads: {snap.error}"[:300]
            return False, props
        return state.up, props

    # -- running -------------------------------------------------------------------------

    def cycle(self) -> CycleReport:
        """Read every device, push the differences. Never raises for device or RPC errors."""
        start = time.monotonic()
        report = CycleReport()
        snaps = self.reader(self.inventory, self.timeout)
        try:
            # Reconcile: plan against what the scheduler holds now, not what we last wrote.
            self.sync()
        except Exception as err:  # noqa: BLE001 - plan against the last known state
            report.errors.append(f"re-reading the scheduler's QPUs failed: {err}")
            log.error("re-reading the scheduler's QPUs failed: %s", err)
        now = utcnow()
        ops = self.plan(snaps, now)
        failed_paths: set[str] = set()
        for op in ops:
            try:
                if op.kind == "set":
                    self.target.set_property(list(op.paths), op.key, op.value)
                elif op.kind == "remove":
                    self.target.remove_property(list(op.paths), op.key)
                else:
                    self.target.set_status(op.paths[0], op.up)
                report.rpcs += 1
                report.changes += len(op.paths)
                self._applied(op)
                if op.kind == "status":
                    self._log_transition(op)
            except Exception as err:  # noqa: BLE001 - log, count, retry next cycle
                report.rpcs += 1
                failed_paths.update(op.paths)
                msg = f"{op.kind} {op.key or ('up' if op.up else 'down')} on " \
                      f"{', '.join(op.paths)} failed: {getattr(err, 'strerror', None) or err}"
                report.errors.append(msg)
                log.error("%s", msg)
        try:
            self.target.flush()
        except Exception as err:  # noqa: BLE001
            report.errors.append(f"writing the graph failed: {err}")
            log.error("writing the graph failed: %s", err)
        for snap in snaps:
            self._record(snap, now)
        if failed_paths:
            # Our idea of the target may be off now: re-read it before the next cycle.
            try:
                self.sync()
            except Exception as err:  # noqa: BLE001
                log.error("re-reading the scheduler's graph failed: %s", err)
        self.cycles += 1
        report.seconds = time.monotonic() - start
        self.last_report = report
        return report

    def _log_transition(self, op: Op) -> None:
        state = next((s for s in self.states.values() if s.path == op.paths[0]), None)
        if state is None:
            return
        if op.up:
            log.warning("device %s: up (%s)", state.name,
                        f"read ok, status {state.properties.get('status', 'unknown')}")
        else:
            log.warning("device %s: down (%s)", state.name,
                        state.properties.get("down_reason", "no reason given"))

    def read_devices(self, inventory: Inventory, timeout: float | None) -> list[DeviceSnapshot]:
        """The default reader: every device, within :attr:`read_budget` if one is set."""
        from fluxqr import devices

        if self.read_budget is None:
            return devices.probe(inventory, timeout=timeout)
        return devices.poll(inventory, self.read_budget, timeout=timeout)

    def _applied(self, op: Op) -> None:
        by_path = {s.path: s for s in self.states.values() if s.path}
        for path in op.paths:
            state = by_path.get(path)
            if state is None:
                continue
            if op.kind == "set":
                state.properties[op.key] = op.value
            elif op.kind == "remove":
                state.properties.pop(op.key, None)
            else:
                state.up = op.up

    def _record(self, snap: DeviceSnapshot, now: str) -> None:
        state = self.states.get(snap.device)
        if state is None:
            return
        state.last_status = snap.status
        if snap.ok:
            state.failures = 0
            state.last_ok = now
            state.last_error = None
        else:
            state.failures += 1
            state.last_error = snap.error

    def status(self) -> dict[str, Any]:
        """The loop's state, as the ``fluxqr.status`` RPC returns it."""
        last = self.last_report
        from fluxqr import devices

        hung = devices.outstanding()
        out = []
        for s in self.states.values():
            d = s.to_dict()
            if s.name in hung:
                d["read_running_s"] = round(hung[s.name], 1)
            out.append(d)
        return {"cycles": self.cycles,
                "last_cycle": asdict(last) if last else None,
                "devices": out}


#: Share of the interval a cycle may wait for device reads (the rest: RPCs and slack).
READ_SHARE = 0.8


def run_forever(refresher: Refresher, interval: float,
                on_cycle: Callable[[CycleReport], None] | None = None,
                stop: Callable[[], bool] = lambda: False) -> None:
    """Run cycles every ``interval`` seconds (the foreground daemon of ``fluxqr refresh``).

    Cycles start on a fixed rhythm: reads get :data:`READ_SHARE` of the interval (a slow
    device's read stays in flight into the next cycle rather than stretching this one),
    and a cycle that still overruns starts the next one at once. ``KeyboardInterrupt``
    propagates: the caller reports it; it is never a device failure.
    """
    if refresher.read_budget is None and refresher.reader == refresher.read_devices:
        refresher.read_budget = interval * READ_SHARE
    next_start = time.monotonic()
    while not stop():
        report = refresher.cycle()
        if on_cycle:
            on_cycle(report)
        next_start += interval
        now = time.monotonic()
        if next_start < now:  # overran: do not try to catch up with a burst
            next_start = now
        time.sleep(next_start - now)


def format_status(status: dict[str, Any]) -> str:
    """``flux qr status``: the agent's error if any, the devices, and the hybrid jobs it
    follows (held ones with their vendor state)."""
    from fluxqr.core.tables import format_rows

    parts = []
    if status.get("error"):
        parts.append(f"agent not configured: {status['error']}")
    if status.get("devices"):
        rows = [["device", "adapter", "up", "status", "queue", "2q error", "last ok",
                 "failures", "last error"]]
        for d in status["devices"]:
            p = d["properties"]
            rows.append([d["name"], d["adapter"], "-" if d["path"] is None else
                         ("up" if d["up"] else "down"), d.get("last_status") or "-",
                         p.get("queue_depth", "-"), p.get("error_2q", "-"), d["last_ok"] or "-",
                         str(d["failures"]), (d["last_error"] or "-")[:60]])
        last = status.get("last_cycle") or {}
        parts.append(f"cycles: {status['cycles']}  last cycle: {last.get('seconds', 0):.2f} s, "
                     f"{last.get('rpcs', 0)} RPCs, {len(last.get('errors') or [])} errors")
        parts.append(format_rows(rows))
    jobs = status.get("jobs") or {}
    if jobs:
        from flux.job import JobID

        rows = [["job", "start", "state", "device", "vendor queue", "vendor eta", "why"]]
        for jobid, j in sorted(jobs.items()):
            rows.append([JobID(int(jobid)).f58, j.get("start", "-"), j.get("state", "-"),
                         j.get("device", "-"), str(j.get("vendor_queue", "-")),
                         f"{j['vendor_eta_s']:.0f} s" if "vendor_eta_s" in j else "-",
                         (j.get("why") or "-")[:70]])
        parts.append(format_rows(rows))
    return "\n".join(parts) or "no devices"
