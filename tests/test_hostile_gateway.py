"""The hostile-input corpus for the credential gateway: bad requests at its Braket (SigV4)
and IBM QCS endpoints, sent as raw bytes on a socket (so malformed framing reaches it too).

Every probe must get a clean 4xx — AWS-style under ``/braket`` (JSON with
``x-amzn-ErrorType``, or S3's XML ``<Error>``) — with no secret in the reply (the site's
keys, either job's token), reach no vendor (the stand-ins' request logs stay empty), and
leave no traceback or error line in the log. To add a reported bad request, add a row to
:data:`BRAKET_PROBES` or :data:`IBM_PROBES`. The Braket and IBM stand-ins play the vendors
(tests/standins); job A (901) and job B (902) share the site's account and devices.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import http.client
import json
import logging
import os
import socket
import urllib.parse
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest

pytest.importorskip("boto3")

from standins.braket_server import DEFAULT_BUCKET, SV1, BraketStandIn  # noqa: E402
from standins.qcs_server import QCSStandIn  # noqa: E402

from fluxqr.agent.gateway import Gateway  # noqa: E402
from fluxqr.core import inventory  # noqa: E402

SITE_ID = "AKIAFLUXQRSITE000009"
SITE_SECRET = "site-aws-secret-hostile-51c0"
IBM_KEY = "site-apikey-hostile-8d2e4a"
AWS_ID_VAR, AWS_SECRET_VAR, IBM_VAR = ("FLUXQR_TEST_HG_AWS_ID", "FLUXQR_TEST_HG_AWS_SECRET",
                                       "FLUXQR_TEST_HG_IBM_KEY")
A, B = 901, 902


@dataclass
class Site:
    gw: Gateway
    aws: BraketStandIn
    ibm: QCSStandIn
    a: Any            # job A's grant
    b: Any            # job B's grant
    a_task: str       # a task job A created (through the gateway)
    b_task: str       # one job B created
    a_bearer: str
    b_bearer: str
    relay: Any = None   # a node's relay (fluxqr.agent.relay) in front of the gateway

    @property
    def authority(self) -> str:
        host, port = self.gw._server.server_address[:2]
        return f"{host}:{port}"

    def secrets(self) -> list[str]:
        return [SITE_ID, SITE_SECRET, IBM_KEY, self.a.token, self.b.token, self.b_bearer]

    def tid(self, arn: str) -> str:
        return arn.rsplit("/", 1)[-1]


def _send(site: Site, raw: bytes, via: str = "gateway") -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` to the gateway, or (``via="relay"``) to a relay in front of it."""
    server = site.relay._server if via == "relay" else site.gw._server
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(raw)
        resp = http.client.HTTPResponse(sock, method="GET")
        resp.begin()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def _raw(site: Site, method: str, target: str, headers: dict[str, str] | None = None,
         body: bytes = b"", length: str | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {site.authority}"]
    hdrs = dict(headers or {})
    hdrs.pop("host", None)
    hdrs.setdefault("Content-Length", str(len(body)) if length is None else length)
    if length == "":
        del hdrs["Content-Length"]
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _signed(site: Site, method: str, target: str, body: bytes = b"", *, key: str,
            secret: str, service: str = "braket", region: str = "us-east-1",
            when: _dt.datetime | None = None, extra: dict[str, str] | None = None
            ) -> dict[str, str]:
    """Headers of ``target`` signed by botocore as a client would (at ``when``)."""
    from botocore import auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    cls = auth.S3SigV4Auth if service == "s3" else auth.SigV4Auth
    signer = cls(Credentials(key, secret), service, region)
    request = AWSRequest(method=method, url=f"http://{site.authority}{target}", data=body,
                         headers=dict(extra or {}))
    now = when or _dt.datetime.now(_dt.UTC).replace(tzinfo=None)
    with mock.patch.object(auth, "get_current_datetime", lambda: now):
        signer.add_auth(request)
    return {k: (v.decode() if isinstance(v, bytes) else str(v))
            for k, v in request.headers.items()}


def _job(site: Site, method: str, target: str, body: bytes = b"", job: str = "a",
         **kw: Any) -> bytes:
    """A request correctly signed with job A's (or B's) key."""
    grant = site.a if job == "a" else site.b
    return _raw(site, method, target, _signed(site, method, target, body,
                                              key=grant.access_key, secret=grant.token, **kw),
                body)


def _q(arn: str) -> str:
    return urllib.parse.quote(arn, safe="")


def _s3(site: Site, key: str) -> str:
    return f"/braket/{DEFAULT_BUCKET}/{key}"


def _results(site: Site, arn: str) -> str:
    return f"tasks/{site.tid(arn)}/results.json"


#: (name, request builder) — requests to the Braket and S3 side
BRAKET_PROBES: list[tuple[str, Callable[[Site], bytes]]] = [
    ("no-authorization", lambda s: _raw(s, "GET", f"/braket/device/{_q(SV1)}")),
    ("bearer-instead-of-sigv4", lambda s: _raw(s, "GET", f"/braket/device/{_q(SV1)}",
                                               {"Authorization": f"Bearer {s.a.token}"})),
    ("sigv4-garbage", lambda s: _raw(s, "GET", f"/braket/device/{_q(SV1)}",
                                     {"Authorization": "AWS4-HMAC-SHA256 ,,,=="})),
    ("sigv4-short-signature", lambda s: _raw(
        s, "GET", f"/braket/device/{_q(SV1)}", {
            "Authorization": f"AWS4-HMAC-SHA256 Credential={s.a.access_key}/20260101/"
                             "us-east-1/braket/aws4_request, SignedHeaders=host;x-amz-date, "
                             "Signature=abcd", "X-Amz-Date": "20260101T000000Z"})),
    ("sigv4-host-unsigned", lambda s: _raw(
        s, "GET", f"/braket/device/{_q(SV1)}", {
            "Authorization": f"AWS4-HMAC-SHA256 Credential={s.a.access_key}/20260101/"
                             "us-east-1/braket/aws4_request, SignedHeaders=x-amz-date, "
                             "Signature=" + "0" * 64, "X-Amz-Date": "20260101T000000Z"})),
    ("authorization-latin1-bytes", lambda s: _raw(s, "GET", f"/braket/device/{_q(SV1)}")
     .replace(b"Host:", b"Authorization: AWS4-HMAC-SHA256 \xff\xfe\x00x\r\nHost:")),
    ("no-x-amz-date", lambda s: _raw(s, "GET", f"/braket/device/{_q(SV1)}", {
        k: v for k, v in _signed(s, "GET", f"/braket/device/{_q(SV1)}", key=s.a.access_key,
                                 secret=s.a.token).items() if k != "X-Amz-Date"})),
    ("other-jobs-secret", lambda s: _raw(s, "GET", f"/braket/device/{_q(SV1)}", _signed(
        s, "GET", f"/braket/device/{_q(SV1)}", key=s.a.access_key, secret=s.b.token))),
    ("other-jobs-key-own-secret", lambda s: _raw(s, "GET", f"/braket/device/{_q(SV1)}",
                                                 _signed(s, "GET", f"/braket/device/{_q(SV1)}",
                                                         key=s.b.access_key,
                                                         secret=s.a.token))),
    ("site-key-itself", lambda s: _raw(s, "GET", f"/braket/device/{_q(SV1)}", _signed(
        s, "GET", f"/braket/device/{_q(SV1)}", key=SITE_ID, secret=SITE_SECRET))),
    ("replay-an-hour-old", lambda s: _job(
        s, "GET", f"/braket/device/{_q(SV1)}",
        when=_dt.datetime.now(_dt.UTC).replace(tzinfo=None) - _dt.timedelta(hours=1))),
    ("date-a-day-ahead", lambda s: _job(
        s, "GET", f"/braket/device/{_q(SV1)}",
        when=_dt.datetime.now(_dt.UTC).replace(tzinfo=None) + _dt.timedelta(days=1))),
    ("content-sha256-mismatch", lambda s: _raw(
        s, "GET", _s3(s, _results(s, s.a_task)),
        _signed(s, "GET", _s3(s, _results(s, s.a_task)), key=s.a.access_key,
                secret=s.a.token, service="s3"), b"x")),
    ("content-length-huge", lambda s: _raw(s, "POST", "/braket/quantum-task",
                                           length=str(10 ** 12))),
    ("content-length-absurd", lambda s: _raw(s, "POST", "/braket/quantum-task",
                                             length="9" * 40)),
    ("content-length-negative", lambda s: _raw(s, "POST", "/braket/quantum-task",
                                               length="-5")),
    ("content-length-text", lambda s: _raw(s, "POST", "/braket/quantum-task",
                                           length="ten")),
    ("content-length-lie", lambda s: _raw(s, "POST", "/braket/quantum-task", body=b"{}",
                                          length="100")),
    ("chunked-body", lambda s: _raw(s, "POST", "/braket/quantum-task",
                                    {"Transfer-Encoding": "chunked"},
                                    b"2\r\n{}\r\n0\r\n\r\n", length="")),
    ("non-utf8-body", lambda s: _job(s, "POST", "/braket/quantum-task", b"\xff\xfe{\x80}")),
    ("deep-json-body", lambda s: _job(s, "POST", "/braket/quantum-task", b"[" * 200_000)),
    ("deep-json-object", lambda s: _job(s, "POST", "/braket/quantum-task",
                                        b'{"a":' * 100_000 + b"1" + b"}" * 100_000)),
    ("json-list-body", lambda s: _job(s, "POST", "/braket/quantum-task", b"[1, 2]")),
    # from the job's own task folder up into another job's, each way of writing ".."
    *[(name, lambda s, step=step: _job(
        s, "GET", _s3(s, f"tasks/{s.tid(s.a_task)}/{step}{s.tid(s.b_task)}/results.json"),
        service="s3"))
      for name, step in (("s3-dotdot", "../"), ("s3-encoded-dotdot", "%2e%2e/"),
                         ("s3-encoded-slash-dotdot", "..%2F"),
                         ("s3-backslash-dotdot", "..%5C"))],
    ("s3-list-prefix-dotdot", lambda s: _job(
        s, "GET", f"/braket/{DEFAULT_BUCKET}?list-type=2&prefix="
                  f"{_q(f'tasks/{s.tid(s.a_task)}/../{s.tid(s.b_task)}')}", service="s3")),
    ("s3-other-jobs-results", lambda s: _job(s, "GET", _s3(s, _results(s, s.b_task)),
                                             service="s3")),
    ("s3-write-own-folder", lambda s: _job(
        s, "PUT", _s3(s, f"tasks/{s.tid(s.a_task)}/results.json"), b"{}", service="s3")),
    ("s3-delete-own-results", lambda s: _job(s, "DELETE", _s3(s, _results(s, s.a_task)),
                                             service="s3")),
    ("s3-list-buckets", lambda s: _job(s, "GET", "/braket/", service="s3")),
    ("braket-dotdot-path", lambda s: _job(s, "GET", f"/braket/device/../quantum-task/"
                                                    f"{_q(s.b_task)}")),
    ("other-jobs-task", lambda s: _job(s, "GET", f"/braket/quantum-task/{_q(s.b_task)}")),
    ("cancel-other-jobs-task", lambda s: _job(
        s, "PUT", f"/braket/quantum-task/{_q(s.b_task)}/cancel", b'{"clientToken": "x"}')),
    ("own-task-then-traversal", lambda s: _job(
        s, "GET", f"/braket/quantum-task/{_q(s.a_task)}/..%2F{_q(s.b_task)}")),
    ("search-devices", lambda s: _job(s, "POST", "/braket/devices", b'{"filters": []}')),
    ("search-tasks", lambda s: _job(s, "POST", "/braket/quantum-tasks", b'{"filters": []}')),
    ("create-hybrid-job", lambda s: _job(s, "POST", "/braket/job", b"{}")),
    ("get-hybrid-job", lambda s: _job(s, "GET", "/braket/job/some-job")),
    ("delete-own-task", lambda s: _job(s, "DELETE", f"/braket/quantum-task/{_q(s.a_task)}")),
    ("other-device", lambda s: _job(
        s, "GET", "/braket/device/" + _q("arn:aws:braket:::device/quantum-simulator/amazon/"
                                         "dm1"))),
    ("task-with-reservation", lambda s: _job(s, "POST", "/braket/quantum-task", json.dumps({
        "deviceArn": SV1, "shots": 1, "outputS3Bucket": DEFAULT_BUCKET, "action": "{}",
        "outputS3KeyPrefix": "tasks", "clientToken": "x",
        "associations": [{"arn": "arn:aws:braket:us-east-1:1:reservation/r", "type":
                          "RESERVATION_TIME_WINDOW_ARN"}]}).encode())),
    ("task-into-other-bucket", lambda s: _job(s, "POST", "/braket/quantum-task", json.dumps({
        "deviceArn": SV1, "shots": 1, "outputS3Bucket": "attacker-bucket", "action": "{}",
        "outputS3KeyPrefix": "tasks", "clientToken": "x"}).encode())),
    ("service-sts", lambda s: _job(s, "POST", "/braket/", b"Action=GetCallerIdentity",
                                   service="sts")),
    ("presigned-url", lambda s: _raw(
        s, "GET", _s3(s, _results(s, s.a_task)) + "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={s.a.access_key}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20260101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=" + "0" * 64)),
    ("presigned-plus-header", lambda s: _job(
        s, "GET", _s3(s, _results(s, s.a_task)) + "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={SITE_ID}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Signature=" + "0" * 64, service="s3")),
    ("method-options", lambda s: _raw(s, "OPTIONS", f"/braket/device/{_q(SV1)}")),
    ("method-propfind", lambda s: _job(s, "PROPFIND", f"/braket/device/{_q(SV1)}")),
    ("revoked-job-key", lambda s: _raw(s, "GET", f"/braket/device/{_q(SV1)}", _signed(
        s, "GET", f"/braket/device/{_q(SV1)}", key="FLUXQRJOB903", secret="dead-token"))),
]


def _ibm(site: Site, method: str, path: str, body: bytes = b"", bearer: str | None = None,
         **kw: Any) -> bytes:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return _raw(site, method, path, headers, body, **kw)


#: (name, request builder) — requests to the IBM QCS side (resource ibm_fez)
IBM_PROBES: list[tuple[str, Callable[[Site], bytes]]] = [
    ("iam-wrong-key", lambda s: _ibm(s, "POST", "/ibm_fez/iam/identity/token",
                                     b"grant_type=x&apikey=" + IBM_KEY.encode())),
    ("iam-other-device", lambda s: _ibm(s, "POST", "/ibm_torino/iam/identity/token",
                                        f"apikey={s.a.token}".encode())),
    ("iam-non-utf8", lambda s: _ibm(s, "POST", "/ibm_fez/iam/identity/token",
                                    b"apikey=\xff\xfe\x80")),
    ("iam-huge-form", lambda s: _ibm(s, "POST", "/ibm_fez/iam/identity/token",
                                     length=str(32 << 20))),
    ("iam-form-bomb", lambda s: _ibm(s, "POST", "/ibm_fez/iam/identity/token",
                                     b"a=&" * 5000)),
    ("api-no-bearer", lambda s: _ibm(s, "GET", "/ibm_fez/api/backends")),
    ("api-site-style-bearer", lambda s: _ibm(s, "GET", "/ibm_fez/api/backends",
                                             bearer="standin-token-1")),
    ("api-token-as-bearer", lambda s: _ibm(s, "GET", "/ibm_fez/api/backends",
                                           bearer=s.a.token)),
    ("api-other-jobs-session", lambda s: _ibm(s, "GET", "/ibm_fez/api/sessions/sess-B",
                                              bearer=s.a_bearer)),
    ("api-other-jobs-vendor-job", lambda s: _ibm(s, "GET", "/ibm_fez/api/jobs/job-of-B",
                                                 bearer=s.a_bearer)),
    ("api-bearer-for-other-rid", lambda s: _ibm(s, "GET", "/ibm_torino/api/backends",
                                                bearer=s.a_bearer)),
    ("api-dotdot", lambda s: _ibm(s, "GET", "/ibm_fez/api/sessions/sess-A/../../jobs",
                                  bearer=s.a_bearer)),
    ("api-encoded-dotdot", lambda s: _ibm(s, "GET", "/ibm_fez/api/sessions/sess-A/%2e%2e/"
                                                    "sess-B", bearer=s.a_bearer)),
    ("api-encoded-slash", lambda s: _ibm(s, "GET", "/ibm_fez/api/sessions/sess-A/..%2F..%2F"
                                                   "jobs%2Fjob-of-B", bearer=s.a_bearer)),
    ("api-encoded-slash-id", lambda s: _ibm(s, "DELETE", "/ibm_fez/api/sessions/sess-A%2F"
                                                         "close", bearer=s.a_bearer)),
    ("api-open-session", lambda s: _ibm(s, "POST", "/ibm_fez/api/sessions", b"{}",
                                        bearer=s.a_bearer)),
    ("api-users", lambda s: _ibm(s, "GET", "/ibm_fez/api/users/me", bearer=s.a_bearer)),
    ("api-jobs-deep-json", lambda s: _ibm(s, "POST", "/ibm_fez/api/jobs", b"[" * 200_000,
                                          bearer=s.a_bearer)),
    ("api-jobs-non-utf8", lambda s: _ibm(s, "POST", "/ibm_fez/api/jobs", b"{\"\xff\": 1}",
                                         bearer=s.a_bearer)),
    ("api-jobs-other-session", lambda s: _ibm(s, "POST", "/ibm_fez/api/jobs", json.dumps(
        {"backend": "ibm_fez", "session_id": "sess-B"}).encode(), bearer=s.a_bearer)),
    ("api-jobs-other-backend", lambda s: _ibm(s, "POST", "/ibm_fez/api/jobs", json.dumps(
        {"backend": "ibm_torino"}).encode(), bearer=s.a_bearer)),
    ("api-list-all-jobs", lambda s: _ibm(s, "GET", "/ibm_fez/api/jobs", bearer=s.a_bearer)),
    ("api-content-length-lie", lambda s: _ibm(s, "POST", "/ibm_fez/api/jobs", b"{}",
                                              bearer=s.a_bearer, length="50")),
    ("api-chunked", lambda s: _raw(s, "POST", "/ibm_fez/api/jobs",
                                   {"Authorization": f"Bearer {s.a_bearer}",
                                    "Transfer-Encoding": "chunked"},
                                   b"2\r\n{}\r\n0\r\n\r\n", length="")),
    ("method-trace", lambda s: _ibm(s, "TRACE", "/ibm_fez/api/backends", bearer=s.a_bearer)),
    ("no-such-route", lambda s: _ibm(s, "GET", "/ibm_fez/admin", bearer=s.a_bearer)),
    ("path-traversal-route", lambda s: _ibm(s, "GET", "/../../etc/passwd")),
]


@pytest.fixture(scope="module")
def site():
    import boto3

    aws = BraketStandIn({SITE_ID: SITE_SECRET}).start()
    ibm = QCSStandIn("fake_fez", apikey=IBM_KEY).start()
    inv = inventory.parse({"version": 1, "devices": [
        {"name": "sv1", "adapter": "braket", "qubits": 34, "vendor": "aws",
         "params": {"device": SV1, "s3_bucket": DEFAULT_BUCKET},
         "credentials": {"aws_access_key_id": AWS_ID_VAR,
                         "aws_secret_access_key": AWS_SECRET_VAR}},
        ibm.device_entry("ibm_fez", IBM_VAR)]})
    env = {AWS_ID_VAR: SITE_ID, AWS_SECRET_VAR: SITE_SECRET, IBM_VAR: IBM_KEY, **aws.env()}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    gw = Gateway(("127.0.0.1", 0), owner=os.getuid())
    gw.read_timeout = 2.0  # the content-length lies wait this long
    gw.configure(inv)
    devices = [inv.get("sv1"), inv.get("ibm_fez")]
    a = gw.grant(A, os.getuid(), devices, {"ibm_fez": "sess-A"})
    b = gw.grant(B, os.getuid(), devices, {"ibm_fez": "sess-B"})
    tasks = []
    for grant in (a, b):  # each job creates one real task through the gateway
        client = boto3.Session(aws_access_key_id=grant.access_key,
                               aws_secret_access_key=grant.token,
                               region_name="us-east-1").client(
            "braket", endpoint_url=gw.url + "/braket")
        program = {"braketSchemaHeader": {"name": "braket.ir.openqasm.program",
                                          "version": "1"},
                   "source": "OPENQASM 3.0; bit[1] b; qubit[1] q; b[0] = measure q[0];"}
        arn = client.create_quantum_task(clientToken=os.urandom(8).hex(), deviceArn=SV1,
                                         shots=1, outputS3Bucket=DEFAULT_BUCKET,
                                         outputS3KeyPrefix="tasks",
                                         action=json.dumps(program))["quantumTaskArn"]
        assert aws.wait(arn) == "COMPLETED"
        tasks.append(arn)
    bearers = [gw.iam("ibm_fez", {"apikey": [g.token]}, os.getuid())[1]["access_token"]
               for g in (a, b)]
    relay = _relay(gw)
    yield Site(gw, aws, ibm, a, b, tasks[0], tasks[1], *bearers, relay=relay)
    if relay is not None:
        relay.stop()
    gw.stop()
    aws.stop()
    ibm.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _relay(gw: Gateway) -> Any:
    """A node's relay in front of ``gw``, its Flux RPC played by a JSON round trip of the
    same payloads into :meth:`Gateway.dispatch` (the real overlay: test_flux_relay.py);
    None without the flux bindings."""
    try:
        from fluxqr.agent.relay import Relay, decode_request, encode_reply
    except ImportError:
        return None

    def forward(payload: dict[str, Any]) -> Future:
        future: Future = Future()
        uid, method, target, headers, body = decode_request(json.loads(json.dumps(payload)))
        answer = gw.dispatch(method, target, headers, body, uid)
        future.set_result(json.loads(json.dumps(encode_reply(*answer))))
        return future

    return Relay(forward, timeout=gw.read_timeout)


@pytest.fixture(params=["gateway", "relay"])
def via(request: Any, site: Site) -> str:
    """Probes go to the gateway, and to a relay in front of it (same bounds, same answers)."""
    if request.param == "relay" and site.relay is None:
        pytest.skip("no flux bindings: the relay module cannot be imported")
    return request.param


def _probe(site: Site, build: Callable[[Site], bytes], caplog: Any, capfd: Any,
           via: str = "gateway") -> tuple[int, dict[str, str], bytes]:
    site.aws.reset()
    site.ibm.reset()
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="fluxqr"):
        status, headers, body = _send(site, build(site), via)
    out, err = capfd.readouterr()
    assert 400 <= status < 500, (status, body[:300])
    reply = json.dumps(headers) + body.decode("latin-1")
    for secret in site.secrets():
        assert secret not in reply
    # never forwarded: the vendors saw nothing (no request, no IAM login)
    assert site.aws.log()["requests"] == []
    assert site.ibm.log()["requests"] == []
    assert "Traceback" not in out + err + caplog.text
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    return status, headers, body


@pytest.mark.parametrize("name,build", BRAKET_PROBES, ids=[n for n, _ in BRAKET_PROBES])
def test_braket_probe(site: Site, name: str, build: Callable[[Site], bytes], caplog: Any,
                      capfd: Any, via: str) -> None:
    status, headers, body = _probe(site, build, caplog, capfd, via)
    if body.startswith(b"<?xml"):  # S3's error document
        assert b"<Error><Code>" in body and b"</Message></Error>" in body
    else:  # Braket's: a JSON message and the error type botocore reads
        assert headers.get("x-amzn-errortype", "").endswith("Exception"), (headers, body)
        assert isinstance(json.loads(body)["message"], str)


@pytest.mark.parametrize("name,build", IBM_PROBES, ids=[n for n, _ in IBM_PROBES])
def test_ibm_probe(site: Site, name: str, build: Callable[[Site], bytes], caplog: Any,
                   capfd: Any, via: str) -> None:
    _, _, body = _probe(site, build, caplog, capfd, via)
    assert isinstance(json.loads(body), dict)


def test_the_probes_are_refused_for_what_they_are_not_by_accident(site: Site, via: str
                                                                   ) -> None:
    """The same requests, done right, work: the refusals above are the probes' doing."""
    ok = [_job(site, "GET", f"/braket/device/{_q(SV1)}"),
          _job(site, "GET", f"/braket/quantum-task/{_q(site.a_task)}"),
          _job(site, "GET", _s3(site, _results(site, site.a_task)), service="s3",
               extra={"X-Amz-Content-SHA256": hashlib.sha256(b"").hexdigest()}),
          _job(site, "GET", f"/braket/{DEFAULT_BUCKET}?list-type=2&prefix="
                            f"{_q(f'tasks/{site.tid(site.a_task)}')}", service="s3"),
          _ibm(site, "GET", "/ibm_fez/api/sessions/sess-A", bearer=site.a_bearer)]
    for raw in ok:
        status, _, body = _send(site, raw, via)
        assert status in (200, 404), body[:300]  # 404: sess-A is not a vendor session
    assert any(r["path"] == "/sessions/sess-A" for r in site.ibm.log()["requests"])


def test_a_signature_scope_names_no_upstream_region(site: Site) -> None:
    """A job signing for another region still reaches the site in the device's region
    (the gateway never builds an endpoint from a caller's scope)."""
    status, _, body = _send(site, _job(site, "GET", f"/braket/device/{_q(SV1)}",
                                       region="xx-evil-1"))
    assert status == 200 and json.loads(body)["deviceArn"] == SV1
    assert {region for _, region in site.gw._braket[SV1]._endpoints} == {"us-east-1"}
