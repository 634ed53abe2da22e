"""How a QPU is represented in Fluxion's graph: vertex types shared by graph and jobspec.

Kept apart from :mod:`fluxqr.core.graph` so that the submit path (the ``flux submit``
plugin) can name these types without importing networkx.
"""

from __future__ import annotations

import re

QPU = "qpu"
SESSION = "session"
QUBIT = "qubit"
#: marker kind -> vertex type prefix (``vendor.ibm``, ``device.ibm_fez``, ``tech.superconducting``)
MARKERS = {"vendor": "vendor", "device": "device", "technology": "tech"}

_SANITIZE = re.compile(r"[^a-z0-9_-]+")


def type_token(value: str) -> str:
    """Fold a vendor/device/technology name into a type token (``IBM Fez`` -> ``ibm_fez``)."""
    token = _SANITIZE.sub("_", value.strip().lower()).strip("_")
    return token or "unknown"


def marker_type(kind: str, value: str) -> str:
    """The vertex type that marks a QPU's vendor, device or technology, e.g. ``vendor.ibm``."""
    return f"{MARKERS[kind]}.{type_token(value)}"
