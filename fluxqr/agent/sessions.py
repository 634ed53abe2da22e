"""The instance side of sessions: session records of running jobs, the tasks'
environment (served to job shells), and the sweep of sessions left by ended jobs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from fluxqr.core.inventory import Inventory
from fluxqr.core.sessions import (
    MEMO_KEY,
    JobSessions,
    SessionError,
    SessionStore,
    close_sessions,
    open_sessions,
    qpus_in_R,
    task_environment,
)


@dataclass
class InstanceContext:
    """What the prolog/epilog/env commands need from the instance."""

    handle: Any
    inventory: Inventory
    devices_file: str
    store: SessionStore


def instance_context(handle: Any, conf: dict[str, Any] | None = None) -> InstanceContext:
    """Settings (``conf``, or ``[fluxqr]`` from the instance config); the store defaults to
    rank 0's ``<rundir>/fluxqr`` (where the prolog runs)."""
    from fluxqr.core import inventory
    from fluxqr.core.config import settings
    from fluxqr.flux.instance import config, rpc

    conf = conf if conf is not None else settings(config(handle), ())
    directory = conf.get("session-dir")
    if not directory:
        rundir = rpc(handle, "attr.get", {"name": "rundir"}, nodeid=0)["value"]
        directory = os.path.join(rundir, "fluxqr")
    return InstanceContext(handle, inventory.load(conf["devices"]), conf["devices"],
                           SessionStore(directory))


def _job(handle: Any, jobid: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    import flux.job

    jid = flux.job.JobID(jobid)
    info = flux.job.job_kvs_lookup(handle, jid, keys=["R", "jobspec"], decode=True)
    if not info or not info.get("R"):
        raise SessionError(f"job {jobid}: no R in the KVS (not running?)")
    return jid, info["R"], info.get("jobspec") or {}


def _memo(handle: Any, jid: Any, js: JobSessions) -> None:
    memo = {MEMO_KEY: {r.device: r.public() for r in js.records}}
    handle.rpc("job-manager.memo", {"id": int(jid), "volatile": False, "memo": memo}).get()


def prolog(ctx: InstanceContext, jobid: str) -> JobSessions | None:
    """Open the job's sessions (job-manager prolog). Raises :class:`SessionError`."""
    from fluxqr.core.jobspec import quantum_of

    jid, r, spec = _job(ctx.handle, jobid)
    names = [m["name"] for m in qpus_in_R(r)]
    if not names:
        return None
    quantum = quantum_of(spec) or {}
    request = quantum.get("request") or {}
    mode = request.get("session_mode", "dedicated")
    max_time = request.get("session_max_time")
    duration = float(((spec.get("attributes") or {}).get("system") or {}).get("duration") or 0)
    devices = [ctx.inventory.get(n) for n in names]
    key = str(int(jid))
    userid = os.environ.get("FLUX_JOB_USERID")
    try:
        js = open_sessions(key, devices, mode, max_time, ctx.store, duration=duration,
                           devices_file=ctx.devices_file,
                           userid=int(userid) if userid else None)
    except SessionError as exc:
        failed = ctx.store.load(key)
        if failed is not None:
            _memo(ctx.handle, jid, failed)
            ctx.store.delete(key)
        ctx.handle.rpc("job-manager.raise", {"id": int(jid), "type": "fluxqr", "severity": 0,
                                             "note": str(exc)}).get()
        raise
    _memo(ctx.handle, jid, js)
    return js


def epilog(ctx: InstanceContext, jobid: str) -> list[str]:
    """Release whatever the job still holds (job-manager epilog). Never raises for releases."""
    import flux.job

    jid = flux.job.JobID(jobid)
    key = str(int(jid))
    js = ctx.store.load(key)
    if js is None:
        return []
    errors = close_sessions(js, ctx.inventory)
    try:
        _memo(ctx.handle, jid, js)
    except OSError as exc:
        errors.append(f"recording the release failed: {exc.strerror or exc}")
    if errors:
        ctx.store.save(js)  # keep it for a retry (fluxqr session sweep)
    else:
        ctx.store.delete(key)
    return errors


def remote_environment(handle: Any, jobid: str) -> dict[str, str] | None:
    """Ask rank 0's fluxqr module for the environment (works on every node); None when
    the module is not loaded."""
    import errno

    try:
        return handle.rpc("fluxqr.session-env", {"jobid": str(jobid)}, nodeid=0).get()["env"]
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return None
        raise SessionError(f"job {jobid}: {exc.strerror or exc}") from None


def job_environment(ctx: InstanceContext, jobid: str, userid: int | None = None
                    ) -> dict[str, str]:
    """The tasks' environment for a running job (``flux qr session env``).

    ``userid``: who asks (the broker module passes the requester); only the job's owner
    and the instance owner get an answer.
    """
    import flux.job

    key = str(int(flux.job.JobID(jobid)))
    js = ctx.store.load(key)
    if js is not None and userid is not None and userid not in (js.userid, os.getuid()):
        raise SessionError(f"job {jobid}: its session environment is for its owner only")
    if js is None:
        raise SessionError(f"job {jobid}: no session record in {ctx.store.dir}",
                           fix="is the fluxqr prolog configured? On multi-node instances set "
                               "[fluxqr] session-dir to a directory every node can read")
    devices = [ctx.inventory.get(r.device) for r in js.records]
    return task_environment(js, devices)


def _job_state(handle: Any, jobid: str) -> str | None:
    """The job's state name (``RUN``, ``CLEANUP``, ``INACTIVE``...), or None if unknown."""
    import flux.job

    try:
        info = flux.job.job_list_id(handle, flux.job.JobID(jobid), attrs=["state"]).get_jobinfo()
        return str(info.state)
    except (OSError, ValueError, AttributeError):
        return None


def sweep(ctx: InstanceContext, release: frozenset[str] = frozenset({"INACTIVE"})) -> list[str]:
    """Release the sessions of jobs in a state in ``release`` (or whose state is unknown).

    The broker module runs this when it is loaded (jobs already inactive: their epilog
    never ran) and when the broker terminates it at instance shutdown (then also jobs in
    CLEANUP, canceled while their epilogs may not get to run). Returns a line per job.
    """
    done = []
    for key in ctx.store.jobids():
        state = _job_state(ctx.handle, key)
        if state is not None and state not in release:
            continue
        js = ctx.store.load(key)
        if js is None:
            continue
        errors = close_sessions(js, ctx.inventory)
        try:
            _memo(ctx.handle, int(key), js)
        except (OSError, ValueError):
            pass  # the job-manager may be gone already; the release is what matters
        if errors:
            ctx.store.save(js)
            done.append(f"job {key}: {'; '.join(errors)}")
        else:
            ctx.store.delete(key)
            released = [r.device for r in js.records if r.released]
            done.append(f"job {key}: released {', '.join(released) or 'nothing'}")
    return done
