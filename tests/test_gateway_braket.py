"""The credential gateway for Amazon Braket, without Flux: the real boto3 / Braket SDK
clients (in a task process, or in-process for the protocol checks), the Braket stand-in
(tests/standins/braket_server.py, verifying every SigV4 signature against the site key)
as AWS. The real-Flux run is tests/test_flux_braket.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("braket.aws")
pytest.importorskip("boto3")

from botocore.exceptions import ClientError  # noqa: E402
from standins.braket_server import DEFAULT_BUCKET, SV1, BraketStandIn  # noqa: E402

from fluxqr.agent.gateway import Gateway  # noqa: E402
from fluxqr.core import inventory, sessions  # noqa: E402
from fluxqr.devices.braket_adapter import usage  # noqa: E402

DM1 = "arn:aws:braket:::device/quantum-simulator/amazon/dm1"
SITE_ID = "AKIAFLUXQRSITE000001"
SITE_SECRET = "site-aws-secret-9c41d7e0b2"
ID_VAR, SECRET_VAR = "FLUXQR_TEST_AWS_ID", "FLUXQR_TEST_AWS_SECRET"
REPO = Path(__file__).resolve().parents[1]

BELL = r"""
import json, fluxqr
from braket.circuits import Circuit
qpu = fluxqr.allocation()[0]
device = qpu.backend(sdk="braket")
task = device.run(Circuit().h(0).cnot(0, 1), shots=100)
counts = task.result().measurement_counts
print(json.dumps({"device": type(device).__name__, "arn": task.id, "counts": dict(counts)}))
"""


def devices_doc(price: dict[str, float] | None = None) -> dict[str, Any]:
    creds = {"aws_access_key_id": ID_VAR, "aws_secret_access_key": SECRET_VAR}
    return {"version": 1, "devices": [
        {"name": "sv1", "adapter": "braket", "qubits": 34, "vendor": "aws",
         "params": {"device": SV1, "s3_bucket": DEFAULT_BUCKET,
                    **({"price": price} if price else {})}, "credentials": creds},
        {"name": "dm1", "adapter": "braket", "qubits": 17, "vendor": "aws",
         "params": {"device": DM1, "s3_bucket": DEFAULT_BUCKET}, "credentials": creds}]}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    srv = BraketStandIn({SITE_ID: SITE_SECRET},
                        devices={SV1: "braket_sv", DM1: "braket_dm"}).start()
    path = tmp_path_factory.mktemp("braket") / "devices.yaml"
    path.write_text(json.dumps(devices_doc({"minute": 0.075})))
    inv = inventory.load(path)
    saved = {k: os.environ.get(k) for k in (ID_VAR, SECRET_VAR, *srv.env())}
    # the agent's environment: the site key, and the "real AWS" endpoints (the stand-in)
    os.environ.update({ID_VAR: SITE_ID, SECRET_VAR: SITE_SECRET, **srv.env()})
    gw = Gateway(("127.0.0.1", 0), owner=os.getuid())
    gw.configure(inv)
    yield gw, inv, srv, path
    gw.stop()
    srv.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _env(gw: Gateway, inv: inventory.Inventory, jobid: int, names: list[str],
         path: Path | None = None) -> dict[str, str]:
    devices = [inv.get(n) for n in names]
    grant = gw.grant(jobid, os.getuid(), devices, {})
    js = sessions.JobSessions(str(jobid), [sessions.SessionRecord(n, "braket", "none")
                                           for n in names], userid=os.getuid(),
                              devices_file=str(path) if path else None)
    return sessions.task_environment(js, devices, gateway=gw.settings(grant))


def _client(env: dict[str, str], service: str = "braket", secret: str | None = None) -> Any:
    import boto3

    session = boto3.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=secret or env["AWS_SECRET_ACCESS_KEY"],
                            region_name="us-east-1")
    return session.client(service, endpoint_url=env[f"AWS_ENDPOINT_URL_{service.upper()}"])


def _code(call: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as info:
        call()
    err = info.value.response
    return err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]


def _create(client: Any, arn: str = SV1, bucket: str = DEFAULT_BUCKET) -> str:
    program = {"braketSchemaHeader": {"name": "braket.ir.openqasm.program", "version": "1"},
               "source": "OPENQASM 3.0; bit[1] b; qubit[1] q; h q[0]; b[0] = measure q[0];"}
    return client.create_quantum_task(clientToken=os.urandom(8).hex(), deviceArn=arn,
                                      shots=10, outputS3Bucket=bucket,
                                      outputS3KeyPrefix="tasks",
                                      action=json.dumps(program))["quantumTaskArn"]


def test_standin_refuses_a_wrong_key_like_aws(site) -> None:
    _, _, srv, _ = site
    env = {"AWS_ACCESS_KEY_ID": SITE_ID, "AWS_SECRET_ACCESS_KEY": SITE_SECRET,
           "AWS_ENDPOINT_URL_BRAKET": srv.url, "AWS_ENDPOINT_URL_S3": srv.url}
    assert _client(env).get_device(deviceArn=SV1)["deviceStatus"] == "ONLINE"
    assert _code(lambda: _client(env, secret="not-the-secret").get_device(deviceArn=SV1)) == \
        (403, "InvalidSignatureException")
    assert _code(lambda: _client(env, "s3", secret="not-the-secret").get_object(
        Bucket=DEFAULT_BUCKET, Key="tasks/x/results.json")) == (403, "SignatureDoesNotMatch")
    unknown = {**env, "AWS_ACCESS_KEY_ID": "AKIAUNKNOWN000000000"}
    assert _code(lambda: _client(unknown).get_device(deviceArn=SV1)) == \
        (403, "UnrecognizedClientException")


def test_braket_sdk_runs_a_bell_circuit_through_the_gateway(site) -> None:
    gw, inv, srv, path = site
    env = _env(gw, inv, 201, ["sv1"], path)
    assert SITE_SECRET not in json.dumps(env) and SITE_ID not in json.dumps(env)
    assert env["AWS_ENDPOINT_URL_BRAKET"] == gw.url + "/braket"
    assert env["AWS_ACCESS_KEY_ID"] == "FLUXQRJOB201"
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("AWS_", "AMZN_", "FLUXQR", "FLUX_"))}
    r = subprocess.run([sys.executable, "-c", BELL], capture_output=True, text=True,
                       env={**clean, **env, "PYTHONPATH": str(REPO)}, timeout=180)
    assert r.returncode == 0, r.stderr
    assert SITE_SECRET not in r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["device"] == "AwsDevice"
    assert set(out["counts"]) <= {"00", "11"} and sum(out["counts"].values()) == 100
    billed = [b for b in srv.billing() if b["arn"] == out["arn"]]
    assert len(billed) == 1 and billed[0]["access_key"] == SITE_ID  # re-signed: site key
    assert billed[0]["device"] == SV1 and billed[0]["shots"] == 100
    grant = gw.revoke(201)
    assert list(grant.tasks) == [out["arn"]]
    facts = gw.braket_usage(grant)["sv1"]["tasks"]
    assert facts == [{"arn": out["arn"], "shots": 100, "status": "COMPLETED",
                      "execution_ms": float(billed[0]["execution_ms"])}]
    used = usage(SV1, {"minute": 0.075}, facts)
    assert used["tasks"] == 1 and used["shots"] == 100
    assert used["qpu_seconds"] == pytest.approx(billed[0]["execution_ms"] / 1000)
    # billed like the SDK's tracker: at least 3 s of simulator time
    assert used["cost"] == pytest.approx(
        0.075 * max(billed[0]["execution_ms"] / 1000, 3.0) / 60, abs=1e-6)


def test_a_wrong_signature_is_refused_and_reaches_no_one(site) -> None:
    gw, inv, srv, _ = site
    env = _env(gw, inv, 202, ["sv1"])
    srv.reset()
    assert _code(lambda: _client(env, secret="guessed").get_device(deviceArn=SV1)) == \
        (403, "InvalidSignatureException")
    assert _code(lambda: _client({**env, "AWS_ACCESS_KEY_ID": SITE_ID},
                                 secret=SITE_SECRET).get_device(deviceArn=SV1)) == \
        (403, "UnrecognizedClientException")  # the site key itself is no gateway key
    assert srv.log()["requests"] == []
    assert _client(env).get_device(deviceArn=SV1)["deviceArn"] == SV1
    gw.revoke(202)


def test_a_job_reaches_only_its_own_devices_and_tasks(site) -> None:
    gw, inv, srv, _ = site
    env_a, env_b = _env(gw, inv, 203, ["sv1"]), _env(gw, inv, 204, ["sv1"])
    a, b = _client(env_a), _client(env_b)
    arn = _create(a)
    assert srv.wait(arn) == "COMPLETED"
    got = a.get_quantum_task(quantumTaskArn=arn)
    key = got["outputS3Directory"] + "/results.json"
    s3a, s3b = _client(env_a, "s3"), _client(env_b, "s3")
    assert json.loads(s3a.get_object(Bucket=DEFAULT_BUCKET, Key=key)["Body"].read())[
        "taskMetadata"]["id"] == arn
    listed = s3a.list_objects_v2(Bucket=DEFAULT_BUCKET, Prefix=got["outputS3Directory"])
    assert [o["Key"] for o in listed["Contents"]] == [key]
    # job 204 (same device, same site account) can neither see nor stop job 203's task
    assert _code(lambda: b.get_quantum_task(quantumTaskArn=arn)) == \
        (403, "AccessDeniedException")
    assert _code(lambda: b.cancel_quantum_task(quantumTaskArn=arn, clientToken="x")) == \
        (403, "AccessDeniedException")
    assert _code(lambda: s3b.get_object(Bucket=DEFAULT_BUCKET, Key=key)) == \
        (403, "AccessDenied")
    assert _code(lambda: s3b.list_objects_v2(Bucket=DEFAULT_BUCKET, Prefix="tasks")) == \
        (403, "AccessDenied")
    # nor reach a device it does not hold, the account's task list, or other buckets
    assert _code(lambda: b.get_device(deviceArn=DM1))[0] == 403
    assert _code(lambda: _create(b, DM1))[0] == 403
    assert _code(lambda: _create(b, SV1, bucket="someone-elses-bucket"))[0] == 403
    assert _code(lambda: b.search_quantum_tasks(filters=[]))[0] == 403
    assert _code(lambda: s3b.list_buckets())[0] == 403
    assert [t["access_key"] for t in srv.billing() if t["arn"] == arn] == [SITE_ID]
    gw.revoke(203)
    gw.revoke(204)


def test_a_jobs_key_dies_with_the_job(site) -> None:
    gw, inv, srv, _ = site
    env = _env(gw, inv, 205, ["sv1"])
    client = _client(env)
    assert client.get_device(deviceArn=SV1)["deviceStatus"] == "ONLINE"
    gw.revoke(205)
    assert _code(lambda: client.get_device(deviceArn=SV1)) == \
        (403, "UnrecognizedClientException")


def test_braket_cost_follows_the_sdk_tracker_rules() -> None:
    qpu = "arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1"
    tasks = [{"status": "COMPLETED", "shots": 100, "execution_ms": None},
             {"status": "FAILED", "shots": 50, "execution_ms": None},
             {"status": "QUEUED", "shots": 10, "execution_ms": None}]
    used = usage(qpu, {"task": 0.3, "shot": 0.08}, tasks)
    assert used == {"tasks": 3, "shots": 160, "qpu_seconds": None,
                    "cost": pytest.approx(2 * 0.3 + 110 * 0.08)}
    assert usage(qpu, None, tasks)["cost"] is None
    sim = [{"status": "COMPLETED", "shots": 1, "execution_ms": 120_000.0},
           {"status": "COMPLETED", "shots": 1, "execution_ms": 20.0}]
    used = usage(SV1, {"minute": 0.075}, sim)
    assert used["qpu_seconds"] == pytest.approx(120.02)
    assert used["cost"] == pytest.approx(0.075 * (2 + 3 / 60))


def test_price_and_bucket_are_validated_at_load(tmp_path) -> None:
    from fluxqr.errors import FluxqrError

    doc = devices_doc({"shot": -1})
    with pytest.raises(FluxqrError, match=r"params.price.shot"):
        inventory.parse(doc)
    doc = devices_doc({"per_hour": 1})
    with pytest.raises(FluxqrError, match=r"params.price"):
        inventory.parse(doc)
    doc = devices_doc()
    doc["devices"][0]["params"]["s3_bucket"] = "Not A Bucket"
    with pytest.raises(FluxqrError, match=r"s3_bucket"):
        inventory.parse(doc)


def test_a_loopback_caller_must_be_the_jobs_owner(site) -> None:
    _, inv, _, _ = site
    other = Gateway(("127.0.0.1", 0), owner=os.getuid() + 1)  # as if run by another uid
    try:
        other.configure(inv)
        theirs = other.grant(206, os.getuid() + 2, [inv.get("sv1")], {})
        env = {"AWS_ACCESS_KEY_ID": theirs.access_key, "AWS_SECRET_ACCESS_KEY": theirs.token,
               "AWS_ENDPOINT_URL_BRAKET": other.url + "/braket"}
        assert _code(lambda: _client(env).get_device(deviceArn=SV1)) == \
            (403, "AccessDeniedException")
        mine = other.grant(207, os.getuid(), [inv.get("sv1")], {})
        env.update(AWS_ACCESS_KEY_ID=mine.access_key, AWS_SECRET_ACCESS_KEY=mine.token)
        assert _client(env).get_device(deviceArn=SV1)["deviceArn"] == SV1
    finally:
        other.stop()


def test_a_jobs_tasks_are_saved_and_restored_without_secrets(site) -> None:
    """What the agent saves of a job's tasks (ARNs, no secret) gives a new grant the
    tasks back: the job may read them again and they are accounted at its end."""
    gw, inv, srv, _ = site
    env = _env(gw, inv, 208, ["sv1"])
    heard: list[int] = []
    gw.on_task = heard.append
    try:
        arn = _create(_client(env))
    finally:
        gw.on_task = None
    assert heard == [208] and srv.wait(arn) == "COMPLETED"
    saved = json.loads(json.dumps(gw.tasks(208)))  # as the session record stores it
    assert [t["arn"] for t in saved] == [arn]
    assert env["AWS_SECRET_ACCESS_KEY"] not in json.dumps(saved)
    gw.revoke(208)  # the agent is reloaded: the old grant and key are gone
    env = _env(gw, inv, 208, ["sv1"])
    assert _code(lambda: _client(env).get_quantum_task(quantumTaskArn=arn))[0] == 403
    junk = [None, "x", {"arn": 5}, {"arn": "a"}, {"device": SV1}]
    assert gw.restore(208, [*junk, *saved]) == 1
    assert _client(env).get_quantum_task(quantumTaskArn=arn)["status"] == "COMPLETED"
    grant = gw.revoke(208)
    assert gw.braket_usage(grant)["sv1"]["tasks"][0]["arn"] == arn
