"""Asking the agent for a job's session environment (what the job shell plugin runs).

The agent (:mod:`fluxqr.agent.module`) keeps the session records of the jobs it follows
in owner-only files on its rank; job shells on every node get a job's environment
through its ``fluxqr.session-env`` service, which answers only the job's owner and the
instance owner, and waits while a ``now`` job's session is still opening.
"""

from __future__ import annotations

import errno
from typing import Any

from fluxqr.core.sessions import SessionError


def remote_environment(handle: Any, jobid: str, notices: list[str] | None = None
                       ) -> dict[str, str]:
    """The tasks' environment of ``jobid`` from the agent on rank 0 (works on every node).
    It names this node's broker rank, so that the credential gateway's URLs are those of
    this node's relay (:mod:`fluxqr.agent.relay`); why its tasks get no vendor credential,
    if so, is appended to ``notices``."""
    try:
        answer = handle.rpc("fluxqr.session-env", {"jobid": str(jobid),
                                                   "rank": handle.get_rank()}, nodeid=0).get()
        if answer.get("notice") and notices is not None:
            notices.append(str(answer["notice"]))
        return answer["env"]
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            raise SessionError(f"job {jobid}: the fluxqr agent is not running in this "
                               "instance", fix="ask the admin to load it (see the admin "
                               "guide)") from None
        raise SessionError(f"job {jobid}: {exc.strerror or exc}") from None
