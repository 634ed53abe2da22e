"""fluxqr — Flux Quantum Resources.

Quantum computers as first-class, schedulable resources in the Flux framework:
QPU vertices in Fluxion's resource graph, live device properties, hybrid
classical+quantum jobspecs, and quantum sessions tied to job lifetimes.

Inside a job, ``fluxqr.allocation()`` returns the job's QPUs and
``with fluxqr.session() as s:`` opens them for a script. Vendor SDKs are
imported only when a device of that kind is used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "allocation": ("fluxqr.job", "allocation"),
    "session": ("fluxqr.job", "session"),
    "FluxqrError": ("fluxqr.errors", "FluxqrError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    # Lazy so that `import fluxqr` stays cheap (no networkx, jsonschema or SDKs).
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'fluxqr' has no attribute {name!r}")
