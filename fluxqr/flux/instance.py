"""Talking to a running Flux instance: Fluxion's resource RPCs, config, submission.

Everything that needs a live broker goes through here, so the graph, jobspec and
refresh logic stay testable without Flux. The ``flux`` bindings are imported on
first use (see :mod:`fluxqr.flux.env`).
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable
from typing import Any

from fluxqr.errors import FluxqrError, FluxUnavailableError, JobspecError
from fluxqr.flux.env import import_flux

RESOURCE = "sched-fluxion-resource"
FROBNICATOR_SHIM = "fluxqr_frobnicator.py"
VALIDATOR_SHIM = "fluxqr_validator.py"
INGEST_FIX = ('add fluxqr\'s ingest plugins to the instance config: [ingest.frobnicator] plugins '
              f'= ["defaults", "constraints", "PREFIX/ingest/{FROBNICATOR_SHIM}"] and '
              f'[ingest.validator] plugins = ["PREFIX/ingest/{VALIDATOR_SHIM}"] (PREFIX as '
              'given to fluxqr flux-install; then flux config reload), as the fluxqr admin '
              'guide shows')
#: the name earlier fluxqr versions used
VALIDATOR_FIX = INGEST_FIX


def connect(uri: str | None = None) -> Any:
    """Open a handle to the enclosing (or given) Flux instance."""
    flux = import_flux()
    try:
        return flux.Flux(uri) if uri else flux.Flux()
    except OSError as exc:
        raise FluxUnavailableError(
            f"cannot connect to a Flux instance ({exc.strerror or exc})",
            fix="run inside one (flux start, flux alloc, or set FLUX_URI)") from None


def rpc(handle: Any, topic: str, payload: dict[str, Any] | None = None, nodeid: int = 0) -> Any:
    """One RPC, its response decoded; OSError carries the service's error text."""
    return handle.rpc(topic, payload or {}, nodeid=nodeid).get()


def _service_error(exc: OSError) -> str:
    return str(exc.strerror or exc).strip()


# -- Fluxion resource RPCs -----------------------------------------------------------------


def _find(handle: Any, criteria: str, fmt: str) -> Any:
    try:
        resp = rpc(handle, f"{RESOURCE}.find", {"criteria": criteria, "format": fmt})
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            raise FluxqrError("Fluxion (sched-fluxion-resource) is not loaded in this instance",
                              fix="load flux-sched's modules (flux module load "
                                  "sched-fluxion-resource)") from None
        raise FluxqrError(f"Fluxion find failed: {_service_error(exc)}") from None
    r = resp.get("R")
    return json.loads(r) if isinstance(r, str) else r


def resource_view(handle: Any, cores: bool = False) -> Any:
    """The scheduler's QPUs (properties, up/down) for the jobspec resolver, cheaply.

    Asks Fluxion only for the vertices that carry fluxqr's ``adapter`` property and for
    what is down — not for the whole graph, which on a large cluster takes seconds.
    ``cores``: also learn the largest cores-per-node (to turn ``-n N`` into nodes).
    """
    from fluxqr.core.jobspec import QpuInfo, ResourceView

    down = _find(handle, "status=down and property=adapter", "jgf") or {}
    down_names = {n["metadata"].get("name") for n in (down.get("graph") or {}).get("nodes", [])
                  if n.get("metadata", {}).get("type") == "qpu"}
    found = _find(handle, "property=adapter", "jgf") or {}
    qpus = [QpuInfo(m["name"], m["paths"]["containment"], m["name"] not in down_names,
                    dict(m.get("properties") or {}))
            for m in (n["metadata"] for n in (found.get("graph") or {}).get("nodes", []))
            if m.get("type") == "qpu"]
    per_node = None
    if cores:
        from fluxqr.core import rfc

        r = _find(handle, "status=up", "rv1_nosched") or {}
        counts = [len(rfc.decode_idset(str(e["children"].get("core", ""))))
                  for e in (r.get("execution") or {}).get("R_lite", [])]
        per_node = max(counts) if counts else None
    return ResourceView(qpus, per_node, "running Fluxion")


#: The view stamp: a file in the instance's rundir that every fluxqr writer of QPU status
#: or properties replaces after a change, so readers that cache the view (the ingest
#: frobnicator) see the change on their next job without asking Fluxion for every job.
VIEW_STAMP = "fluxqr-view.stamp"


def view_stamp_path(handle: Any) -> str | None:
    """``<rundir>/fluxqr-view.stamp`` of the instance (None when it has no rundir): one
    RPC, so callers keep the answer."""
    rundir = _attr(handle, "rundir")
    return os.path.join(rundir, VIEW_STAMP) if rundir else None


def view_stamp(path: str | None) -> tuple[int, int] | None:
    """The stamp's identity (inode, mtime); None when there is none. Changes on every
    :func:`touch_view` (a new file each time: two changes within one clock tick differ)."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def touch_view(path: str | None) -> None:
    """Say that the QPUs' status or properties just changed, at the stamp ``path``
    (:func:`view_stamp_path`; best effort: a reader that misses it still re-reads when
    its cache ages out)."""
    if not path:
        return
    tmp = f"{path}.{os.getpid()}"
    try:
        with open(tmp, "w") as fp:
            fp.write("")
        os.replace(tmp, path)
    except OSError:
        pass


def set_property(handle: Any, paths: Iterable[str], key: str, value: str) -> None:
    """Set ``key=value`` on every vertex in ``paths`` with one RPC."""
    rpc(handle, f"{RESOURCE}.set_property",
        {"sp_resource_path": list(paths), "sp_keyval": f"{key}={value}"})


def remove_property(handle: Any, paths: Iterable[str], key: str) -> None:
    rpc(handle, f"{RESOURCE}.remove_property",
        {"resource_path": list(paths), "key": key})


def get_property(handle: Any, path: str, key: str) -> list[str]:
    resp = rpc(handle, f"{RESOURCE}.get_property", {"gp_resource_path": path, "gp_key": key})
    return list(resp.get("values", []))


def set_status(handle: Any, path: str, up: bool) -> None:
    rpc(handle, f"{RESOURCE}.set_status",
        {"resource_path": path, "status": "up" if up else "down"})


# -- configuration and submission -----------------------------------------------------------


def config(handle: Any) -> dict[str, Any]:
    """The instance's TOML configuration as a dict."""
    try:
        return rpc(handle, "config.get") or {}
    except OSError:
        return {}


def credential_names(conf: dict[str, Any]) -> set[str]:
    """Environment variable names the site inventory holds secrets in (never copied to jobs)."""
    from fluxqr.core import inventory

    path = (conf.get("fluxqr") or {}).get("devices")
    if not path:
        return set()
    try:
        inv = inventory.load(path)
    except FluxqrError:
        return set()
    return {name for dev in inv for name in dev.credentials.values()}


def _has_shim(table: dict[str, Any], shim: str) -> bool:
    return any(str(p).rsplit("/", 1)[-1] == shim for p in table.get("plugins") or [])


def check_validator(handle: Any, conf: dict[str, Any] | None = None) -> None:
    """Fail with the fix when the instance lacks fluxqr's job-ingest plugins.

    Quantum requests are turned into resources on the instance, by fluxqr's frobnicator
    (:mod:`fluxqr.flux.ingest`), and checked by its validator; a client that only sets the
    request (the CLI plugin, the Python API) would otherwise submit a job that never gets
    its QPU. A disabled validator is accepted (the site chose to validate nothing).
    """
    conf = config(handle) if conf is None else conf
    ingest = conf.get("ingest") or {}
    frob = ingest.get("frobnicator") or {}
    validator = ingest.get("validator") or {}
    missing = []
    if frob.get("disable") or not _has_shim(frob, FROBNICATOR_SHIM):
        missing.append("frobnicator")
    if not validator.get("disable") and not _has_shim(validator, VALIDATOR_SHIM):
        missing.append("validator")
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise JobspecError(f"this instance lacks fluxqr's ingest {' and '.join(missing)} "
                           f"plugin{plural}, so it cannot take QPU requests", fix=INGEST_FIX)


AGENT_FIX = ("ask the admin to load it (flux module load <fluxqr>/modules/fluxqr.py), or "
             "submit with --qpu-start=now (YAML quantum.start: now)")


def check_agent(handle: Any) -> dict[str, Any]:
    """The agent's status; one line when it is not running (a held job would never start)."""
    try:
        status = rpc(handle, "fluxqr.status")
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            raise JobspecError("this job would be held until the vendor grants its QPU, but "
                               "the fluxqr agent is not running in this instance",
                               fix=AGENT_FIX) from None
        raise JobspecError(f"the fluxqr agent did not answer: {_service_error(exc)}",
                           fix=AGENT_FIX) from None
    if status.get("error"):
        raise JobspecError(f"the fluxqr agent is not working: {status['error']}",
                           fix="ask the admin to fix the [fluxqr] configuration, or submit "
                               "with --qpu-start=now")
    return status


def check_feasible(handle: Any, jobspec: dict[str, Any]) -> None:
    """Ask Fluxion's feasibility service whether the request could ever be satisfied."""
    try:
        rpc(handle, "feasibility.check", {"jobspec": jobspec})
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return  # no feasibility service here; the resolver's checks stand alone
        raise JobspecError(f"Fluxion says this request can never be satisfied: "
                           f"{_service_error(exc)}",
                           fix="ask for fewer or different resources") from None


def submit(handle: Any, jobspec: dict[str, Any], *, urgency: int | None = None,
           waitable: bool = False) -> Any:
    """Submit a canonical jobspec; returns the :class:`flux.job.JobID`."""
    import flux.job

    kwargs: dict[str, Any] = {"waitable": waitable}
    if urgency is not None:
        kwargs["urgency"] = urgency
    try:
        return flux.job.JobID(flux.job.submit(handle, json.dumps(jobspec), **kwargs))
    except OSError as exc:
        msg = _service_error(exc)
        if "version" in msg.lower() or "resource type" in msg.lower():
            raise JobspecError(f"the instance rejected the jobspec: {msg}",
                               fix=INGEST_FIX) from None
        raise JobspecError(f"the instance rejected the jobspec: {msg}") from None


def _attr(handle: Any, name: str) -> str | None:
    try:
        return rpc(handle, "attr.get", {"name": name}, nodeid=0)["value"] or None
    except OSError:  # ENOENT: the attribute is not set in this instance
        return None


def accounting_db(handle: Any, conf: dict[str, Any] | None = None) -> str:
    """The QPU accounting database of the instance: ``[fluxqr] accounting-db``, else
    ``<statedir>/fluxqr/accounting.db`` (``<rundir>/...`` without a statedir)."""
    from fluxqr.core.accounting import default_path

    conf = config(handle) if conf is None else conf
    path = (conf.get("fluxqr") or {}).get("accounting-db")
    if path:
        return str(path)
    return default_path(_attr(handle, "statedir"), _attr(handle, "rundir"))
