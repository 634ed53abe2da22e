"""Talking to a running Flux instance: Fluxion's resource RPCs, config, submission.

Everything that needs a live broker goes through here, so the graph, jobspec and
refresh logic stay testable without Flux. The ``flux`` bindings are imported on
first use (see :mod:`fluxqr.fluxenv`).
"""

from __future__ import annotations

import errno
import json
from collections.abc import Iterable
from typing import Any

from .errors import FluxqrError, FluxUnavailableError, JobspecError
from .fluxenv import import_flux

RESOURCE = "sched-fluxion-resource"
VALIDATOR_FIX = ('add to the instance config: [ingest.validator] args = '
                 '["--require-version=any"] (then flux config reload), as the fluxqr admin '
                 'guide shows')


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


def find_jgf(handle: Any, criteria: str = "status=up or status=down") -> dict[str, Any]:
    """The scheduler's current graph as JGF (every vertex, with properties and status)."""
    try:
        resp = rpc(handle, f"{RESOURCE}.find", {"criteria": criteria, "format": "jgf"})
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            raise FluxqrError("Fluxion (sched-fluxion-resource) is not loaded in this instance",
                              fix="load flux-sched's modules (flux module load "
                                  "sched-fluxion-resource)") from None
        raise FluxqrError(f"Fluxion find failed: {_service_error(exc)}") from None
    r = resp.get("R")
    if isinstance(r, str):
        r = json.loads(r)
    sched = r.get("scheduling") if isinstance(r, dict) and "scheduling" in r else r
    if not isinstance(sched, dict) or "graph" not in sched:
        raise FluxqrError("Fluxion find returned no JGF graph")
    return sched


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


def check_validator(handle: Any) -> None:
    """Fail with the fix when the instance's ingest validator would reject QPU jobspecs.

    flux-core's default validator enforces jobspec V1, whose resources are only
    node/slot/core/gpu; QPU requests need ``--require-version=any``.
    """
    validator = (config(handle).get("ingest") or {}).get("validator") or {}
    if validator.get("disable"):
        return
    args = validator.get("args") or []
    plugins = validator.get("plugins")
    if any(str(a).startswith("--require-version=any") for a in args):
        return
    if plugins is not None and "jobspec" not in plugins:
        return
    raise JobspecError("this instance only accepts V1 jobspecs (node/slot/core/gpu), so a QPU "
                       "request would be rejected", fix=VALIDATOR_FIX)


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
                               fix=VALIDATOR_FIX) from None
        raise JobspecError(f"the instance rejected the jobspec: {msg}") from None
