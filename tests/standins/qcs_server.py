"""A loopback stand-in for IBM's Quantum Compute Service (QCS) REST API and its IAM.

It speaks the subset that qrmi 0.26 calls for an ``ibm-quantum-compute-service``
resource (learnt by logging what the real client requests):

    POST   /identity/token                   IAM: API key -> bearer token
    GET    /backends                         device list: status {name, reason}, queue_length
    GET    /backends/{name}/status           legacy status (is_accessible)
    GET    /backends/{name}/configuration    IBM configuration JSON
    GET    /backends/{name}/properties       IBM properties JSON (calibration)
    GET    /jobs?pending=true&backend=…      pending jobs (the queue)
    GET    /jobs?session_id=…&limit=&offset= a session's jobs, page by page (accounting)
    POST   /sessions                         acquire: open a session
    GET    /sessions/{id}                    session details
    PATCH  /sessions/{id}                    release: stop accepting jobs (close)
    DELETE /sessions/{id}/close              release: cancel a session with pending jobs
    POST   /jobs                             task_start: queue a primitive job (in a session)
    GET    /jobs/{id}                        task_status: Queued/Running/Completed/Cancelled
    POST   /jobs/{id}/cancel                 task_stop
    DELETE /jobs/{id}                        delete (cancels a pending job)
    GET    /jobs/{id}/results                task_result (a placeholder result: no circuit runs)
    GET    /jobs/{id}/logs                   task_logs

The device behind it is the discrete-event model of ``vendor_sim.py`` (:attr:`QCSStandIn.sim`):
a queue shared with simulated other users, IBM session semantics (open -> active when the
session's first job reaches the head of the queue -> inactive after the interactive TTL ->
closed), usage billed from activation, in model time (``time_scale`` model seconds per wall
second). Queue lengths reported by the API are the ``queue_length`` knob (a fixed number of
phantom jobs, as before) plus the simulated queue.

Calibration is the JSON a qiskit-ibm-runtime fake backend ships (``fake_fez`` by
default), served under that backend's real name (``ibm_fez``).

Test-only endpoints: ``GET/POST /_control`` (read/set knobs as JSON), ``GET /_log``
(requests seen, and the acquire/release log), ``POST /_reset`` (clear the logs).

Knobs: ``queue_length`` (phantom pending jobs), ``offline`` (backend offline), ``reason``
(status reason while offline), ``slow`` (seconds to stall every API reply),
``garbage`` (malformed JSON replies), ``down`` (HTTP 503 everywhere),
``calibration_down`` (HTTP 503 for configuration/properties only), ``refuse_sessions``
(HTTP 403 for new sessions: an acquire failure), ``apikey``
(if set, the only API key IAM accepts, and API calls then need a token it issued); and the
simulation's (:data:`vendor_sim.SIM_DEFAULTS`): ``time_scale``, ``arrival_rate``,
``service_median``, ``service_sigma``, ``initial_queue``, ``seed``, ``interactive_ttl``,
``max_ttl``, ``task_service`` (model seconds per 100 shots, at least 1 s); changing ``seed``
or ``initial_queue`` restarts it, as does ``POST /_restart``.

``GET /_log`` returns ``requests``, ``sessions`` (the ``acquire``/``release`` operations, wall
time), and the simulation's log in model seconds: ``jobs`` (every job with its ``queued``,
``running``, ``done`` times, ``session_id`` and ``user``), ``sim_sessions`` (each session's
``activated``, ``activations``, ``timeouts`` (interactive-TTL expiries), ``billed`` seconds),
``events`` (job-queued, activate, interactive-timeout, session-end, ...) and ``now``.

Point qrmi at it with the variables from :meth:`QCSStandIn.qrmi_config` — as a
``QuantumResource.from_config`` dict, or as ``<resource_id>_QRMI_IBM_QCS_*``
environment variables (:meth:`QCSStandIn.qrmi_env`). Out of process::

    python -m tests.standins.qcs_server --port 8765 --backend fake_fez \
        --time-scale 60 --arrival-rate 0.01 --service-median 90 --initial-queue 20
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import secrets
import signal
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

try:
    from . import LoopbackServer
    from .vendor_sim import SIM_DEFAULTS, SimError, VendorSim
except ImportError:  # imported as ``standins.qcs_server`` with tests/ on sys.path
    from standins import LoopbackServer  # type: ignore[no-redef]
    from standins.vendor_sim import SIM_DEFAULTS, SimError, VendorSim  # type: ignore[no-redef]

#: job states ``GET /jobs?pending=false`` lists
FINISHED = ("Completed", "Cancelled", "Failed")
DEFAULT_CRN = "crn:v1:bluemix:public:quantum-computing:us-east:a/standin::"
KNOBS: dict[str, Any] = {
    "queue_length": 0,
    "offline": False,
    "reason": "offline for repairs",
    "slow": 0.0,
    "garbage": False,
    "down": False,
    "calibration_down": False,
    "apikey": None,
    "refuse_sessions": False,
    **SIM_DEFAULTS,
}


def fake_backend_files(backend: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The configuration and properties JSON of a qiskit-ibm-runtime fake backend.

    ``backend`` is its name, ``fake_fez`` or ``fez``. Read from the package's data files
    so that the server does not pay for importing qiskit.
    """
    short = backend.removeprefix("fake_")
    spec = importlib.util.find_spec("qiskit_ibm_runtime")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the QCS stand-in needs qiskit-ibm-runtime for its calibration data")
    base = Path(next(iter(spec.submodule_search_locations))) / "fake_provider" / "backends"
    folder = base / short
    if not folder.is_dir():
        known = sorted(p.name for p in base.iterdir() if (p / f"conf_{p.name}.json").exists())
        raise ValueError(f"no fake backend '{backend}' (known: {', '.join(known)})")
    conf = json.loads((folder / f"conf_{short}.json").read_text())
    props = json.loads((folder / f"props_{short}.json").read_text())
    return conf, props


class QCSStandIn(LoopbackServer):
    """The server: start it (or use it as a context manager), then point qrmi at :attr:`url`."""

    def __init__(self, backend: str = "fake_fez", *, name: str | None = None,
                 host: str = "127.0.0.1", port: int = 0, crn: str = DEFAULT_CRN,
                 **knobs: Any):
        self.configuration, self.properties = fake_backend_files(backend)
        self.name = name or self.configuration["backend_name"]
        self.configuration = {**self.configuration, "backend_name": self.name}
        self.properties = {**self.properties, "backend_name": self.name}
        self.crn = crn
        self._lock = threading.Lock()
        self._knobs = dict(KNOBS)
        self.sim = VendorSim(**{k: v for k, v in {**KNOBS, **knobs}.items()
                                if k in SIM_DEFAULTS})
        # model time 0 shown as this wall time in the API's timestamps
        self._epoch = time.time()
        self.set(**knobs)
        self.requests: list[dict[str, Any]] = []
        self.sessions_log: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._tokens: set[str] = set()
        self._stopping = threading.Event()
        self._serve(host, port, _make_handler(self), "qcs-standin")

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping on the "slow" knob
        super().stop()

    # -- knobs and logs --------------------------------------------------------------------

    def set(self, **knobs: Any) -> dict[str, Any]:
        """Change knobs; unknown names are an error. Returns all knobs."""
        unknown = set(knobs) - set(KNOBS)
        if unknown:
            raise ValueError(f"unknown knob(s) {sorted(unknown)}; known: {sorted(KNOBS)}")
        with self._lock:
            self._knobs.update(knobs)
            sim = {k: v for k, v in knobs.items() if k in SIM_DEFAULTS}
            if sim:
                self.sim.configure(**sim)
            return dict(self._knobs)

    def knobs(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._knobs)

    def log(self) -> dict[str, Any]:
        """Requests, acquire/release operations, and the simulation's log (model seconds)."""
        with self._lock:
            return {"requests": list(self.requests), "sessions": list(self.sessions_log),
                    **self.sim.log()}

    def reset(self) -> None:
        """Clear the logs (the simulated queue and open sessions stay)."""
        with self._lock:
            self.requests.clear()
            self.sessions_log.clear()
            self.sim.events.clear()

    def restart(self) -> None:
        """Clear the logs and start a fresh simulation (time 0, seeded queue, no sessions)."""
        with self._lock:
            self.requests.clear()
            self.sessions_log.clear()
            self.sim = VendorSim(**{k: v for k, v in self._knobs.items() if k in SIM_DEFAULTS})
            self._epoch = time.time()

    def qrmi_config(self) -> dict[str, str]:
        """Non-secret QRMI settings for this server (variable suffix -> value)."""
        return {
            "QRMI_IBM_QCS_ENDPOINT": self.url,
            "QRMI_IBM_QCS_IAM_ENDPOINT": self.url,
            "QRMI_IBM_QCS_SERVICE_CRN": self.crn,
        }

    def device_entry(self, name: str, key_var: str, **extra: Any) -> dict[str, Any]:
        """A devices.yaml entry for this server as QRMI resource ``name``, the API key
        read from the variable ``key_var`` (``extra``: more keys, e.g. ``sharing``)."""
        return {"name": name, "adapter": "qrmi", "qubits": 156, "vendor": "ibm",
                "timeout": 30, **extra,
                "params": {"resource_id": name, "resource_type": "ibm-quantum-compute-service",
                           "config": self.qrmi_config()},
                "credentials": {"QRMI_IBM_QCS_IAM_APIKEY": key_var}}

    def qrmi_env(self, resource_id: str | None = None,
                 apikey: str = "standin-key") -> dict[str, str]:
        """The same settings plus an API key as ``<resource_id>_QRMI_IBM_QCS_*`` variables."""
        rid = resource_id or self.name
        cfg = {**self.qrmi_config(), "QRMI_IBM_QCS_IAM_APIKEY": apikey}
        return {f"{rid}_{k}": v for k, v in cfg.items()}

    # -- replies ---------------------------------------------------------------------------

    def _stamp(self, model_t: float | None) -> str | None:
        if model_t is None:
            return None
        # Timestamps are in model time: the server's start plus model seconds.
        stamp = self._epoch + model_t
        return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp))
                + f".{int(stamp % 1 * 1000):03d}Z")

    def _phantom_jobs(self, count: int, backend: str) -> list[dict[str, Any]]:
        created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        return [{"id": f"standin-job-{i}", "backend": backend, "status": "Queued",
                 "state": {"status": "Queued"}, "program": {"id": "sampler"},
                 "created": created, "cost": 600} for i in range(count)]

    def _job_json(self, job: Any) -> dict[str, Any]:
        scale = float(self._knobs["time_scale"])  # API durations in client seconds (lock held)
        rec: dict[str, Any] = {
            "id": job.id, "backend": self.name, "status": job.state,
            "state": {"status": job.state}, "program": {"id": job.program},
            "created": self._stamp(job.queued), "cost": 600, "user_id": job.user,
            "estimated_running_time_seconds": job.service / scale}
        if job.session_id is not None:
            rec["session_id"] = job.session_id
        if job.done is not None and job.running is not None:
            used = (job.done - job.running) / scale
            rec["usage"] = {"quantum_seconds": used, "seconds": used}
        return rec

    def _session_json(self, sess: Any) -> dict[str, Any]:
        # Durations in the API are seconds of the client's clock: model seconds / time
        # scale (the log keeps model seconds).
        now, scale = self.sim.now, float(self._knobs["time_scale"])  # caller holds the lock
        active_ttl = sess.max_ttl - (now - sess.activated if sess.activated is not None else 0)
        billed = sess.billed + (now - sess.active_since if sess.active_since is not None else 0)
        return {"id": sess.id, "backend_name": sess.backend, "mode": sess.mode,
                "state": sess.state, "accepting_jobs": sess.accepting_jobs,
                # whole seconds, as the API's schema has them (qrmi parses them as i32)
                "max_ttl": max(1, round(sess.max_ttl / scale)),
                "active_ttl": max(0, round(active_ttl / scale)),
                "interactive_ttl": max(1, round(sess.interactive_ttl / scale)),
                "started_at": self._stamp(sess.opened),
                "activated_at": self._stamp(sess.activated),
                "closed_at": self._stamp(sess.closed), "elapsed_time": billed / scale}

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: bytes,
               authorization: str = "") -> tuple[int, Any]:
        """Reply to one API request: (HTTP status, JSON-able body or None for no content)."""
        knobs = self.knobs()
        parts = [p for p in path.split("/") if p]
        if method == "POST" and parts == ["identity", "token"]:
            form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
            if knobs["apikey"] is not None and form.get("apikey", [""])[0] != knobs["apikey"]:
                return 400, {"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could "
                             "not be found."}
            now = int(time.time())
            token = f"standin-token-{next(self._ids)}"
            with self._lock:
                self._tokens.add(token)
            return 200, {"access_token": token,
                         "refresh_token": "not_supported", "token_type": "Bearer",
                         "expires_in": 3600, "expiration": now + 3600, "scope": "ibm openid"}
        token = authorization.removeprefix("Bearer ")
        if knobs["apikey"] is not None and token not in self._tokens:
            return 401, {"errors": [{"code": 1003, "message": "Unauthorized"}]}
        status_name = "offline" if knobs["offline"] else "online"
        with self._lock:
            queue_length = int(knobs["queue_length"]) + self.sim.queue_length()
        if method == "GET" and parts == ["backends"]:
            device = {"name": self.name, "is_simulator": False,
                      "qubits": self.configuration.get("n_qubits"),
                      "queue_length": queue_length,
                      "status": {"name": status_name}}
            if knobs["offline"]:
                device["status"]["reason"] = knobs["reason"]
            return 200, {"devices": [device]}
        if len(parts) == 3 and parts[0] == "backends" and method == "GET":
            if parts[1] != self.name:
                return 404, {"errors": [{"message": f"backend {parts[1]} not found"}]}
            if parts[2] in ("configuration", "properties") and knobs["calibration_down"]:
                return 503, {"errors": [{"message": "calibration service unavailable"}]}
            if parts[2] == "configuration":
                return 200, self.configuration
            if parts[2] == "properties":
                return 200, self.properties
            if parts[2] == "status":
                return 200, {"state": not knobs["offline"],
                             "status": knobs["reason"] if knobs["offline"] else "active",
                             "message": knobs["reason"] if knobs["offline"] else "",
                             "length_queue": queue_length,
                             "backend_version": self.configuration.get("backend_version")}
        if method == "GET" and parts == ["jobs"]:
            # pending=true: queued and running jobs; false: finished ones; absent: all
            pending = query.get("pending", [None])[0]
            backend = query.get("backend", [self.name])[0]
            sid = query.get("session_id", [None])[0]
            jobs = []
            if backend == self.name:
                with self._lock:
                    if pending == "true":
                        sim_jobs = self.sim.pending(sid)
                    else:
                        self.sim.advance()
                        sim_jobs = [j for j in self.sim.jobs.values()
                                    if (sid is None or j.session_id == sid) and
                                    (pending is None or j.state in FINISHED)]
                    jobs = [self._job_json(j) for j in sim_jobs]
                if pending == "true" and sid is None:
                    jobs = self._phantom_jobs(int(knobs["queue_length"]), backend) + jobs
            try:
                limit = int(query.get("limit", ["200"])[0])
                offset = int(query.get("offset", ["0"])[0])
            except ValueError:
                return 400, {"errors": [{"message": "limit and offset must be integers"}]}
            if not 1 <= limit <= 200 or offset < 0:  # the real API's bounds
                return 400, {"errors": [{"message": "limit must be 1-200, offset >= 0"}]}
            return 200, {"jobs": jobs[offset:offset + limit], "count": len(jobs),
                         "offset": offset, "limit": limit}
        if parts and parts[0] == "jobs":
            return self._jobs(method, parts, body)
        if parts and parts[0] == "sessions":
            return self._sessions(method, parts, body)
        return 404, {"errors": [{"message": f"no route {method} {path}"}]}

    def _jobs(self, method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
        if method == "POST" and len(parts) == 1:
            try:
                req = json.loads(body or b"{}")
            except ValueError:
                return 400, {"errors": [{"message": "request body is not JSON"}]}
            if req.get("backend") not in (None, self.name):
                return 400, {"errors": [{"message": f"backend {req.get('backend')} not found"}]}
            sid = req.get("session_id")
            with self._lock:
                if sid is not None and sid not in self.sim.sessions:
                    return 400, {"errors": [{"message": f"session {sid} not found"}]}
                try:
                    job = self.sim.submit(session_id=sid, service=self._service(req),
                                          program=str(req.get("program_id") or "sampler"))
                except SimError as err:
                    return 400, {"errors": [{"message": str(err), "code": 1217}]}
                rec = {"id": job.id, "backend": self.name}
                if sid is not None:
                    rec["session_id"] = sid
            return 200, rec
        jid = parts[1] if len(parts) > 1 else ""
        with self._lock:
            if jid not in self.sim.jobs:
                return 404, {"errors": [{"message": f"job {jid} not found", "code": 1291}]}
            if method == "GET" and len(parts) == 2:
                return 200, self._job_json(self.sim.job(jid))
            if (method == "POST" and parts[2:] == ["cancel"]) or \
                    (method == "DELETE" and len(parts) == 2):
                self.sim.cancel(jid)
                return 204, None
            job = self.sim.job(jid)
            if method == "GET" and parts[2:] == ["results"]:
                if job.state != "Completed":
                    return 400, {"errors": [{"message": f"job {jid} is {job.state}"}]}
                # No circuit runs: the stand-in simulates the queue, not the device.
                # qrmi 0.26 reads the body as a JSON *string* holding the result JSON.
                return 200, json.dumps({"results": [{"data": {}, "metadata": {"standin": True}}],
                                        "metadata": {"version": 2, "job_id": jid}})
            if method == "GET" and parts[2:] == ["logs"]:
                return 200, f"{job.id} {job.state}\n"
        return 404, {"errors": [{"message": f"no route {method} /{'/'.join(parts)}"}]}

    def _service(self, req: dict[str, Any]) -> float:
        """Model seconds a job runs: ``task_service`` per 100 shots (at least 1 s), so that
        a 1-shot anchor is short; ``task_service`` when the job names no shots."""
        params = req.get("params") or {}
        shots = params.get("shots") if isinstance(params, dict) else None
        base = float(self.sim.params["task_service"])
        if not isinstance(shots, (int, float)) or shots <= 0:
            return base
        return max(1.0, base * shots / 100)

    def _sessions(self, method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
        now = time.time()
        if method == "POST" and len(parts) == 1:
            if self.knobs()["refuse_sessions"]:
                with self._lock:
                    self.sessions_log.append({"op": "acquire-refused", "time": now})
                return 403, {"errors": [{"message": "session quota exceeded", "code": 1352}]}
            req = json.loads(body or b"{}")
            with self._lock:
                # unguessable, like a real session id: tests look for it in instance dumps
                sid = f"standin-session-{next(self._ids)}-{secrets.token_hex(6)}"
                sess = self.sim.open_session(req.get("backend_name") or req.get("backend"),
                                             mode=req.get("mode", "dedicated"),
                                             max_ttl=req.get("max_ttl"), sid=sid)
                self.sessions_log.append({"op": "acquire", "session_id": sid, "time": now,
                                          "model_time": self.sim.now, "backend": sess.backend})
                return 200, self._session_json(sess)
        sid = parts[1] if len(parts) > 1 else ""
        with self._lock:
            if sid not in self.sim.sessions:
                return 404, {"errors": [{"message": f"session {sid} not found"}]}
            if method == "GET" and len(parts) == 2:
                return 200, self._session_json(self.sim.session(sid))
            closing = method == "PATCH" and len(parts) == 2
            if closing or (method == "DELETE" and parts[2:] == ["close"]):
                how = "close" if method == "PATCH" else "cancel"
                sess = self.sim.close_session(sid, cancel=not closing)
                self.sessions_log.append({"op": "release", "session_id": sid, "how": how,
                                          "time": now, "model_time": self.sim.now,
                                          "backend": sess.backend})
                return 204, None
        return 404, {"errors": [{"message": f"no route {method} /{'/'.join(parts)}"}]}


def _make_handler(server: QCSStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # the structured log in server.requests replaces stderr noise

        def _reply(self, code: int, payload: Any, raw: bytes | None = None) -> None:
            data = raw if raw is not None else (b"" if payload is None
                                                else json.dumps(payload).encode())
            self.send_response(code)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test); nothing to tell it

        def _control(self, method: str, path: str, body: bytes) -> None:
            if path == "/_control" and method == "GET":
                return self._reply(200, server.knobs())
            if path == "/_control" and method == "POST":
                try:
                    return self._reply(200, server.set(**json.loads(body or b"{}")))
                except (ValueError, TypeError) as err:
                    return self._reply(400, {"error": str(err)})
            if path == "/_log" and method == "GET":
                return self._reply(200, server.log())
            if path == "/_reset" and method == "POST":
                server.reset()
                return self._reply(200, {"ok": True})
            if path == "/_restart" and method == "POST":
                server.restart()
                return self._reply(200, {"ok": True})
            return self._reply(404, {"error": f"no control route {method} {path}"})

        def _handle(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if url.path.startswith("/_"):
                return self._control(self.command, url.path, body)
            with server._lock:
                server.requests.append({"method": self.command, "path": url.path,
                                        "query": url.query, "time": time.time(),
                                        "authorized": self.headers.get("Authorization", "")
                                        .startswith("Bearer standin-token-")})
            knobs = server.knobs()
            if knobs["slow"]:
                server._stopping.wait(float(knobs["slow"]))
            if knobs["down"]:
                return self._reply(503, {"errors": [{"message": "service unavailable"}]})
            if knobs["garbage"] and url.path != "/identity/token":
                return self._reply(200, None, raw=b'{"devices": [{"name": "ibm_fez", "stat')
            code, payload = server.handle(self.command, url.path,
                                          urllib.parse.parse_qs(url.query), body,
                                          self.headers.get("Authorization", ""))
            self._reply(code, payload)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

    return Handler


class QCSControl:
    """Client for the control endpoints of an out-of-process stand-in."""

    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read() or b"null")

    def set(self, **knobs: Any) -> dict[str, Any]:
        return self._call("POST", "/_control", knobs)

    def knobs(self) -> dict[str, Any]:
        return self._call("GET", "/_control")

    def log(self) -> dict[str, Any]:
        return self._call("GET", "/_log")

    def reset(self) -> None:
        self._call("POST", "/_reset", {})

    def restart(self) -> None:
        self._call("POST", "/_restart", {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Loopback stand-in for IBM QCS + IAM.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--backend", default="fake_fez", help="qiskit-ibm-runtime fake backend")
    parser.add_argument("--name", help="backend name to serve (default: the fake's real name)")
    parser.add_argument("--queue-length", type=int, default=0)
    parser.add_argument("--offline", action="store_true")
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--garbage", action="store_true")
    for knob, default in SIM_DEFAULTS.items():
        parser.add_argument("--" + knob.replace("_", "-"), type=type(default), default=default,
                            help=f"simulation knob (default {default})")
    args = parser.parse_args(argv)
    server = QCSStandIn(args.backend, name=args.name, host=args.host, port=args.port,
                        queue_length=args.queue_length, offline=args.offline, slow=args.slow,
                        garbage=args.garbage,
                        **{k: getattr(args, k) for k in SIM_DEFAULTS})
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    server.start()
    print(server.url, flush=True)  # first line of stdout: how a parent process finds us
    print(f"serving backend {server.name}; control: POST {server.url}/_control, "
          f"GET {server.url}/_log", file=sys.stderr, flush=True)
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
