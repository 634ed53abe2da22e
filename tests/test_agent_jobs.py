"""The agent's decisions, without Flux: admission, drain model, release and anchor timing."""

from __future__ import annotations

import json

import pytest

from fluxqr.agent.jobs import (
    MAX_CHEAP_GIVEBACKS,
    MAX_GIVEBACKS,
    DeviceView,
    DrainModel,
    HybridJob,
    admit,
    anchor_due,
    give_back_due,
    memo_update,
    release_due,
    step_period,
)


def _job(start: str = "ready", devices: tuple[str, ...] = ("ibm_fez",)) -> HybridJob:
    return HybridJob(42, 1001, start, list(devices), urgency=16)


def test_admit_needs_the_device_up_and_a_free_session_slot() -> None:
    job = _job()
    assert admit(job, {"ibm_fez": DeviceView(up=True, slots=2, in_use=1)}) is None
    why = admit(job, {"ibm_fez": DeviceView(up=True, slots=2, in_use=2)})
    assert why == "no free session slot on ibm_fez (2 of 2 held for other jobs)"
    why = admit(job, {"ibm_fez": DeviceView(up=False, slots=2, in_use=0,
                                            reason="maintenance window")})
    assert why == "device ibm_fez is down (maintenance window)"
    assert "not in the agent's inventory" in admit(job, {})


def test_admit_checks_every_device_of_the_job() -> None:
    job = _job(devices=("a", "b"))
    views = {"a": DeviceView(True, 1, 0), "b": DeviceView(True, 1, 1)}
    assert admit(job, views) == "no free session slot on b (1 of 1 held for other jobs)"


def test_drain_model_starts_from_the_site_default_and_learns_from_anchors() -> None:
    model = DrainModel(default=60.0, weight=0.5)
    assert model.eta("fez", positions=3, waited=0.0) == 210.0  # 30 + 3 x 60
    assert model.eta("fez", positions=0, waited=0.0) == 30.0   # half a service in progress
    assert model.eta("fez", positions=None, waited=0.0) is None
    model.learn("fez", positions=0, seconds=10.0)               # nothing ahead: the base
    assert model.base("fez") == 10.0
    assert model.per_position("fez") == 60.0
    model.learn("fez", positions=3, seconds=40.0)               # (40 - 10) / 3 per job
    assert model.per_position("fez") == 10.0
    model.learn("fez", positions=1, seconds=40.0)               # moving average with 30
    assert model.per_position("fez") == pytest.approx(20.0)
    model.learn("fez", positions=0, seconds=0.0)                # an idle device
    assert model.base("fez") == pytest.approx(5.0)
    assert model.eta("fez", positions=2, waited=0.0) == pytest.approx(45.0)
    assert model.eta("fez", positions=1, waited=100.0) == 0.0   # never negative
    assert model.per_position("other") == 60.0                  # per device
    assert model.base("other") == 30.0


def test_ready_releases_only_on_the_vendor_grant() -> None:
    job = _job("ready")
    job.eta, job.lead = 0.0, 1000.0
    assert not release_due(job, granted=False)
    assert release_due(job, granted=True)


def test_predicted_releases_when_the_grant_is_no_further_than_the_job_start() -> None:
    job = _job("predicted")
    job.eta, job.lead = 120.0, 30.0   # vendor far, nodes soon: wait
    assert not release_due(job, granted=False)
    job.eta = 30.5                    # within the launch margin of the job's start
    assert release_due(job, granted=False)
    job.eta = None                    # no prediction: wait for the grant
    assert not release_due(job, granted=False)
    assert release_due(job, granted=True)


def test_anchor_is_held_back_while_the_session_would_lapse_before_the_job_starts() -> None:
    assert anchor_due(lead=None, vendor_wait=None, idle_timeout=60)   # nothing known: go
    assert anchor_due(lead=10, vendor_wait=0, idle_timeout=60)        # nodes nearly free
    assert anchor_due(lead=95, vendor_wait=80, idle_timeout=60)       # 95 <= 80 + 15
    assert not anchor_due(lead=100, vendor_wait=80, idle_timeout=60)  # aim: a quarter TTL
    assert not anchor_due(lead=200, vendor_wait=80, idle_timeout=60)  # would lapse


def test_memo_and_record_never_carry_the_session_token() -> None:
    job = _job()
    job.tokens["ibm_fez"] = "secret-session-token"
    job.refs["ibm_fez"] = "sha256:0123456789abcdef"
    job.times["opened"] = 1_800_000_000.0
    shown = json.dumps({"qpu": job.memo(), "qpu_sessions": job.sessions_memo()})
    assert "secret-session-token" not in shown
    assert job.sessions_memo()["ibm_fez"] == {"mode": "dedicated",
                                               "session": "sha256:0123456789abcdef",
                                               "acquired": "2027-01-15T08:00:00Z",
                                               "released": None}
    # the owner-only record keeps it, for re-adoption after a reload
    assert HybridJob.from_dict(job.to_dict()).tokens == {"ibm_fez": "secret-session-token"}


def test_memo_says_why_a_job_waits_and_how_it_was_started() -> None:
    job = _job()
    job.why, job.queue = "device ibm_fez is down", {"ibm_fez": 7}
    assert job.memo() == {"start": "ready", "state": "waiting", "device": "ibm_fez",
                          "vendor_queue": 7, "why": "device ibm_fez is down"}
    job.by_hand, job.start = True, "now"
    assert job.memo()["start"] == "now (released by hand)"


@pytest.mark.parametrize(("idle_timeout", "step"), [
    (60.0, 1.0),      # IBM-like: once a second, as before
    (3600.0, 1.0),    # never slower than once a second
    (5.0, 0.25),      # twenty steps per idle timeout
    (1.0, 0.05),      # a benchmark's compressed clock
    (0.1, 0.05),      # never faster than 20 a second
])
def test_step_period_gives_twenty_steps_per_idle_timeout(idle_timeout: float, step: float) -> None:
    assert step_period(idle_timeout) == pytest.approx(step)


def test_predicted_release_margin_is_the_callers() -> None:
    job = HybridJob(1, 1000, "predicted", ["dev"], eta=0.8, lead=0.0)
    assert not release_due(job, granted=False, margin=step_period(1.0))  # 0.8 > 0 + 0.05
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
    assert not allowed & {"memo", "validate", "depend", "priority", "release", "free"}


def test_keepalive_between_the_grant_and_the_job_start() -> None:
    from fluxqr.agent.jobs import keepalive_due

    job = _job("ready")
    job.tokens["ibm_fez"] = "t"
    assert not keepalive_due(job, 1000.0, idle_timeout=60)       # not granted yet
    job.times["granted"] = 1000.0
    assert not keepalive_due(job, 1029.0, idle_timeout=60)       # within half the timeout
    assert keepalive_due(job, 1030.0, idle_timeout=60)
    job.times["keepalive"] = 1030.0
    assert not keepalive_due(job, 1059.0, idle_timeout=60)
    assert keepalive_due(job, 1060.0, idle_timeout=60)           # every half timeout
    job.times["start"] = 1061.0
    assert not keepalive_due(job, 2000.0, idle_timeout=60)       # the job's tasks take over


def test_a_grant_is_given_back_only_when_waiting_again_is_cheaper_than_idling() -> None:
    job = _job()
    # Fluxion starts the job within half the idle timeout: keep the grant.
    assert not give_back_due(job, lead=25.0, requeue_wait=5.0, idle_timeout=60.0)
    # 200 s of idle session against 40 s back in the vendor's queue: give it back.
    assert give_back_due(job, lead=200.0, requeue_wait=40.0, idle_timeout=60.0)
    # Queueing again would take longer than the session would idle: keep it.
    assert not give_back_due(job, lead=200.0, requeue_wait=3600.0, idle_timeout=60.0)
    # Unknown start or vendor wait: keep it.
    assert not give_back_due(job, lead=None, requeue_wait=40.0, idle_timeout=60.0)
    assert not give_back_due(job, lead=200.0, requeue_wait=None, idle_timeout=60.0)
    # Never more than MAX_GIVEBACKS times for one job.
    job.givebacks = MAX_GIVEBACKS
    assert not give_back_due(job, lead=200.0, requeue_wait=40.0, idle_timeout=60.0)
    # ... unless the vendor would grant again within a quarter of the idle timeout.
    assert give_back_due(job, lead=200.0, requeue_wait=10.0, idle_timeout=60.0)
    job.givebacks = MAX_CHEAP_GIVEBACKS
    assert not give_back_due(job, lead=200.0, requeue_wait=10.0, idle_timeout=60.0)


def test_a_released_job_still_waiting_counts_the_time_its_grant_has_idled() -> None:
    job = _job()
    # 20 s more would be fine at the grant, not after 15 s of idling already.
    assert not give_back_due(job, lead=20.0, requeue_wait=5.0, idle_timeout=60.0)
    assert give_back_due(job, lead=20.0, requeue_wait=5.0, idle_timeout=60.0, held_for=15.0)
    # ... but only if queueing again is cheaper than the rest of the wait.
    assert not give_back_due(job, lead=20.0, requeue_wait=25.0, idle_timeout=60.0,
                             held_for=15.0)


def test_a_released_job_is_asked_about_again_from_a_quarter_timeout_after_its_grant() -> None:
    from fluxqr.agent.jobs import recheck_due

    job = _job()
    job.phase, job.times = "released", {"granted": 1000.0}
    assert not recheck_due(job, 1014.0, idle_timeout=60.0)      # within a quarter
    assert recheck_due(job, 1015.0, idle_timeout=60.0)
    job.times["recheck"] = 1015.0
    assert not recheck_due(job, 1020.0, idle_timeout=60.0)      # asked 5 s ago
    assert recheck_due(job, 1022.5, idle_timeout=60.0)          # every eighth after
    job.times["alloc"] = 1021.0
    assert not recheck_due(job, 1030.0, idle_timeout=60.0)      # Fluxion started it
    job.times.pop("alloc")
    job.phase = "anchored"
    assert not recheck_due(job, 1030.0, idle_timeout=60.0)      # not released


def test_memo_update_deletes_the_keys_gone_since_the_last_memo() -> None:
    anchored = {"qpu": {"state": "anchored", "vendor_queue": 3, "vendor_eta_s": 40.0}}
    released = {"qpu": {"state": "released", "vendor_queue": 3}}
    assert memo_update({}, anchored) == anchored
    assert memo_update(anchored, released) == {
        "qpu": {"state": "released", "vendor_queue": 3, "vendor_eta_s": None}}
    assert memo_update(released, released) == released
