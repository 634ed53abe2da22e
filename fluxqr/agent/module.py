"""The fluxqr broker module: the refresh loop inside a Flux instance.

Load it with ``flux module load <prefix>/modules/fluxqr.py [key=value ...]`` (the
file ``fluxqr flux-install`` writes). Settings come from the instance's TOML
``[fluxqr]`` table and may be overridden by module arguments:

======================  ==========================================  =========
key                     meaning                                     default
======================  ==========================================  =========
``devices``             devices.yaml path                           required
``interval``            seconds between cycles                      60
``timeout``             seconds one device read may take            per device
``failure-threshold``   failed reads in a row before a device       3
                        goes down
``session-dir``         session state files (used by the prolog,    <rundir>/fluxqr
                        epilog and ``flux qr session env``)
======================  ==========================================  =========

Device reads run in a worker thread, so a slow vendor endpoint never blocks the
broker's reactor; the RPCs to Fluxion are sent from the reactor. The module
answers ``fluxqr.status`` (what ``flux qr status`` prints) and ``fluxqr.agent.refresh``
(run a cycle now).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import signal
import threading
import time
from typing import Any

from flux.brokermod import BrokerModule, request_handler
from flux.constants import FLUX_POLLIN

from fluxqr.agent.refresh import FluxionTarget, Refresher
from fluxqr.core.config import settings
from fluxqr.errors import FluxqrError


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
    """Refresh QPU properties and status in this instance's Fluxion."""

    def __init__(self, h, *args):
        super().__init__(h, *args)
        from fluxqr.core import inventory

        self._handler = _BrokerLogHandler(self)
        logging.getLogger("fluxqr").addHandler(self._handler)
        logging.getLogger("fluxqr").setLevel(logging.INFO)
        try:
            conf = h.rpc("config.get").get() or {}
            self.settings = settings(conf, args)
            inv = inventory.load(self.settings["devices"])
            from fluxqr.agent.sessions import instance_context

            # Computed once: at shutdown the broker may no longer answer config requests.
            self.sessions = instance_context(h, self.settings)
            self.refresher = Refresher(inv, FluxionTarget(h),
                                       failure_threshold=self.settings["failure-threshold"],
                                       timeout=self.settings["timeout"])
        except FluxqrError as exc:
            # One clear line in flux dmesg, and `flux module load` fails.
            self.log.error(f"fluxqr: {exc}")
            raise OSError(f"fluxqr: {exc}") from None
        self._results: queue.Queue = queue.Queue()
        self._busy = False
        self._terminated = False
        self._rfd, self._wfd = os.pipe()
        self._fdw = h.fd_watcher_create(self._rfd, self._on_results, events=FLUX_POLLIN)
        self._fdw.start()
        self._timer = h.timer_watcher_create(0.0, self._on_timer,
                                             repeat=self.settings["interval"])
        self._timer.start()
        # At instance shutdown the broker terminates Python modules with SIGTERM: catch it
        # in the reactor so the sessions of canceled jobs are released before exiting.
        self._sigterm = h.signal_watcher_create(signal.SIGTERM, self._on_sigterm)
        self._sigterm.start()
        self._sweep()  # sessions left by jobs that ended while no epilog could run
        self.log.info(f"fluxqr: refreshing {len(inv)} device(s) every "
                      f"{self.settings['interval']:g} s from {self.settings['devices']}")

    # The cycle is split: reads (slow, no Flux calls) in a thread; pushes in the reactor.
    def _on_timer(self, *_args) -> None:
        self._start_reads()

    def _start_reads(self) -> None:
        if self._busy:
            return
        self._busy = True
        threading.Thread(target=self._read_worker, daemon=True, name="fluxqr-reads").start()

    def _read_worker(self) -> None:
        snaps: Any
        start = time.monotonic()
        try:
            snaps = self.refresher.reader(self.refresher.inventory, self.refresher.timeout)
        except Exception as err:  # noqa: BLE001 - reported from the reactor side
            snaps = err
        self._results.put((snaps, time.monotonic() - start))
        os.write(self._wfd, b"x")

    def _on_results(self, *_args) -> None:
        os.read(self._rfd, 64)
        while not self._results.empty():
            snaps, read_seconds = self._results.get()
            self._busy = False
            if isinstance(snaps, Exception):
                self.log.error(f"fluxqr: device reads failed: {snaps}")
                continue
            reader = self.refresher.reader
            self.refresher.reader = lambda *_a, s=snaps: s
            try:
                report = self.refresher.cycle()
            finally:
                self.refresher.reader = reader
            report.seconds += read_seconds  # the cycle's time includes its reads
            if report.errors:
                self.log.error(f"fluxqr: cycle {self.refresher.cycles}: "
                               f"{len(report.errors)} error(s): {report.errors[0]}")

    @request_handler("status", allow_guest=True)
    def _status(self, msg) -> None:
        status = self.refresher.status()
        status["settings"] = self.settings
        self.handle.respond(msg, json.loads(json.dumps(status, default=str)))

    @request_handler("session-env", allow_guest=True)
    def _session_env(self, msg) -> None:
        # Job shells on every node ask here: the session records live on this rank.
        from fluxqr.agent.sessions import job_environment
        from fluxqr.errors import FluxqrError

        try:
            jobid = str(msg.payload["jobid"])
            env = job_environment(self.sessions, jobid, userid=msg.userid)
            self.handle.respond(msg, {"env": env})
        except (FluxqrError, KeyError, TypeError, ValueError) as exc:
            self.handle.respond_error(msg, errno.EPERM if "owner only" in str(exc)
                                      else errno.ENOENT, str(exc))

    @request_handler("refresh")
    def _refresh(self, msg) -> None:
        self._start_reads()
        self.handle.respond(msg, {"started": True})

    def _on_sigterm(self, *_args) -> None:
        self.log.info("fluxqr: terminating")
        self._terminated = True
        self.stop()

    def _sweep(self, release: frozenset[str] = frozenset({"INACTIVE"})) -> None:
        from fluxqr.agent.sessions import sweep
        from fluxqr.errors import FluxqrError

        try:
            for line in sweep(self.sessions, release):
                self.log.info(f"fluxqr: session sweep: {line}")
        except (FluxqrError, OSError) as exc:
            self.log.error(f"fluxqr: session sweep failed: {exc}")

    def run(self) -> None:
        try:
            super().run()
        finally:
            # At instance shutdown the broker terminates this module after running jobs
            # were canceled, possibly before their epilogs ran: release what they hold.
            if self._terminated:
                self._sweep(frozenset({"INACTIVE", "CLEANUP"}))
            logging.getLogger("fluxqr").removeHandler(self._handler)
            self._timer.stop()
            self._fdw.stop()
            self._sigterm.stop()
            os.close(self._rfd)
            os.close(self._wfd)
