"""Instance-side job-ingest plugins: every submission path gets the same quantum handling.

flux-core's job-ingest runs each submitted jobspec through a *frobnicator* (may rewrite
it) and a *validator* (may reject it), both stacks of Python plugins that a site names
in its config, by path for plugins outside flux-core. ``fluxqr flux-install`` writes two
shims that load the classes below::

    [ingest.frobnicator]
    plugins = ["defaults", "constraints", "PREFIX/ingest/fluxqr_frobnicator.py"]

    [ingest.validator]
    plugins = ["PREFIX/ingest/fluxqr_validator.py"]

:class:`Frobnicator` runs :func:`fluxqr.core.jobspec.prepare` -- the one code path for a
quantum request however it arrived (the ``flux submit --qpu*`` plugin, ``--setattr``,
Python, a hand-written ``qpu`` resource, a nested instance). :class:`Validator` keeps
flux-core's jobspec V1 validation (and the CLI plugins' ``validate`` hooks) for every job,
and checks hybrid jobs against fluxqr's rules and Fluxion's feasibility service.

Both run in the instance owner's job-ingest worker processes. A classical job costs a
dictionary lookup in each; nothing fluxqr-specific is imported beyond the jobspec module.
Errors are one line, prefixed ``fluxqr:``; flux-core returns them to the submitter.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from flux.job.frobnicator import FrobnicatorPlugin
from flux.job.validator import ValidatorPlugin

from fluxqr.core import jobspec as hybrid
from fluxqr.core.model import QPU
from fluxqr.errors import FluxqrError, JobspecError


def _is_hybrid(spec: dict[str, Any]) -> bool:
    system = (spec.get("attributes") or {}).get("system") or {}
    return "quantum" in system or any(
        isinstance(r, dict) and r.get("type") == QPU for r in spec.get("resources") or [])


class Frobnicator(FrobnicatorPlugin):
    """fluxqr: turn a quantum request into the canonical QPU resources (one match)."""

    def __init__(self, parser: Any):
        super().__init__(parser)
        self.config: dict[str, Any] = {}
        self._handle: Any = None
        self._secret_names: set[str] | None = None
        #: cores? -> (view stamp, monotonic time, ResourceView)
        self._views: dict[bool, tuple[Any, float, Any]] = {}
        self._stamp_path: str | None = None  # the instance's view stamp, once asked

    def configure(self, args: Any, config: dict[str, Any]) -> None:
        self.config = config or {}
        self._secret_names = None  # re-read on the next hybrid job (flux config reload)
        self._views = {}

    @property
    def handle(self) -> Any:
        if self._handle is None:
            import flux

            self._handle = flux.Flux()
        return self._handle

    def view(self, cores: bool) -> Any:
        """The running Fluxion's QPUs (hook: tests and other resource sources override it).

        Reused for up to ``[fluxqr] view-ttl`` seconds (default 1; 0: ask Fluxion for every
        job) while the instance's view stamp is unchanged: fluxqr's refresh loop replaces
        the stamp whenever it changes a QPU, so its changes count from the next job on;
        only changes made behind its back (an admin's ``flux ion-resource``) wait for the
        TTL. (Three Fluxion ``find`` RPCs per hybrid job cost about a millisecond of CPU.)
        """
        from fluxqr.flux import instance

        ttl = self.view_ttl()
        if ttl <= 0:
            return instance.resource_view(self.handle, cores=cores)
        if self._stamp_path is None:
            self._stamp_path = instance.view_stamp_path(self.handle) or ""
        stamp = instance.view_stamp(self._stamp_path)
        now = time.monotonic()
        cached = self._views.get(cores)
        if cached is not None and cached[0] == stamp and now - cached[1] < ttl:
            return cached[2]  # the resolver only reads it
        # The stamp is read before the view: a change made meanwhile shows on the next job.
        view = instance.resource_view(self.handle, cores=cores)
        self._views[cores] = (stamp, now, view)
        return view

    def view_ttl(self) -> float:
        from fluxqr.core.config import view_ttl

        try:
            return view_ttl((self.config.get("fluxqr") or {}).get("view-ttl"))
        except FluxqrError:
            return 0.0  # the agent reports the bad setting; here: no caching

    def secret_names(self) -> set[str]:
        if self._secret_names is None:
            from fluxqr.flux import instance

            self._secret_names = instance.credential_names(self.config)
        return self._secret_names

    def frob(self, jobspec: Any, userid: int = -1, *_info: Any) -> None:
        spec = jobspec.jobspec
        try:
            hybrid.prepare(spec, self.view, self.secret_names() if _is_hybrid(spec) else ())
            if _is_hybrid(spec):
                self.check_limits(spec, userid)
        except FluxqrError as exc:
            raise ValueError(f"fluxqr: {exc}") from None

    def check_limits(self, spec: dict[str, Any], userid: int) -> None:
        """Reject a hybrid job that would exceed the site's QPU limits (``[fluxqr] limits``)
        at submit, in one line. Without limits this opens nothing."""
        from fluxqr.core.config import parse_limits

        limits = parse_limits((self.config.get("fluxqr") or {}).get("limits"))
        if not limits:
            return
        from fluxqr.core.accounting import Ledger, check_submit, job_facts
        from fluxqr.flux.instance import accounting_db

        path = accounting_db(self.handle, self.config)
        # Nothing recorded yet (no database): an empty ledger, so only the per-job cap bites.
        ledger = Ledger(path if Path(path).exists() else ":memory:", create=False)
        try:
            check_submit(ledger, limits, userid, job_facts(spec)["request_seconds"])
        finally:
            ledger.close()


class Validator(ValidatorPlugin):
    """fluxqr: jobspec V1 for every job, plus fluxqr's rules for hybrid jobs."""

    def __init__(self, parser: Any):
        super().__init__(parser)
        self.cli_plugins: Any = None

    def configure(self, args: Any) -> None:
        from flux.cli.plugin import CLIPluginRegistry

        # what flux-core's "jobspec" validator does besides V1: the CLI plugins' hooks
        self.cli_plugins = CLIPluginRegistry("validate")

    def validate(self, job: Any) -> tuple[int, str] | None:
        from flux.job import validate_jobspec

        spec = job.jobspec
        _, obj = validate_jobspec(json.dumps(spec), 1)
        self.cli_plugins.validate(obj)
        if not _is_hybrid(spec):
            return None
        try:
            self.check_hybrid(spec)
        except FluxqrError as exc:
            return (1, f"fluxqr: {exc}")
        return None

    def check_hybrid(self, spec: dict[str, Any]) -> None:
        """A hybrid jobspec must be what the frobnicator makes: canonical and resolved."""
        from fluxqr.flux import instance

        quantum = spec["attributes"]["system"].get("quantum")
        entries = [r for r in spec["resources"] if isinstance(r, dict) and r.get("type") == QPU]
        if not isinstance(quantum, dict) or "resolution" not in quantum or not entries \
                or not hybrid.is_canonical(entries):
            raise JobspecError(
                "this quantum request was not prepared by fluxqr's frobnicator",
                fix=instance.INGEST_FIX)
        hybrid.request_record(quantum.get("request") or {}, f"{hybrid.ATTR}.request")
        instance.check_feasible(self.flux, spec)
