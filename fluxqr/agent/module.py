"""The fluxqr agent: one broker module that owns the quantum side of an instance.

Load it with ``flux module load <prefix>/modules/fluxqr.py [key=value ...]`` (the file
``fluxqr flux-install`` writes), at instance start through the rc scripts or modprobe
(see the admin guide). Settings come from the instance's ``[fluxqr]`` table, overridden
by module arguments (see :mod:`fluxqr.core.config`).

What it does, all from the broker's reactor, with every vendor call in a worker thread:

* **refresh** — reads the devices every ``interval`` seconds and pushes what changed
  into Fluxion (:mod:`fluxqr.agent.refresh`);
* **follow hybrid jobs** — through the job-manager journal; jobs without
  ``attributes.system.quantum`` are skipped at their ``submit`` event, so classical jobs
  run no fluxqr code at all;
* **take the vendor side first** — a job with start mode ``ready`` or ``predicted`` is
  submitted held (urgency 0). The agent opens its session, queues an anchor task, and
  releases the job (restoring its urgency) when the vendor grants the device
  (``ready``), or when the predicted grant is no further away than Fluxion's predicted
  start of the job (``predicted``). A ``now`` job's session opens at allocation and the
  job shell waits for it;
* **never lose or leak** — sessions close when jobs end however they end; a job canceled
  while held has its anchor canceled and its session closed; on load the agent re-adopts
  held jobs from the journal and closes orphaned sessions; at instance shutdown it closes
  everything;
* **serve the tasks' environment** (``fluxqr.session-env``, owner-only) and its state
  (``fluxqr.status``);
* **keep the site's vendor credentials** — tasks reach the vendor through the agent's
  credential gateway (:mod:`fluxqr.agent.gateway`) with a per-job token that dies with
  the job; no task ever gets the site key.

A configuration error (no ``[fluxqr]`` table, a broken devices file) never stops the
module from loading, and so never stops an instance from starting: the agent reports
the error in ``flux dmesg`` and ``flux qr status`` and recovers on ``flux config reload``
or module reload.
"""

from __future__ import annotations

import errno
import functools
import itertools
import json
import logging
import os
import queue
import signal
import time
from collections.abc import Callable
from typing import Any

from flux.brokermod import BrokerModule, request_handler
from flux.constants import FLUX_POLLIN

from fluxqr.agent.jobs import (
    DeviceView,
    DrainModel,
    HybridJob,
    admit,
    anchor_due,
    give_back_due,
    keepalive_due,
    memo_update,
    recheck_due,
    release_due,
    step_period,
)
from fluxqr.errors import FluxqrError

MEMO_KEY = "qpu"
SESSIONS_MEMO_KEY = "qpu_sessions"
#: journal events after which a job holds nothing any more
ENDING = ("finish", "clean")
#: the only job events the agent acts on (:meth:`FluxqrModule._on_event`); the journal
#: sends no others, so a classical job costs the agent five messages, not a dozen
#: (validate, depend, priority, memo, release, free ... are never sent)
JOURNAL_EVENTS = ("submit", "urgency", "alloc", "start", "exception", *ENDING)
#: seconds each job's vendor close may take at instance shutdown (the broker waits)
SHUTDOWN_DEADLINE = 10.0


class _BrokerLogHandler(logging.Handler):
    """Send the library's log records to the broker's log (flux dmesg)."""

    LEVELS = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
              logging.CRITICAL: 2}

    def __init__(self, module: BrokerModule):
        super().__init__(logging.INFO)
        self.module = module

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.module.log(self.LEVELS.get(record.levelno, 6), self.format(record))
        except Exception:  # noqa: BLE001 - logging must never break the module
            pass


class FluxqrModule(BrokerModule):
    """The quantum agent (see the module docstring)."""

    def __init__(self, h, *args):
        super().__init__(h, *args)
        self._handler = _BrokerLogHandler(self)
        logging.getLogger("fluxqr").addHandler(self._handler)
        logging.getLogger("fluxqr").setLevel(logging.INFO)
        self.owner = os.getuid()
        self.error: str | None = None
        self.ledger: Any = None
        self.limits: Any = None
        self.settings: dict[str, Any] = {}
        self.inventory: Any = None
        self.refresher: Any = None
        self.store: Any = None
        self.jobs: dict[int, HybridJob] = {}
        self._jobspecs: dict[int, Any] = {}   # held jobs' jobspecs (from their submit event)
        self.sides: dict[str, Any] = {}
        self.gateway: Any = None
        self._gateway_bind: tuple[str, int] | None = None
        self.drain = DrainModel()
        self._env_waiters: dict[int, list[Any]] = {}
        self._memos: dict[int, str] = {}
        self._busy: set[tuple[int, str]] = set()   # (jobid, action) running in a worker
        self._relay_ids = itertools.count(1)  # keys of relayed requests in ``_busy``
        self._reading = False
        self._replayed = False
        self._terminated = False
        self._posts: queue.SimpleQueue = queue.SimpleQueue()
        self._rfd, self._wfd = os.pipe()
        self._fdw = h.fd_watcher_create(self._rfd, self._on_posts, events=FLUX_POLLIN)
        self._fdw.start()
        self._refresh_timer: Any = None
        self._step = step_period(60.0)
        self._tick = h.timer_watcher_create(self._step, self._on_tick, repeat=self._step)
        self._sigterm = h.signal_watcher_create(signal.SIGTERM, self._on_sigterm)
        self._sigterm.start()
        self._configure(self._read_config(), args)
        self.journal = _journal(h)
        self.journal.set_callback(self._on_event)
        self.journal.start()
        self._tick.start()

    # -- configuration -----------------------------------------------------------------

    def _read_config(self) -> dict[str, Any]:
        try:
            return self.handle.rpc("config.get").get() or {}
        except OSError:
            return {}

    def _configure(self, conf: dict[str, Any], args: tuple[str, ...] = ()) -> None:
        """Apply a configuration; on error keep running, unconfigured, and say why."""
        from fluxqr.core import inventory
        from fluxqr.core.config import settings
        from fluxqr.core.sessions import SessionStore

        try:
            new = settings(conf, tuple(args))
            inv = inventory.load(new["devices"])
            directory = new.get("session-dir") or os.path.join(
                self.handle.rpc("attr.get", {"name": "rundir"}).get()["value"], "fluxqr")
            store = SessionStore(directory)
            from fluxqr.agent.refresh import FluxionTarget, Refresher

            refresher = Refresher(inv, FluxionTarget(self.handle),
                                  failure_threshold=new["failure-threshold"],
                                  timeout=new["timeout"])
            # A hung vendor never stalls a cycle: reads get 80% of the interval, and a read
            # still running is left to finish for the next one.
            refresher.read_budget = new["interval"] * 0.8
            from fluxqr.devices import scrubio

            # SDK loggers (qrmi's among them) never print a credential into flux dmesg.
            scrubio.install_log_filters(scrubio.inventory_secrets(inv))
        except (FluxqrError, OSError) as exc:
            self.error = str(exc)
            self.log.error(f"fluxqr: agent not configured: {exc} (fix it, then run "
                           f"'flux config reload' or reload the module)")
            return
        self.settings, self.inventory, self.store, self.refresher = new, inv, store, refresher
        self._start_gateway()
        self._open_ledger(conf)
        self.sides = {}
        self.drain = DrainModel(default=new["vendor-job-seconds"])
        step = step_period(new["idle-timeout"])
        if step != self._step:  # held jobs move often enough to beat the idle timeout
            self._step = step
            self._tick.reset(step, step)
        self.error = None
        if self._refresh_timer is not None:
            self._refresh_timer.stop()
        self._refresh_timer = self.handle.timer_watcher_create(
            0.0, lambda *_: self._start_reads(), repeat=new["interval"])
        self._refresh_timer.start()
        self.log.info(f"fluxqr: agent serving {len(inv)} device(s) from {new['devices']}, "
                      f"refresh every {new['interval']:g} s")

    def _start_gateway(self) -> None:
        """(Re)start the credential gateway on the configured address; off on error."""
        from fluxqr.agent.gateway import Gateway

        bind = self.settings.get("gateway")
        if self.gateway is not None and (bind is None or self._gateway_bind != bind):
            self.gateway.stop()  # revokes every job's token
            self.gateway = None
        if bind is not None and self.gateway is None:
            try:
                self.gateway = Gateway(bind, owner=self.owner)
                self._gateway_bind = bind
            except OSError as exc:
                self.log.error(f"fluxqr: credential gateway not started on "
                               f"{bind[0]}:{bind[1]}: {exc.strerror or exc}; hybrid tasks "
                               f"get no vendor access")
                return
            self.gateway.on_task = self._task_created
            self.log.info(f"fluxqr: credential gateway at {self.gateway.url}")
        if self.gateway is not None:
            self.gateway.configure(self.inventory)

    def _task_created(self, jobid: int) -> None:
        """(A gateway thread) the job created a Braket task: save the job's record, with
        the task's ARN, from the reactor (the next agent accounts it if this one stops)."""
        def save(_result: Any, _error: BaseException | None) -> None:
            job = self.jobs.get(jobid)
            if job is not None and job.phase not in ("ending", "done"):
                self._save(job)

        self._posts.put(((jobid, "braket-task"), save, None, None))
        try:
            os.write(self._wfd, b"x")
        except OSError:
            pass  # the agent is stopping: it accounts the grant itself

    def _regrant(self, job: HybridJob, js: Any, devices: list[str]) -> None:
        """A re-adopted job's Braket tasks (saved by the previous agent): its new grant
        holds them again, so they are its own and accounted at its end. The previous
        agent's key died with it: the job's tasks ask for a new one."""
        tasks = (js.extra or {}).get("braket") or []
        if not tasks or self.gateway is None or self.inventory is None:
            return
        try:
            devs = [self.inventory.get(d) for d in devices]
        except (FluxqrError, KeyError):
            devs = []
        if self.gateway.grant(job.jobid, job.userid, devs, job.tokens) is not None:
            self.gateway.restore(job.jobid, tasks)

    def _ended_braket(self, jobid: int, js: Any) -> None:
        """Account the Braket tasks of a job that ended while no agent ran."""
        from fluxqr.agent.gateway import Grant

        grant = Grant(jobid, js.userid if js.userid is not None else -1, "", {}, {},
                      live=False)
        for task in (js.extra or {}).get("braket") or []:
            if isinstance(task, dict) and isinstance(task.get("arn"), str):
                grant.tasks[task["arn"]] = task
        if grant.tasks and self.gateway is not None:
            self._braket_usage(grant)

    def _revoke(self, job: HybridJob) -> None:
        if self.gateway is not None:
            grant = self.gateway.revoke(job.jobid)
            if grant is not None and grant.tasks:
                self._braket_usage(grant)

    def _braket_usage(self, grant: Any) -> None:
        """Account the Braket tasks a job created through the gateway: read back from
        Braket with the site key (a worker thread), then record per device."""
        gateway = self.gateway

        def done(result: Any, error: BaseException | None) -> None:
            if error is not None:
                self.log.error(f"fluxqr: job {grant.jobid}: Braket usage not read: "
                               f"{type(error).__name__}")
                return
            self._record_braket(grant.jobid, result)

        self._work((grant.jobid, "braket-usage"), lambda: gateway.braket_usage(grant), done)

    def _record_braket(self, jobid: int, result: Any) -> None:
        """Record what :meth:`Gateway.braket_usage` read, per device."""
        from fluxqr.devices.braket_adapter import usage

        for name, facts in (result or {}).items():
            dev = facts["device"]
            used = usage(str(dev.params["device"]), dev.params.get("price"), facts["tasks"])
            self._account("record_usage", jobid, name, tasks=used["tasks"],
                          shots=used["shots"], qpu_seconds=used["qpu_seconds"],
                          cost=used["cost"])

    def _open_ledger(self, conf: dict[str, Any]) -> None:
        """The QPU accounting ledger; a broken one is reported and accounting is off."""
        from fluxqr.core.accounting import Ledger
        from fluxqr.core.config import Limits
        from fluxqr.flux.instance import accounting_db

        self.limits = self.settings.get("limits") or Limits()
        try:
            if self.ledger is not None:
                self.ledger.close()
            self.ledger = Ledger(accounting_db(self.handle, conf))
        except (FluxqrError, OSError) as exc:
            self.ledger = None
            self.log.error(f"fluxqr: QPU accounting is off: {exc}")

    def _account(self, hook: str, *args: Any, **kwargs: Any) -> Any:
        """Call a ledger hook; accounting faults are logged, never break the agent."""
        if self.ledger is None:
            return None
        try:
            return getattr(self.ledger, hook)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - sqlite or our own errors alike
            self.log.error(f"fluxqr: accounting {hook} failed: {exc}")
            return None

    @request_handler("config-reload")
    def _config_reload(self, msg) -> None:
        # `flux config reload` sends the new configuration to every module.
        self._configure(msg.payload or {}, self.args)
        self.handle.respond(msg, None)

    # -- plumbing: work in threads, results back in the reactor ------------------------

    def _side(self, name: str) -> Any:
        from fluxqr.agent.vendor import side_for

        if name not in self.sides:
            self.sides[name] = side_for(self.inventory.get(name))
        return self.sides[name]

    def _work(self, key: tuple[int, str], fn: Callable[[], Any],
              done: Callable[[Any, BaseException | None], None]) -> None:
        """Run ``fn`` in a worker thread; ``done(result, error)`` then runs in the reactor."""
        from fluxqr.devices import _POOL

        if key in self._busy:
            return
        self._busy.add(key)

        def run() -> None:
            try:
                result, error = fn(), None
            except BaseException as exc:  # noqa: BLE001 - handed to the reactor
                result, error = None, exc
            self._posts.put((key, done, result, error))
            os.write(self._wfd, b"x")

        _POOL.submit(run)

    def _on_posts(self, *_args) -> None:
        os.read(self._rfd, 4096)
        while not self._posts.empty():
            key, done, result, error = self._posts.get()
            self._busy.discard(key)
            try:
                done(result, error)
            except Exception as exc:  # noqa: BLE001 - one job's fault never stops the agent
                self.log.error(f"fluxqr: internal error handling job {key[0]} "
                               f"({key[1]}): {type(exc).__name__}: {exc}")

    # -- refresh -----------------------------------------------------------------------

    def _start_reads(self) -> None:
        if self.refresher is None or self._reading:
            return
        self._reading = True
        refresher = self.refresher
        started = time.monotonic()

        def done(snaps: Any, error: BaseException | None) -> None:
            self._reading = False
            if refresher is not self.refresher:
                return  # reconfigured meanwhile
            if error is not None:
                self.log.error(f"fluxqr: device reads failed: {error}")
                return
            reader = refresher.reader
            refresher.reader = lambda *_a, s=snaps: s
            try:
                report = refresher.cycle()
            finally:
                refresher.reader = reader
            report.seconds += time.monotonic() - started
            if report.errors:
                self.log.error(f"fluxqr: cycle {refresher.cycles}: {len(report.errors)} "
                               f"error(s): {report.errors[0]}")

        self._work((0, "refresh"), lambda: refresher.reader(refresher.inventory,
                                                            refresher.timeout), done)

    # -- the journal -------------------------------------------------------------------

    def _on_event(self, event) -> None:
        if event is None:
            self.log.error("fluxqr: the job-manager journal ended; hybrid jobs are no "
                           "longer followed (reload the module)")
            return
        if event.is_empty():  # the sentinel: history replayed, now live
            self._replayed = True
            self._adopt()
            return
        name = event.name
        if name == "submit":
            self._on_submit(event)
            return
        job = self.jobs.get(event.jobid)
        if job is None:
            return
        ctx = event.context or {}
        live = self._replayed
        if name == "urgency":
            self._on_urgency(job, ctx)
        elif name == "alloc":
            job.mark("alloc", event.timestamp)
            self._jobspecs.pop(job.jobid, None)  # Fluxion is done with it
            self._account("job_running", job.jobid, event.timestamp)
            if job.phase not in ("ending", "done"):
                job.phase = "running" if live or job.start == "now" else job.phase
                if job.phase != "running":  # replayed: held job already released
                    job.phase = "running"
                if live and (job.start == "now" or not job.tokens):
                    self._begin(job)
        elif name == "start":
            job.mark("start", event.timestamp)
            # Devices without a vendor grant (local simulators, `now` sessions) are charged
            # from the job's start.
            for d in job.devices or self._allocated_devices(job):
                if "granted" not in job.times:
                    self._account("session_event", job.jobid, d, "activated",
                                  event.timestamp)
        elif name == "exception" and ctx.get("severity", 0) == 0:
            job.mark("exception", event.timestamp)
            job.result = job.result or {"cancel": "canceled", "timeout": "timeout"}.get(
                str(ctx.get("type")), "failed")
            if live:
                self._end(job, f"job exception: {ctx.get('type')}")
            else:
                job.phase = "ending"
        elif name in ENDING:
            job.mark(name, event.timestamp)
            if name == "finish":
                job.result = job.result or ("completed" if ctx.get("status") == 0
                                            else "failed")
            if name == "clean" and live:
                for d in job.devices:
                    if d not in job.refs:  # no vendor session: charged wall time until now
                        self._account("session_event", job.jobid, d, "closed",
                                      event.timestamp)
                self._account("job_ended", job.jobid, job.result or "failed",
                              event.timestamp)
            if live:
                self._end(job, name)
                if name == "clean":
                    self._forget(job)
            else:
                job.phase = "ending"
        if live:
            self._update_memo(job)

    def _on_submit(self, event) -> None:
        from fluxqr.core.jobspec import start_mode

        spec = event.jobspec or {}
        start = start_mode(spec)
        if start is None:
            return  # classical: nothing to do, ever
        quantum = spec["attributes"]["system"]["quantum"]
        request = quantum.get("request") or {}
        resolution = quantum.get("resolution") or {}
        ctx = event.context or {}
        job = HybridJob(int(event.jobid), int(ctx.get("userid", -1)), start,
                        list(resolution.get("pinned") or []),
                        urgency=quantum.get("urgency"),
                        mode=request.get("session_mode", "dedicated"),
                        max_time=request.get("session_max_time"),
                        duration=float(spec["attributes"]["system"].get("duration") or 0))
        job.mark("submit", event.timestamp)
        job.held = job.held_start and ctx.get("urgency") == 0 and job.urgency is not None
        self.jobs[job.jobid] = job
        if job.held_start:  # for Fluxion's start estimates while it is held
            self._jobspecs[job.jobid] = spec
        self._account_submit(job, spec)
        if not job.held_start and ctx.get("urgency") == 0 and job.urgency:
            # Held by a client that expected a vendor queue; the instance decided `now`.
            job.held = True
            if self._replayed:
                self._release(job)
        elif job.held_start and not job.devices:
            job.start, job.why = "now", "no device pinned at submit: started as 'now'"
        elif job.held_start and not job.held:
            job.urgency = int(ctx.get("urgency", 16))
            if self._replayed:
                self._hold_unheld(job)
        elif job.start == "now":
            job.candidates = list(job.devices or resolution.get("candidates") or [])
            if self._replayed and job.candidates:
                self._hold_if_down(job, int(ctx.get("urgency", 16)))

    def _down(self, devices: list[str], every: bool = False) -> str | None:
        """Why ``devices`` cannot be used: the first one the refresh loop has down (with
        ``every``: only when all of them are down), or None."""
        why = None
        for name in devices:
            state = self.refresher.states.get(name) if self.refresher else None
            if state is not None and not state.up:
                reason = state.properties.get("down_reason", "")
                why = why or f"device {name} is down" + (f" ({reason})" if reason else "")
                if not every:
                    return why
            elif every:
                return None
        return why

    def _hold_if_down(self, job: HybridJob, urgency: int) -> None:
        """Hold a `now` job whose device is down, so it never sits at the head of Fluxion's
        queue (blocking every job behind it under fcfs); released when the device is up."""
        why = self._down(job.candidates, every=True)
        if not why or urgency == 0:
            return
        job.urgency, job.held, job.down_hold, job.why = urgency, True, True, why
        self._set_urgency(job, 0)
        self._save(job)

    def _account_submit(self, job: HybridJob, spec: dict[str, Any]) -> None:
        from fluxqr.core.accounting import job_facts

        if self.ledger is None:
            return
        try:
            import pwd

            username = pwd.getpwuid(job.userid).pw_name
        except (KeyError, OverflowError):
            username = None
        facts = job_facts(spec)
        vendors = {d: (self.inventory.get(d).vendor if self.inventory else None)
                   for d in job.devices}
        self._account("job_started", job.jobid, userid=job.userid, username=username,
                      queue=facts.get("queue"), bank=facts.get("bank"),
                      project=facts.get("project"), devices=vendors,
                      t_submit=job.times.get("submit"))

    def _hold_unheld(self, job: HybridJob) -> None:
        """A held-start job that arrived unheld (a path that could not hold it): hold it
        now; if Fluxion was faster, it runs as ``now`` (recorded on the job)."""
        job.held = True
        self._set_urgency(job, 0)

    def _on_urgency(self, job: HybridJob, ctx: dict[str, Any]) -> None:
        urgency = int(ctx.get("urgency", 16))
        if job.phase == "released" or not job.held or urgency == 0:
            return
        if job.times.get("agent-release"):
            return
        # Someone released the held job by hand: it runs with `now` semantics.
        job.by_hand, job.start, job.held, job.down_hold = True, "now", False, False
        job.why = "released by hand: the session opens when the job starts"
        self.log.info(f"fluxqr: job {job.jobid}: released by hand; starting as 'now'")

    def _adopt(self) -> None:
        """After the journal's history: re-adopt what a previous agent left, close orphans.

        Nothing acts during the replay (a session must never be closed, or a job held,
        because of a past event); here the records left in the session store meet the
        jobs' replayed states.
        """
        if self.store is not None:
            for key in self.store.jobids():
                js = self.store.load(key)
                if js is None:
                    continue
                job = self.jobs.get(int(key))
                if job is None or job.phase in ("ending", "done"):
                    self._close_stored(int(key), js, "orphaned: its job has ended")
                    continue
                saved = (js.extra or {}).get("agent")
                if saved:
                    old = HybridJob.from_dict(saved)
                    job.tokens, job.anchors, job.queue = old.tokens, old.anchors, old.queue
                    job.own_tasks = old.own_tasks
                    job.times = {**old.times, **job.times}
                    job.by_hand = job.by_hand or old.by_hand
                    if old.down_hold and job.phase == "waiting":
                        job.held, job.down_hold = True, True
                        job.urgency = job.urgency if job.urgency is not None else old.urgency
                    if job.phase == "waiting" and old.phase in ("opening", "anchored",
                                                                 "granted", "released"):
                        job.phase = "anchored" if job.anchors else "opening"
                        if old.phase == "released":
                            job.phase = "released"
                else:
                    job.tokens = {r.device: r.token for r in js.records if r.token}
                self._regrant(job, js, job.devices or [r.device for r in js.records])
        for job in list(self.jobs.values()):
            if job.phase == "ending":
                self._close(job, "ended while no agent was running")
            elif job.phase == "done":
                self.jobs.pop(job.jobid, None)
            elif job.phase == "running" and not job.tokens:
                self._begin(job)
            elif job.held_start and not job.held and job.phase == "waiting":
                self._hold_unheld(job)
            elif not job.held_start and job.held and job.phase == "waiting":
                self._release(job)
            self._update_memo(job)
        held = [j for j in self.jobs.values() if j.held and j.phase not in ("ending", "done")]
        if held:
            self.log.info(f"fluxqr: following {len(held)} held hybrid job(s)")

    # -- the vendor side ---------------------------------------------------------------

    def _views(self, exclude: int) -> dict[str, DeviceView]:
        views = {}
        for dev in self.inventory:
            state = self.refresher.states.get(dev.name) if self.refresher else None
            # A session slot is taken from the moment its open starts (several jobs may
            # be admitted in one tick) until the session is closed.
            in_use = sum(1 for j in self.jobs.values() if j.jobid != exclude and
                         dev.name in j.devices and j.phase != "done" and
                         (dev.name in j.tokens or (j.jobid, "open") in self._busy or
                          (j.jobid, "give-back") in self._busy or j.phase == "opening"))
            views[dev.name] = DeviceView(
                up=state.up if state else True, slots=dev.sessions, in_use=in_use,
                reason=(state.properties.get("down_reason", "") if state else ""))
        return views

    def _on_tick(self, *_args) -> None:
        """Every step period (:func:`~fluxqr.agent.jobs.step_period`): move every held job one
        step (each step is asynchronous)."""
        if not self._replayed:
            return
        for job in list(self.jobs.values()):
            if job.held and job.held_start and \
                    job.phase in ("waiting", "opening", "anchored", "granted"):
                self._advance(job)
            if job.down_hold and job.phase == "waiting" and \
                    not self._down(job.candidates, every=True):
                job.down_hold = False
                self._release(job)
            if job.phase == "released" and keepalive_due(job, time.time(), self._ttl(job)):
                self._keepalive(job)
            if job.held and recheck_due(job, time.time(), self._ttl(job)):
                self._recheck(job)
            if self.limits and job.phase in ("granted", "released", "running") and \
                    self.ledger is not None:
                self._check_limit(job)

    def _ttl(self, job: HybridJob) -> float:
        """The session's idle timeout: the vendor's, else the site's ``idle-timeout``."""
        return job.idle_timeout or float(self.settings.get("idle-timeout", 60.0))

    def _keepalive(self, job: HybridJob) -> None:
        """Queue one more anchor in a granted session whose job is still waiting for its
        nodes, so the session does not go idle (and its next task queue again) first."""
        if (job.jobid, "keepalive") in self._busy:
            return  # the last one is still being queued: the next step tries again
        devices = [d for d in job.devices if d in job.tokens]
        # Stamped only when one is really queued: stamping a skipped one (the vendor
        # slow to answer the previous) pushed the next a whole period out, and the
        # session lapsed under load (benchmarks/bench_two_queue.py, `minutes`).
        job.times["keepalive"] = time.time()

        def queue() -> dict[str, str | None]:
            return {d: self._side(d).anchor(job.tokens[d]) for d in devices}

        def done(anchors: Any, error: BaseException | None) -> None:
            if error is not None:
                self.log.error(f"fluxqr: job {job.jobid}: keepalive failed: {error}")
                return
            job.anchors.update({d: a for d, a in (anchors or {}).items() if a})
            self._note_own_tasks(job, anchors)
            job.keepalives += 1
            if job.phase in ("ending", "done"):
                self._close(job, "ended while a keepalive was queued")
            else:
                self._save(job)  # the next agent must know this anchor is not the user's

        self._work((job.jobid, "keepalive"), queue, done)

    def _check_limit(self, job: HybridJob) -> None:
        """Close a running job's sessions when it reaches a site QPU limit."""
        from fluxqr.core.accounting import over_limit

        try:
            reason = over_limit(self.ledger, self.limits, job.jobid)
        except Exception as exc:  # noqa: BLE001 - accounting never breaks the agent
            self.log.error(f"fluxqr: limit check of job {job.jobid} failed: {exc}")
            return
        if not reason:
            return
        job.why, job.result = reason, "canceled"
        self.log.info(f"fluxqr: job {job.jobid}: {reason}")
        self._update_memo(job)
        self.handle.rpc("job-manager.raise", {"id": job.jobid, "type": "qpu-limit",
                                              "severity": 0, "note": f"fluxqr: {reason}"})
        self._end(job, "QPU limit")

    def _advance(self, job: HybridJob) -> None:
        if self.error or self.inventory is None:
            job.why = f"fluxqr agent not configured: {self.error}"
            self._update_memo(job)
            return
        if job.phase == "waiting":
            if (job.jobid, "give-back") in self._busy:
                return  # its last session is still closing
            why = admit(job, self._views(job.jobid))
            if why:
                if why != job.why:
                    job.why = why
                    self._update_memo(job)
                return
            job.why = None
            self._open(job)
        elif job.phase == "opening" and all(d in job.tokens for d in job.devices):
            self._place_anchors(job)
        elif job.phase == "anchored":
            self._poll(job)
        elif job.phase == "granted":
            self._release(job)

    def _open(self, job: HybridJob, devices: list[str] | None = None) -> None:
        job.phase = "opening"
        job.mark("opening")
        self._update_memo(job)
        devices = list(job.devices if devices is None else devices)

        def opener() -> dict[str, str | None]:
            tokens: dict[str, str | None] = {}
            for name in devices:
                tokens[name] = self._side(name).open(job.mode, job.max_time)
            return tokens

        def done(tokens: Any, error: BaseException | None) -> None:
            if error is None:
                from fluxqr.core.sessions import _ref

                for name, token in (tokens or {}).items():
                    if token is not None:
                        job.tokens[name] = token
                        job.refs[name] = _ref(token)
                        self._account("session_event", job.jobid, name, "opened")
                job.mark("opened")
                self._save(job)
            if job.phase in ("ending", "done"):
                # Canceled while the vendor was answering: close what it opened.
                self._close(job, "canceled while the session was opening")
                return
            if error is not None:
                self._fail(job, f"the vendor refused the session: {error}")
                return
            if job.start == "now":
                job.phase = "running"
                self._answer_env(job)
            self._update_memo(job)

        self._work((job.jobid, "open"), opener, done)

    def _lead(self, job: HybridJob, then: Callable[[], None]) -> None:
        """Ask Fluxion when this job could start (its ``without_allocating_future`` match),
        store it in ``job.lead``, then call ``then``."""
        spec = self._jobspecs.get(job.jobid)
        if spec is None:  # not seen at submit (adopted after a reload): ask once
            try:
                spec = self.handle.rpc("job-info.lookup", {"id": job.jobid, "keys": ["jobspec"],
                                                           "flags": 0}).get()["jobspec"]
            except OSError:
                job.lead = None
                then()
                return
            self._jobspecs[job.jobid] = spec

        def answered(future) -> None:
            try:
                at = float(future.get().get("at", 0.0))
                job.lead = max(0.0, at - time.time())
            except OSError:
                job.lead = None  # busy or unsatisfiable now: no estimate
            then()

        self.handle.rpc("sched-fluxion-resource.match",
                        {"cmd": "without_allocating_future", "jobid": job.jobid,
                         "jobspec": spec if isinstance(spec, str) else json.dumps(spec)}
                        ).then(answered)

    def _place_anchors(self, job: HybridJob) -> None:
        if (job.jobid, "lead") in self._busy:
            return
        self._busy.add((job.jobid, "lead"))

        def decide() -> None:
            self._busy.discard((job.jobid, "lead"))
            if job.phase != "opening":
                return
            ttl = job.idle_timeout or float(self.settings.get("idle-timeout", 60.0))
            waits = [self.drain.eta(d, job.queue.get(d), 0.0) for d in job.devices]
            known = [w for w in waits if w is not None]
            if not anchor_due(job.lead, max(known) if known else None, ttl):
                job.why = (f"anchor held back: Fluxion predicts the job starts in "
                           f"{job.lead:.0f} s, later than the vendor grant plus half the "
                           f"idle timeout")
                self._update_memo(job)
                return
            self._anchor(job)

        # Learn the device queue and the session's idle timeout (the vendor's interactive
        # TTL, where its session record gives it) before deciding; vendor reads, in a thread.
        def read_queues() -> tuple[dict[str, int | None], list[float]]:
            ttls = []
            for d in job.devices:
                info = self._side(d).session(job.tokens[d]) if d in job.tokens else None
                if info and isinstance(info.get("interactive_ttl"), int | float):
                    ttls.append(float(info["interactive_ttl"]))
            return {d: self._side(d).queue_length() for d in job.devices}, ttls

        def queues_read(result: Any, error: BaseException | None) -> None:
            if error is None:
                queues, ttls = result
                job.queue.update(queues)
                if ttls:
                    job.idle_timeout = min(ttls)
            self._lead(job, decide)

        self._work((job.jobid, "queues"), read_queues, queues_read)

    def _anchor(self, job: HybridJob) -> None:
        devices = list(job.devices)

        def anchorer() -> dict[str, str | None]:
            return {d: self._side(d).anchor(job.tokens.get(d)) for d in devices}

        def done(anchors: Any, error: BaseException | None) -> None:
            if error is None:
                job.anchors.update({d: a for d, a in (anchors or {}).items() if a})
                self._note_own_tasks(job, anchors)
            if job.phase in ("ending", "done"):
                self._close(job, "canceled while the anchor was queued")
                return
            if error is not None:
                self._fail(job, f"the vendor refused the anchor task: {error}")
                return
            job.phase = "anchored"
            job.why = None
            job.mark("anchored")
            self._save(job)
            self._update_memo(job)

        self._work((job.jobid, "anchor"), anchorer, done)

    def _poll(self, job: HybridJob) -> None:
        devices = list(job.devices)

        def poller() -> dict[str, Any]:
            return {d: self._side(d).poll(job.tokens.get(d), job.anchors.get(d))
                    for d in devices}

        def done(states: Any, error: BaseException | None) -> None:
            if error is not None or job.phase != "anchored":
                return
            failed = [s.error for s in states.values() if s.error and s.state in
                      ("failed", "canceled")]
            if failed:
                self._fail(job, failed[0])
                return
            granted = all(s.granted for s in states.values())
            waited = time.time() - job.times.get("anchored", time.time())
            etas = [self.drain.eta(d, job.queue.get(d), waited) for d in devices]
            known = [e for e in etas if e is not None]
            job.eta = max(known) if known else None
            if granted:
                for d in devices:
                    self.drain.learn(d, job.queue.get(d) or 0, waited)

            def decide() -> None:
                if job.phase != "anchored":
                    return
                if granted and give_back_due(
                        job, job.lead, max((e for e in (self.drain.eta(
                            d, job.queue.get(d), 0.0) for d in devices) if e is not None),
                            default=None), self._ttl(job)):
                    self._give_back(job)
                    return
                if granted:
                    job.mark("granted")
                    for d in devices:
                        self._account("session_event", job.jobid, d, "activated")
                if release_due(job, granted, margin=self._step):
                    job.phase = "granted" if granted else job.phase
                    self._release(job)
                else:
                    self._update_memo(job)

            if granted or job.start == "predicted":
                self._lead(job, decide)  # where Fluxion is now: keep the grant, or not
            else:
                decide()

        self._work((job.jobid, "poll"), poller, done)

    def _give_back(self, job: HybridJob) -> None:
        """Close a just-granted session whose job Fluxion cannot start soon, and send the
        job back to wait for a session slot and a new anchor (:func:`give_back_due`)."""
        tokens, anchors = dict(job.tokens), dict(job.anchors)
        job.givebacks += 1
        job.tokens, job.anchors = {}, {}
        job.phase = "waiting"
        for key in ("opening", "opened", "anchored"):
            job.times.pop(key, None)
        job.why = (f"grant given back: the vendor granted the device but Fluxion predicts "
                   f"the job's start in {job.lead:.0f} s (queued again)")
        self.log.info(f"fluxqr: job {job.jobid}: {job.why}")
        self._save(job)
        self._update_memo(job)

        def closer() -> dict[str, float]:
            billed = {}
            for d, token in tokens.items():
                if d in anchors:
                    self._side(d).cancel(anchors[d])
                self._side(d).close(token)
                info = self._side(d).session(token)
                if info and isinstance(info.get("elapsed_time"), int | float):
                    billed[d] = float(info["elapsed_time"])
            return billed

        def done(billed: Any, error: BaseException | None) -> None:
            if error is not None:
                self.log.error(f"fluxqr: job {job.jobid}: giving a grant back: {error}")
            for d, seconds in (billed or {}).items():
                job.given_back_s[d] = job.given_back_s.get(d, 0.0) + seconds
            self._save(job)

        self._work((job.jobid, "give-back"), closer, done)

    def _recheck(self, job: HybridJob) -> None:
        """Ask Fluxion again about a released job that has not started well after its
        grant (:func:`~fluxqr.agent.jobs.recheck_due`); if it would still wait so long that
        the session idles past half its timeout, hold the job again and give the grant
        back (:func:`~fluxqr.agent.jobs.give_back_due`)."""
        if (job.jobid, "lead") in self._busy:
            return
        self._busy.add((job.jobid, "lead"))
        job.times["recheck"] = time.time()

        def decide() -> None:
            self._busy.discard((job.jobid, "lead"))
            if job.phase != "released" or "alloc" in job.times or "granted" not in job.times:
                return
            requeue = max((e for e in (self.drain.eta(d, job.queue.get(d), 0.0)
                                       for d in job.devices) if e is not None), default=None)
            if give_back_due(job, job.lead, requeue, self._ttl(job),
                             held_for=time.time() - job.times["granted"]):
                self._rehold(job)

        self._lead(job, decide)

    def _rehold(self, job: HybridJob) -> None:
        """Hold a released job again (urgency 0), then give its grant back. The job
        manager refuses once the job has its resources: then it keeps its session."""

        def answered(future) -> None:
            try:
                future.get()
            except OSError:
                return  # allocated meanwhile: it starts in the session it has
            if job.phase != "released":
                return  # ended meanwhile: _end closes the session
            for key in ("granted", "keepalive", "agent-release", "recheck"):
                job.times.pop(key, None)
            self._give_back(job)

        self.handle.rpc("job-manager.urgency", {"id": job.jobid, "urgency": 0}
                        ).then(answered)

    def _release(self, job: HybridJob) -> None:
        job.mark("agent-release")
        job.phase = "released"
        job.why = None
        self._set_urgency(job, job.urgency if job.urgency is not None else 16)
        self._save(job)
        self._update_memo(job)

    def _set_urgency(self, job: HybridJob, urgency: int) -> None:
        def answered(future) -> None:
            try:
                future.get()
            except OSError as exc:
                if urgency == 0:  # could not hold it: Fluxion was faster
                    job.held, job.start = False, "now"
                    job.why = "could not be held (already scheduled): started as 'now'"
                else:
                    self.log.error(f"fluxqr: job {job.jobid}: release failed: "
                                   f"{exc.strerror or exc}")

        self.handle.rpc("job-manager.urgency", {"id": job.jobid, "urgency": int(urgency)}
                        ).then(answered)

    def _begin(self, job: HybridJob) -> None:
        """At allocation of a job whose sessions are not open yet (``now``)."""
        if self.inventory is None:
            return
        if (job.jobid, "open") in self._busy:
            return  # opened while held (then released by hand): its callback answers
        if not job.devices:
            job.devices = self._allocated_devices(job)
        missing = [d for d in job.devices if d not in job.tokens]
        if job.mode != "none" and any(self._side(d).queued for d in missing):
            self._open(job, missing)
        else:
            job.phase = "running"
            self._answer_env(job)

    def _allocated_devices(self, job: HybridJob) -> list[str]:
        from fluxqr.core.sessions import qpus_in_R

        try:
            r = self.handle.rpc("job-info.lookup", {"id": job.jobid, "keys": ["R"],
                                                    "flags": 0}).get()["R"]
            r = json.loads(r) if isinstance(r, str) else r
            return [m["name"] for m in qpus_in_R(r)]
        except (OSError, KeyError, TypeError, ValueError):
            return []

    # -- ending ------------------------------------------------------------------------

    def _end(self, job: HybridJob, why: str) -> None:
        if job.phase in ("ending", "done"):
            return
        opening = (job.jobid, "open") in self._busy or (job.jobid, "anchor") in self._busy
        job.phase = "ending"
        self._revoke(job)
        self._answer_env(job, error=f"job ended ({why})")
        if not opening:  # else the open/anchor callback closes what it got
            self._close(job, why)

    @staticmethod
    def _note_own_tasks(job: HybridJob, tasks: Any) -> None:
        """Remember the anchor/keepalive task ids just queued, so that the vendor's list of
        a session's tasks is not charged to the user for them."""
        for d, task in (tasks or {}).items():
            if task and task not in job.own_tasks.setdefault(d, []):
                job.own_tasks[d].append(task)

    def _closer(self, job: HybridJob) -> Callable[[], tuple[list[str], dict[str, Any]]]:
        """The vendor side of closing ``job`` (blocking: run it in a worker thread):
        cancel its anchors, close its sessions, read what the vendor billed. Returns
        (errors, usage: device -> (QPU seconds or None, the user's task count or None))."""
        anchors, tokens = dict(job.anchors), dict(job.tokens)
        own = {d: {*job.own_tasks.get(d, ()), *([anchors[d]] if d in anchors else [])}
               for d in tokens}

        def closer() -> tuple[list[str], dict[str, Any]]:
            errors = []
            for d, anchor in anchors.items():
                try:
                    self._side(d).cancel(anchor)
                except Exception as exc:  # noqa: BLE001 - the session close below matters
                    errors.append(f"anchor on {d}: {exc}")
            usage = {}
            for d, token in tokens.items():
                try:
                    self._side(d).close(token)
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"release of {d}: {exc}")
                info = self._side(d).session(token)  # the vendor's billing, after the close
                seconds = info.get("elapsed_time") if info else None
                try:
                    listed = self._side(d).session_jobs(token)  # None: the vendor lists none
                except Exception:  # noqa: BLE001 - a task count never fails a close
                    listed = None  # (no logging here: this runs in a worker thread)
                tasks = None if listed is None else len(set(listed) - own[d])
                if isinstance(seconds, int | float) or tasks is not None:
                    usage[d] = (float(seconds) if isinstance(seconds, int | float) else None,
                                tasks)
            return errors, usage

        return closer

    def _account_close(self, job: HybridJob, devices: Any, usage: dict[str, Any]) -> None:
        """Record what :meth:`_closer` read, and the sessions of ``devices`` as closed."""
        for d, (seconds, tasks) in usage.items():
            if seconds is not None:  # sessions given back were billed too
                seconds += job.given_back_s.get(d, 0.0)
            self._account("record_usage", job.jobid, d, qpu_seconds=seconds, tasks=tasks)
        for d in devices:
            self._account("session_event", job.jobid, d, "closed")

    def _close(self, job: HybridJob, why: str) -> None:
        anchors, tokens = dict(job.anchors), dict(job.tokens)
        closer = self._closer(job)

        def done(result: Any, error: BaseException | None) -> None:
            errors, usage = result if result else ([], {})
            errors = list(errors) + ([str(error)] if error else [])
            self._account_close(job, tokens, usage)
            if errors:
                job.why = f"closing failed: {errors[0]}"
                self.log.error(f"fluxqr: job {job.jobid}: {'; '.join(errors)}")
                self._save(job)  # kept for the next load's sweep
            else:
                job.mark("closed")
                job.tokens, job.anchors = {}, {}
                if self.store is not None:
                    self.store.delete(str(job.jobid))
            job.phase = "done"
            self._update_memo(job, final=True)
            if "clean" in job.times:  # closed after the job's clean event: forget it now
                self._forget(job)

        if not tokens and not anchors:
            job.phase = "done"
            self._update_memo(job, final=True)
            if self.store is not None:
                self.store.delete(str(job.jobid))
            return
        self.log.info(f"fluxqr: job {job.jobid}: closing vendor session(s) ({why})")
        self._work((job.jobid, "close"), closer, done)

    def _close_stored(self, jobid: int, js: Any, why: str) -> None:
        self._ended_braket(jobid, js)
        job = HybridJob.from_dict((js.extra or {}).get("agent") or {
            "jobid": jobid, "userid": js.userid or -1, "start": "now", "devices": []})
        for rec in js.records:
            if rec.token and not rec.released:
                job.tokens[rec.device] = rec.token
        self.jobs.setdefault(jobid, job)
        self._close(job, why)

    def _fail(self, job: HybridJob, why: str) -> None:
        from fluxqr.devices.base import scrub

        line = scrub(" ".join(str(why).split()), list(job.tokens.values()))
        job.why = line
        job.phase = "ending" if job.phase != "done" else job.phase
        self._revoke(job)
        self.log.error(f"fluxqr: job {job.jobid}: {line}")
        self._answer_env(job, error=line)
        self._update_memo(job)  # before the exception: an inactive job takes no memo
        self.handle.rpc("job-manager.raise", {"id": job.jobid, "type": "fluxqr",
                                              "severity": 0, "note": f"fluxqr: {line}"})
        self._close(job, "vendor failure")

    def _forget(self, job: HybridJob) -> None:
        self._revoke(job)
        self._jobspecs.pop(job.jobid, None)
        if job.phase == "done":
            self.jobs.pop(job.jobid, None)
            self._memos.pop(job.jobid, None)

    # -- records -----------------------------------------------------------------------

    def _save(self, job: HybridJob) -> None:
        """Persist the job (tokens included) in an owner-only file: the next agent
        re-adopts it, or closes what it holds."""
        if self.store is None:
            return
        from fluxqr.core.sessions import JobSessions, SessionRecord

        records = [SessionRecord(d, self.inventory.get(d).adapter if self.inventory else "?",
                                 job.mode, token=job.tokens.get(d)) for d in job.devices]
        extra: dict[str, Any] = {"agent": job.to_dict()}
        if self.gateway is not None and (tasks := self.gateway.tasks(job.jobid)):
            extra["braket"] = tasks  # ARNs, not secrets: accounted by the next agent
        js = JobSessions(str(job.jobid), records, duration=job.duration,
                         devices_file=self.settings.get("devices"), userid=job.userid,
                         extra=extra)
        try:
            self.store.save(js)
        except OSError as exc:
            self.log.error(f"fluxqr: job {job.jobid}: cannot save its session record: {exc}")

    def _quiet(self, job: HybridJob) -> bool:
        """A job with nothing to show: not held, no vendor session, nothing wrong (a local
        simulator started `now`). Its memos would only cost eventlog writes."""
        if job.held or job.refs or job.tokens or job.why or self.inventory is None:
            return False
        names = job.devices or job.candidates
        return bool(names) and all(
            name in {d.name for d in self.inventory} and not self._side(name).queued
            for name in names)

    def _update_memo(self, job: HybridJob, final: bool = False) -> None:
        if self._quiet(job):
            return
        memo: dict[str, Any] = {MEMO_KEY: job.memo()}
        if job.devices:
            memo[SESSIONS_MEMO_KEY] = job.sessions_memo()
        text = json.dumps(memo, sort_keys=True)
        last = self._memos.get(job.jobid)
        if last == text:
            return
        self._memos[job.jobid] = text
        payload = memo_update(json.loads(last) if last else {}, memo)
        f = self.handle.rpc("job-manager.memo", {"id": job.jobid, "volatile": False,
                                                 "memo": payload})
        f.then(lambda fut: _ignore(fut))

    # -- services ----------------------------------------------------------------------

    @request_handler("status", allow_guest=True)
    def _status(self, msg) -> None:
        status: dict[str, Any] = self.refresher.status() if self.refresher else {}
        status["settings"] = self.settings
        status["error"] = self.error
        status["jobs"] = {str(j.jobid): dict(j.memo(), userid=j.userid)
                          for j in self.jobs.values() if j.phase != "done"}
        self.handle.respond(msg, json.loads(json.dumps(status, default=str)))

    @request_handler("session-env", allow_guest=True)
    def _session_env(self, msg) -> None:
        try:
            jobid = _jobid(msg.payload["jobid"])
        except (KeyError, TypeError, ValueError):
            self.handle.respond_error(msg, errno.EINVAL, "fluxqr: session-env needs a jobid")
            return
        job = self.jobs.get(jobid)
        if job is None:
            self.handle.respond_error(msg, errno.ENOENT,
                                      f"fluxqr: job {jobid} is not a hybrid job the agent "
                                      f"follows")
            return
        if msg.userid not in (job.userid, self.owner):
            self.handle.respond_error(msg, errno.EPERM,
                                      f"fluxqr: job {jobid}: its session environment is for "
                                      f"its owner only")
            return
        if job.phase in ("running", "released", "granted") and \
                (job.jobid, "open") not in self._busy:
            self._respond_env(job, msg)
            return
        if job.phase in ("ending", "done"):  # never queue a waiter nothing will answer
            self.handle.respond_error(msg, errno.ECANCELED,
                                      f"fluxqr: {job.why or f'job {jobid} has ended'}")
            return
        # The session is still opening (`now` at allocation): answer when it is open.
        self._env_waiters.setdefault(jobid, []).append(msg)

    def _answer_env(self, job: HybridJob, error: str | None = None) -> None:
        for msg in self._env_waiters.pop(job.jobid, []):
            if error:
                self.handle.respond_error(msg, errno.ECANCELED, f"fluxqr: {error}")
            else:
                self._respond_env(job, msg)

    def _respond_env(self, job: HybridJob, msg: Any, relay: Any = None) -> None:
        from fluxqr.core.sessions import JobSessions, SessionRecord, task_environment

        rank = _rank_of(msg)
        if relay is None and rank not in (None, self.rank) and self._needs_gateway(job):
            self._ask_relay(job, msg, rank)  # answers through here again, with ``relay``
            return
        try:
            devices = [self.inventory.get(d) for d in job.devices]
            js = JobSessions(str(job.jobid), [
                SessionRecord(d.name, d.adapter, job.mode if d.adapter == "qrmi" else "none",
                              token=job.tokens.get(d.name)) for d in devices],
                duration=job.duration, devices_file=self.settings.get("devices"),
                userid=job.userid)
            access, notice = None, None
            if self.gateway is not None:
                grant = self.gateway.grant(job.jobid, job.userid, devices, job.tokens)
                base, notice = self._gateway_base(job, rank, relay) if grant else (None, None)
                access = self.gateway.settings(grant, base) if grant and not notice else None
            env = task_environment(js, devices, gateway=access)
        except (FluxqrError, KeyError, AttributeError) as exc:
            self.handle.respond_error(msg, errno.ENOENT, f"fluxqr: job {job.jobid}: {exc}")
            return
        self.handle.respond(msg, {"env": env, **({"notice": notice} if notice else {})})

    # -- the credential relays (fluxqr.agent.relay) on the other ranks --------------------

    @property
    def rank(self) -> int:
        return self.handle.get_rank()

    def _needs_gateway(self, job: HybridJob) -> bool:
        """Whether the job holds a device its tasks reach through the gateway."""
        from fluxqr.agent.gateway import speaks, speaks_braket

        try:
            return self.gateway is not None and any(
                speaks(d) or speaks_braket(d) for d in map(self.inventory.get, job.devices))
        except (FluxqrError, KeyError, AttributeError):
            return False  # answered (with the error) without asking any relay

    def _ask_relay(self, job: HybridJob, msg: Any, rank: int) -> None:
        """Ask rank ``rank``'s relay where it listens (every time: a relay reloaded on a
        new port is never stale), then answer the job shell's ``msg``."""
        def answered(future: Any) -> None:
            try:
                relay = dict(future.get() or {})
            except OSError as exc:
                relay = {"error": "not loaded" if exc.errno == errno.ENOSYS else
                         (exc.strerror or str(exc))}
            try:
                if job.phase in ("ending", "done"):  # ended meanwhile: mint it no grant
                    self.handle.respond_error(msg, errno.ECANCELED, "fluxqr: "
                                              f"{job.why or f'job {job.jobid} has ended'}")
                else:
                    self._respond_env(job, msg, relay)
            except Exception as exc:  # noqa: BLE001 - a callback's error stops the reactor
                self.log.error(f"fluxqr: job {job.jobid}: session-env on rank {rank}: "
                               f"{type(exc).__name__}: {exc}")

        try:
            # bounded: a wedged rank delays its job shells by this much, then says why
            self.handle.rpc("fluxqr-relay.info", nodeid=rank).then(answered, timeout=10.0)
        except OSError as exc:
            self._respond_env(job, msg, {"error": exc.strerror or str(exc)})

    def _gateway_base(self, job: HybridJob, rank: int | None, relay: Any
                      ) -> tuple[str | None, str | None]:
        """(the URL a task on ``rank`` reaches the gateway at: None for the gateway's own,
        the reason it gets no credential). Tasks on rank 0 use the gateway; elsewhere the
        node's relay, or the gateway itself only when the admin bound it off loopback."""
        if rank in (None, self.rank):
            return None, None
        url = relay.get("url") if isinstance(relay, dict) else None
        if isinstance(url, str) and url.startswith("http://127.0.0.1:"):
            return url, None
        if not self.gateway.loopback:
            return None, None
        why = relay.get("error") if isinstance(relay, dict) else None
        return None, (f"job {job.jobid}: no credential relay on rank {rank} ({why or 'none'}):"
                      f" its tasks get no vendor credential (the admin loads "
                      f"modules/fluxqr-relay.py on every rank, see the admin guide)")

    @request_handler("relay")
    def _relay(self, msg) -> None:
        """A task's request read by a node's relay (owner-only: the relay runs as the
        instance owner and vouches for the uid it read from /proc; a user calling this
        service is refused by the broker). The gateway answers it in a worker thread; the
        reply is sent from the reactor."""
        from fluxqr.agent.relay import decode_request, encode_reply

        try:
            uid, method, target, headers, body = decode_request(msg.payload)
        except ValueError as exc:
            self.handle.respond_error(msg, errno.EPROTO, f"fluxqr: relayed request: {exc}")
            return
        gateway = self.gateway
        if gateway is None:
            self.handle.respond_error(msg, errno.ENOENT, "fluxqr: the credential gateway "
                                      f"is off{f' ({self.error})' if self.error else ''}")
            return

        def done(result: Any, error: BaseException | None) -> None:
            if error is not None:
                self.handle.respond_error(msg, errno.EIO, "fluxqr: gateway error")
            else:
                self.handle.respond(msg, encode_reply(*result))

        self._work((0, f"relay-{next(self._relay_ids)}"),
                   lambda: gateway.dispatch(method, target, headers, body, uid), done)

    @request_handler("refresh")
    def _refresh(self, msg) -> None:
        self._start_reads()
        self.handle.respond(msg, {"started": self.refresher is not None})

    # -- lifetime ----------------------------------------------------------------------

    def _on_sigterm(self, *_args) -> None:
        # At instance shutdown the broker terminates Python modules with SIGTERM: close
        # every vendor session before exiting (jobs canceled now run no more code of ours).
        self.log.info("fluxqr: terminating")
        self._terminated = True
        self.stop()

    def _close_all_now(self) -> None:
        """Close everything and account it, synchronously (instance shutdown: the reactor
        has stopped). Every job's gateway access ends first; then each job's vendor work
        (:meth:`_closer`, Braket usage) runs in a worker with :data:`SHUTDOWN_DEADLINE`
        seconds per job: a hung vendor delays the broker's exit by that much at most, and
        a job it could not close keeps its record for the next load's sweep. Jobs that
        held nodes end here (the instance kills them); pending ones stay queued."""
        from concurrent.futures import TimeoutError as Timeout

        from fluxqr.devices import _POOL

        jobs = [j for j in self.jobs.values() if j.phase != "done"]
        grants = {}
        for job in jobs:
            grant = self.gateway.revoke(job.jobid) if self.gateway is not None else None
            if grant is not None and grant.tasks:
                grants[job.jobid] = grant
        for job in jobs:
            devices = list(job.tokens)
            if job.tokens or job.anchors:
                try:
                    errors, usage = _POOL.submit(self._closer(job)).result(SHUTDOWN_DEADLINE)
                except Timeout:
                    errors, usage = [f"no answer within {SHUTDOWN_DEADLINE:g} s"], {}
                except Exception as exc:  # noqa: BLE001 - the next job still closes
                    errors, usage = [str(exc)], {}
                self._account_close(job, devices, usage)
                if errors:
                    self.log.error(f"fluxqr: job {job.jobid}: closing at shutdown: "
                                   f"{'; '.join(errors)}")
                else:
                    job.tokens, job.anchors = {}, {}
                    if self.store is not None:
                        self.store.delete(str(job.jobid))
            if job.jobid in grants and self.gateway is not None:
                try:
                    read = functools.partial(self.gateway.braket_usage, grants[job.jobid])
                    self._record_braket(job.jobid,
                                        _POOL.submit(read).result(SHUTDOWN_DEADLINE))
                except Exception as exc:  # noqa: BLE001 - incl. the timeout
                    self.log.error(f"fluxqr: job {job.jobid}: Braket usage not read at "
                                   f"shutdown: {type(exc).__name__}")
            if "alloc" in job.times:  # it held nodes: the instance's end is the job's end
                for d in job.devices:
                    if d not in job.refs:  # no vendor session: charged wall time until now
                        self._account("session_event", job.jobid, d, "closed")
                self._account("job_ended", job.jobid, job.result or "canceled",
                              reason="instance shutdown")

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self._terminated and self.inventory is not None:
                self._close_all_now()  # revokes each job's gateway access first
            if self.gateway is not None:
                self.gateway.stop()  # every job token dies with the agent
            logging.getLogger("fluxqr").removeHandler(self._handler)
            for watcher in (self._refresh_timer, self._tick, self._fdw, self._sigterm):
                if watcher is not None:
                    watcher.stop()
            os.close(self._rfd)
            os.close(self._wfd)


def _journal(h: Any) -> Any:
    """The job-manager journal, full history then live, only :data:`JOURNAL_EVENTS`
    (flux-core's ``events-journal`` filters by event name with ``allow``)."""
    from flux.job.journal import JournalConsumer

    class Journal(JournalConsumer):
        # Every job's history keeps its submit event, so no job's replayed history is
        # empty (an empty response would read as the end of the history).
        @property
        def request_payload(self) -> dict[str, Any]:
            return {**super().request_payload, "allow": dict.fromkeys(JOURNAL_EVENTS, 1)}

    return Journal(h, full=True, include_sentinel=True)


def _rank_of(msg: Any) -> int | None:
    """The broker rank a session-env request names (its job shell's), if any."""
    try:
        rank = (msg.payload or {}).get("rank")
    except AttributeError:
        return None
    return rank if isinstance(rank, int) and not isinstance(rank, bool) and rank >= 0 \
        else None


def _jobid(value: Any) -> int:
    from flux.job import JobID

    return int(JobID(value))


def _ignore(future: Any) -> None:
    try:
        future.get()
    except OSError:
        pass  # the job may be gone already
