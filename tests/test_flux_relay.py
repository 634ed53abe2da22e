"""Real Flux, two brokers: a hybrid task on rank 1 reaches the credential gateway (rank 0,
loopback only) through rank 1's credential relay (``modules/fluxqr-relay.py``), over the
Flux overlay; the relay checks the caller's uid as the gateway does, and its agent-side
service (``fluxqr.relay``) is the instance owner's alone."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from fluxinst import (
    PROBE,
    QRMI_SAMPLER_TASK,
    FluxInstance,
    build_r,
    gateway_url,
    relay_info,
    requires_flux,
)
from standins.qcs_server import QCSStandIn

pytestmark = [requires_flux, pytest.mark.flux]

KEY_VAR = "FLUXQR_TEST_RELAY_IBM_KEY"
SECRET = "qcs-apikey-relay-5e1f03"

#: prints what the task was told (endpoints; digests of every value, never a value that
#: could be a secret), then runs qrmi sampler jobs through whatever endpoint it was given
TASK = r"""
import hashlib, json, os
print(json.dumps({"endpoints": {k: v for k, v in os.environ.items()
                                if k.endswith("_ENDPOINT")},
                  "has_apikey": any(k.endswith("_IAM_APIKEY") for k in os.environ),
                  "digests": sorted(hashlib.sha256(v.encode()).hexdigest()
                                    for v in os.environ.values())}), flush=True)
""" + QRMI_SAMPLER_TASK


#: one HTTP request as the given uid (another uid may not read this interpreter's
#: install, e.g. under /root: any python 3 then); prints status and body
HTTP = r"""
import sys, urllib.request, urllib.error
method, url, body, bearer = sys.argv[1:5]
h = {"Content-Type": "application/x-www-form-urlencoded"}
if bearer:
    h["Authorization"] = "Bearer " + bearer
req = urllib.request.Request(url, data=body.encode() or None, method=method, headers=h)
try:
    with urllib.request.urlopen(req, timeout=60) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("flux-relay")
    os.chmod(work, 0o755)  # the second user's process runs from /, reads nothing here
    server = QCSStandIn("fake_fez", apikey=SECRET).start()
    devices = work / "devices.yaml"
    devices.write_text(yaml.safe_dump({"version": 1, "devices": [
        server.device_entry("ibm_fez", KEY_VAR, sharing={"sessions": 4})]}))
    (work / "task.py").write_text(TASK)
    (work / "probe.py").write_text(PROBE)
    inst = FluxInstance(work, build_r(work / "R.json", cores=4, devices=devices),
                        hosts="node[0-1]", devices=devices, env={KEY_VAR: SECRET}).start()
    yield inst, server, work
    inst.stop()
    server.stop()


#: a second user (flux-core's testing userid: the instance owner acting as another uid)
_GUEST = {"FLUX_HANDLE_USERID": str(os.getuid() + 4242), "FLUX_HANDLE_ROLEMASK": "0x2"}


def _relay_info(inst: FluxInstance, rank: int = 1, guest: bool = False) -> dict:
    return relay_info(inst, rank, env=_GUEST if guest else None)


def _listening(port: int) -> list[str]:
    """The local addresses (hex, as /proc prints them) listening on TCP ``port``."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fp:
            next(fp)
            for line in fp:
                cols = line.split()
                addr, hexport = cols[1].rsplit(":", 1)
                if cols[3] == "0A" and int(hexport, 16) == port:
                    out.append(addr)
    return out


def _on_rank(inst: FluxInstance, jobid: str) -> list[int]:
    ranks = inst.job_R(jobid)["execution"]["R_lite"]
    return [int(r["rank"]) for r in ranks]


def test_task_on_rank_1_reaches_the_vendor_through_its_nodes_relay(env) -> None:
    inst, server, work = env
    server.reset()
    relay = _relay_info(inst)
    assert relay["rank"] == 1 and relay["url"].startswith("http://127.0.0.1:"), relay
    gateway = gateway_url(inst)
    assert gateway.startswith("http://127.0.0.1:") and gateway != relay["url"]
    # the gateway listens on loopback only: 127.0.0.1, no wildcard address
    assert _listening(int(gateway.rsplit(":", 1)[1])) == ["0100007F"]
    jobid = inst.run(["flux", "submit", "-N1", "--requires=host:node1", "--qpu-device=ibm_fez",
                      "--qpu-start=now", sys.executable, str(work / "task.py"), "2"]
                     ).stdout.strip()
    info = inst.wait_job(jobid)
    out = inst.run(["flux", "job", "attach", jobid], check=False)
    assert info["result"] == "COMPLETED", out.stderr
    assert _on_rank(inst, jobid) == [1]
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith(("{", "["))]
    seen, ids = lines[0], lines[1]
    assert seen["endpoints"]["ibm_fez_QRMI_IBM_QCS_ENDPOINT"] == relay["url"] + "/ibm_fez/api"
    assert seen["endpoints"]["ibm_fez_QRMI_IBM_QCS_IAM_ENDPOINT"] == \
        relay["url"] + "/ibm_fez/iam"
    assert seen["has_apikey"]  # the job token (checked below: not the site key)
    assert len(ids) == 2 and all(ids)
    # the sampler jobs reached the vendor (the stand-in), as the gateway forwards them
    posted = [r for r in server.log()["requests"] if r["method"] == "POST" and
              r["path"] == "/jobs"]
    assert len(posted) == 2
    assert hashlib.sha256(SECRET.encode()).hexdigest() not in seen["digests"]
    assert SECRET not in out.stdout + out.stderr


def test_relay_serves_one_uid_and_its_service_the_owner_only(env) -> None:
    """Another Unix user holding a copy of the job's token gets nothing through the relay;
    no user can call the agent's relay service (claiming any uid) or pose as a relay."""
    inst, server, work = env
    for name in ("probe.json", "probe.go"):
        (work / name).unlink(missing_ok=True)
    jobid = inst.run(["flux", "submit", "-N1", "--requires=host:node1", "--qpu-device=ibm_fez",
                      "--qpu-start=now", "-t", "3m", sys.executable, str(work / "probe.py"),
                      str(work)]).stdout.strip()
    deadline = time.monotonic() + 90
    while not (work / "probe.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    seen = json.loads((work / "probe.json").read_text())
    token = seen["ibm_fez_QRMI_IBM_QCS_IAM_APIKEY"]
    iam = seen["ibm_fez_QRMI_IBM_QCS_IAM_ENDPOINT"] + "/identity/token"
    assert iam.startswith(_relay_info(inst)["url"])
    form = f"apikey={token}"
    try:
        # a direct call of the agent's relay service by a user, claiming the owner's uid
        call = ("import base64, flux, json, sys\n"
                "payload = {'uid': int(sys.argv[1]), 'method': 'POST',\n"
                "           'target': '/ibm_fez/iam/identity/token', 'headers': [],\n"
                "           'body': base64.b64encode(sys.argv[2].encode()).decode()}\n"
                "try:\n"
                "    print(json.dumps(flux.Flux().rpc('fluxqr.relay', payload, nodeid=0)"
                ".get()))\n"
                "except OSError as e:\n"
                "    print(json.dumps({'errno': e.errno}))\n")
        refused = json.loads(inst.run([sys.executable, "-c", call, str(os.getuid()), form],
                                      env=_GUEST).stdout)
        assert refused == {"errno": errno.EPERM}
        # ... also from rank 1's broker, where the relay makes it
        guest = [f"{k}={v}" for k, v in _GUEST.items()]
        refused = json.loads(inst.run(["flux", "exec", "-r", "1", "env", *guest,
                                       sys.executable, "-c", call, str(os.getuid()), form]
                                      ).stdout)
        assert refused == {"errno": errno.EPERM}
        # ... nor learn or pose as a node's relay
        assert _relay_info(inst, guest=True).get("errno") == errno.EPERM
        # the same call by the owner (as the relay makes it) works: the refusals are the
        # role's doing
        mine = json.loads(inst.run([sys.executable, "-c", call, str(os.getuid()), form]).stdout)
        assert mine["status"] == 200
        if os.getuid() == 0:
            status, _ = _http("POST", iam, form, as_uid=65534)
            assert status == 403
        status, body = _http("POST", iam, form)
        assert status == 200 and json.loads(body)["access_token"]
    finally:
        (work / "probe.go").touch()
    assert inst.wait_job(jobid)["result"] == "COMPLETED"
    # the job ended: its token is dead through the relay too
    assert _http("POST", iam, form)[0] == 400


def _http(method: str, url: str, body: str = "", bearer: str = "",
          as_uid: int | None = None) -> tuple[int, str]:
    python = sys.executable if as_uid is None else (shutil.which("python3", path="/usr/bin:"
                                                                 "/usr/local/bin") or "")
    r = subprocess.run([python, "-I", "-c", HTTP, method, url, body, bearer],
                       capture_output=True, text=True, timeout=90, user=as_uid, cwd="/")
    assert r.returncode == 0, r.stderr
    status, _, text = r.stdout.partition(" ")
    return int(status), text


#: a few of tests/test_hostile_gateway.py's probes, sent to rank 1's relay on the wire
HOSTILE = [
    ("content-length-text", "POST /ibm_fez/api/jobs HTTP/1.1\r\nContent-Length: ten\r\n\r\n"),
    ("content-length-huge", "POST /ibm_fez/api/jobs HTTP/1.1\r\nContent-Length: "
                            "1000000000000\r\n\r\n"),
    ("chunked", "POST /ibm_fez/api/jobs HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                "2\r\n{}\r\n0\r\n\r\n"),
    ("iam-huge-form", "POST /ibm_fez/iam/identity/token HTTP/1.1\r\nContent-Length: "
                      f"{32 << 20}\r\n\r\n"),
    ("api-dotdot", "GET /ibm_fez/api/sessions/a/%2e%2e/b HTTP/1.1\r\nAuthorization: Bearer "
                   "x\r\nContent-Length: 0\r\n\r\n"),
    ("braket-no-signature", "GET /braket/device/x HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
    ("method-trace", "TRACE /ibm_fez/api/backends HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
    ("path-traversal", "GET /../../etc/passwd HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
]


def test_hostile_input_through_the_relay_gets_a_clean_4xx(env) -> None:
    inst, server, work = env
    server.reset()
    port = int(_relay_info(inst)["url"].rsplit(":", 1)[1])
    code = ("import http.client, json, socket, sys\n"
            "out = []\n"
            "for raw in json.loads(sys.stdin.read()):\n"
            "    with socket.create_connection(('127.0.0.1', int(sys.argv[1])), 30) as s:\n"
            "        s.sendall(raw.encode('latin-1'))\n"
            "        r = http.client.HTTPResponse(s, method='GET')\n"
            "        r.begin()\n"
            "        out.append([r.status, r.read().decode('latin-1')])\n"
            "print(json.dumps(out))\n")
    replies = json.loads(inst.run(["flux", "exec", "-r", "1", sys.executable, "-c", code,
                                   str(port)], input=json.dumps([raw for _, raw in HOSTILE])
                                  ).stdout)
    for (name, _), (status, body) in zip(HOSTILE, replies, strict=True):
        assert 400 <= status < 500, (name, status, body[:300])
        assert SECRET not in body
    assert server.log()["requests"] == []
    dmesg = inst.run(["flux", "dmesg"]).stdout
    assert "Traceback" not in dmesg and "internal error" not in dmesg


def test_a_rank_without_relay_gets_no_credential_and_says_why(env) -> None:
    """Never a silent fallback: with rank 1's relay gone its tasks get no credential and
    one line in the job's output; reloaded, it serves again (the agent asks each time)."""
    inst, server, work = env
    inst.run(["flux", "exec", "-r", "1", inst.flux, "module", "remove", "fluxqr-relay"])
    try:
        jobid = inst.run(["flux", "submit", "-N1", "--requires=host:node1",
                          "--qpu-device=ibm_fez", "--qpu-start=now", sys.executable, "-c",
                          "import json, os; print(json.dumps(sorted(os.environ)))"]
                         ).stdout.strip()
        info = inst.wait_job(jobid)
        out = inst.run(["flux", "job", "attach", jobid], check=False)
        assert info["result"] == "COMPLETED", out.stderr
        names = json.loads(out.stdout.splitlines()[-1])
        # the device's non-secret settings only, as with the gateway off: no key at all
        assert "ibm_fez_QRMI_IBM_QCS_ENDPOINT" in names
        assert not [n for n in names if "APIKEY" in n]
        notes = [x for x in out.stderr.splitlines() if "no credential relay on rank 1" in x]
        assert len(notes) == 1, out.stderr
        assert SECRET not in out.stdout + out.stderr
    finally:
        inst.load_relays()
    assert _relay_info(inst)["url"].startswith("http://127.0.0.1:")


def test_a_relay_that_cannot_listen_never_stops_its_broker(env) -> None:
    """A relay given a port already taken stays loaded, idle, with one line in its
    broker's log (``flux dmesg`` on that rank); the broker and classical jobs on that node
    carry on, and hybrid tasks there are told why they get no credential."""
    inst, server, work = env
    taken = int(_relay_info(inst)["url"].rsplit(":", 1)[1])
    inst.run(["flux", "exec", "-r", "1", inst.flux, "module", "remove", "fluxqr-relay"])
    inst.run(["flux", "exec", "-r", "1", inst.flux, "module", "load",
              str(inst.files["relay"]), f"port={server.url.rsplit(':', 1)[1]}"])
    try:
        dmesg = inst.run(["flux", "exec", "-r", "1", inst.flux, "dmesg"]).stdout
        lines = [x for x in dmesg.splitlines() if "credential relay not started" in x]
        assert len(lines) == 1, lines
        assert _relay_info(inst)["url"] is None
        assert "Address already in use" in lines[0] and "Traceback" not in dmesg
        jobid = inst.run(["flux", "submit", "-N1", "--requires=host:node1", "true"]
                         ).stdout.strip()
        assert inst.wait_job(jobid)["result"] == "COMPLETED"
        jobid = inst.run(["flux", "submit", "-N1", "--requires=host:node1",
                          "--qpu-device=ibm_fez", "--qpu-start=now", "true"]).stdout.strip()
        assert inst.wait_job(jobid)["result"] == "COMPLETED"
        err = inst.run(["flux", "job", "attach", jobid], check=False).stderr
        assert "no credential relay on rank 1 (OSError: [Errno 98] Address already in use)" \
            in err
    finally:
        inst.run(["flux", "exec", "-r", "1", inst.flux, "module", "remove", "fluxqr-relay"])
        inst.load_relays()
    assert taken  # a fresh relay took a new free port
    assert _relay_info(inst)["url"].startswith("http://127.0.0.1:")


def test_a_relay_that_cannot_import_fluxqr_loads_idle_and_says_why(env) -> None:
    """A node where the relay's shim cannot import fluxqr (a broken install there): the
    load still succeeds (a failed load would fail that broker's rc1), one line in its
    dmesg, and the node's hybrid jobs are told why they get no credential."""
    inst, server, work = env
    broken = work / "broken" / "fluxqr-relay.py"
    broken.parent.mkdir(exist_ok=True)
    text = inst.files["relay"].read_text()
    assert "from fluxqr.agent.relay import RelayModule" in text
    broken.write_text(text.replace("fluxqr.agent.relay", "fluxqr.agent.not_installed_here"))
    inst.run(["flux", "exec", "-r", "1", inst.flux, "module", "remove", "fluxqr-relay"])
    try:
        inst.run(["flux", "exec", "-r", "1", inst.flux, "module", "load", str(broken)])
        dmesg = inst.run(["flux", "exec", "-r", "1", inst.flux, "dmesg"]).stdout
        lines = [x for x in dmesg.splitlines() if "cannot import fluxqr" in x]
        assert len(lines) == 1 and "Traceback" not in dmesg, lines
        assert _relay_info(inst) == {"rank": 1, "url": None, "error": "cannot import fluxqr"}
        jobid = inst.run(["flux", "submit", "-N1", "--requires=host:node1",
                          "--qpu-device=ibm_fez", "--qpu-start=now", "true"]).stdout.strip()
        assert inst.wait_job(jobid)["result"] == "COMPLETED"
        err = inst.run(["flux", "job", "attach", jobid], check=False).stderr
        assert "no credential relay on rank 1 (cannot import fluxqr)" in err
    finally:
        inst.run(["flux", "exec", "-r", "1", inst.flux, "module", "remove", "fluxqr-relay"])
        inst.load_relays()
    assert _relay_info(inst)["url"].startswith("http://127.0.0.1:")
