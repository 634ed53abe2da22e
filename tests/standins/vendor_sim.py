"""A discrete-event model of one IBM quantum device: a shared queue with sessions.

No HTTP and no threads: :class:`VendorSim` is advanced lazily to the time of its clock
whenever it is asked something (:meth:`VendorSim.advance`), and processes every event up
to then at the event's exact model time, so its log does not depend on how often it
is polled. The HTTP stand-in (``qcs_server.py``) exposes it; a benchmark may also drive
it in-process.

The model (all times in *model* seconds):

- Other users' jobs arrive as a Poisson stream (``arrival_rate`` per model second) with
  lognormal service times (``service_median``, ``service_sigma``); the queue can start
  ``initial_queue`` jobs deep. One RNG seeded by ``seed`` draws all of them, so a run
  is reproducible given the same API calls at the same model times.
- One job runs at a time, first come first served.
- IBM session semantics (dedicated mode): a session opens in state ``open``; it becomes
  ``active`` when its first job reaches the head of the queue; while it is active only its
  jobs run, and the device waits for the session's next job up to ``interactive_ttl``
  after its last job ended; then the session goes ``inactive`` and its next job queues at
  the back again. A session closes at ``max_ttl`` after its first activation; closing it
  (``close``: stop accepting jobs, queued ones still run) or cancelling it (``cancel``:
  queued jobs cancelled) ends it too. Usage is billed while the session is active.
- API jobs (:meth:`VendorSim.submit`) take ``task_service`` model seconds to run.

:class:`Clock` maps wall time to model time with a ``time_scale`` (model seconds per wall
second: 60 makes one model minute last one second); :class:`ManualClock` is set by hand.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

SIM_DEFAULTS: dict[str, Any] = {
    "time_scale": 1.0,        # model seconds per wall second
    "arrival_rate": 0.0,      # other users' jobs per model second (Poisson)
    "service_median": 60.0,   # model seconds, lognormal median of other users' jobs
    "service_sigma": 0.5,     # lognormal sigma (spread) of other users' jobs
    "initial_queue": 0,       # other users' jobs queued at time 0
    "seed": 1,
    "interactive_ttl": 60.0,  # model seconds a session stays active with no job
    "max_ttl": 28800.0,       # model seconds from a session's first activation to its end
    "task_service": 5.0,      # model seconds one API job runs
}
#: Knobs that only take effect on a fresh simulation (changing them restarts it).
RESTART_KNOBS = frozenset({"initial_queue", "seed"})


class Clock:
    """Model time = wall (monotonic) time since start × ``scale``; the scale can change."""

    def __init__(self, scale: float = 1.0):
        self._scale = float(scale)
        self._wall0 = time.monotonic()
        self._model0 = 0.0

    @property
    def scale(self) -> float:
        return self._scale

    def set_scale(self, scale: float) -> None:
        """Change the rate from now on, without a jump in model time."""
        self._model0, self._wall0 = self(), time.monotonic()
        self._scale = float(scale)

    def __call__(self) -> float:
        return self._model0 + (time.monotonic() - self._wall0) * self._scale

    def to_wall(self, model_seconds: float) -> float:
        """How many wall seconds a span of model time lasts."""
        return model_seconds / self._scale


class ManualClock:
    """A clock that only moves when told (for pure-model tests)."""

    scale = 1.0

    def __init__(self, start: float = 0.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def set_scale(self, scale: float) -> None:
        pass


@dataclass
class Job:
    id: str
    user: str
    service: float
    queued: float
    session_id: str | None = None
    program: str = "sampler"
    state: str = "Queued"
    running: float | None = None
    done: float | None = None

    def record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Session:
    id: str
    backend: str
    mode: str
    max_ttl: float
    interactive_ttl: float
    opened: float
    state: str = "open"  # open, active, inactive, closed
    accepting_jobs: bool = True
    activated: float | None = None      # first activation
    active_since: float | None = None   # current activation
    idle_since: float | None = None     # active with nothing queued or running, since
    closed: float | None = None
    billed: float = 0.0
    activations: int = 0
    timeouts: int = 0
    jobs: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        rec = asdict(self)
        rec.pop("jobs")
        rec["jobs"] = list(self.jobs)
        return rec


class SimError(ValueError):
    """An API request the vendor refuses (HTTP 400/404 in the server)."""


class VendorSim:
    """The device model. Not thread safe: the caller serialises access (the server's lock)."""

    def __init__(self, clock: Callable[[], float] | None = None, **knobs: Any):
        unknown = set(knobs) - set(SIM_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown simulation knob(s) {sorted(unknown)}")
        self.params = {**SIM_DEFAULTS, **knobs}
        self.clock = clock if clock is not None else Clock(self.params["time_scale"])
        self._restart()

    # -- configuration ---------------------------------------------------------------------

    def configure(self, **knobs: Any) -> None:
        """Change knobs. Rates and TTLs apply from now on; ``seed``/``initial_queue`` restart."""
        unknown = set(knobs) - set(SIM_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown simulation knob(s) {sorted(unknown)}")
        self.advance()
        changed = {k for k, v in knobs.items() if self.params[k] != v}
        self.params.update(knobs)
        if "time_scale" in changed:
            self.clock.set_scale(self.params["time_scale"])
        if changed & RESTART_KNOBS:
            self._restart()
        elif "arrival_rate" in changed:
            self._next_arrival = self._draw_arrival(self.now)

    def _restart(self) -> None:
        self.rng = random.Random(self.params["seed"])
        self._ids = itertools.count(1)
        self.jobs: dict[str, Job] = {}
        self.sessions: dict[str, Session] = {}
        self.queue: list[str] = []          # queued job ids, in queue order
        self.running: str | None = None
        self.events: list[dict[str, Any]] = []
        self.now = self.clock()
        for _ in range(int(self.params["initial_queue"])):
            self._enqueue(self._other_job(self.now))
        self._next_arrival = self._draw_arrival(self.now)
        self._dispatch()

    def _draw_arrival(self, after: float) -> float:
        rate = float(self.params["arrival_rate"])
        return after + self.rng.expovariate(rate) if rate > 0 else math.inf

    def _other_job(self, t: float) -> Job:
        median, sigma = float(self.params["service_median"]), float(self.params["service_sigma"])
        service = self.rng.lognormvariate(math.log(median), sigma) if sigma > 0 else median
        return Job(id=f"other-{next(self._ids)}", user="other", service=service, queued=t)

    # -- the event loop --------------------------------------------------------------------

    def advance(self, to: float | None = None) -> float:
        """Process every event up to ``to`` (default: the clock's time); returns model now."""
        target = self.clock() if to is None else to
        while True:
            t, kind, ref = self._next_event()
            if t > target:
                break
            self.now = max(self.now, t)
            if kind == "arrival":
                self._enqueue(self._other_job(t))
                self._next_arrival = self._draw_arrival(t)
            elif kind == "done":
                self._finish(ref, t)
            elif kind == "idle":
                self._deactivate(self.sessions[ref], t, "interactive-timeout")
            elif kind == "max_ttl":
                self._end(self.sessions[ref], t, "max-ttl")
            self._dispatch()
        self.now = max(self.now, target)
        return self.now

    def _next_event(self) -> tuple[float, str, str]:
        cands: list[tuple[float, str, str]] = [(self._next_arrival, "arrival", "")]
        if self.running is not None:
            job = self.jobs[self.running]
            cands.append((job.running + job.service, "done", job.id))
        for sess in self.sessions.values():
            if sess.state == "active":
                if sess.idle_since is not None:
                    cands.append((sess.idle_since + sess.interactive_ttl, "idle", sess.id))
                cands.append((sess.activated + sess.max_ttl, "max_ttl", sess.id))
        return min(cands, key=lambda c: (c[0], c[1]))

    def _active(self) -> Session | None:
        return next((s for s in self.sessions.values() if s.state == "active"), None)

    def _dispatch(self) -> None:
        """Start the next job if the device is free."""
        if self.running is not None:
            return
        sess = self._active()
        if sess is not None:
            mine = [j for j in self.queue if self.jobs[j].session_id == sess.id]
            if mine:
                self._run(mine[0])
            elif not sess.accepting_jobs:
                self._end(sess, self.now, "closed")
                self._dispatch()
            return  # the device is held for the active session until its idle timeout
        if not self.queue:
            return
        job = self.jobs[self.queue[0]]
        if job.session_id is not None:
            self._activate(self.sessions[job.session_id], self.now)
        self._run(job.id)

    def _run(self, jid: str) -> None:
        job = self.jobs[jid]
        self.queue.remove(jid)
        job.state, job.running = "Running", self.now
        self.running = jid
        self._log("job-running", self.now, job=jid, session_id=job.session_id, user=job.user)
        if job.session_id is not None:
            self.sessions[job.session_id].idle_since = None

    def _finish(self, jid: str, t: float) -> None:
        job = self.jobs[jid]
        job.state, job.done = "Completed", t
        self.running = None
        self._log("job-done", t, job=jid, session_id=job.session_id, user=job.user)
        if job.session_id is not None:
            sess = self.sessions[job.session_id]
            if sess.state == "active":
                sess.idle_since = t

    def _enqueue(self, job: Job) -> None:
        self.jobs[job.id] = job
        self.queue.append(job.id)

    def _activate(self, sess: Session, t: float) -> None:
        first = sess.activated is None
        if first:
            sess.activated = t
        sess.state, sess.active_since, sess.idle_since = "active", t, None
        sess.activations += 1
        self._log("activate", t, session_id=sess.id, first=first)

    def _bill(self, sess: Session, t: float) -> None:
        if sess.state == "active" and sess.active_since is not None:
            sess.billed += t - sess.active_since
            sess.active_since = None

    def _deactivate(self, sess: Session, t: float, why: str) -> None:
        self._bill(sess, t)
        sess.state, sess.idle_since = "inactive", None
        sess.timeouts += 1
        self._log(why, t, session_id=sess.id, billed=sess.billed)
        if not sess.accepting_jobs:
            self._end(sess, t, "closed")

    def _end(self, sess: Session, t: float, why: str) -> None:
        if sess.state == "closed":
            return
        self._bill(sess, t)
        sess.state, sess.accepting_jobs, sess.closed, sess.idle_since = "closed", False, t, None
        for jid in [j for j in self.queue if self.jobs[j].session_id == sess.id]:
            self._cancel_job(self.jobs[jid], t)
        self._log("session-end", t, session_id=sess.id, how=why, billed=sess.billed)

    def _cancel_job(self, job: Job, t: float) -> None:
        if job.state == "Queued":
            self.queue.remove(job.id)
        elif job.state == "Running":
            self.running = None
            if job.session_id is not None and self.sessions[job.session_id].state == "active":
                self.sessions[job.session_id].idle_since = t
        else:
            return
        job.state, job.done = "Cancelled", t
        self._log("job-cancelled", t, job=job.id, session_id=job.session_id, user=job.user)

    def _log(self, op: str, t: float, **fields: Any) -> None:
        self.events.append({"op": op, "t": t, **fields})

    # -- the API ---------------------------------------------------------------------------

    def open_session(self, backend: str, mode: str = "dedicated",
                     max_ttl: float | None = None, sid: str | None = None) -> Session:
        now = self.advance()
        sid = sid or f"standin-session-{next(self._ids)}"
        sess = Session(id=sid, backend=backend, mode=mode, opened=now,
                       max_ttl=float(max_ttl or self.params["max_ttl"]),
                       interactive_ttl=float(self.params["interactive_ttl"]))
        self.sessions[sid] = sess
        self._log("session-open", now, session_id=sid)
        return sess

    def close_session(self, sid: str, cancel: bool = False) -> Session:
        """``close``: accept no more jobs, queued ones still run; ``cancel``: end it now."""
        self.advance()
        sess = self._session(sid)
        if sess.state == "closed":
            return sess
        self._log("session-cancel" if cancel else "session-close", self.now, session_id=sid)
        sess.accepting_jobs = False
        busy = self.running is not None and self.jobs[self.running].session_id == sid
        if cancel:
            if busy:
                self._cancel_job(self.jobs[self.running], self.now)
            self._end(sess, self.now, "cancel")
        else:
            queued = any(self.jobs[j].session_id == sid for j in self.queue)
            if not queued and not busy:
                self._end(sess, self.now, "closed")
        self._dispatch()
        return sess

    def submit(self, session_id: str | None = None, program: str = "sampler",
               user: str = "api", service: float | None = None) -> Job:
        now = self.advance()
        if session_id is not None:
            sess = self._session(session_id)
            if not sess.accepting_jobs or sess.state == "closed":
                raise SimError(f"session {session_id} is closed")
        job = Job(id=f"job-{next(self._ids)}", user=user, program=program, queued=now,
                  service=float(self.params["task_service"] if service is None else service),
                  session_id=session_id)
        if session_id is not None:
            self.sessions[session_id].jobs.append(job.id)
        self._enqueue(job)
        self._log("job-queued", now, job=job.id, session_id=session_id, user=user)
        self._dispatch()
        return job

    def cancel(self, jid: str) -> Job:
        self.advance()
        job = self.job(jid)
        self._cancel_job(job, self.now)
        self._dispatch()
        return job

    def job(self, jid: str) -> Job:
        self.advance()
        if jid not in self.jobs:
            raise KeyError(jid)
        return self.jobs[jid]

    def _session(self, sid: str) -> Session:
        if sid not in self.sessions:
            raise KeyError(sid)
        return self.sessions[sid]

    def session(self, sid: str) -> Session:
        self.advance()
        return self._session(sid)

    def pending(self, session_id: str | None = None) -> list[Job]:
        """Queued and running jobs (of one session if given), running first then queue order."""
        self.advance()
        ids = ([self.running] if self.running else []) + self.queue
        jobs = [self.jobs[j] for j in ids]
        if session_id is not None:
            jobs = [j for j in jobs if j.session_id == session_id]
        return jobs

    def queue_length(self) -> int:
        """Jobs waiting for the device (not the running one)."""
        self.advance()
        return len(self.queue)

    def log(self) -> dict[str, Any]:
        """Every job (with its times), every session (activations, timeouts, billed), events."""
        now = self.advance()
        sessions = []
        for sess in self.sessions.values():
            rec = sess.record()
            if sess.state == "active" and sess.active_since is not None:
                rec["billed"] = sess.billed + now - sess.active_since  # billed so far
            sessions.append(rec)
        return {"now": now, "params": dict(self.params),
                "jobs": [j.record() for j in self.jobs.values()],
                "sim_sessions": sessions, "events": list(self.events)}
