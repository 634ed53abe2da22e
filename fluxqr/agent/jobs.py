"""Hybrid jobs as the agent follows them, and the decisions it takes for them.

Pure bookkeeping and arithmetic — no Flux, no vendor calls — so each decision can be
tested on its own:

* :func:`admit` — may the agent open a vendor session for this job now? (the device is
  up, a session slot is free, and the session would not go idle before Fluxion can start
  the job);
* :class:`DrainModel` — how long an anchor waits in a device's queue (a base wait plus
  seconds per queued job ahead, learnt from anchors, or the site's default);
* :func:`step_period` — how often the agent moves held jobs (polls their anchors);
* :func:`give_back_due` — at the vendor's grant, is Fluxion too far from starting the
  job to keep the session waiting for it?
* :func:`release_due` — should a held job be released now? ``ready``: when the vendor has
  granted the device; ``predicted``: when the vendor's predicted grant is no further away
  than Fluxion's predicted start of the job.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

#: Phases of a hybrid job, in order (``waiting`` may repeat before ``opening``).
PHASES = ("waiting", "opening", "anchored", "granted", "released", "running", "ending", "done")


@dataclass
class HybridJob:
    """One hybrid job. ``tokens`` are vendor secrets: never in memos, logs or messages."""

    jobid: int
    userid: int
    start: str                              # ready, predicted, now
    devices: list[str]                      # pinned device names (empty: Fluxion picks)
    urgency: int | None = None              # the user's urgency, restored on release
    mode: str = "dedicated"
    max_time: float | None = None
    duration: float = 0.0
    phase: str = "waiting"
    why: str | None = None                  # why it waits / what failed (memo, status)
    tokens: dict[str, str] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)      # device -> public session ref
    anchors: dict[str, str] = field(default_factory=dict)
    #: every anchor and keepalive task the agent queued, per device: not the user's tasks
    own_tasks: dict[str, list[str]] = field(default_factory=dict)
    queue: dict[str, int | None] = field(default_factory=dict)   # vendor queue at anchoring
    eta: float | None = None                # predicted seconds until the vendor grants
    lead: float | None = None               # Fluxion's predicted seconds until the job starts
    idle_timeout: float | None = None       # the vendor's interactive TTL for its session
    held: bool = False                      # urgency 0 set by fluxqr (CLI, or the agent)
    by_hand: bool = False                   # a user released the held job themselves
    result: str | None = None               # completed, failed, canceled, timeout
    keepalives: int = 0                     # anchors queued after the grant (see keepalive_due)
    givebacks: int = 0                      # grants given back (see give_back_due)
    given_back_s: dict[str, float] = field(default_factory=dict)  # their billed seconds
    down_hold: bool = False                 # a `now` job held while its devices are down
    candidates: list[str] = field(default_factory=list)  # devices Fluxion may pick from
    times: dict[str, float] = field(default_factory=dict)  # submit, opened, anchored, ...

    @property
    def held_start(self) -> bool:
        return self.start in ("ready", "predicted")

    def mark(self, event: str, when: float | None = None) -> None:
        self.times.setdefault(event, time.time() if when is None else when)

    def memo(self) -> dict[str, Any]:
        """What ``flux jobs`` may show (``-o '{user.qpu}'``): no tokens."""
        out: dict[str, Any] = {"start": self.start + (" (released by hand)" if self.by_hand
                                                      else ""),
                               "state": self.phase, "device": ",".join(self.devices) or "-"}
        queues = [q for q in self.queue.values() if q is not None]
        if queues:
            out["vendor_queue"] = max(queues)
        if self.eta is not None and self.phase in ("anchored", "opening"):
            out["vendor_eta_s"] = round(self.eta, 1)
        if self.why:
            out["why"] = self.why
        return out

    def sessions_memo(self) -> dict[str, Any]:
        """Per device: the session's public reference, mode, and when it opened and closed
        (``qpu_sessions`` on the job; tokens never)."""
        from datetime import UTC, datetime

        def iso(key: str) -> str | None:
            when = self.times.get(key)
            return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") \
                if when else None

        out: dict[str, Any] = {}
        for device in self.devices:
            entry: dict[str, Any] = {"mode": self.mode if device in self.refs else "none",
                                     "session": self.refs.get(device)}
            if device in self.refs:
                entry.update(acquired=iso("opened"), released=iso("closed"))
            if self.why and self.phase in ("ending", "done") and "closed" not in self.times:
                entry["error"] = self.why
            out[device] = entry
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HybridJob:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def memo_update(sent: dict[str, Any], memo: dict[str, Any]) -> dict[str, Any]:
    """The ``job-manager.memo`` payload that turns the memo ``sent`` last into ``memo``.

    The job manager merges a memo into the job's key by key, at every level: a key left
    out keeps its old value (a vendor ETA would outlive the grant), so the keys gone from
    a memo object since ``sent`` are sent as null, which deletes them.
    """
    out: dict[str, Any] = {}
    for key, value in memo.items():
        old = sent.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            out[key] = {**dict.fromkeys(sorted(set(old) - set(value))), **value}
        else:
            out[key] = value
    return out


@dataclass
class DeviceView:
    """What admission needs to know about a device right now."""

    up: bool
    slots: int                  # session slots in the graph (sharing.sessions)
    in_use: int                 # sessions the agent holds on it for other jobs
    reason: str = ""            # why it is down


def admit(job: HybridJob, views: dict[str, DeviceView]) -> str | None:
    """None when the agent may open the job's sessions now, else why not (one line)."""
    for name in job.devices:
        view = views.get(name)
        if view is None:
            return f"device {name} is not in the agent's inventory"
        if not view.up:
            return f"device {name} is down" + (f" ({view.reason})" if view.reason else "")
        if view.in_use >= view.slots:
            return (f"no free session slot on {name} ({view.in_use} of {view.slots} held for "
                    f"other jobs)")
    return None


class DrainModel:
    """How long an anchor waits in a device's vendor queue, per device:
    ``base + positions × per_position``.

    ``base`` is the wait with nothing queued ahead (the job in service, if any, has to
    finish: half a service on average, nothing on an idle device); ``per_position`` what
    each queued job ahead adds. Both start from the site's default (``base`` from half
    of it) and follow the anchors' waits as moving averages: a grant with nothing ahead
    teaches ``base``, one behind ``n`` jobs teaches ``per_position`` (what the wait had
    beyond ``base``, per job). Counting the job in service as a whole position — the
    first version — overestimated short queues by most of a service: the grant came
    that much before Fluxion could start the job (``benchmarks/bench_two_queue.py``).
    """

    def __init__(self, default: float = 60.0, weight: float = 0.3):
        self.default = default
        self.weight = weight
        self._rate: dict[str, float] = {}
        self._base: dict[str, float] = {}

    def per_position(self, device: str) -> float:
        return self._rate.get(device, self.default)

    def base(self, device: str) -> float:
        return self._base.get(device, self.default / 2)

    def _average(self, table: dict[str, float], device: str, sample: float) -> None:
        old = table.get(device)
        table[device] = sample if old is None else (1 - self.weight) * old + \
            self.weight * sample

    def learn(self, device: str, positions: int, seconds: float) -> None:
        """An anchor queued behind ``positions`` jobs was granted after ``seconds``."""
        seconds = max(0.0, seconds)
        if positions <= 0:
            self._average(self._base, device, seconds)
        else:
            self._average(self._rate, device,
                          max(0.0, seconds - self.base(device)) / positions)

    def eta(self, device: str, positions: int | None, waited: float) -> float | None:
        """Predicted seconds until an anchor queued behind ``positions`` jobs ``waited``
        seconds ago is granted."""
        if positions is None:
            return None
        return max(0.0, self.base(device) + positions * self.per_position(device) - waited)


def release_due(job: HybridJob, granted: bool, margin: float = 1.0) -> bool:
    """Whether a held job should be released now.

    ``ready`` waits for the grant. ``predicted`` releases as soon as the vendor's
    predicted grant (``job.eta``) is no further away than Fluxion's predicted start
    (``job.lead``) plus a launch margin, so that the nodes start as the vendor grants.
    """
    if granted:
        return True
    if job.start != "predicted" or job.eta is None:
        return False
    return job.eta <= (job.lead or 0.0) + margin


def anchor_due(lead: float | None, vendor_wait: float | None, idle_timeout: float) -> bool:
    """Whether to queue the anchor now, or hold it back so that the session will not go
    idle (and lapse) before Fluxion can start the job: the anchor is queued once the job's
    predicted start is no later than the vendor's predicted grant plus a quarter of the
    vendor's interactive idle timeout.

    The bound that matters is half the idle timeout (a keepalive goes in then); aiming at
    a quarter leaves the other quarter for the predictions' error — a vendor queue drains
    unevenly (one long job ahead, or none), and Fluxion's estimate knows only the running
    jobs' time limits. Measured (``benchmarks/bench_two_queue.py``): aiming at the half
    put a third of the jobs past it."""
    if lead is None or vendor_wait is None:
        return True
    return lead <= vendor_wait + idle_timeout / 4


#: Grants one job may give back before it keeps whatever the vendor grants.
MAX_GIVEBACKS = 2
#: ... when the vendor would grant again within a quarter of the idle timeout: a grant
#: given back then costs a few billed seconds and no real wait, while another job may
#: take the nodes each time the vendor grants (a short vendor queue, a busy cluster).
MAX_CHEAP_GIVEBACKS = 6


def give_back_due(job: HybridJob, lead: float | None, requeue_wait: float | None,
                  idle_timeout: float, held_for: float = 0.0) -> bool:
    """Whether to give a fresh vendor grant back (close the session, queue again later)
    instead of releasing the job into Fluxion's queue.

    The anchor was queued when Fluxion predicted the job's start near the predicted
    grant, but both predictions err: jobs end before their time limits, so nodes free up
    early and are taken by other jobs (backfill) while the anchor still waits. If, at the
    grant, Fluxion now predicts the job starts more than half the idle timeout later
    (``lead``), keeping the session would leave the QPU idle and billed — keepalive
    anchors — for all of that time. Giving it back costs a new wait in the vendor's queue
    (``requeue_wait``, predicted): worth it only when that wait is shorter than the time
    the session would idle, and at most :data:`MAX_GIVEBACKS` times per job
    (:data:`MAX_CHEAP_GIVEBACKS` while the vendor would grant again within a quarter of
    the idle timeout); after that the job keeps its grant, whatever it costs.

    The same question is asked again while a released job waits for Fluxion
    (:func:`recheck_due`): ``held_for`` is how long the session has been granted already,
    so the bound is on the whole wait, grant to start (typically another held job
    released just before took the nodes this one was predicted to get).

    Measured (``benchmarks/bench_two_queue.py``, ``minutes``): weighing the idle time by
    the vendor jobs queued behind the session (give back when ``requeue_wait < (1 +
    queue) × lead``) gave grants back more often, and the same jobs then met busy nodes
    again at their next grant: the p95 gap was no better and turnaround a third worse
    (one run each).
    """
    if lead is None or requeue_wait is None:
        return False
    cheap = requeue_wait <= idle_timeout / 4
    if job.givebacks >= (MAX_CHEAP_GIVEBACKS if cheap else MAX_GIVEBACKS):
        return False
    return held_for + lead > idle_timeout / 2 and requeue_wait < lead


def recheck_due(job: HybridJob, now: float, idle_timeout: float) -> bool:
    """Whether to ask Fluxion again about a released job that has not started yet.

    At the grant Fluxion's estimate cannot see the other jobs just released into its
    queue; a quarter of the idle timeout after the grant (and every eighth after that),
    a job still without its nodes is asked about again, so that a grant it cannot use
    soon is given back (:func:`give_back_due`) before the session has idled for half
    the timeout.
    """
    if job.phase != "released" or "granted" not in job.times or "alloc" in job.times:
        return False
    if now - job.times["granted"] < idle_timeout / 4:
        return False
    return now - job.times.get("recheck", 0.0) >= idle_timeout / 8


def keepalive_due(job: HybridJob, now: float, idle_timeout: float) -> bool:
    """Whether a released job's granted session needs one more anchor now.

    Between the grant and the job's start (Fluxion may take a while to find its nodes:
    a held job has no reservation) the session has no job of ours; after the vendor's
    idle timeout it would go inactive and the job's first task would queue again. So
    while the job has not started, one anchor is queued every half idle timeout after the
    grant (the session stays active, and billed: the QPU waits on us instead of our nodes
    on the vendor — the trade ``ready`` makes).
    """
    if "granted" not in job.times or "start" in job.times or not job.tokens:
        return False
    last = job.times.get("keepalive", job.times["granted"])
    return now - last >= idle_timeout / 2


def step_period(idle_timeout: float) -> float:
    """Seconds between the agent's steps on held jobs (anchor polls, releases).

    Once a second, but at least twenty steps per vendor idle timeout: a grant is seen, and
    the job released, within a twentieth of the time the session stays active without a
    job (a vendor with a short interactive timeout, or a benchmark in compressed time).
    Never below 50 ms, so that a held job costs the vendor at most a few requests a second.
    """
    return min(1.0, max(0.05, idle_timeout / 20))
