"""Instance configuration: the ``[fluxqr]`` table of a Flux instance's TOML.

One place for the settings the broker module, the refresh CLI and the session
prolog/epilog all read, so they agree on names, defaults and errors::

    [fluxqr]
    devices = "/etc/flux/fluxqr/devices.yaml"   # required
    interval = 60                               # seconds between refresh cycles
    timeout = 10                                # seconds per device read (default: per device)
    failure-threshold = 3                       # failed reads before a device goes down
    session-dir = "/run/flux/fluxqr"            # session state (default: <rundir>/fluxqr)
    vendor-job-seconds = 60                     # vendor queue drain, until anchors measure it
    idle-timeout = 60                           # the vendor's interactive session timeout
                                                # (the agent steps held jobs 20x per timeout,
                                                # at most once a second)
    accounting-db = "/var/lib/flux/fluxqr/accounting.db"  # QPU usage ledger (default: below)
    limits = { job-qpu-seconds = 600, user-qpu-seconds = 36000, period = "7d" }
    gateway = "127.0.0.1:0"                     # credential gateway: IP:PORT, or "off"
    view-ttl = 1                                # seconds job ingest reuses its QPU view
                                                # (0: ask Fluxion for every hybrid job)

``accounting-db`` defaults to ``<statedir>/fluxqr/accounting.db`` (the broker's
persistent state directory), or ``<rundir>/fluxqr/accounting.db`` when the
instance has no ``statedir`` (then usage is lost when the instance exits); the
caller derives it with :func:`fluxqr.core.accounting.default_path`.

``gateway`` is where the agent's credential gateway (:mod:`fluxqr.agent.gateway`)
listens: ``"IP:PORT"`` (port 0: any free port; a wildcard IP such as ``0.0.0.0``
advertises the host's name to tasks), or ``"off"``. Tasks never get a vendor
credential; without the gateway they get none at all. Tasks on other nodes reach a
loopback gateway through their node's relay (:mod:`fluxqr.agent.relay`), so the default
serves multi-node instances too.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Any

from fluxqr.errors import FluxqrError

DEFAULTS = {"interval": 60.0, "timeout": None, "failure-threshold": 3,
            "vendor-job-seconds": 60.0, "idle-timeout": 60.0, "gateway": ("127.0.0.1", 0)}
KNOWN = ("devices", "interval", "timeout", "failure-threshold", "session-dir",
         "vendor-job-seconds", "idle-timeout", "accounting-db", "limits", "gateway", "view-ttl")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_seconds(value: Any, where: str) -> float:
    """Seconds from a number or a duration with a unit: ``90``, ``30m``, ``12h``, ``7d``, ``2w``."""
    if isinstance(value, bool):  # TOML true is an int to Python; never a duration
        value = str(value)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([smhdw]?)", str(value).strip())
        if not m:
            raise FluxqrError(f"{where}: invalid duration {value!r}",
                              fix="use seconds or a number with s, m, h, d or w (e.g. 7d)")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise FluxqrError(f"{where}: must be > 0 (got {value!r})")
    return seconds


@dataclass(frozen=True)
class Limits:
    """QPU-second caps a site sets in ``[fluxqr] limits``; ``None`` = no cap.

    ``job`` caps one job (all its devices together); ``user`` caps one user's jobs in the
    rolling window of ``period`` seconds that ends now.
    """

    job: float | None = None
    user: float | None = None
    period: float = 7 * 86400.0

    def __bool__(self) -> bool:
        return self.job is not None or self.user is not None


LIMIT_KEYS = ("job-qpu-seconds", "user-qpu-seconds", "period")


def parse_limits(value: Any) -> Limits:
    """Validate ``[fluxqr] limits`` (a TOML table); every error is one line."""
    where = "[fluxqr] limits"
    if value is None:
        return Limits()
    if not isinstance(value, dict):
        raise FluxqrError(f"{where} must be a TOML table, not {type(value).__name__}",
                          fix='e.g. limits = { job-qpu-seconds = 600, user-qpu-seconds = 3600, '
                              'period = "7d" }')
    unknown = sorted(set(value) - set(LIMIT_KEYS))
    if unknown:
        raise FluxqrError(f"{where}: unknown key(s) {', '.join(unknown)}",
                          fix=f"use {', '.join(LIMIT_KEYS)}")
    out = {}
    for key, attr in (("job-qpu-seconds", "job"), ("user-qpu-seconds", "user"),
                      ("period", "period")):
        if key in value:
            out[attr] = parse_seconds(value[key], f"{where}.{key}")
    return Limits(**out)


def parse_gateway(value: Any) -> tuple[str, int] | None:
    """``[fluxqr] gateway``: ``"IP:PORT"`` (port 0 = any free port), or None when off
    (``false``, ``"off"``, ``"none"`` or ``""``)."""
    if value is False or value is None or str(value).strip().lower() in ("", "off", "none",
                                                                         "false"):
        return None
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        number = int(port)
        if not sep or not host or not 0 <= number <= 65535:
            raise ValueError
        ipaddress.ip_address(host)
    except ValueError:
        raise FluxqrError(f"[fluxqr] gateway: invalid address {text!r}",
                          fix='use "IP:PORT", e.g. "127.0.0.1:0" (port 0 = any free port), '
                              'or "off"') from None
    return host, number


VIEW_TTL = 1.0


def view_ttl(value: Any) -> float:
    """``[fluxqr] view-ttl``: seconds (>= 0, at most an hour); None: the default."""
    if value is None:
        return VIEW_TTL
    try:
        ttl = float(value)
    except (TypeError, ValueError):
        ttl = math.nan
    if isinstance(value, bool) or not math.isfinite(ttl) or not 0 <= ttl <= 3600:
        raise FluxqrError(f"[fluxqr] view-ttl: must be seconds between 0 and 3600 "
                          f"(got {value!r})", fix="e.g. view-ttl = 1, or 0 to turn it off")
    return ttl


def settings(config: dict[str, Any], args: tuple[str, ...]) -> dict[str, Any]:
    """Merge ``[fluxqr]`` config with ``key=value`` module arguments, validated."""
    table = dict(config.get("fluxqr") or {})
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise FluxqrError(f"module argument '{arg}' is not key=value",
                              fix="e.g. flux module load fluxqr.py devices=/etc/fluxqr.yaml")
        table[key.strip().replace("_", "-")] = value.strip()
    unknown = set(table) - set(KNOWN)
    if unknown:
        raise FluxqrError(f"unknown fluxqr setting(s): {', '.join(sorted(unknown))}",
                          fix=f"use {', '.join(KNOWN)}")
    if not table.get("devices"):
        raise FluxqrError("no devices file configured",
                          fix="set [fluxqr] devices = \"/path/devices.yaml\" or pass devices=FILE")
    out: dict[str, Any] = dict(DEFAULTS, devices=str(table["devices"]))
    if table.get("session-dir"):
        out["session-dir"] = str(table["session-dir"])
    if table.get("accounting-db"):
        out["accounting-db"] = str(table["accounting-db"])
    if "gateway" in table:
        out["gateway"] = parse_gateway(table["gateway"])
    out["view-ttl"] = view_ttl(table.get("view-ttl"))
    if "limits" in table:  # absent = no limits; callers use settings.get("limits", Limits())
        out["limits"] = parse_limits(table["limits"])
    try:
        if "interval" in table:
            out["interval"] = float(table["interval"])
        if table.get("timeout") not in (None, ""):
            out["timeout"] = float(table["timeout"])
        if "failure-threshold" in table:
            out["failure-threshold"] = int(table["failure-threshold"])
        for key in ("vendor-job-seconds", "idle-timeout"):
            if key in table:
                out[key] = float(table[key])
                if out[key] <= 0:
                    raise FluxqrError(f"{key} must be > 0 (got {out[key]:g})")
    except ValueError as exc:
        raise FluxqrError(f"bad fluxqr setting: {exc}") from None
    if out["interval"] <= 0:
        raise FluxqrError(f"interval must be > 0 (got {out['interval']})")
    return out
