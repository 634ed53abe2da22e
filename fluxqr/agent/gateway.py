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

Amazon Braket devices whose ``credentials:`` are site-held (an ARN device with
``params.s3_bucket``) are served under ``/braket``: the task gets that address as
``AWS_ENDPOINT_URL_BRAKET`` and ``AWS_ENDPOINT_URL_S3`` (botocore's service-specific
endpoints, so boto3 and the Braket SDK work unmodified) and a per-job AWS key pair
(access key id ``FLUXQRJOB<jobid>``, the job token as secret). The gateway verifies each
request's Signature V4 with that secret (:mod:`fluxqr.agent.sigv4`), applies
:class:`BraketPolicy` (GetDevice and CreateQuantumTask on the job's device ARNs only, with
results into the device's bucket; Get/Cancel of the tasks this job created; S3 reads of
those tasks' result directories only; nothing else), re-signs with the site key and
forwards to the endpoint botocore resolves for the site (``AWS_ENDPOINT_URL_*`` in the
agent's environment are honoured). At the job's end :meth:`Gateway.revoke` returns the
grant, whose tasks :meth:`Gateway.braket_usage` reads back (with the site key) for
accounting. The agent hears of each new task (:attr:`Gateway.on_task`) and saves the
job's task ARNs (:meth:`Gateway.tasks`; no secret) in its session record, so that an
agent reloaded meanwhile gives them back to the job's new grant (:meth:`Gateway.restore`).

On a loopback connection the gateway also checks who is calling: the socket's owner
(from ``/proc/net/tcp``) must be the job's owner or the instance owner, so a token
copied to another local user is useless to them. Tasks on other nodes talk to their
node's relay (:mod:`fluxqr.agent.relay`), which reads the request within the same bounds
(:class:`BoundedHandler`), looks its caller up the same way and forwards it over the Flux
overlay; the agent answers it with :meth:`Gateway.dispatch`, as a request of that uid.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import secrets
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fluxqr.core.inventory import Device
from fluxqr.errors import FluxqrError

log = logging.getLogger(__name__)

#: who is calling: a uid, None (unknown: a remote caller), or a callable giving either
#: (the /proc lookup is done only when a live token makes it matter)
Peer = int | None | Callable[[], int | None]

#: qrmi.ResourceType members the gateway speaks, and their settings prefix
SPOKEN = {"IBMQuantumComputeService": "QRMI_IBM_QCS"}
#: qrmi's defaults when a device does not name its endpoints
DEFAULT_ENDPOINT = "https://quantum.cloud.ibm.com/api/v1"
DEFAULT_IAM_ENDPOINT = "https://iam.cloud.ibm.com"
#: a request body larger than this is refused (primitive inputs are far smaller)
MAX_BODY = 64 * 1024 * 1024
#: the IAM token form (an API key) is tiny; a larger one is refused before parsing
MAX_FORM = 16 * 1024
#: seconds a client may take to send its request (headers and body): a client that
#: announces more bytes than it sends frees its handler thread after this
READ_TIMEOUT = 60.0
#: query parameters of a query-string (presigned) SigV4 signature: never accepted, the
#: gateway authenticates the Authorization header only
PRESIGN_PARAMS = frozenset({"x-amz-signature", "x-amz-credential", "x-amz-algorithm",
                            "x-amz-security-token", "x-amz-signedheaders"})
#: seconds before the real bearer's expiry at which it is renewed
RENEW_MARGIN = 120.0
#: request headers passed upstream (Authorization and Service-CRN are the gateway's own)
PASS_HEADERS = ("content-type", "accept", "ibm-api-version", "user-agent",
                "x-qx-client-application")


#: where Braket (and its S3 results) are served on the gateway
BRAKET_PATH = "/braket"
#: the per-job access key id (it names the grant; the secret is the job token)
BRAKET_KEY_PREFIX = "FLUXQRJOB"
#: response headers passed back from AWS (botocore reads the error type from the first)
BRAKET_REPLY_HEADERS = ("x-amzn-errortype", "x-amzn-requestid", "x-amz-request-id", "etag",
                        "last-modified", "content-type")


def qrmi_member(device: Device) -> str:
    from fluxqr.devices.qrmi_adapter import RESOURCE_TYPES

    text = str(device.params.get("resource_type", ""))
    return RESOURCE_TYPES.get(text.lower(), text)


def speaks(device: Device) -> bool:
    """Whether the gateway can stand in for ``device``'s vendor (QRMI IBM QCS)."""
    return device.adapter == "qrmi" and qrmi_member(device) in SPOKEN


def speaks_braket(device: Device) -> bool:
    """A Braket ARN device with site-held credentials and a results bucket."""
    return device.gateway_braket


def _loads(data: bytes) -> Any:
    """JSON from a request body; ValueError for anything that is not sane JSON (bad
    bytes, bad syntax, nesting deep enough to exhaust the decoder's recursion)."""
    try:
        return json.loads(data or b"{}")
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _dot_segment(parts: Iterable[str]) -> bool:
    """Whether an unquoted path part is or hides a ``.``/``..`` segment (``%2e%2e``,
    ``..%2f``): a vendor or a proxy before it could resolve it to another object."""
    return any(seg in (".", "..") for p in parts for seg in re.split(r"[/\\]", p))


def arn_region(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 and parts[3] else None


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


class BraketUpstream:
    """One Braket device's site account: its boto3 session (site key) and endpoints."""

    def __init__(self, device: Device):
        self.device = device
        self.arn = str(device.params["device"])
        self.bucket = str(device.params["s3_bucket"])
        self.region = str(device.params.get("region") or arn_region(self.arn) or "us-east-1")
        self.timeout = float(device.timeout or 30)
        self._lock = threading.Lock()
        self._session: Any = None
        self._endpoints: dict[tuple[str, str], str] = {}

    def session(self) -> Any:
        """The site's boto3 session (credentials as the device's adapter resolves them)."""
        with self._lock:
            if self._session is None:
                from fluxqr.devices.braket_adapter import BraketAdapter

                self._session = BraketAdapter(self.device).boto_session(self.region)
            return self._session

    def credentials(self) -> Any:
        creds = self.session().get_credentials()
        if creds is None:
            raise FluxqrError(f"device '{self.device.name}': no site AWS credentials")
        return creds.get_frozen_credentials()

    def endpoint(self, service: str, region: str) -> str:
        """The site's endpoint for ``service`` in ``region``, as botocore resolves it."""
        key = (service, region)
        if key not in self._endpoints:
            client = self.session().client(service, region_name=region)
            self._endpoints[key] = client.meta.endpoint_url.rstrip("/")
        return self._endpoints[key]


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
    braket: dict[str, str] = field(default_factory=dict)      # device ARN -> device name
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # Braket task ARN -> facts

    @property
    def access_key(self) -> str:
        return f"{BRAKET_KEY_PREFIX}{self.jobid}"


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
            req = _loads(body)
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
                jid = _loads(reply).get("id")
            except (ValueError, AttributeError):
                return
            if isinstance(jid, str):
                grant.jobs.setdefault(rid, set()).add(jid)


class BraketPolicy:
    """Which Braket and S3 calls a job may make; ``allow`` returns None or why not.

    ``parts`` is the path below :data:`BRAKET_PATH`, unquoted. The site's reservations
    (``associations``) and Braket Hybrid Jobs are not the job's to use; searches would
    list the whole account's work."""

    def allow(self, grant: Grant, service: str, method: str, parts: list[str],
              query: dict[str, list[str]], body: bytes, ups: dict[str, BraketUpstream]
              ) -> tuple[str | None, str | None]:
        """(why not or None, the device ARN whose account serves the call)."""
        if service == "braket":
            return self._braket(grant, method, parts, body, ups)
        if service == "s3":
            return self._s3(grant, method, parts, query)
        return f"{service} is not available through the gateway", None

    def _braket(self, grant: Grant, method: str, parts: list[str], body: bytes,
                ups: dict[str, BraketUpstream]) -> tuple[str | None, str | None]:
        if method == "GET" and len(parts) == 2 and parts[0] == "device":
            return (None if parts[1] in grant.braket else "not this job's device"), parts[1]
        if method == "POST" and parts == ["quantum-task"]:
            try:
                req = _loads(body)
            except ValueError:
                return "request body is not JSON", None
            if not isinstance(req, dict):
                return "request body is not a JSON object", None
            arn = req.get("deviceArn")
            if arn not in grant.braket:
                return f"device {arn} is not this job's device", None
            if req.get("associations") or req.get("jobToken"):
                return "reservations and Braket Hybrid Jobs are not available to tasks", None
            if req.get("outputS3Bucket") != ups[arn].bucket:
                return f"results go to the site's bucket {ups[arn].bucket}", None
            return None, arn
        if len(parts) in (2, 3) and parts[0] == "quantum-task" and \
                (method, len(parts)) in (("GET", 2), ("PUT", 3)) and \
                (len(parts) == 2 or parts[2] == "cancel"):
            task = grant.tasks.get(parts[1])
            return (None, task["arn"]) if task else ("not this job's task", None)
        return "only GetDevice and this job's quantum tasks are available", None

    def _s3(self, grant: Grant, method: str, parts: list[str],
            query: dict[str, list[str]]) -> tuple[str | None, str | None]:
        if not parts or method not in ("GET", "HEAD"):
            return "only reading this job's task results", None
        bucket, key = parts[0], "/".join(parts[1:])
        if key and set(query) - {"x-id", "partNumber", "versionId"}:
            return "only reading this job's task results", None
        if not key:
            if query.get("list-type") != ["2"]:
                return "only reading this job's task results", None
            key = (query.get("prefix") or [""])[0]
            if _dot_segment([key]):
                return "bad prefix", None
        for task in grant.tasks.values():
            folder = task.get("directory")
            if task.get("bucket") == bucket and folder and \
                    (key + "/").startswith(folder.rstrip("/") + "/"):
                return None, task["arn"]
        return "not this job's task results", None

    def learn(self, grant: Grant, service: str, method: str, parts: list[str], body: bytes,
              reply: bytes) -> None:
        """Remember a task the job created, and what GetQuantumTask says of it."""
        if service != "braket":
            return
        try:
            out = _loads(reply)
            req = _loads(body) if method == "POST" else {}
        except ValueError:
            return
        if method == "POST" and parts == ["quantum-task"] and isinstance(out, dict):
            arn = str(out.get("quantumTaskArn") or "")
            if arn:
                tid = arn.rsplit("/", 1)[-1]
                grant.tasks[arn] = {
                    "arn": arn, "device": req.get("deviceArn"), "shots": req.get("shots"),
                    "bucket": req.get("outputS3Bucket"),
                    "directory": f"{str(req.get('outputS3KeyPrefix', '')).rstrip('/')}/{tid}"}
        elif method == "GET" and isinstance(out, dict) and \
                out.get("quantumTaskArn") in grant.tasks:
            task = grant.tasks[out["quantumTaskArn"]]
            if out.get("deviceArn") == task["device"] and out.get("outputS3Directory"):
                task["directory"] = str(out["outputS3Directory"])


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
    braket_policy = BraketPolicy()

    def __init__(self, bind: tuple[str, int], owner: int, advertise: str | None = None):
        self.owner = owner
        self.read_timeout = READ_TIMEOUT
        #: called with a job id (from a handler thread) when the job created a Braket task,
        #: so the agent can persist the task's ARN (its usage is read at the job's end)
        self.on_task: Callable[[int], None] | None = None
        self._lock = threading.Lock()
        self._upstreams: dict[str, Upstream] = {}
        self._braket: dict[str, BraketUpstream] = {}   # device ARN -> its site account
        self._by_key: dict[str, Grant] = {}            # Braket access key id -> grant
        self._grants: dict[int, Grant] = {}           # jobid -> grant
        self._by_token: dict[str, Grant] = {}
        self._bearers: dict[str, tuple[Grant, str]] = {}   # gateway bearer -> (grant, rid)
        family = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True  # a hung upstream never keeps the agent from exiting

            def handle_error(self, request: Any, client_address: Any) -> None:
                # socketserver prints a traceback to stderr (the broker's log): one line
                import sys

                log.info("fluxqr gateway: connection dropped: %s",
                         type(sys.exc_info()[1]).__name__)

        self._server = Server(bind, _make_handler(self))
        host, port = self._server.server_address[:2]
        if advertise is None:
            wildcard = ipaddress.ip_address(host).is_unspecified
            advertise = socket.getfqdn() if wildcard else host
        self.url = f"http://{f'[{advertise}]' if ':' in advertise else advertise}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="fluxqr-gateway", daemon=True)
        self._thread.start()

    @property
    def loopback(self) -> bool:
        """Whether it listens on loopback only (tasks on other nodes need their relay)."""
        return ipaddress.ip_address(self._server.server_address[0]).is_loopback

    # -- configuration and grants (called from the agent's reactor) ---------------------

    def configure(self, devices: Iterable[Device]) -> None:
        """The resources it stands in for (devices it :func:`speaks`)."""
        ups, braket = {}, {}
        for dev in devices:
            if speaks(dev):
                up = Upstream(dev)
                ups[up.rid] = up
            elif speaks_braket(dev):
                bup = BraketUpstream(dev)
                braket[bup.arn] = bup
        with self._lock:
            self._upstreams = ups
            self._braket = braket

    def grant(self, jobid: int, userid: int, devices: Iterable[Device],
              sessions: dict[str, str]) -> Grant | None:
        """The job's grant (minted on first call): ``devices`` it holds, ``sessions`` =
        device name -> the vendor session the agent opened. None if no device is spoken."""
        with self._lock:
            existing = self._grants.get(jobid)
            if existing is not None:
                return existing
            devices = list(devices)
            resources = {str(d.params["resource_id"]): d.name for d in devices
                         if speaks(d) and str(d.params["resource_id"]) in self._upstreams}
            braket = {str(d.params["device"]): d.name for d in devices
                      if speaks_braket(d) and str(d.params["device"]) in self._braket}
            if not resources and not braket:
                return None
            grant = Grant(jobid, userid, secrets.token_urlsafe(32), resources,
                          {rid: ({sessions[name]} if sessions.get(name) else set())
                           for rid, name in resources.items()}, braket=braket)
            self._grants[jobid] = grant
            self._by_token[grant.token] = grant
            if braket:
                self._by_key[grant.access_key] = grant
            return grant

    def revoke(self, jobid: int) -> Grant | None:
        """End the job's grant: its token, bearers and AWS key stop working at once.
        Returns the ended grant (its Braket tasks are still to be accounted)."""
        with self._lock:
            grant = self._grants.pop(jobid, None)
            if grant is None:
                return None
            grant.live = False
            self._by_token.pop(grant.token, None)
            self._by_key.pop(grant.access_key, None)
            for bearer in [b for b, (g, _) in self._bearers.items() if g is grant]:
                del self._bearers[bearer]
            return grant

    def tasks(self, jobid: int) -> list[dict[str, Any]]:
        """The Braket tasks the job created (what :meth:`restore` takes back): ARNs,
        devices, shots and result folders, no secret."""
        with self._lock:
            grant = self._grants.get(jobid)
            return [dict(t) for t in grant.tasks.values()] if grant else []

    def restore(self, jobid: int, tasks: Iterable[Any]) -> int:
        """Give the job's grant back the tasks a previous agent saw it create (after a
        reload), so that its tasks are the job's again and are accounted at its end.
        Malformed entries are skipped; returns how many were taken."""
        taken = 0
        with self._lock:
            grant = self._grants.get(jobid)
            if grant is None:
                return 0
            for task in tasks:
                if not (isinstance(task, dict) and isinstance(task.get("arn"), str) and
                        isinstance(task.get("device"), str)):
                    continue
                keep = {k: task.get(k) for k in ("arn", "device", "shots", "bucket",
                                                 "directory")}
                grant.tasks.setdefault(task["arn"], keep)
                taken += 1
        return taken

    def jobids(self) -> list[int]:
        with self._lock:
            return sorted(self._grants)

    def settings(self, grant: Grant, base: str | None = None) -> dict[str, dict[str, str]]:
        """Per device name: the QRMI settings (suffix -> value) that point its tasks here,
        or at ``base`` (the URL of the relay on the tasks' node, which forwards here)."""
        url = (base or self.url).rstrip("/")
        out = {}
        for rid, name in grant.resources.items():
            prefix = SPOKEN[qrmi_member(self._upstreams[rid].device)]
            out[name] = {f"{prefix}_ENDPOINT": f"{url}/{rid}/api",
                         f"{prefix}_IAM_ENDPOINT": f"{url}/{rid}/iam",
                         f"{prefix}_IAM_APIKEY": grant.token}
            if self._upstreams[rid].crn:
                out[name][f"{prefix}_SERVICE_CRN"] = self._upstreams[rid].crn
        for arn, name in grant.braket.items():
            # the variables are process-wide: every Braket device of a job shares the one
            # gateway key (its account is picked per call); the first device's bucket wins
            up = self._braket[arn]
            out[name] = {"AWS_ENDPOINT_URL_BRAKET": url + BRAKET_PATH,
                         "AWS_ENDPOINT_URL_S3": url + BRAKET_PATH,
                         "AWS_ACCESS_KEY_ID": grant.access_key,
                         "AWS_SECRET_ACCESS_KEY": grant.token,
                         "AWS_DEFAULT_REGION": up.region,
                         "AMZN_BRAKET_OUT_S3_BUCKET": up.bucket,
                         "FLUXQR_BRAKET_GATEWAY": url + BRAKET_PATH}
        return out

    def stop(self) -> None:
        with self._lock:
            for jobid in list(self._grants):
                self._grants[jobid].live = False
            self._grants.clear()
            self._by_token.clear()
            self._by_key.clear()
            self._bearers.clear()
        self._server.shutdown()
        self._server.server_close()

    # -- requests (handler threads) ------------------------------------------------------

    def _peer_ok(self, grant: Grant, peer: Peer) -> bool:
        uid = peer() if callable(peer) else peer
        return uid is None or uid in (grant.userid, self.owner)

    def dispatch(self, method: str, target: str, headers: Any, body: bytes, peer: Peer
                 ) -> tuple[int, bytes, str | None, dict[str, str]]:
        """Answer one request whose bytes were already read within the bounds
        (:class:`BoundedHandler`): ``target`` is the raw path and query, ``headers`` a
        case-insensitive mapping (``http.client.HTTPMessage``), ``peer`` the caller's uid
        (None: unknown, a remote caller) or a callable giving it when needed. Returns
        (status, body, content type, extra headers). Used by the HTTP server here and
        for requests a node's relay (:mod:`fluxqr.agent.relay`) forwards over Flux."""
        url = urllib.parse.urlsplit(target)
        if _under_braket(url.path):
            try:
                return self.braket(method, target, headers, body, peer)
            except Exception as exc:  # noqa: BLE001 - never kills the gateway
                log.error("fluxqr gateway: internal error: %s", type(exc).__name__)
                return _aws_error(_service_of(headers), 500, "InternalServiceException",
                                  "gateway error")
        rid, _, rest = url.path.lstrip("/").partition("/")
        kind, _, rest = rest.partition("/")
        rid = urllib.parse.unquote(rid)
        try:
            if kind == "iam" and rest.rstrip("/") == "identity/token" and method == "POST":
                form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
                status, payload = self.iam(rid, form, peer)
                return (*_json(status, payload), {})
            if kind == "api":
                return (*self.api(rid, method, rest, url.query, headers, body, peer), {})
            return (*_json(404, {"errors": [{"message": "no such route"}]}), {})
        except Exception as exc:  # noqa: BLE001 - one bad request never kills the gateway
            log.error("fluxqr gateway: internal error: %s", type(exc).__name__)
            return (*_json(500, {"errors": [{"message": "gateway error"}]}), {})

    def iam(self, rid: str, form: dict[str, list[str]], peer: Peer) -> tuple[int, Any]:
        token = (form.get("apikey") or [""])[0]
        with self._lock:
            grant = self._by_token.get(token)
            if grant is None or not grant.live:
                return 400, {"errorCode": "BXNIM0415E",
                             "errorMessage": "Provided API key could not be found."}
            if rid not in grant.resources:
                return 403, {"errorMessage": "this job does not hold that device"}
            if not self._peer_ok(grant, peer):
                return 403, {"errorMessage": "this job's token is for its owner only"}
            bearer = "fluxqr-" + secrets.token_urlsafe(32)
            self._bearers[bearer] = (grant, rid)
        now = int(time.time())
        return 200, {"access_token": bearer, "refresh_token": "not_supported",
                     "token_type": "Bearer", "expires_in": 3600, "expiration": now + 3600,
                     "scope": "fluxqr-gateway"}

    def api(self, rid: str, method: str, rest: str, query: str, headers: Any, body: bytes,
            peer: Peer) -> tuple[int, bytes, str | None]:
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
        if not self._peer_ok(grant, peer):
            return _json(403, {"errors": [{"message": "this job's token is for its owner "
                                                      "only"}]})
        parts = [urllib.parse.unquote(p) for p in rest.split("/") if p]
        if _dot_segment(parts) or any("/" in p for p in parts):  # ids never hold a '/'
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

    def braket(self, method: str, target: str, headers: Any, body: bytes, peer: Peer
               ) -> tuple[int, bytes, str | None, dict[str, str]]:
        """One Braket or S3 request below :data:`BRAKET_PATH` (``target``: the raw path
        and query as received)."""
        from fluxqr.agent import sigv4

        def secret_for(key: str) -> str | None:
            with self._lock:
                grant = self._by_key.get(key)
                return grant.token if grant is not None and grant.live else None

        try:
            scope = sigv4.verify(method, f"http://{headers.get('Host')}{target}", headers,
                                 body, secret_for)
        except sigv4.SignatureError as exc:
            return _aws_error(_service_of(headers), exc.status, exc.code, str(exc))
        with self._lock:
            grant = self._by_key.get(scope.access_key)
            ups = dict(self._braket)
        if grant is None or not grant.live:  # revoked while verifying
            return _aws_error(scope.service, 403, "InvalidClientTokenId", "token revoked")
        if not self._peer_ok(grant, peer):
            return _aws_error(scope.service, 403, "AccessDenied",
                              "this job's key is for its owner only")
        url = urllib.parse.urlsplit(target)
        rest = url.path[len(BRAKET_PATH):]
        parts = [urllib.parse.unquote(p) for p in rest.split("/") if p]
        if _dot_segment(parts):
            return _aws_error(scope.service, 403, "AccessDenied", "bad path")
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if PRESIGN_PARAMS & {k.lower() for k in query}:
            return _aws_error(scope.service, 403, "AccessDenied", "query-string (presigned) "
                              "signatures are not accepted")
        with self._lock:
            why, arn = self.braket_policy.allow(grant, scope.service, method, parts, query,
                                                body, ups)
            task = grant.tasks.get(arn or "")
        device_arn = task["device"] if task else arn
        up = ups.get(device_arn or "")
        if why or up is None:
            return _aws_error(scope.service, 403, "AccessDenied",
                              f"fluxqr gateway: {why or 'device not served'}")
        # The site's account is reached in the task's or device's region, never in one the
        # caller names in its signature scope.
        region = (arn_region(task["arn"]) if task else None) or up.region
        status, reply, ctype, extra = self._forward_aws(up, scope.service, region, method,
                                                        rest, url.query, headers, body,
                                                        grant.access_key)
        if 200 <= status < 300:
            with self._lock:
                known = len(grant.tasks)
                if grant.live:
                    self.braket_policy.learn(grant, scope.service, method, parts, body, reply)
                created = len(grant.tasks) > known
            if created and self.on_task is not None:
                try:
                    self.on_task(grant.jobid)
                except Exception as exc:  # noqa: BLE001 - the task's request succeeded
                    log.error("fluxqr gateway: job %s: task not recorded: %s", grant.jobid,
                              type(exc).__name__)
        return status, reply, ctype, extra

    def _forward_aws(self, up: BraketUpstream, service: str, region: str, method: str,
                     rest: str, query: str, headers: Any, body: bytes, job_key: str
                     ) -> tuple[int, bytes, str | None, dict[str, str]]:
        from fluxqr.agent import sigv4

        try:
            creds = up.credentials()
            url = up.endpoint(service, region) + rest + (f"?{query}" if query else "")
            out = sigv4.sign(method, url, dict(headers.items()), body, service, region,
                             creds.access_key, creds.secret_key, creds.token)
        except Exception as exc:  # noqa: BLE001 - botocore's own errors name no secret
            log.error("fluxqr gateway: device %s: cannot sign for AWS: %s", up.device.name,
                      type(exc).__name__)
            return _aws_error(service, 502, "ServiceUnavailable",
                              "the site's AWS credentials are not usable")
        req = urllib.request.Request(url, data=body if body else None, method=method,
                                     headers=out)
        try:
            with urllib.request.urlopen(req, timeout=up.timeout) as resp:
                return resp.status, resp.read(), resp.headers.get("Content-Type"), \
                    _reply_headers(resp.headers)
        except urllib.error.HTTPError as err:
            # AWS errors may quote the signing key id (S3's SignatureDoesNotMatch does):
            # the job sees its own key there, never the site's
            data = err.read().replace(creds.access_key.encode(), job_key.encode())
            return err.code, data, err.headers.get("Content-Type"), _reply_headers(err.headers)
        except (OSError, ValueError) as exc:
            return _aws_error(service, 502, "ServiceUnavailable",
                              f"AWS unreachable: {type(exc).__name__}")

    def braket_usage(self, grant: Grant) -> dict[str, dict[str, Any]]:
        """Per device name: what Braket says of the job's tasks, read with the site key
        (GetQuantumTask, and the result's executionDuration for simulators). Blocking:
        call it from a worker thread."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            ups = dict(self._braket)
            tasks = [dict(t) for t in grant.tasks.values()]
        for task in tasks:
            up = ups.get(task.get("device") or "")
            if up is None:
                continue
            facts = {"arn": task["arn"], "shots": int(task.get("shots") or 0),
                     "status": "UNKNOWN", "execution_ms": None}
            try:
                info = up.session().client("braket", region_name=arn_region(task["arn"])
                                           or up.region)
                got = info.get_quantum_task(quantumTaskArn=task["arn"])
                facts["status"] = str(got.get("status"))
                facts["shots"] = int(got.get("shots") or facts["shots"])
                if facts["status"] == "COMPLETED":
                    s3 = up.session().client("s3", region_name=up.region)
                    obj = s3.get_object(Bucket=got["outputS3Bucket"],
                                        Key=f"{got['outputS3Directory']}/results.json")
                    result = json.loads(obj["Body"].read(64 << 20))
                    sim = (result.get("additionalMetadata") or {}).get("simulatorMetadata")
                    if isinstance(sim, dict) and isinstance(sim.get("executionDuration"),
                                                            int | float):
                        facts["execution_ms"] = float(sim["executionDuration"])
            except Exception as exc:  # noqa: BLE001 - what was learnt is still recorded
                log.error("fluxqr gateway: job %s: reading Braket task usage failed: %s",
                          grant.jobid, type(exc).__name__)
            out.setdefault(up.device.name, {"device": up.device, "tasks": []})["tasks"] \
                .append(facts)
        return out

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


def _service_of(headers: Any) -> str:
    return "s3" if "/s3/aws4_request" in str(headers.get("Authorization") or "") else "braket"


def _reply_headers(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items()
            if k.lower() in BRAKET_REPLY_HEADERS and k.lower() != "content-type"}


def _aws_error(service: str, status: int, code: str, message: str
               ) -> tuple[int, bytes, str, dict[str, str]]:
    """An error as AWS answers it: S3's XML, or Braket's JSON with x-amzn-ErrorType."""
    from xml.sax.saxutils import escape

    from fluxqr.agent.sigv4 import BRAKET_ERRORS

    if service == "s3":
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>{escape(message)}</Message></Error>").encode()
        return status, body, "application/xml", {}
    kind = BRAKET_ERRORS.get(code, code if code.endswith("Exception") else
                             "AccessDeniedException" if status == 403 else
                             "InternalServiceException" if status >= 500 else
                             "ValidationException")
    return status, json.dumps({"message": message}).encode(), "application/json", \
        {"x-amzn-ErrorType": kind}


def _json(status: int, payload: Any) -> tuple[int, bytes, str]:
    return status, json.dumps(payload).encode(), "application/json"


def _under_braket(path: str) -> bool:
    """Whether a request path is a Braket or S3 call (below :data:`BRAKET_PATH`)."""
    return path == BRAKET_PATH or path.startswith(BRAKET_PATH + "/")


class BoundedHandler(BaseHTTPRequestHandler):
    """An HTTP request read within the gateway's bounds (body size, no chunked body, a sane
    ``Content-Length`` sent in full within :attr:`read_timeout`), then answered by the
    hook :meth:`answer`. The gateway and each node's relay (:mod:`fluxqr.agent.relay`)
    subclass it, so a task meets the same limits and refusals on either."""

    protocol_version = "HTTP/1.1"
    #: seconds to read a request (set per server by the subclass)
    read_timeout = READ_TIMEOUT

    def answer(self, body: bytes) -> tuple[int, bytes, str | None, dict[str, str]]:
        """Hook: the reply to this request (``self.command``, ``self.path``,
        ``self.headers``) whose body was read; never raises."""
        raise NotImplementedError

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # request lines may carry ids; never log them

    def _reply(self, status: int, data: bytes, ctype: str | None,
               extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if data and ctype:
            self.send_header("Content-Type", ctype)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and self.command != "HEAD":
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

    def setup(self) -> None:
        self.timeout = self.read_timeout  # applied to the socket by StreamRequestHandler
        super().setup()

    def __getattr__(self, name: str) -> Any:
        # http.server answers a method it has no do_X for with 501 (a 5xx): a method
        # the gateway does not serve is the client's error
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def error_reply(self, status: int, code: str, message: str
                    ) -> tuple[int, bytes, str | None, dict[str, str]]:
        """An error in the route's style: AWS-style under /braket, else QCS-style."""
        if _under_braket(urllib.parse.urlsplit(self.path).path):
            return _aws_error(_service_of(self.headers), status, code, message)
        return (*_json(status, {"errors": [{"message": message}]}), {})

    def _refuse(self, status: int, code: str, message: str) -> None:
        """A request refused before routing; the connection closes (what is left of its
        bytes is not a request)."""
        self.close_connection = True
        self._reply(*self.error_reply(status, code, message))

    def _not_allowed(self) -> None:
        self._refuse(405, "MethodNotAllowed", f"method {self.command[:20]} not allowed")

    def _body(self) -> bytes | None:
        """The request body, or None when refused (answered here)."""
        if "chunked" in str(self.headers.get("Transfer-Encoding") or "").lower():
            self._refuse(411, "MissingContentLength", "send a Content-Length")
            return None
        text = str(self.headers.get("Content-Length") or "0").strip()
        if not text.isdigit() or len(text) > 12:
            self._refuse(400, "InvalidArgument", "bad Content-Length")
            return None
        length = int(text)
        url = urllib.parse.urlsplit(self.path)
        limit = MAX_FORM if url.path.rstrip("/").endswith("/iam/identity/token") \
            else MAX_BODY
        if length > limit:
            self._refuse(413, "EntityTooLarge", "body too large")
            return None
        try:
            body = self.rfile.read(length) if length else b""
        except TimeoutError:
            body = b""
        if len(body) != length:  # announced more than it sent
            self._refuse(400, "RequestTimeout", "the body is shorter than its "
                         "Content-Length")
            return None
        return body

    def _handle(self) -> None:
        body = self._body()
        if body is not None:
            self._reply(*self.answer(body))

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _handle


def _make_handler(gw: Gateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BoundedHandler):
        def setup(self) -> None:
            self.read_timeout = gw.read_timeout  # tests shorten it on a running gateway
            super().setup()

        def answer(self, body: bytes) -> tuple[int, bytes, str | None, dict[str, str]]:
            client, server = self.client_address, self.connection.getsockname()
            return gw.dispatch(self.command, self.path, self.headers, body,
                               lambda: peer_uid(client, server))

    return Handler
