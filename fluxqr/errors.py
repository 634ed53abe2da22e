"""Errors that a user can cause, and how they reach the terminal.

Every such error is one line — what went wrong, where, and how to fix it — and
the CLI turns it into a non-zero exit without a traceback.
"""

from __future__ import annotations


class FluxqrError(Exception):
    """A user-facing error: ``str(err)`` is the whole message, one line."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None):
        parts = [f"{where}: {message}" if where else message]
        if fix:
            parts.append(fix)
        super().__init__("; ".join(parts).replace("\n", " "))


class InventoryError(FluxqrError):
    """A devices.yaml file is malformed or inconsistent."""


class GraphError(FluxqrError):
    """An R, JGF or graph operation is malformed or inconsistent."""


class JobspecError(FluxqrError):
    """A hybrid jobspec is malformed or cannot be satisfied."""


class MissingExtraError(FluxqrError):
    """An optional vendor SDK is not installed."""

    def __init__(self, module: str, extra: str):
        super().__init__(
            f"the '{extra}' adapter needs the Python module '{module}', which is not installed",
            fix=f"install it with: pip install 'fluxqr[{extra}]'",
        )


class FluxUnavailableError(FluxqrError):
    """No Flux instance (or no flux Python bindings) can be reached."""
