"""QPU accounting: who used which quantum device, for how long, and the site's limits.

A :class:`Ledger` is a SQLite database (stdlib :mod:`sqlite3`, WAL journal) that the
quantum agent writes as a hybrid job goes through its life, and that ``flux qr usage``
reads. No Flux import: the agent decides *when* to call, this module records.

One row per job (``jobs``) and one per device of the job (``devices``). Column names
for the job follow flux-accounting's job records (``userid``, ``username``,
``t_submit``, ``t_run``, ``t_inactive``, ``project``, ``bank``), so an export maps
one to one.

What is charged for a device (its *seconds*): the vendor-reported QPU seconds when the
vendor gives them (:meth:`Ledger.record_usage`), otherwise the wall time from the
session's activation to its close (to now while it is open; a session that never
became active costs nothing). For devices without vendor sessions (local simulators)
the agent marks ``activated`` when the job starts, so they are charged their wall time.

The hooks, in the order the agent calls them for one job (all idempotent, so a
restarted agent re-adopting a job may call them again)::

    led = Ledger(path)                              # once, at agent start
    led.job_started(jobid, userid=..., username=..., queue=..., bank=..., project=...,
                    devices={"ibm_fez": "ibm"}, t_submit=...)   # when the agent adopts it
    led.session_event(jobid, "ibm_fez", "opened")     # the vendor gave a session id
    led.session_event(jobid, "ibm_fez", "activated")  # the vendor grants the device
    led.record_usage(jobid, "ibm_fez", qpu_seconds=12.5, tasks=3)  # read from the vendor
    led.session_event(jobid, "ibm_fez", "closed")     # closed, however the job ends
    led.job_ended(jobid, "completed")   # inactive: completed, failed, canceled or timeout

and on the submit path / the running-job check: :func:`check_submit`, :func:`over_limit`.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fluxqr.core.config import Limits, parse_seconds
from fluxqr.errors import FluxqrError

EXITS = ("completed", "failed", "canceled", "timeout")
EVENTS = ("opened", "activated", "closed")
GROUP_KEYS = ("user", "device", "vendor", "queue", "bank", "project", "exit", "day")
DB_NAME = "accounting.db"


class AccountingError(FluxqrError):
    """The accounting database is unusable, or a hook was called with bad arguments."""


# -- schema and migrations -----------------------------------------------------------------

# Ordered steps: MIGRATIONS[i] takes a database from user_version i to i + 1. Never edit
# a released step; append a new one (a database in the field may be at any version).
_V1 = """
CREATE TABLE jobs (
    jobid      INTEGER PRIMARY KEY,      -- Flux's 64-bit job id
    userid     INTEGER NOT NULL,
    username   TEXT,
    queue      TEXT,
    bank       TEXT,
    t_submit   REAL,
    t_run      REAL,
    t_inactive REAL,
    exit       TEXT
);
CREATE TABLE devices (
    jobid       INTEGER NOT NULL REFERENCES jobs(jobid) ON DELETE CASCADE,
    device      TEXT NOT NULL,
    vendor      TEXT,
    opened      REAL,
    activated   REAL,
    closed      REAL,
    qpu_seconds REAL,                    -- vendor-reported; NULL = not reported
    tasks       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (jobid, device)
);
"""
_V2 = """
ALTER TABLE jobs ADD COLUMN project TEXT;
ALTER TABLE jobs ADD COLUMN reason TEXT;          -- why the job ended, e.g. a limit
ALTER TABLE devices ADD COLUMN shots INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN cost REAL;         -- vendor's cost estimate (e.g. USD)
CREATE INDEX jobs_userid ON jobs(userid);
CREATE INDEX jobs_t_inactive ON jobs(t_inactive);
CREATE INDEX devices_device ON devices(device);
"""
MIGRATIONS: tuple[str, ...] = (_V1, _V2)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the database to schema version ``target``; returns the version it had.

    Each step runs in its own transaction together with the ``user_version`` bump, so a
    crash leaves the database at a whole version.
    """
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise AccountingError(f"accounting database schema version {current} is newer than "
                              f"this fluxqr's ({SCHEMA_VERSION})", fix="upgrade fluxqr")
    for version in range(current, target):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # the version may have moved while we waited for the write lock
            if conn.execute("PRAGMA user_version").fetchone()[0] != version:
                conn.rollback()
                continue
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    return current


def _statements(script: str) -> list[str]:
    # executescript() would commit our transaction first; split instead (no ';' in strings)
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


# -- job ids and times ---------------------------------------------------------------------

_F58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def f58(jobid: int) -> str:
    """Flux's FLUID f58 form of a job id (``ƒ`` prefix), as ``flux jobs`` prints it."""
    digits = ""
    while True:
        jobid, rem = divmod(jobid, 58)
        digits = _F58[rem] + digits
        if not jobid:
            return "ƒ" + digits


def jobid_int(jobid: int | str | Any) -> int:
    """A job id as Flux's integer: from an int, a ``flux.job.JobID``, decimal, 0x hex or f58."""
    if isinstance(jobid, int):
        return jobid
    text = str(jobid).strip()
    try:
        if text[:1] in ("ƒ", "f") and len(text) > 1:
            value = 0
            for ch in text[1:]:
                value = value * 58 + _F58.index(ch)
            return value
        return int(text, 0)
    except ValueError:
        raise AccountingError(f"invalid job id {jobid!r}",
                              fix="use the id flux jobs prints (e.g. ƒ2Xo8UUEH) or an integer"
                              ) from None


def parse_time(text: str | float | None, now: float | None = None, where: str = "time"
               ) -> float | None:
    """Epoch seconds from ``7d``/``12h`` (that long ago), an ISO date/time (local time
    unless it has a zone), or epoch seconds; ``None``/``""`` stays ``None``."""
    if text is None or text == "":
        return None
    if isinstance(text, int | float):
        return float(text)
    text = str(text).strip()
    now = time.time() if now is None else now
    if re.fullmatch(r"[0-9]*\.?[0-9]+\s*[smhdw]", text):
        return now - parse_seconds(text, where)
    if re.fullmatch(r"[0-9]+(\.[0-9]*)?", text) and len(text.split(".")[0]) > 8:
        return float(text)
    try:
        return _dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise AccountingError(f"{where}: cannot read {text!r} as a time",
                              fix="use a span ago (7d, 12h, 30m), a date (2026-11-01), "
                                  "a date and time (2026-11-01T08:00) or epoch seconds"
                              ) from None


def exit_kind(result: str) -> str:
    """Map Flux's job result (``COMPLETED``, ``FAILED``, ``CANCELED``, ``TIMEOUT``) to ours."""
    kind = str(result).strip().lower()
    if kind == "cancelled":
        kind = "canceled"
    if kind not in EXITS:
        raise AccountingError(f"unknown job exit {result!r}", fix=f"use one of {', '.join(EXITS)}")
    return kind


def default_path(statedir: str | None, rundir: str | None) -> str:
    """Where the ledger lives when ``[fluxqr] accounting-db`` is not set: the broker's
    persistent ``statedir`` if it has one, else its ``rundir`` (lost at instance exit)."""
    base = statedir or rundir
    if not base:
        raise AccountingError("no directory for the accounting database",
                              fix="set [fluxqr] accounting-db, or start the instance with "
                                  "-Sstatedir=DIR")
    return os.path.join(base, "fluxqr", DB_NAME)


# -- the ledger ----------------------------------------------------------------------------

# What a device row is charged, in seconds (see the module docstring). :now is bound per query.
_WALL = ("CASE WHEN d.activated IS NULL THEN 0.0 ELSE "
         "MAX(0.0, COALESCE(d.closed, j.t_inactive, :now) - d.activated) END")
_SECONDS = f"COALESCE(d.qpu_seconds, {_WALL})"
_GROUP_SQL = {"user": "COALESCE(j.username, CAST(j.userid AS TEXT))", "device": "d.device",
              "vendor": "d.vendor", "queue": "j.queue", "bank": "j.bank",
              "project": "j.project", "exit": "j.exit",
              "day": "date(COALESCE(d.activated, d.opened, j.t_run, j.t_submit), 'unixepoch', "
                     "'localtime')"}
#: per-job row columns, flux-accounting's job-record names first
JOB_COLUMNS = ("jobid", "username", "userid", "t_submit", "t_run", "t_inactive", "project",
               "bank", "queue", "exit", "device", "vendor", "opened", "activated", "closed",
               "seconds", "source", "qpu_seconds", "wall_seconds", "tasks", "shots", "cost")
TOTAL_COLUMNS = ("jobs", "seconds", "qpu_seconds", "wall_seconds", "tasks", "shots", "cost")


class Ledger:
    """The QPU usage database at ``path`` (created, with its directory, on first use;
    ``":memory:"`` is an empty, private one).

    Every hook is one short transaction (``BEGIN IMMEDIATE``): several writers (an agent
    and a re-adopting agent after a reload, or tests) wait for each other up to
    ``timeout`` seconds instead of failing, and a crash loses at most the hook in flight.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True, timeout: float = 30.0):
        self.path = Path(path)
        memory = str(path) == ":memory:"
        if not create and not memory and not self.path.exists():
            raise AccountingError(f"no accounting database at {self.path}",
                                  fix="the quantum agent creates it with the first hybrid job; "
                                      "or pass --db FILE")
        try:
            if create and not memory:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT)
            self.conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoint
            self.conn.execute("PRAGMA foreign_keys=ON")
            migrate(self.conn)
        except sqlite3.Error as exc:
            raise AccountingError(f"accounting database {self.path}: {exc}",
                                  fix="check the file and its directory's permissions") from None

    # -- plumbing

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(self.conn)
                self.conn.commit()
                return out
            except BaseException:
                self.conn.rollback()
                raise
        except sqlite3.Error as exc:
            raise AccountingError(f"accounting database {self.path}: {exc}") from None

    def _ensure_job(self, conn: sqlite3.Connection, jid: int) -> None:
        if conn.execute("SELECT 1 FROM jobs WHERE jobid = ?", (jid,)).fetchone() is None:
            raise AccountingError(f"job {f58(jid)} is not in the accounting database",
                                  fix="call job_started() first")

    # -- hooks (the agent calls these)

    def job_started(self, jobid: int | str, *, userid: int, username: str | None = None,
                    queue: str | None = None, bank: str | None = None,
                    project: str | None = None, devices: Mapping[str, str | None] | None = None,
                    t_submit: float | None = None, t_run: float | None = None) -> None:
        """Record a hybrid job and its devices (``{device: vendor}``).

        Call when the agent adopts the job (its ``submit`` or ``validate`` journal event,
        or on re-adoption after a restart). ``bank``/``project``: the jobspec's
        ``attributes.system.bank``/``.project`` (what flux-accounting charges), ``queue``:
        ``attributes.system.queue``. ``t_run``: when the job's ``alloc`` event came (may be
        given later through :meth:`job_running`). Fields already recorded are kept, so
        calling again is harmless.
        """
        jid = jobid_int(jobid)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO jobs (jobid, userid, username, queue, bank, project, t_submit, "
                "t_run) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(jobid) DO UPDATE SET "
                "username = COALESCE(username, excluded.username), "
                "queue = COALESCE(queue, excluded.queue), bank = COALESCE(bank, excluded.bank), "
                "project = COALESCE(project, excluded.project), "
                "t_submit = COALESCE(t_submit, excluded.t_submit), "
                "t_run = COALESCE(t_run, excluded.t_run)",
                (jid, int(userid), username, queue, bank, project, t_submit, t_run))
            for device, vendor in (devices or {}).items():
                conn.execute("INSERT INTO devices (jobid, device, vendor) VALUES (?, ?, ?) "
                             "ON CONFLICT(jobid, device) DO UPDATE SET "
                             "vendor = COALESCE(vendor, excluded.vendor)", (jid, device, vendor))

        self._write(write)

    def job_running(self, jobid: int | str, t: float | None = None) -> None:
        """The job got its allocation (journal ``alloc`` event); sets ``t_run`` once."""
        jid = jobid_int(jobid)
        t = time.time() if t is None else t

        def write(conn: sqlite3.Connection) -> None:
            self._ensure_job(conn, jid)
            conn.execute("UPDATE jobs SET t_run = COALESCE(t_run, ?) WHERE jobid = ?", (t, jid))

        self._write(write)

    def session_event(self, jobid: int | str, device: str, event: str, t: float | None = None,
                      *, vendor: str | None = None) -> None:
        """A device's session was ``opened`` (the vendor gave a session id), ``activated``
        (the vendor granted the device: charging starts) or ``closed`` (charging stops).

        The first time of each event is kept. For a device without vendor sessions (a
        local simulator), call ``activated`` when the job starts running and ``closed``
        when it ends: it is charged its wall time.
        """
        if event not in EVENTS:
            raise AccountingError(f"unknown session event {event!r}",
                                  fix=f"use one of {', '.join(EVENTS)}")
        jid = jobid_int(jobid)
        t = time.time() if t is None else t

        def write(conn: sqlite3.Connection) -> None:
            self._ensure_job(conn, jid)
            conn.execute("INSERT INTO devices (jobid, device, vendor) VALUES (?, ?, ?) "
                         "ON CONFLICT(jobid, device) DO UPDATE SET "
                         "vendor = COALESCE(vendor, excluded.vendor)", (jid, device, vendor))
            conn.execute(f"UPDATE devices SET {event} = COALESCE({event}, ?) "
                         "WHERE jobid = ? AND device = ?", (t, jid, device))

        self._write(write)

    def record_usage(self, jobid: int | str, device: str, *, qpu_seconds: float | None = None,
                     tasks: int | None = None, shots: int | None = None,
                     cost: float | None = None, cumulative: bool = True) -> None:
        """Vendor-reported usage of ``device`` by the job.

        ``cumulative=True`` (default): the values are the job's totals so far on that device
        (e.g. IBM's session usage), and replace what was recorded; ``False``: increments
        (e.g. one Braket task's duration and shots). ``None`` leaves a value unchanged.
        Once ``qpu_seconds`` is recorded it is what the device is charged, not wall time.
        """
        jid = jobid_int(jobid)
        for name, value in (("qpu_seconds", qpu_seconds), ("tasks", tasks), ("shots", shots),
                            ("cost", cost)):
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise AccountingError(f"{name} must be a number >= 0 (got {value!r})")

        def write(conn: sqlite3.Connection) -> None:
            self._ensure_job(conn, jid)
            conn.execute("INSERT INTO devices (jobid, device) VALUES (?, ?) "
                         "ON CONFLICT(jobid, device) DO NOTHING", (jid, device))
            sets, params = [], []
            for name, value in (("qpu_seconds", qpu_seconds), ("tasks", tasks),
                                ("shots", shots), ("cost", cost)):
                if value is None:
                    continue
                sets.append(f"{name} = ?" if cumulative else f"{name} = COALESCE({name}, 0) + ?")
                params.append(value)
            if sets:
                conn.execute(f"UPDATE devices SET {', '.join(sets)} WHERE jobid = ? AND "
                             "device = ?", (*params, jid, device))

        self._write(write)

    def job_ended(self, jobid: int | str, exit: str, t: float | None = None,
                  reason: str | None = None) -> None:
        """The job is inactive (journal ``clean`` event); ``exit``: completed, failed,
        canceled or timeout (:func:`exit_kind` maps Flux's result names). Devices whose
        session was not closed are closed at ``t``, so nothing is charged past the job's end.
        ``reason``: e.g. the limit that stopped it."""
        kind = exit_kind(exit)
        jid = jobid_int(jobid)
        t = time.time() if t is None else t

        def write(conn: sqlite3.Connection) -> None:
            self._ensure_job(conn, jid)
            conn.execute("UPDATE jobs SET t_inactive = COALESCE(t_inactive, ?), "
                         "exit = COALESCE(exit, ?), reason = COALESCE(reason, ?) "
                         "WHERE jobid = ?", (t, kind, reason, jid))
            conn.execute("UPDATE devices SET closed = ? WHERE jobid = ? AND closed IS NULL "
                         "AND (opened IS NOT NULL OR activated IS NOT NULL)", (t, jid))

        self._write(write)

    # -- queries

    def _where(self, user: str | int | None, device: str | None, queue: str | None,
               since: float | None, until: float | None, jobid: int | str | None,
               params: dict[str, Any]) -> str:
        clauses = []
        if user is not None and str(user) != "":
            clauses.append("(j.username = :user OR CAST(j.userid AS TEXT) = :user)")
            params["user"] = str(user)
        if device:
            clauses.append("d.device = :device")
            params["device"] = device
        if queue:
            clauses.append("j.queue = :queue")
            params["queue"] = queue
        if jobid is not None:
            clauses.append("j.jobid = :jobid")
            params["jobid"] = jobid_int(jobid)
        # a row is in [since, until] when its use (activation, else open, else the job's
        # run or submit time, until close/end/now) overlaps the window
        if since is not None:
            clauses.append("COALESCE(d.closed, j.t_inactive, :now) >= :since")
            params["since"] = since
        if until is not None:
            clauses.append("COALESCE(d.activated, d.opened, j.t_run, j.t_submit) <= :until")
            params["until"] = until
        return ("WHERE " + " AND ".join(clauses)) if clauses else ""

    def usage(self, *, user: str | int | None = None, device: str | None = None,
              queue: str | None = None, since: float | None = None, until: float | None = None,
              jobid: int | str | None = None, now: float | None = None) -> list[dict[str, Any]]:
        """Per job and device rows (:data:`JOB_COLUMNS`), oldest first. ``user``: a name or
        a uid; ``since``/``until``: epoch seconds (rows overlapping the window)."""
        params: dict[str, Any] = {"now": time.time() if now is None else now}
        where = self._where(user, device, queue, since, until, jobid, params)
        rows = self.conn.execute(
            "SELECT j.jobid, j.username, j.userid, j.t_submit, j.t_run, j.t_inactive, "
            "j.project, j.bank, j.queue, j.exit, d.device, d.vendor, d.opened, d.activated, "
            f"d.closed, {_SECONDS} AS seconds, CASE WHEN d.qpu_seconds IS NULL THEN 'wall' "
            f"ELSE 'vendor' END AS source, d.qpu_seconds, {_WALL} AS wall_seconds, d.tasks, "
            f"d.shots, d.cost FROM jobs j JOIN devices d USING (jobid) {where} "
            "ORDER BY COALESCE(d.activated, d.opened, j.t_run, j.t_submit), j.jobid, d.device",
            params).fetchall()
        return [dict(r) for r in rows]

    def totals(self, group_by: Sequence[str] = ("user", "device"), *,
               user: str | int | None = None, device: str | None = None,
               queue: str | None = None, since: float | None = None,
               until: float | None = None, now: float | None = None) -> list[dict[str, Any]]:
        """Sums per group (keys from :data:`GROUP_KEYS`): number of jobs and the
        :data:`TOTAL_COLUMNS`; most seconds first."""
        bad = [k for k in group_by if k not in GROUP_KEYS]
        if bad:
            raise AccountingError(f"cannot group by {', '.join(bad)}",
                                  fix=f"use {', '.join(GROUP_KEYS)}")
        params: dict[str, Any] = {"now": time.time() if now is None else now}
        where = self._where(user, device, queue, since, until, None, params)
        keys = [f"{_GROUP_SQL[k]} AS \"{k}\"" for k in group_by]
        sql = (f"SELECT {', '.join([*keys, ''])}COUNT(DISTINCT j.jobid) AS jobs, "
               f"SUM({_SECONDS}) AS seconds, SUM(d.qpu_seconds) AS qpu_seconds, "
               f"SUM({_WALL}) AS wall_seconds, SUM(d.tasks) AS tasks, SUM(d.shots) AS shots, "
               f"SUM(d.cost) AS cost FROM jobs j JOIN devices d USING (jobid) {where}")
        if group_by:
            sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(group_by)))
        sql += " ORDER BY seconds DESC" + "".join(f", {i + 1}" for i in range(len(group_by)))
        rows = [dict(r) for r in self.conn.execute(sql, params).fetchall()]
        return [r for r in rows if r["jobs"]]  # an empty ungrouped SUM is one row of NULLs

    def job_seconds(self, jobid: int | str, now: float | None = None) -> float:
        """QPU seconds charged to one job so far (all its devices; open sessions to now)."""
        rows = self.usage(jobid=jobid, now=now)
        return float(sum(r["seconds"] for r in rows))

    def user_seconds(self, user: str | int, since: float, now: float | None = None) -> float:
        """QPU seconds charged to ``user`` (name or uid) for use overlapping ``since``..now."""
        rows = self.totals((), user=user, since=since, now=now)
        return float(rows[0]["seconds"] or 0.0) if rows else 0.0

    def summary(self, jobid: int | str, now: float | None = None) -> dict[str, Any]:
        """A small summary for the job's memo: charged seconds in total and per device."""
        rows = self.usage(jobid=jobid, now=now)
        return {"qpu_seconds": round(sum(r["seconds"] for r in rows), 3),
                "devices": {r["device"]: {"seconds": round(r["seconds"], 3),
                                          "source": r["source"], "tasks": r["tasks"]}
                            for r in rows}}

    def user_of(self, jobid: int | str) -> tuple[int, str | None] | None:
        row = self.conn.execute("SELECT userid, username FROM jobs WHERE jobid = ?",
                                (jobid_int(jobid),)).fetchone()
        return (row["userid"], row["username"]) if row else None


# -- what the agent reads from a jobspec ----------------------------------------------------


def job_facts(jobspec: Mapping[str, Any]) -> dict[str, Any]:
    """What the ledger and the limits need from a hybrid jobspec: ``queue``, ``bank``,
    ``project`` (``attributes.system.*``, ``None`` when absent) and ``request_seconds`` —
    the most QPU seconds the job can be charged: its QPUs times its session ``max_time``,
    else times its ``duration``; ``None`` when it has neither (no time limit)."""
    system = (jobspec.get("attributes") or {}).get("system") or {}
    request = (system.get("quantum") or {}).get("request") or {}
    per_qpu = request.get("session_max_time") or system.get("duration") or None
    qpus = int(request.get("qpus", 1) or 1)
    out: dict[str, Any] = {k: (str(system[k]) if system.get(k) is not None else None)
                           for k in ("queue", "bank", "project")}
    out["request_seconds"] = float(per_qpu) * qpus if per_qpu else None
    return out


# -- limits --------------------------------------------------------------------------------


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.1f}"


def _period(seconds: float) -> str:
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{_fmt(seconds)}s"


def check_submit(ledger: Ledger, limits: Limits, user: str | int,
                 request_seconds: float | None, now: float | None = None) -> None:
    """Raise a one-line :class:`~fluxqr.errors.FluxqrError` if a new job of ``user`` (name
    or uid) asking for up to ``request_seconds`` QPU seconds would exceed the limits.

    ``request_seconds``: the most the job can be charged (e.g. its session max time, or
    its duration, times its QPUs); ``None`` when unknown — then only the per-user budget
    is checked (must not be used up) and the running check enforces the per-job cap.
    """
    if limits.job is not None and request_seconds is not None and request_seconds > limits.job:
        raise FluxqrError(f"the job may use {_fmt(request_seconds)} QPU seconds, over the site "
                          f"limit of {_fmt(limits.job)} per job",
                          fix="ask for less time (--time-limit or quantum.session.max_time)")
    if limits.user is not None:
        now = time.time() if now is None else now
        used = ledger.user_seconds(user, now - limits.period, now=now)
        extra = request_seconds or 0.0
        if used >= limits.user or used + extra > limits.user:
            left = max(0.0, limits.user - used)
            raise FluxqrError(f"user {user} has used {_fmt(used)} of {_fmt(limits.user)} QPU "
                              f"seconds in the last {_period(limits.period)}; this job may use "
                              f"{_fmt(extra)}",
                              fix=f"ask for at most {_fmt(left)} QPU seconds, or wait"
                              if left > 0 else "wait until older usage leaves the window")


def over_limit(ledger: Ledger, limits: Limits, jobid: int | str,
               now: float | None = None) -> str | None:
    """Why a running job must stop (one line), or ``None``.

    Call it periodically for every job with an active session (e.g. each agent cycle);
    on a reason, close the job's sessions and raise a job exception (type ``qpu-limit``)
    with it, then :meth:`Ledger.job_ended` with ``reason``.
    """
    if not limits:
        return None
    now = time.time() if now is None else now
    if limits.job is not None:
        used = ledger.job_seconds(jobid, now=now)
        if used >= limits.job:
            return (f"job used {_fmt(used)} QPU seconds, reaching the site limit of "
                    f"{_fmt(limits.job)} per job ([fluxqr] limits.job-qpu-seconds)")
    if limits.user is not None:
        owner = ledger.user_of(jobid)
        if owner is not None:
            who = owner[1] or str(owner[0])
            used = ledger.user_seconds(owner[0], now - limits.period, now=now)
            if used >= limits.user:
                return (f"user {who} used {_fmt(used)} QPU seconds in the last "
                        f"{_period(limits.period)}, reaching the site limit of "
                        f"{_fmt(limits.user)} ([fluxqr] limits.user-qpu-seconds)")
    return None


def iter_rows(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Iterable[list[Any]]:
    """Rows as lists in ``columns`` order (for CSV writers)."""
    for r in rows:
        yield [r.get(c) for c in columns]
