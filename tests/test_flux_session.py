"""Real Flux, start mode ``now``: the agent opens the session at allocation (the job shell
waits for it) and always closes it at job end. Held starts: tests/test_flux_agent.py."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from fluxinst import PROBE, FluxInstance, build_r, requires_flux
from standins.qcs_server import QCSStandIn

pytestmark = [requires_flux, pytest.mark.flux]

KEY_VAR = "FLUXQR_TEST_IBM_KEY"
SECRET = "qcs-apikey-9d2b7a61e0"

TASK = r"""
import json, os, sys
import fluxqr
from qrmi import QRMIService
qpus = fluxqr.allocation()
service = QRMIService()
ids = sorted(r.resource_id() for r in service.resources())
tasks = {}
if "--primitive" in sys.argv:  # qrmi's own primitive, through the credential gateway
    from qrmi import Payload
    qasm = ('OPENQASM 3.0; include "stdgates.inc"; bit[1] c; qubit[1] q; '
            'c[0] = measure q[0];')
    for r in service.resources():
        t = r.task_start(Payload.QiskitPrimitive(input=json.dumps(
            {"pubs": [[qasm]], "shots": 1, "version": 2}), program_id="sampler"))
        tasks[r.resource_id()] = [t, str(r.task_status(t))]
import hashlib
def shown(k, v):  # a task that prints secrets would leak them into its own output
    secret = "APIKEY" in k or "ACQUISITION_TOKEN" in k
    return "sha256:" + hashlib.sha256(v.encode()).hexdigest()[:16] if secret else v
env = {k: shown(k, v) for k, v in os.environ.items() if "QRMI" in k or k.startswith("FLUXQR_")}
print(json.dumps({"qpus": [q.name for q in qpus], "qrmi_resources": ids,
                  "props": qpus[0].properties, "env": env, "tasks": tasks}))
"""

#: job tokens the tests saw: none may appear in the instance's records
JOB_TOKENS: list[str] = []


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("flux-session")
    server = QCSStandIn("fake_fez", apikey=SECRET).start()
    other = QCSStandIn("fake_torino", apikey=SECRET).start()  # device B
    devices = work / "devices.yaml"
    devices.write_text(yaml.safe_dump({"version": 1, "devices": [
        {"name": "ibm_fez", "adapter": "qrmi", "qubits": 156, "vendor": "ibm",
         "technology": "superconducting", "sharing": {"sessions": 4}, "timeout": 30,
         "params": {"resource_id": "ibm_fez", "resource_type": "ibm-quantum-compute-service",
                    "config": server.qrmi_config()},
         "credentials": {"QRMI_IBM_QCS_IAM_APIKEY": KEY_VAR}},
        {"name": "ibm_torino", "adapter": "qrmi", "qubits": 133, "vendor": "ibm",
         "technology": "superconducting", "sharing": {"sessions": 4}, "timeout": 30,
         "params": {"resource_id": "ibm_torino",
                    "resource_type": "ibm-quantum-compute-service",
                    "config": other.qrmi_config()},
         "credentials": {"QRMI_IBM_QCS_IAM_APIKEY": KEY_VAR}},
        {"name": "aer", "adapter": "qiskit", "qubits": 30, "vendor": "qiskit",
         "technology": "simulator", "sharing": {"sessions": 4},
         "params": {"backend": "aer_simulator"}},
    ]}))
    (work / "task.py").write_text(TASK)
    (work / "probe.py").write_text(PROBE)
    inst = FluxInstance(work, build_r(work / "R.json", cores=8, devices=devices),
                        hosts="node[0-1]", devices=devices, env={KEY_VAR: SECRET}).start()
    yield inst, server, work, other
    inst.stop()
    server.stop()
    other.stop()


def _ref(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]


def _memo(inst: FluxInstance, jobid: str) -> dict:
    rec = inst.job_info(jobid)
    return ((rec.get("annotations") or {}).get("user") or {}).get("qpu_sessions") or {}


def _ops(server: QCSStandIn, op: str) -> list[dict]:
    return [e for e in server.log()["sessions"] if e["op"] == op]


def _wait_ops(server: QCSStandIn, op: str, count: int, limit: float = 60) -> list[dict]:
    """The ``op`` entries once there are ``count`` of them: the agent closes sessions right
    after a job ends, asynchronously (the bound only keeps a broken agent from hanging)."""
    deadline = time.monotonic() + limit
    while len(_ops(server, op)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return _ops(server, op)


def _run_task(inst: FluxInstance, work: Path, *options: str,
              args: tuple[str, ...] = ()) -> tuple[str, list[dict]]:
    """Submit TASK with ``options``; its job id and what each task reported."""
    jobid = inst.run(["flux", "submit", *options, sys.executable, str(work / "task.py"),
                      *args]).stdout.strip()
    info = inst.wait_job(jobid)
    out = inst.run(["flux", "job", "attach", jobid], check=False)
    assert info["result"] == "COMPLETED", out.stderr
    return jobid, [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_task_sees_the_qrmi_contract_and_one_acquire_one_release(env) -> None:
    inst, server, work, _ = env
    server.reset()
    jobid, (seen,) = _run_task(inst, work, "-N1", "--qpu-device=ibm_fez", "--qpu-start=now",
                               "--qpu-session-time=10m", args=("--primitive",))
    assert seen["qpus"] == ["ibm_fez"] and seen["qrmi_resources"] == ["ibm_fez"]
    env_ = seen["env"]
    assert env_["QRMI_JOB_QPU_RESOURCES"] == "ibm_fez"
    assert env_["QRMI_JOB_QPU_TYPES"] == "ibm-quantum-compute-service"
    acquires, releases = _ops(server, "acquire"), _wait_ops(server, "release", 1)
    assert len(acquires) == 1 and len(releases) == 1
    token = acquires[0]["session_id"]
    assert env_["ibm_fez_QRMI_JOB_ACQUISITION_TOKEN"] == _ref(token)
    # no site key: qrmi talks to the agent's credential gateway with a per-job token
    assert env_["ibm_fez_QRMI_IBM_QCS_IAM_APIKEY"] != _ref(SECRET)
    assert KEY_VAR not in env_ and SECRET not in json.dumps(seen)
    gateway = env_["ibm_fez_QRMI_IBM_QCS_ENDPOINT"].removesuffix("/ibm_fez/api")
    assert gateway.startswith("http://127.0.0.1:") and gateway != server.url
    assert env_["ibm_fez_QRMI_IBM_QCS_IAM_ENDPOINT"] == gateway + "/ibm_fez/iam"
    # qrmi's primitive ran in the job's session, and the vendor saw only real bearers
    task, status = seen["tasks"]["ibm_fez"]
    assert [j["session_id"] for j in server.log()["jobs"] if j["id"] == task] == [token]
    assert all(q["authorized"] for q in server.log()["requests"]
               if q["path"] != "/identity/token")
    assert env_["FLUXQR_QPU_IBM_FEZ_SESSION"].startswith("sha256:")
    assert seen["props"]["vendor"] == "ibm"
    assert releases[0]["session_id"] == token
    memo = _memo(inst, jobid)["ibm_fez"]
    assert memo["session"] == env_["FLUXQR_QPU_IBM_FEZ_SESSION"] == _ref(token)
    assert memo["acquired"] and memo["mode"] == "dedicated"
    assert token not in json.dumps(inst.job_info(jobid))


def test_acquire_failure_fails_the_job_before_any_task_runs(env) -> None:
    inst, server, work, _ = env
    marker = work / "ran-anyway"
    server.set(refuse_sessions=True)
    try:
        jobid = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez", "--qpu-start=now",
                          "touch", str(marker)]).stdout.strip()
        info = inst.wait_job(jobid)
    finally:
        server.set(refuse_sessions=False)
    assert info["result"] != "COMPLETED"
    events = inst.run(["flux", "job", "eventlog", jobid]).stdout
    exc = [line for line in events.splitlines() if "exception" in line and "fluxqr" in line]
    assert exc and "the vendor refused the session" in exc[0]
    assert "session quota exceeded" in exc[0]
    assert not marker.exists()
    assert "error" in _memo(inst, jobid)["ibm_fez"]


def test_local_device_needs_no_session(env) -> None:
    inst, server, work, _ = env
    before = len(_ops(server, "acquire"))
    jobid = inst.run(["flux", "submit", "-N1", "--qpu-device=aer", sys.executable,
                      str(work / "task.py")]).stdout.strip()
    info = inst.wait_job(jobid)
    assert info["result"] != "COMPLETED"  # QRMIService has no resources: the task says so
    assert len(_ops(server, "acquire")) == before
    # nothing to show on a local device started `now`: no memo written for it at all
    assert not _memo(inst, jobid) and "qpu" not in json.dumps(inst.job_info(jobid))


def test_thirty_jobs_every_session_released(env) -> None:
    """Random cancel / timeout / failing command / acquire failure: nothing leaks."""
    inst, server, work, _ = env
    server.reset()
    rng = random.Random(7)
    kinds = ["ok", "cancel", "timeout", "fail", "refuse"] * 6
    rng.shuffle(kinds)
    jobs = []
    for kind in kinds:
        if kind == "refuse":
            # only this job may meet the refusing service: let the earlier ones finish
            for _, earlier in jobs:
                inst.wait_job(earlier, timeout=120)
            server.set(refuse_sessions=True)
        cmd = {"ok": ["true"], "fail": ["false"], "cancel": ["sleep", "60"],
               "timeout": ["sleep", "60"], "refuse": ["true"]}[kind]
        extra = ["-t", "2s"] if kind == "timeout" else []
        jobid = inst.run(["flux", "submit", "-n1", "--qpu-device=ibm_fez", "--qpu-start=now",
                          *extra, *cmd]).stdout.strip()
        if kind == "refuse":
            inst.wait_job(jobid)
            server.set(refuse_sessions=False)
        if kind == "cancel":
            inst.run(["flux", "job", "wait-event", "-t", "60", jobid, "start"])
            time.sleep(rng.random() * 0.5)
            inst.run(["flux", "cancel", jobid])
        jobs.append((kind, jobid))
    results = {jobid: (kind, inst.wait_job(jobid, timeout=120)) for kind, jobid in jobs}
    _wait_ops(server, "release", 24)
    log = server.log()["sessions"]
    acquired = {e["session_id"] for e in log if e["op"] == "acquire"}
    released = [e["session_id"] for e in log if e["op"] == "release"]
    assert len(acquired) == 24  # every job but the 6 refused ones
    assert len([e for e in log if e["op"] == "acquire-refused"]) == 6
    assert sorted(released) == sorted(acquired), "every acquired session released once"
    for jobid, (kind, info) in results.items():
        memo = _memo(inst, jobid)["ibm_fez"]
        if kind == "refuse":
            assert "session quota exceeded" in memo["error"]
            assert "fluxqr" in inst.run(["flux", "job", "eventlog", jobid]).stdout
        else:
            assert memo["acquired"] and memo["session"], (kind, memo)
        assert (info["result"] == "COMPLETED") == (kind == "ok"), (kind, info["result"])
    state = Path(inst.run(["flux", "getattr", "rundir"]).stdout.strip()) / "fluxqr"
    assert not list(state.glob("*.json")), "no session state left behind"


def _http(method: str, url: str, body: bytes | None = None, bearer: str | None = None,
          as_uid: int | None = None) -> int:
    """The HTTP status of one request, made by this process or by a process of ``as_uid``."""
    code = (
        "import sys, urllib.request, urllib.error\n"
        "method, url, body, bearer = sys.argv[1:5]\n"
        "h = {'Content-Type': 'application/x-www-form-urlencoded'}\n"
        "if bearer: h['Authorization'] = 'Bearer ' + bearer\n"
        "req = urllib.request.Request(url, data=body.encode() or None, method=method, "
        "headers=h)\n"
        "try:\n"
        "    print(urllib.request.urlopen(req, timeout=30).status)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n")
    # another uid may not read this interpreter's install (e.g. under /root): any python 3
    python = sys.executable if as_uid is None else (shutil.which("python3", path="/usr/bin:"
                                                                 "/usr/local/bin") or "")
    r = subprocess.run([python, "-I", "-c", code, method, url,
                        (body or b"").decode(), bearer or ""], capture_output=True, text=True,
                       timeout=60, user=as_uid, cwd="/")
    assert r.returncode == 0, r.stderr
    return int(r.stdout)


def _bearer(gateway: str, rid: str, token: str) -> tuple[int, str | None]:
    url = f"{gateway}/{rid}/iam/identity/token"
    body = urllib.parse.urlencode({"apikey": token}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as r:
            return r.status, json.loads(r.read())["access_token"]
    except urllib.error.HTTPError as err:
        return err.code, None


def test_gateway_token_is_the_jobs_alone_and_dies_with_it(env) -> None:
    """A second user gets neither the job's session environment nor use of its token; the
    token opens only the job's device, and only while the job runs."""
    inst, server, work, other = env
    for name in ("probe.json", "probe.go"):
        (work / name).unlink(missing_ok=True)
    jobid = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez", "--qpu-start=now",
                      "-t", "3m", sys.executable, str(work / "probe.py"), str(work)]
                     ).stdout.strip()
    deadline = time.monotonic() + 90
    while not (work / "probe.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    seen = json.loads((work / "probe.json").read_text())
    token = seen["ibm_fez_QRMI_IBM_QCS_IAM_APIKEY"]
    JOB_TOKENS.append(token)
    assert SECRET not in json.dumps(seen) and len(token) >= 32
    gateway = seen["ibm_fez_QRMI_IBM_QCS_ENDPOINT"].removesuffix("/ibm_fez/api")
    ask = ("import flux, json, sys\n"
           "try:\n"
           "    env = flux.Flux().rpc('fluxqr.session-env', {'jobid': sys.argv[1]}).get()\n"
           "    print(json.dumps(env['env']))\n"
           "except OSError as e:\n"
           "    print(json.dumps({'errno': e.errno, 'error': e.strerror}))\n")
    # a second user (flux-core's testing userid: the instance owner acting as another uid)
    guest = {"FLUX_HANDLE_USERID": str(os.getuid() + 4242), "FLUX_HANDLE_ROLEMASK": "0x2"}
    refused = json.loads(inst.run([sys.executable, "-c", ask, jobid], env=guest).stdout)
    assert refused.get("errno") == errno.EPERM and "owner only" in refused["error"]
    mine = json.loads(inst.run([sys.executable, "-c", ask, jobid]).stdout)
    assert mine["ibm_fez_QRMI_IBM_QCS_IAM_APIKEY"] == token  # the owner: same grant
    # the token opens device A only
    assert _bearer(gateway, "ibm_torino", token)[0] == 403
    status, bearer = _bearer(gateway, "ibm_fez", token)
    assert status == 200 and bearer
    other.reset()
    assert _http("GET", f"{gateway}/ibm_fez/api/backends", bearer=bearer) == 200
    assert _http("GET", f"{gateway}/ibm_torino/api/backends", bearer=bearer) == 403
    assert other.log()["requests"] == [], "nothing reached device B"
    # another Unix user holding a copy of the token and bearer gets nothing with them
    if os.getuid() == 0:
        nobody = 65534
        form = urllib.parse.urlencode({"apikey": token}).encode()
        assert _http("POST", f"{gateway}/ibm_fez/iam/identity/token", form,
                     as_uid=nobody) == 403
        assert _http("GET", f"{gateway}/ibm_fez/api/backends", bearer=bearer,
                     as_uid=nobody) == 403
    (work / "probe.go").touch()
    assert inst.wait_job(jobid)["result"] == "COMPLETED"
    # the job ended: its token and bearer are dead
    assert _bearer(gateway, "ibm_fez", token)[0] == 400
    assert _http("GET", f"{gateway}/ibm_fez/api/backends", bearer=bearer) == 401
    gone = json.loads(inst.run([sys.executable, "-c", ask, jobid]).stdout)
    assert "errno" in gone


def test_instance_dump_holds_no_secret(env) -> None:
    inst, server, work, _ = env
    tokens = {e["session_id"] for e in server.log()["sessions"] if e["op"] == "acquire"}
    assert tokens, "earlier tests opened sessions"
    dump = work / "dump.tar"
    inst.run(["flux", "dump", "--no-cache", str(dump)])
    texts = {"dmesg": inst.run(["flux", "dmesg"]).stdout}
    for jobid in inst.run(["flux", "jobs", "-a", "-no", "{id}"]).stdout.split():
        texts[f"{jobid} eventlog"] = inst.run(["flux", "job", "eventlog", jobid]).stdout
        for key in ("jobspec", "R"):
            texts[f"{jobid} {key}"] = inst.run(["flux", "job", "info", jobid, key],
                                               check=False).stdout
    with tarfile.open(dump) as tar:
        for member in tar.getmembers():
            if member.isfile():
                texts[f"kvs {member.name}"] = tar.extractfile(member).read().decode(
                    errors="replace")
    assert sum(map(len, texts.values())) > 1000
    for jobid in inst.run(["flux", "jobs", "-a", "-no", "{id}"]).stdout.split():
        out = inst.run(["flux", "job", "attach", jobid], check=False)
        texts[f"{jobid} output"] = out.stdout + out.stderr
    assert JOB_TOKENS, "the gateway test ran first"
    for where, text in texts.items():
        assert SECRET not in text, f"API key found in {where}"
        for token in JOB_TOKENS:
            assert token not in text, f"a job's gateway token found in {where}"
        for token in tokens:
            assert token not in text, f"acquisition token found in {where}"


def test_multi_node_job_gets_the_session_on_every_node(env) -> None:
    """Each node's job shell asks rank 0's fluxqr agent for the session environment."""
    inst, server, work, _ = env
    server.reset()
    _, lines = _run_task(inst, work, "-N2", "-n2", "--qpu-device=ibm_fez", "--qpu-start=now")
    token = _ops(server, "acquire")[0]["session_id"]
    assert len(lines) == 2
    for seen in lines:
        assert seen["env"]["ibm_fez_QRMI_JOB_ACQUISITION_TOKEN"] == _ref(token)
        assert seen["qrmi_resources"] == ["ibm_fez"]
    assert len(_ops(server, "acquire")) == 1 and len(_wait_ops(server, "release", 1)) == 1


def test_instance_shutdown_releases_running_sessions(tmp_path: Path) -> None:
    with QCSStandIn("fake_fez", apikey=SECRET) as server:
        devices = tmp_path / "devices.yaml"
        devices.write_text(yaml.safe_dump({"version": 1, "devices": [
            {"name": "ibm_fez", "adapter": "qrmi", "qubits": 156, "vendor": "ibm",
             "params": {"resource_id": "ibm_fez",
                        "resource_type": "ibm-quantum-compute-service",
                        "config": server.qrmi_config()},
             "credentials": {"QRMI_IBM_QCS_IAM_APIKEY": KEY_VAR}}]}))
        inst = FluxInstance(tmp_path, build_r(tmp_path / "R.json", devices=devices),
                            hosts="node[0-1]", devices=devices, env={KEY_VAR: SECRET}).start()
        try:
            jobid = inst.run(["flux", "submit", "-N1", "--qpu-device=ibm_fez", "--qpu-start=now",
                              "sleep", "300"]).stdout.strip()
            inst.run(["flux", "job", "wait-event", "-t", "60", jobid, "start"])
            assert len(_wait_ops(server, "acquire", 1)) == 1
        finally:
            inst.stop()
        released = _ops(server, "release")
        assert [r["session_id"] for r in released] == \
            [a["session_id"] for a in _ops(server, "acquire")]


def test_agent_load_closes_sessions_left_by_ended_jobs(env) -> None:
    """A session record whose job ended while no agent ran (a crash) is closed at load."""
    import flux.job

    from fluxqr.core import inventory
    from fluxqr.core.sessions import SessionStore, open_sessions

    inst, server, work, _ = env
    jobid = inst.run(["flux", "submit", "-n1", "true"]).stdout.strip()
    inst.wait_job(jobid)
    inst.run(["flux", "module", "remove", "fluxqr"])
    store = SessionStore(Path(inst.run(["flux", "getattr", "rundir"]).stdout.strip()) / "fluxqr")
    os.environ[KEY_VAR] = SECRET  # this test process opens the session itself
    try:
        key = str(int(flux.job.JobID(jobid)))
        open_sessions(key, [inventory.load(inst.devices).get("ibm_fez")], "dedicated", None,
                      store)
    finally:
        del os.environ[KEY_VAR]
    leftover = store.load(key).records[0].token
    assert store.path(key).exists()
    releases = len(_ops(server, "release"))
    inst.load_agent()
    assert _wait_ops(server, "release", releases + 1)[-1]["session_id"] == leftover
    deadline = time.monotonic() + 30
    while store.path(key).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not store.path(key).exists()

