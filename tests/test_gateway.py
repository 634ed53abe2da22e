"""The credential gateway without Flux: the real ``qrmi`` client in a task process, the QCS
stand-in (with ``apikey`` set, so its IAM enforces the site key) as the vendor.
Authorisation on a real instance: tests/test_flux_session.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest
from standins.qcs_server import QCSStandIn

from fluxqr.agent.gateway import Gateway, peer_uid
from fluxqr.core import inventory, sessions

pytest.importorskip("qrmi")

KEY_VAR = "FLUXQR_TEST_GW_KEY"
SECRET = "site-apikey-7f3e0c2b91"

TASK = r"""
import json, os, qrmi
out = {"resources": [], "tasks": {}}
service = qrmi.QRMIService()
for r in service.resources():
    rid = r.resource_id()
    out["resources"].append(rid)
    out["accessible"] = r.is_accessible()
    token = os.environ.get(rid + "_QRMI_JOB_ACQUISITION_TOKEN")
    qasm = ('OPENQASM 3.0; include "stdgates.inc"; bit[1] c; qubit[1] q; '
            'c[0] = measure q[0];')
    payload = qrmi.Payload.QiskitPrimitive(
        input=json.dumps({"pubs": [[qasm]], "shots": 1, "version": 2}), program_id="sampler")
    task = r.task_start(payload)
    out["tasks"][rid] = [task, str(r.task_status(task))]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def site():
    """Two devices (A = ibm_fez, B = ibm_torino), each its own stand-in; a gateway."""
    a = QCSStandIn("fake_fez", apikey=SECRET).start()
    b = QCSStandIn("fake_torino", apikey=SECRET).start()
    inv = inventory.parse({"version": 1, "devices": [a.device_entry("ibm_fez", KEY_VAR),
                                                     b.device_entry("ibm_torino", KEY_VAR)]})
    old = os.environ.get(KEY_VAR)
    os.environ[KEY_VAR] = SECRET  # the agent's environment
    gw = Gateway(("127.0.0.1", 0), owner=os.getuid())
    gw.configure(inv)
    yield gw, inv, a, b
    gw.stop()
    a.stop()
    b.stop()
    if old is None:
        os.environ.pop(KEY_VAR, None)
    else:
        os.environ[KEY_VAR] = old


def _session(server: QCSStandIn) -> str:
    """A session the agent would have opened (straight on the vendor, with the site key)."""
    body = json.dumps({"backend": server.name, "mode": "dedicated"}).encode()
    token = _call("POST", server.url + "/identity/token",
                  urllib.parse.urlencode({"apikey": SECRET}).encode(),
                  form=True)[1]["access_token"]
    return _call("POST", server.url + "/sessions", body, bearer=token)[1]["id"]


def _call(method: str, url: str, body: bytes | None = None, bearer: str | None = None,
          form: bool = False) -> tuple[int, Any]:
    headers = {"Content-Type": "application/x-www-form-urlencoded" if form
               else "application/json"}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = resp.read()
            return resp.status, json.loads(data) if data else None
    except urllib.error.HTTPError as err:
        data = err.read()
        return err.code, json.loads(data) if data else None


def _bearer(gw: Gateway, rid: str, token: str) -> tuple[int, Any]:
    return _call("POST", f"{gw.url}/{rid}/iam/identity/token",
                 urllib.parse.urlencode({"grant_type": "x", "apikey": token}).encode(),
                 form=True)


def _env(gw: Gateway, inv: inventory.Inventory, jobid: int, names: list[str],
         tokens: dict[str, str]) -> dict[str, str]:
    devices = [inv.get(n) for n in names]
    grant = gw.grant(jobid, os.getuid(), devices, tokens)
    js = sessions.JobSessions(str(jobid), [sessions.SessionRecord(n, "qrmi", "dedicated",
                                                                  token=tokens.get(n))
                                           for n in names], userid=os.getuid())
    return sessions.task_environment(js, devices, gateway=gw.settings(grant))


def _task(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if "QRMI" not in k and k != KEY_VAR}
    return subprocess.run([sys.executable, "-c", TASK], env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


def test_qrmi_works_unmodified_through_the_gateway_without_the_site_key(site) -> None:
    gw, inv, a, _ = site
    sid = _session(a)
    a.reset()
    env = _env(gw, inv, 101, ["ibm_fez"], {"ibm_fez": sid})
    assert SECRET not in json.dumps(env)
    assert env["ibm_fez_QRMI_IBM_QCS_ENDPOINT"] == f"{gw.url}/ibm_fez/api"
    assert env["ibm_fez_QRMI_IBM_QCS_IAM_ENDPOINT"] == f"{gw.url}/ibm_fez/iam"
    r = _task(env)
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["resources"] == ["ibm_fez"] and out["accessible"] is True
    task, status = out["tasks"]["ibm_fez"]
    assert status.rsplit(".", 1)[-1] in ("Queued", "Running", "Completed")
    # the vendor saw only its own bearer (never the gateway's) and the site's key at IAM
    seen = a.log()["requests"]
    api = [q for q in seen if q["path"] != "/identity/token"]
    assert api and all(q["authorized"] for q in api)
    assert any(q["method"] == "POST" and q["path"] == "/jobs" for q in api)
    # qrmi sent the task into the job's session (the one the agent opened)
    assert [j["session_id"] for j in a.log()["jobs"] if j["id"] == task] == [sid]
    gw.revoke(101)


def test_a_token_opens_only_its_own_device(site) -> None:
    gw, inv, a, b = site
    env = _env(gw, inv, 102, ["ibm_fez"], {})
    token = env["ibm_fez_QRMI_IBM_QCS_IAM_APIKEY"]
    status, reply = _bearer(gw, "ibm_torino", token)
    assert status == 403
    status, reply = _bearer(gw, "ibm_fez", token)
    assert status == 200
    bearer = reply["access_token"]
    assert _call("GET", f"{gw.url}/ibm_fez/api/backends", bearer=bearer)[0] == 200
    b.reset()
    assert _call("GET", f"{gw.url}/ibm_torino/api/backends", bearer=bearer)[0] == 403
    assert _call("GET", f"{gw.url}/ibm_fez/api/backends/ibm_torino/status",
                 bearer=bearer)[0] == 403
    assert b.log()["requests"] == [], "nothing reached device B"
    gw.revoke(102)


def test_a_token_dies_with_its_job(site) -> None:
    gw, inv, a, _ = site
    env = _env(gw, inv, 103, ["ibm_fez"], {})
    token = env["ibm_fez_QRMI_IBM_QCS_IAM_APIKEY"]
    bearer = _bearer(gw, "ibm_fez", token)[1]["access_token"]
    assert _call("GET", f"{gw.url}/ibm_fez/api/backends", bearer=bearer)[0] == 200
    gw.revoke(103)
    assert _bearer(gw, "ibm_fez", token)[0] == 400
    assert _call("GET", f"{gw.url}/ibm_fez/api/backends", bearer=bearer)[0] == 401
    assert _call("GET", f"{gw.url}/ibm_fez/api/backends")[0] == 401
    r = _task(env)  # qrmi with a dead token fails (its IAM request is refused)
    assert r.returncode != 0 and SECRET not in r.stdout + r.stderr


def test_a_job_reaches_only_its_own_sessions_and_vendor_jobs(site) -> None:
    gw, inv, a, _ = site
    mine, theirs = _session(a), _session(a)
    env1 = _env(gw, inv, 104, ["ibm_fez"], {"ibm_fez": mine})
    env2 = _env(gw, inv, 105, ["ibm_fez"], {"ibm_fez": theirs})
    b1 = _bearer(gw, "ibm_fez", env1["ibm_fez_QRMI_IBM_QCS_IAM_APIKEY"])[1]["access_token"]
    b2 = _bearer(gw, "ibm_fez", env2["ibm_fez_QRMI_IBM_QCS_IAM_APIKEY"])[1]["access_token"]
    api = f"{gw.url}/ibm_fez/api"
    job = json.dumps({"program_id": "sampler", "backend": "ibm_fez", "session_id": mine,
                      "params": {"shots": 1}}).encode()
    status, reply = _call("POST", f"{api}/jobs", job, bearer=b1)
    assert status == 200
    jid = reply["id"]
    assert _call("GET", f"{api}/jobs/{jid}", bearer=b1)[0] == 200
    assert _call("GET", f"{api}/sessions/{mine}", bearer=b1)[0] == 200
    # job 105 can neither see nor stop job 104's work, nor use its session
    assert _call("GET", f"{api}/jobs/{jid}", bearer=b2)[0] == 403
    assert _call("POST", f"{api}/jobs/{jid}/cancel", bearer=b2)[0] == 403
    assert _call("DELETE", f"{api}/sessions/{mine}/close", bearer=b2)[0] == 403
    assert _call("POST", f"{api}/jobs", job, bearer=b2)[0] == 403
    assert _call("GET", f"{api}/jobs?pending=true&session_id={mine}", bearer=b2)[0] == 403
    # tasks open no sessions of their own, and reach no other route of the account
    assert _call("POST", f"{api}/sessions", b'{"backend": "ibm_fez"}', bearer=b1)[0] == 403
    assert _call("GET", f"{api}/jobs", bearer=b1)[0] == 403
    assert _call("GET", f"{api}/jobs?pending=true&backend=ibm_fez", bearer=b1)[0] == 200
    assert _call("GET", f"{api}/../identity/token", bearer=b1)[0] in (403, 404)
    gw.revoke(104)
    gw.revoke(105)


def test_a_loopback_caller_must_be_the_jobs_owner(site) -> None:
    gw, inv, a, _ = site
    other = Gateway(("127.0.0.1", 0), owner=os.getuid() + 1)  # as if run by another uid
    try:
        other.configure(inv)
        grant = other.grant(106, os.getuid() + 2, [inv.get("ibm_fez")], {})
        assert _bearer(other, "ibm_fez", grant.token)[0] == 403
        mine = other.grant(107, os.getuid(), [inv.get("ibm_fez")], {})
        assert _bearer(other, "ibm_fez", mine.token)[0] == 200
    finally:
        other.stop()


def test_peer_uid_finds_the_caller() -> None:
    import socket

    srv = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(srv.getsockname())
    try:
        conn, addr = srv.accept()
        assert peer_uid(addr, srv.getsockname()) == os.getuid()
        conn.close()
    finally:
        cli.close()
        srv.close()


def test_a_refused_site_key_is_a_502_that_names_no_key(site, monkeypatch) -> None:
    gw, inv, a, _ = site
    monkeypatch.setenv(KEY_VAR, "wrong-key-000")
    gw.configure(inv)  # fresh upstreams: no cached bearer
    env = _env(gw, inv, 108, ["ibm_fez"], {})
    bearer = _bearer(gw, "ibm_fez", env["ibm_fez_QRMI_IBM_QCS_IAM_APIKEY"])[1]["access_token"]
    status, reply = _call("GET", f"{gw.url}/ibm_fez/api/backends", bearer=bearer)
    assert status == 502 and "wrong-key-000" not in json.dumps(reply)
    gw.revoke(108)
    monkeypatch.setenv(KEY_VAR, SECRET)
    gw.configure(inv)


def test_gateway_setting() -> None:
    from fluxqr.core.config import parse_gateway, settings
    from fluxqr.errors import FluxqrError

    assert settings({"fluxqr": {"devices": "d.yaml"}}, ())["gateway"] == ("127.0.0.1", 0)
    assert parse_gateway("0.0.0.0:8443") == ("0.0.0.0", 8443)
    assert parse_gateway("[::1]:0") == ("::1", 0)
    for off in ("off", "", False, "none"):
        assert parse_gateway(off) is None
    for bad in ("localhost:1", "127.0.0.1", "127.0.0.1:70000", "1.2.3.4:x"):
        with pytest.raises(FluxqrError, match="gateway: invalid address"):
            parse_gateway(bad)


def test_dispatch_answers_without_a_socket_for_the_uid_it_is_given(site) -> None:
    """What a node's relay forwards: the caller's uid is the relay's word, checked as the
    socket's owner is; the same routes, refusals and settings as over HTTP."""
    from http.client import HTTPMessage

    gw, inv, a, _ = site
    grant = gw.grant(109, os.getuid() + 4242, [inv.get("ibm_fez")], {})
    form = urllib.parse.urlencode({"apikey": grant.token}).encode()
    headers = HTTPMessage()
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    iam = "/ibm_fez/iam/identity/token"
    # neither the job's owner nor the instance owner: refused, whatever the token
    status, body, ctype, _ = gw.dispatch("POST", iam, headers, form, os.getuid() + 1)
    assert status == 403 and ctype == "application/json" and b"owner only" in body
    status, body, _, _ = gw.dispatch("POST", iam, headers, form, os.getuid() + 4242)
    assert status == 200
    headers["Authorization"] = f"Bearer {json.loads(body)['access_token']}"
    a.reset()
    assert gw.dispatch("GET", "/ibm_fez/api/backends", headers, b"", os.getuid() + 4242)[0] \
        == 200
    assert gw.dispatch("GET", "/ibm_fez/api/backends", headers, b"", os.getuid() + 1)[0] \
        == 403
    assert [r["path"] for r in a.log()["requests"] if "backends" in r["path"]] == \
        ["/backends"], "only the job owner's call went upstream"
    assert gw.dispatch("GET", "/ibm_fez/admin", headers, b"", None)[0] == 404
    assert gw.dispatch("GET", "/braket/device/x", HTTPMessage(), b"", None)[0] == 403
    # the relay's settings: the same token, the node's relay URL
    relay = gw.settings(grant, "http://127.0.0.1:1/")["ibm_fez"]
    assert relay["QRMI_IBM_QCS_ENDPOINT"] == "http://127.0.0.1:1/ibm_fez/api"
    assert relay["QRMI_IBM_QCS_IAM_APIKEY"] == grant.token
    gw.revoke(109)


def test_relayed_request_payloads_are_checked_before_the_gateway_sees_them() -> None:
    relay = pytest.importorskip("fluxqr.agent.relay", reason="needs the flux bindings")
    good = {"uid": 0, "method": "GET", "target": "/x", "headers": [["A", "b"]], "body": ""}
    assert relay.decode_request(good)[:3] == (0, "GET", "/x")
    for bad in ({**good, "uid": -1}, {**good, "uid": True}, {**good, "uid": "0"},
                {**good, "method": "GE T"}, {**good, "method": "X" * 21},
                {**good, "target": "x"}, {**good, "target": "/" * 70000},
                {**good, "headers": [["A"]]}, {**good, "headers": [["A", 1]]},
                {**good, "headers": [["A", "b"]] * 201}, {**good, "body": "not base64!"},
                {**good, "body": None}, [], None):
        with pytest.raises(ValueError):
            relay.decode_request(bad)
