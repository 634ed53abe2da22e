"""The agent's pure decisions (fluxqr.agent.jobs) and its journal request: no Flux instance."""

from __future__ import annotations

import pytest

from fluxqr.agent.jobs import HybridJob, release_due, step_period


@pytest.mark.parametrize(("idle_timeout", "step"), [
    (60.0, 1.0),      # IBM-like: once a second, as before
    (3600.0, 1.0),    # never slower than once a second
    (5.0, 0.5),       # ten steps per idle timeout
    (1.0, 0.1),       # a benchmark's compressed clock
    (0.1, 0.05),      # never faster than 20 a second
])
def test_step_period_gives_ten_steps_per_idle_timeout(idle_timeout: float, step: float) -> None:
    assert step_period(idle_timeout) == pytest.approx(step)


def test_predicted_release_margin_is_the_callers() -> None:
    job = HybridJob(1, 1000, "predicted", ["dev"], eta=0.8, lead=0.0)
    assert not release_due(job, granted=False, margin=step_period(1.0))  # 0.8 > 0 + 0.1
    assert release_due(job, granted=False, margin=step_period(60.0))     # 0.8 <= 0 + 1.0
    ready = HybridJob(2, 1000, "ready", ["dev"], eta=0.0, lead=10.0)
    assert not release_due(ready, granted=False, margin=100.0)  # ready waits for the grant
    assert release_due(ready, granted=True)


def test_journal_asks_only_for_the_events_the_agent_acts_on() -> None:
    flux_journal = pytest.importorskip("flux.job.journal")
    from fluxqr.agent import module

    journal = module._journal(object())  # the request is built without a broker
    assert isinstance(journal, flux_journal.JournalConsumer)
    payload = journal.request_payload
    assert payload["full"] is True
    allowed = set(payload["allow"])
    assert {"submit", "urgency", "alloc", "exception", "finish", "clean"} <= allowed
    assert not allowed & {"memo", "validate", "depend", "priority", "start", "release", "free"}
