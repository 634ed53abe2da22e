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
"""

from __future__ import annotations

from typing import Any

from fluxqr.errors import FluxqrError

DEFAULTS = {"interval": 60.0, "timeout": None, "failure-threshold": 3,
            "vendor-job-seconds": 60.0, "idle-timeout": 60.0}


def settings(config: dict[str, Any], args: tuple[str, ...]) -> dict[str, Any]:
    """Merge ``[fluxqr]`` config with ``key=value`` module arguments, validated."""
    table = dict(config.get("fluxqr") or {})
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise FluxqrError(f"module argument '{arg}' is not key=value",
                              fix="e.g. flux module load fluxqr.py devices=/etc/fluxqr.yaml")
        table[key.strip().replace("_", "-")] = value.strip()
    unknown = set(table) - {"devices", "session-dir", *DEFAULTS}
    if unknown:
        raise FluxqrError(f"unknown fluxqr setting(s): {', '.join(sorted(unknown))}",
                          fix="use devices, interval, timeout, failure-threshold, session-dir, "
                              "vendor-job-seconds, idle-timeout")
    if not table.get("devices"):
        raise FluxqrError("no devices file configured",
                          fix="set [fluxqr] devices = \"/path/devices.yaml\" or pass devices=FILE")
    out: dict[str, Any] = dict(DEFAULTS, devices=str(table["devices"]))
    if table.get("session-dir"):
        out["session-dir"] = str(table["session-dir"])
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
