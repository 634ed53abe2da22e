"""Real Flux: a hybrid job on an Amazon Braket ARN device whose credentials are site-held
runs a Bell circuit with ``fluxqr.allocation()[0].backend(sdk="braket")`` through the
agent's credential gateway (the Braket stand-in as AWS), never holding the site key, and
``flux qr usage`` shows what the stand-in billed. Protocol details: tests/test_gateway_braket.py."""

from __future__ import annotations

import json
import sys
import time

import pytest
import yaml
from fluxinst import FluxInstance, build_r, gateway_url, relay_info, requires_flux

pytest.importorskip("braket.aws")

from standins.braket_server import DEFAULT_BUCKET, SV1, BraketStandIn  # noqa: E402

pytestmark = [requires_flux, pytest.mark.flux]

SITE_ID = "AKIAFLUXQRSITE000002"
SITE_SECRET = "site-aws-secret-4be2f1a9c7"
ID_VAR, SECRET_VAR = "FLUXQR_TEST_AWS_ID", "FLUXQR_TEST_AWS_SECRET"
PRICE = {"minute": 0.075}

TASK = r"""
import json, os, fluxqr
from braket.circuits import Circuit
qpu = fluxqr.allocation()[0]
device = qpu.backend(sdk="braket")
task = device.run(Circuit().h(0).cnot(0, 1), shots=100)
counts = task.result().measurement_counts
import hashlib
def shown(k, v):  # the job's own secret stays out of its output (and so of the KVS)
    return "sha256:" + hashlib.sha256(v.encode()).hexdigest()[:16] if "SECRET" in k else v
print(json.dumps({"qpu": qpu.name, "device": type(device).__name__, "arn": task.id,
                  "counts": dict(counts), "env": {k: shown(k, v) for k, v in os.environ.items()}}))
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("flux-braket")
    server = BraketStandIn({SITE_ID: SITE_SECRET}).start()
    devices = work / "devices.yaml"
    devices.write_text(yaml.safe_dump({"version": 1, "devices": [
        {"name": "sv1", "adapter": "braket", "qubits": 34, "vendor": "aws",
         "technology": "simulator", "sharing": {"sessions": 4}, "timeout": 30,
         "params": {"device": SV1, "s3_bucket": DEFAULT_BUCKET, "price": PRICE},
         "credentials": {"aws_access_key_id": ID_VAR, "aws_secret_access_key": SECRET_VAR}},
    ]}))
    (work / "task.py").write_text(TASK)
    # the site key and "AWS" (the stand-in) are in the instance owner's environment only
    inst = FluxInstance(work, build_r(work / "R.json", cores=4, devices=devices),
                        hosts="node[0-1]", devices=devices,
                        env={ID_VAR: SITE_ID, SECRET_VAR: SITE_SECRET, **server.env()}).start()
    yield inst, server, work
    inst.stop()
    server.stop()


@pytest.mark.parametrize("rank", [0, 1])
def test_bell_on_braket_through_the_gateway_is_accounted(env, rank: int) -> None:
    """On rank 0 the task reaches the gateway itself; on rank 1 its node's relay (botocore
    signs for the relay's address, which the gateway verifies)."""
    inst, server, work = env
    jobid = inst.run(["flux", "submit", "-N1", f"--requires=host:node{rank}",
                      "--qpu-device=sv1", "--qpu-start=now", sys.executable,
                      str(work / "task.py")]).stdout.strip()
    info = inst.wait_job(jobid, timeout=180)
    out = inst.run(["flux", "job", "attach", jobid], check=False)
    assert info["result"] == "COMPLETED", out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["qpu"] == "sv1" and seen["device"] == "AwsDevice"
    assert set(seen["counts"]) <= {"00", "11"} and sum(seen["counts"].values()) == 100
    task_env = seen["env"]
    # the task talked to the gateway with its job's key, never the site's
    assert task_env["AWS_ENDPOINT_URL_BRAKET"].startswith("http://127.0.0.1:")
    assert task_env["AWS_ENDPOINT_URL_BRAKET"] != server.url
    url = relay_info(inst, 1)["url"] if rank else gateway_url(inst)
    assert task_env["AWS_ENDPOINT_URL_BRAKET"] == url + "/braket"
    assert task_env["AWS_ACCESS_KEY_ID"].startswith("FLUXQRJOB")
    assert ID_VAR not in task_env and SECRET_VAR not in task_env
    assert SITE_SECRET not in out.stdout + out.stderr
    assert SITE_SECRET not in json.dumps(inst.job_info(jobid))
    billed = [b for b in server.billing() if b["arn"] == seen["arn"]]
    assert len(billed) == 1 and billed[0]["access_key"] == SITE_ID and \
        billed[0]["shots"] == 100
    # the job's key died with it (an unknown key, not merely a wrong secret)
    import boto3
    from botocore.exceptions import ClientError

    client = boto3.Session(aws_access_key_id=task_env["AWS_ACCESS_KEY_ID"],
                           aws_secret_access_key=task_env["AWS_SECRET_ACCESS_KEY"],
                           region_name="us-east-1").client(
        "braket", endpoint_url=task_env["AWS_ENDPOINT_URL_BRAKET"])
    with pytest.raises(ClientError, match="UnrecognizedClient"):
        client.get_device(deviceArn=SV1)
    # flux qr usage: what the vendor billed (read back by the agent after the job)
    from flux.job import JobID

    row: dict = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        data = json.loads(inst.run(["flux", "qr", "usage", "--since", "1d", "--jobs",
                                    "--format", "json"]).stdout)
        row = next((r for r in data["jobs"] if r["jobid"] == int(JobID(jobid))
                    and r["device"] == "sv1"), {})
        if row.get("tasks"):
            break
        time.sleep(0.5)
    assert row["tasks"] == len(billed) and row["shots"] == sum(b["shots"] for b in billed)
    seconds = billed[0]["execution_ms"] / 1000
    assert row["source"] == "vendor" and row["qpu_seconds"] == pytest.approx(seconds)
    assert row["cost"] == pytest.approx(PRICE["minute"] * max(seconds, 3.0) / 60, abs=1e-6)
    table = inst.run(["flux", "qr", "usage", "--since", "1d"]).stdout
    assert "sv1" in table
    assert SITE_SECRET not in inst.run(["flux", "dmesg"]).stdout


#: Runs a Bell circuit, says so, then waits (for the agent's reload) until told to end.
WAITER = r"""
import json, os, sys, time, fluxqr
from braket.circuits import Circuit
task = fluxqr.allocation()[0].backend(sdk="braket").run(Circuit().h(0).cnot(0, 1), shots=100)
task.result()
print(json.dumps({"arn": task.id}), flush=True)
deadline = time.monotonic() + 300  # a hang guard
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    time.sleep(0.2)
"""


def test_braket_usage_survives_an_agent_reload(env) -> None:
    """The agent is reloaded while a Braket job runs: the task ARNs it saved in the job's
    owner-only record (no secret) let the new agent account the job's tasks at its end."""
    import os
    from pathlib import Path

    from flux.job import JobID

    inst, server, work = env
    (work / "waiter.py").write_text(WAITER)
    out, go = work / "waiter.out", work / "waiter.go"
    jobid = inst.run(["flux", "submit", "-N1", "--qpu-device=sv1", "--qpu-start=now",
                      f"--output={out}", sys.executable, str(work / "waiter.py"), str(go)]
                     ).stdout.strip()
    deadline = time.monotonic() + 180  # a hang guard
    while time.monotonic() < deadline and not (out.exists() and out.read_text().strip()):
        time.sleep(0.3)
    arn = json.loads(out.read_text().splitlines()[-1])["arn"]
    rundir = inst.run(["flux", "getattr", "rundir"]).stdout.strip()
    record = Path(rundir) / "fluxqr" / f"{int(JobID(jobid))}.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and arn not in (record.read_text()
                                                      if record.exists() else ""):
        time.sleep(0.2)
    saved = json.loads(record.read_text())
    assert [t["arn"] for t in saved["extra"]["braket"]] == [arn]
    assert os.stat(record).st_mode & 0o077 == 0  # owner-only
    assert "FLUXQRJOB" not in record.read_text() and SITE_SECRET not in record.read_text()
    inst.run(["flux", "module", "remove", "fluxqr"])
    inst.load_agent()
    go.write_text("")
    assert inst.wait_job(jobid, timeout=180)["result"] == "COMPLETED"
    billed = [b for b in server.billing() if b["arn"] == arn]
    assert len(billed) == 1
    row: dict = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        data = json.loads(inst.run(["flux", "qr", "usage", "--since", "1d", "--jobs",
                                    "--format", "json"]).stdout)
        row = next((r for r in data["jobs"] if r["jobid"] == int(JobID(jobid))), {})
        if row.get("tasks"):
            break
        time.sleep(0.5)
    assert row.get("tasks") == 1 and row["shots"] == 100, row
    assert row["qpu_seconds"] == pytest.approx(billed[0]["execution_ms"] / 1000)
    assert not record.exists()
