"""The credential gateway: hybrid tasks reach the vendor without ever holding the site key.

The agent holds the site's vendor credentials. For each running hybrid job it mints a
random **job token** bound to the job id, its owner and its devices, kept in this
process's memory only (never the KVS, a log, a memo or a session file) and revoked when
the job ends, fails, or the agent stops. The job's tasks get the gateway's address and
that token in place of the vendor's endpoints and API key (:meth:`Gateway.settings`), so
``qrmi.QRMIService()`` and qrmi's primitives work unmodified through it.

IBM Quantum Compute Service (qrmi's ``ibm-quantum-compute-service``) is the protocol it
speaks, per resource id ``RID``::

    POST /RID/iam/identity/token   apikey=<job token>  ->  a gateway bearer (not IAM's)
    *    /RID/api/<path>           Bearer <gateway bearer>  ->  upstream <endpoint>/<path>
                                   with the real IAM bearer and the site's Service-CRN

The real bearer comes from the real IAM with the site key and is cached until it
expires. A request is forwarded only while the token's job runs, only for a resource the
job holds, and (:class:`QCSPolicy`) only for the device's own backend and the vendor
sessions and jobs this job owns (its agent-opened sessions and the jobs it created): a
job cannot list, read or cancel another job's work on the site's shared account, nor
open sessions of its own. Everything else is answered 401 (no or dead token) or 403.

On a loopback connection the gateway also checks who is calling: the socket's owner
(from ``/proc/net/tcp``) must be the job's owner or the instance owner, so a token
copied to another local user is useless to them.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fluxqr.core.inventory import Device
from fluxqr.errors import FluxqrError

log = logging.getLogger(__name__)

#: qrmi.ResourceType members the gateway speaks, and their settings prefix
SPOKEN = {"IBMQuantumComputeService": "QRMI_IBM_QCS"}
#: qrmi's defaults when a device does not name its endpoints
DEFAULT_ENDPOINT = "https://quantum.cloud.ibm.com/api/v1"
DEFAULT_IAM_ENDPOINT = "https://iam.cloud.ibm.com"
#: a request body larger than this is refused (primitive inputs are far smaller)
MAX_BODY = 64 * 1024 * 1024
#: seconds before the real bearer's expiry at which it is renewed
RENEW_MARGIN = 120.0
#: request headers passed upstream (Authorization and Service-CRN are the gateway's own)
PASS_HEADERS = ("content-type", "accept", "ibm-api-version", "user-agent",
                "x-qx-client-application")


def qrmi_member(device: Device) -> str:
    from fluxqr.devices.qrmi_adapter import RESOURCE_TYPES

    text = str(device.params.get("resource_type", ""))
    return RESOURCE_TYPES.get(text.lower(), text)


def speaks(device: Device) -> bool:
    """Whether the gateway can stand in for ``device``'s vendor."""
    return device.adapter == "qrmi" and qrmi_member(device) in SPOKEN


# -- the site side: real endpoints and the real bearer -----------------------------------


class Upstream:
    """One resource's real vendor: endpoints, CRN, and the IAM bearer got with the site key."""

    def __init__(self, device: Device):
        prefix = SPOKEN[qrmi_member(device)]
        self.device = device
        self.rid = str(device.params["resource_id"])
        config = {k.removeprefix(self.rid + "_"): str(v)
                  for k, v in (device.params.get("config") or {}).items()}
        self.endpoint = config.get(f"{prefix}_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")
        self.iam = config.get(f"{prefix}_IAM_ENDPOINT", DEFAULT_IAM_ENDPOINT).rstrip("/")
        self.crn = config.get(f"{prefix}_SERVICE_CRN")
        self.key_setting = f"{prefix}_IAM_APIKEY"
        self.timeout = float(device.timeout or 30)
        self._lock = threading.Lock()
        self._bearer: tuple[str, float] | None = None

    def apikey(self) -> str | None:
        import os

        var = self.device.credentials.get(self.key_setting) or \
            self.device.credentials.get(f"{self.rid}_{self.key_setting}")
        return os.environ.get(var) if var else None

    def bearer(self, renew: bool = False) -> str:
        """The real IAM bearer (cached until shortly before it expires)."""
        with self._lock:
            if self._bearer and not renew and time.time() < self._bearer[1]:
                return self._bearer[0]
            key = self.apikey()
            if not key:
                raise FluxqrError(f"device '{self.device.name}': no site API key for "
                                  f"{self.key_setting} in the agent's environment")
            body = urllib.parse.urlencode({"grant_type": "urn:ibm:params:oauth:grant-type:"
                                           "apikey", "apikey": key}).encode()
            req = urllib.request.Request(self.iam + "/identity/token", data=body,
                                         method="POST", headers={
                                             "Content-Type": "application/x-www-form-urlencoded",
                                             "Accept": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    data = json.loads(resp.read(1 << 20))
                token = str(data["access_token"])
                lifetime = float(data.get("expires_in") or 3600)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise FluxqrError(f"device '{self.device.name}': the vendor's IAM refused "
                                  f"the site key ({type(exc).__name__})") from None
            self._bearer = (token, time.time() + max(1.0, lifetime - RENEW_MARGIN))
            return token

    def forget(self) -> None:
        with self._lock:
            self._bearer = None


# -- the job side: grants ------------------------------------------------------------------


@dataclass
class Grant:
    """What one job's token opens: its resources, sessions and the vendor jobs it made."""

    jobid: int
    userid: int
    token: str
    resources: dict[str, str]                      # resource id -> device name
    sessions: dict[str, set[str]]                  # resource id -> vendor session ids
    jobs: dict[str, set[str]] = field(default_factory=dict)  # resource id -> vendor job ids
    live: bool = True


class QCSPolicy:
    """Which IBM QCS API calls a job may make (hook methods; one instance per gateway).

    ``allow`` returns None when the call may go upstream, else why not (HTTP 403);
    ``learn`` records what a successful call created (a vendor job id)."""

    def allow(self, grant: Grant, rid: str, method: str, parts: list[str],
              query: dict[str, list[str]], body: bytes) -> str | None:
        head = parts[0] if parts else ""
        if head == "backends":
            if len(parts) >= 2 and parts[1] != rid:
                return f"backend {parts[1]} is not this job's device"
            return None if method == "GET" else "read-only"
        if head == "sessions":
            if len(parts) == 1:
                return "sessions are opened by the fluxqr agent, not by tasks"
            return None if parts[1] in grant.sessions.get(rid, set()) else \
                "not this job's session"
        if head == "jobs":
            if len(parts) == 1 and method == "POST":
                return self._new_job(grant, rid, body)
            if len(parts) == 1 and method == "GET":
                sid = (query.get("session_id") or [None])[0]
                backend = (query.get("backend") or [None])[0]
                if sid is not None:
                    return None if sid in grant.sessions.get(rid, set()) else \
                        "not this job's session"
                return None if backend == rid else "list jobs by this job's backend or session"
            return None if parts[1] in grant.jobs.get(rid, set()) else "not this job's task"
        return f"/{head} is not available through the gateway"

    def _new_job(self, grant: Grant, rid: str, body: bytes) -> str | None:
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            return "request body is not JSON"
        if not isinstance(req, dict):
            return "request body is not a JSON object"
        if req.get("backend") not in (None, rid):
            return f"backend {req.get('backend')} is not this job's device"
        sid = req.get("session_id")
        if sid is not None and sid not in grant.sessions.get(rid, set()):
            return "not this job's session"
        return None

    def learn(self, grant: Grant, rid: str, method: str, parts: list[str],
              reply: bytes) -> None:
        if method == "POST" and parts == ["jobs"]:
            try:
                jid = json.loads(reply).get("id")
            except (ValueError, AttributeError):
                return
            if isinstance(jid, str):
                grant.jobs.setdefault(rid, set()).add(jid)


def peer_uid(client: tuple[Any, ...], server: tuple[Any, ...]) -> int | None:
    """The uid owning the local socket at ``client`` connected to ``server`` (Linux
    ``/proc/net/tcp*``); None when not found (e.g. a remote client)."""
    def hexaddr(addr: tuple[Any, ...]) -> tuple[str, str]:
        ip = ipaddress.ip_address(addr[0])
        if ip.version == 4:
            raw = ip.packed[::-1].hex().upper()
        else:  # /proc prints IPv6 as four little-endian 32-bit words
            raw = "".join(ip.packed[i:i + 4][::-1].hex().upper() for i in range(0, 16, 4))
        return raw, f"{addr[1]:04X}"

    try:
        want_local, want_remote = hexaddr(client), hexaddr(server)
    except ValueError:
        return None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fp:
                next(fp, None)
                for line in fp:
                    cols = line.split()
                    if len(cols) < 8:
                        continue
                    local, remote = cols[1].split(":"), cols[2].split(":")
                    if (local[0], local[1]) == want_local and \
                            (remote[0], remote[1]) == want_remote:
                        return int(cols[7])
        except OSError:
            continue
    return None


# -- the gateway -----------------------------------------------------------------------------


class Gateway:
    """The HTTP gateway (a daemon thread); grants are added and revoked by the agent."""

    policy = QCSPolicy()

    def __init__(self, bind: tuple[str, int], owner: int, advertise: str | None = None):
        self.owner = owner
        self._lock = threading.Lock()
        self._upstreams: dict[str, Upstream] = {}
        self._grants: dict[int, Grant] = {}           # jobid -> grant
        self._by_token: dict[str, Grant] = {}
        self._bearers: dict[str, tuple[Grant, str]] = {}   # gateway bearer -> (grant, rid)
        family = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True  # a hung upstream never keeps the agent from exiting

        self._server = Server(bind, _make_handler(self))
        host, port = self._server.server_address[:2]
        if advertise is None:
            wildcard = ipaddress.ip_address(host).is_unspecified
            advertise = socket.getfqdn() if wildcard else host
        self.url = f"http://{f'[{advertise}]' if ':' in advertise else advertise}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="fluxqr-gateway", daemon=True)
        self._thread.start()

    # -- configuration and grants (called from the agent's reactor) ---------------------

    def configure(self, devices: Iterable[Device]) -> None:
        """The resources it stands in for (devices it :func:`speaks`)."""
        ups = {}
        for dev in devices:
            if speaks(dev):
                up = Upstream(dev)
                ups[up.rid] = up
        with self._lock:
            self._upstreams = ups

    def grant(self, jobid: int, userid: int, devices: Iterable[Device],
              sessions: dict[str, str]) -> Grant | None:
        """The job's grant (minted on first call): ``devices`` it holds, ``sessions`` =
        device name -> the vendor session the agent opened. None if no device is spoken."""
        with self._lock:
            existing = self._grants.get(jobid)
            if existing is not None:
                return existing
            resources = {str(d.params["resource_id"]): d.name for d in devices
                         if speaks(d) and str(d.params["resource_id"]) in self._upstreams}
            if not resources:
                return None
            grant = Grant(jobid, userid, secrets.token_urlsafe(32), resources,
                          {rid: ({sessions[name]} if sessions.get(name) else set())
                           for rid, name in resources.items()})
            self._grants[jobid] = grant
            self._by_token[grant.token] = grant
            return grant

    def revoke(self, jobid: int) -> None:
        """End the job's grant: its token and bearers stop working at once."""
        with self._lock:
            grant = self._grants.pop(jobid, None)
            if grant is None:
                return
            grant.live = False
            self._by_token.pop(grant.token, None)
            for bearer in [b for b, (g, _) in self._bearers.items() if g is grant]:
                del self._bearers[bearer]

    def jobids(self) -> list[int]:
        with self._lock:
            return sorted(self._grants)

    def settings(self, grant: Grant) -> dict[str, dict[str, str]]:
        """Per device name: the QRMI settings (suffix -> value) that point its tasks here."""
        out = {}
        for rid, name in grant.resources.items():
            prefix = SPOKEN[qrmi_member(self._upstreams[rid].device)]
            out[name] = {f"{prefix}_ENDPOINT": f"{self.url}/{rid}/api",
                         f"{prefix}_IAM_ENDPOINT": f"{self.url}/{rid}/iam",
                         f"{prefix}_IAM_APIKEY": grant.token}
            if self._upstreams[rid].crn:
                out[name][f"{prefix}_SERVICE_CRN"] = self._upstreams[rid].crn
        return out

    def stop(self) -> None:
        with self._lock:
            for jobid in list(self._grants):
                self._grants[jobid].live = False
            self._grants.clear()
            self._by_token.clear()
            self._bearers.clear()
        self._server.shutdown()
        self._server.server_close()

    # -- requests (handler threads) ------------------------------------------------------

    def _peer_ok(self, grant: Grant, client: tuple[Any, ...],
                 server: tuple[Any, ...]) -> bool:
        uid = peer_uid(client, server)
        return uid is None or uid in (grant.userid, self.owner)

    def iam(self, rid: str, form: dict[str, list[str]], client: tuple[Any, ...],
            server: tuple[Any, ...]) -> tuple[int, Any]:
        token = (form.get("apikey") or [""])[0]
        with self._lock:
            grant = self._by_token.get(token)
            if grant is None or not grant.live:
                return 400, {"errorCode": "BXNIM0415E",
                             "errorMessage": "Provided API key could not be found."}
            if rid not in grant.resources:
                return 403, {"errorMessage": "this job does not hold that device"}
            if not self._peer_ok(grant, client, server):
                return 403, {"errorMessage": "this job's token is for its owner only"}
            bearer = "fluxqr-" + secrets.token_urlsafe(32)
            self._bearers[bearer] = (grant, rid)
        now = int(time.time())
        return 200, {"access_token": bearer, "refresh_token": "not_supported",
                     "token_type": "Bearer", "expires_in": 3600, "expiration": now + 3600,
                     "scope": "fluxqr-gateway"}

    def api(self, rid: str, method: str, rest: str, query: str, headers: Any, body: bytes,
            client: tuple[Any, ...], server: tuple[Any, ...]
            ) -> tuple[int, bytes, str | None]:
        auth = str(headers.get("Authorization") or "")
        with self._lock:
            found = self._bearers.get(auth.removeprefix("Bearer ").strip())
            upstream = self._upstreams.get(rid)
        if found is None or not found[0].live:
            return _json(401, {"errors": [{"code": 1003, "message": "Unauthorized"}]})
        grant, bearer_rid = found
        if bearer_rid != rid or upstream is None:
            return _json(403, {"errors": [{"message": "this job's token is not for that "
                                                      "device"}]})
        if not self._peer_ok(grant, client, server):
            return _json(403, {"errors": [{"message": "this job's token is for its owner "
                                                      "only"}]})
        parts = [urllib.parse.unquote(p) for p in rest.split("/") if p]
        if any(p in (".", "..") for p in parts):
            return _json(403, {"errors": [{"message": "bad path"}]})
        why = self.policy.allow(grant, rid, method, parts, urllib.parse.parse_qs(query), body)
        if why:
            return _json(403, {"errors": [{"message": f"fluxqr gateway: {why}"}]})
        status, reply, ctype = self._forward(upstream, method, rest, query, headers, body)
        if 200 <= status < 300:
            with self._lock:
                if grant.live:
                    self.policy.learn(grant, rid, method, parts, reply)
        return status, reply, ctype

    def _forward(self, up: Upstream, method: str, rest: str, query: str, headers: Any,
                 body: bytes, retry: bool = True) -> tuple[int, bytes, str | None]:
        try:
            bearer = up.bearer()
        except FluxqrError as exc:
            log.error("fluxqr gateway: %s", exc)
            return _json(502, {"errors": [{"message": "the vendor refused the site's "
                                                      "credentials"}]})
        out = {k: v for k, v in headers.items() if k.lower() in PASS_HEADERS}
        out["Authorization"] = f"Bearer {bearer}"
        if up.crn:
            out["Service-CRN"] = up.crn
        url = up.endpoint + "/" + rest.lstrip("/") + (f"?{query}" if query else "")
        req = urllib.request.Request(url, data=body if method not in ("GET", "HEAD") or body
                                     else None, method=method, headers=out)
        try:
            with urllib.request.urlopen(req, timeout=up.timeout) as resp:
                return resp.status, resp.read(), resp.headers.get("Content-Type")
        except urllib.error.HTTPError as err:
            if err.code == 401 and retry:  # the real bearer was revoked early: renew once
                up.forget()
                return self._forward(up, method, rest, query, headers, body, retry=False)
            return err.code, err.read(), err.headers.get("Content-Type")
        except (OSError, ValueError) as exc:
            return _json(502, {"errors": [{"message": f"vendor unreachable: "
                                                      f"{type(exc).__name__}"}]})


def _json(status: int, payload: Any) -> tuple[int, bytes, str]:
    return status, json.dumps(payload).encode(), "application/json"


def _make_handler(gw: Gateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # request lines may carry ids; never log them

        def _reply(self, status: int, data: bytes, ctype: str | None) -> None:
            self.send_response(status)
            if data and ctype:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data and self.command != "HEAD":
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        def _handle(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                self.close_connection = True
                return self._reply(*_json(413, {"errors": [{"message": "body too large"}]}))
            body = self.rfile.read(length) if length else b""
            url = urllib.parse.urlsplit(self.path)
            rid, _, rest = url.path.lstrip("/").partition("/")
            kind, _, rest = rest.partition("/")
            rid = urllib.parse.unquote(rid)
            server = self.connection.getsockname()
            try:
                if kind == "iam" and rest.rstrip("/") == "identity/token" and \
                        self.command == "POST":
                    form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
                    status, payload = gw.iam(rid, form, self.client_address, server)
                    return self._reply(*_json(status, payload))
                if kind == "api":
                    return self._reply(*gw.api(rid, self.command, rest, url.query,
                                               self.headers, body, self.client_address,
                                               server))
                return self._reply(*_json(404, {"errors": [{"message": "no such route"}]}))
            except Exception as exc:  # noqa: BLE001 - one bad request never kills the gateway
                log.error("fluxqr gateway: internal error: %s", type(exc).__name__)
                return self._reply(*_json(500, {"errors": [{"message": "gateway error"}]}))

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _handle

    return Handler
