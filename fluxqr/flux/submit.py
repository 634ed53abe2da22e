"""Hybrid jobs from Python: a quantum request on a flux-core ``JobspecV1``.

For scripts and workflow tools built on ``flux.job`` (Parsl's FluxExecutor,
RADICAL-Pilot, Maestro ...)::

    from flux.job import JobspecV1
    from fluxqr.flux.submit import add_quantum, submit

    spec = JobspecV1.from_command(["python3", "vqe.py"], num_tasks=1)
    add_quantum(spec, qubits=20, vendor="ibm", max_error_2q=0.01)
    jobid = submit(spec)

:func:`add_quantum` only records the request (``attributes.system.quantum.request``),
checked against fluxqr's schema; the instance's fluxqr frobnicator resolves it and adds
the QPU resources when the job is submitted -- the same path as ``flux submit --qpu``. A
jobspec so marked can be handed to anything that submits a ``JobspecV1``
(``flux.job.submit``, ``FluxExecutor.submit``).
"""

from __future__ import annotations

from typing import Any

from fluxqr.core.jobspec import request_record
from fluxqr.errors import JobspecError

__all__ = ["add_quantum", "submit"]


def add_quantum(jobspec: Any, qpus: int | list[str] = 1, qubits: int = 1,
                **request: Any) -> Any:
    """Add a quantum request to a flux-core jobspec (``JobspecV1``), in place; returns it.

    Args:
        jobspec: a :class:`flux.job.JobspecV1` (or any :class:`flux.job.Jobspec`).
        qpus: how many QPUs, or the names of the devices to allocate (all of them).
        qubits: qubits needed on each QPU.
        request: other keys of the ``quantum:`` section of a hybrid jobspec YAML
            (``vendor``, ``device``, ``technology``, ``max_error_2q``, ``min_t1_us``,
            ``max_queue``, ``online``, ``policy``, ``exclusive``, ``session``).

    Raises:
        JobspecError: the request is malformed (one line: what and how to fix).
    """
    values = {"qpus": list(qpus) if isinstance(qpus, list | tuple) else qpus,
              "qubits": qubits, **request}
    record = request_record(values, "add_quantum")
    jobspec.setattr("system.quantum.request", record)
    return jobspec


def submit(jobspec: Any, handle: Any = None, **kwargs: Any) -> Any:
    """Submit a jobspec made with :func:`add_quantum`; returns its :class:`flux.job.JobID`.

    ``handle``: a :class:`flux.Flux` (default: the enclosing instance). ``kwargs`` go to
    :func:`flux.job.submit` (``urgency``, ``waitable``, ``debug`` ...).

    Raises:
        JobspecError: the instance lacks fluxqr's ingest plugins, or rejected the request
            (one line, e.g. no QPU meets the requirements); nothing was submitted.
    """
    import flux.job

    from fluxqr.flux import instance

    handle = handle if handle is not None else instance.connect()
    system = (jobspec.jobspec.get("attributes") or {}).get("system") or {}
    if "quantum" in system:
        conf = instance.config(handle)
        instance.check_validator(handle, conf)
        if "environment" in system:  # secrets never go into a jobspec
            from fluxqr.core.jobspec import scrub_environment

            system["environment"] = scrub_environment(system["environment"],
                                                      instance.credential_names(conf))
    try:
        return flux.job.JobID(flux.job.submit(handle, jobspec, **kwargs))
    except OSError as exc:
        msg = str(exc.strerror or exc).strip()
        raise JobspecError(f"the instance rejected the job: {msg}") from None
