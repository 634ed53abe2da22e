"""A loopback stand-in for Amazon Braket's REST API and the bit of S3 its SDK reads.

It speaks what amazon-braket-sdk 1.127 (through boto3/botocore 1.44) calls to run a
circuit on a device and fetch the result, on one address for both services (point
clients at it with ``AWS_ENDPOINT_URL_BRAKET`` and ``AWS_ENDPOINT_URL_S3``; S3 is then
addressed path-style, ``/<bucket>/<key>``)::

    Braket (rest-json, signing name "braket")
    GET  /device/{deviceArn}                   GetDevice (capabilities of the simulator)
    POST /devices                              SearchDevices
    POST /quantum-task                         CreateQuantumTask (201)
    GET  /quantum-task/{quantumTaskArn}        GetQuantumTask (?additionalAttributeNames=QueueInfo)
    PUT  /quantum-task/{quantumTaskArn}/cancel CancelQuantumTask
    POST /quantum-tasks                        SearchQuantumTasks (deviceArn/status filters)
    S3 (rest-xml, signing name "s3")
    GET|HEAD /{bucket}/{key}                   GetObject / HeadObject
    GET  /{bucket}?list-type=2&prefix=…        ListObjectsV2

Every request must carry a valid AWS Signature V4 by one of the keys it was given
(``keys={access key id: secret}``, the "site" account), checked with botocore's signer
the way AWS does: no signature 403 ``MissingAuthenticationTokenException``, an unknown key
403 ``UnrecognizedClientException`` (S3: ``InvalidAccessKeyId``), a wrong signature 403
``InvalidSignatureException`` (S3: ``SignatureDoesNotMatch``).

Tasks are honest: each runs its OpenQASM program on Braket's local state-vector simulator
(``braket.default_simulator``) in a worker thread; the result is written to the task's
``outputS3Bucket``/``outputS3KeyPrefix/<task id>/results.json`` with the simulator's
execution time in ``additionalMetadata.simulatorMetadata.executionDuration`` (ms), as
Braket's managed simulators report it. Only buckets in ``buckets`` exist.

:meth:`BraketStandIn.billing` is the vendor's billing log: one entry per task (``arn``,
``device``, ``shots``, ``status``, ``created``, ``ended``, ``execution_ms``,
``access_key``). :meth:`BraketStandIn.log` lists every request with the key that signed
it and whether it was accepted. Test-only routes (unsigned): ``GET /_log``, ``POST /_reset``.

Out of process: ``python -m tests.standins.braket_server --port 8766 --key AKID:SECRET``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any
from xml.sax.saxutils import escape

from fluxqr.agent import sigv4

try:
    from . import LoopbackServer
except ImportError:  # imported as ``standins.braket_server`` with tests/ on sys.path
    from standins import LoopbackServer  # type: ignore[no-redef]

SV1 = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"
ACCOUNT = "123456789012"
DEFAULT_BUCKET = f"amazon-braket-us-east-1-{ACCOUNT}"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
#: Braket's error names for the signature errors (S3 uses the plain codes)
BRAKET_ERRORS = {"MissingAuthenticationToken": "MissingAuthenticationTokenException",
                 "InvalidClientTokenId": "UnrecognizedClientException",
                 "SignatureDoesNotMatch": "InvalidSignatureException",
                 "IncompleteSignature": "IncompleteSignatureException",
                 "RequestTimeTooSkewed": "InvalidSignatureException",
                 "XAmzContentSHA256Mismatch": "InvalidSignatureException"}


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    stamp = _dt.datetime.fromtimestamp(t, _dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class BraketStandIn(LoopbackServer):
    """The server; ``devices`` maps device ARNs to a local simulator name (``braket_sv``)."""

    def __init__(self, keys: dict[str, str], *, devices: dict[str, str] | None = None,
                 buckets: tuple[str, ...] = (DEFAULT_BUCKET,), host: str = "127.0.0.1",
                 port: int = 0, region: str = "us-east-1", task_delay: float = 0.0):
        self.keys = dict(keys)
        self.devices = dict(devices or {SV1: "braket_sv"})
        self.region = region
        self.task_delay = task_delay  # seconds a task stays QUEUED (to test cancel)
        self._lock = threading.Lock()
        self.objects: dict[str, dict[str, bytes]] = {b: {} for b in buckets}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self._caps: dict[str, str] = {}
        self._serve(host, port, _make_handler(self), "braket-standin")

    def env(self) -> dict[str, str]:
        """The variables pointing boto3 (and the Braket SDK) here."""
        return {"AWS_ENDPOINT_URL_BRAKET": self.url, "AWS_ENDPOINT_URL_S3": self.url}

    def billing(self) -> list[dict[str, Any]]:
        """One entry per task, as the vendor bills it."""
        with self._lock:
            return self.billing_unlocked()

    def log(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": list(self.requests), "billing": self.billing_unlocked()}

    def billing_unlocked(self) -> list[dict[str, Any]]:
        return [{k: t[k] for k in ("arn", "device", "shots", "status", "created", "ended",
                                   "execution_ms", "access_key")} for t in self.tasks.values()]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def wait(self, arn: str, timeout: float = 60.0) -> str:
        """Block until the task is terminal; its status."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                status = self.tasks[arn]["status"]
            if status in TERMINAL:
                return status
            time.sleep(0.05)
        return status

    # -- Braket -------------------------------------------------------------------------

    def capabilities(self, arn: str) -> str:
        if arn not in self._caps:
            from braket.devices import LocalSimulator

            self._caps[arn] = LocalSimulator(self.devices[arn]).properties.json()
        return self._caps[arn]

    def braket(self, method: str, parts: list[str], query: dict[str, list[str]],
               body: bytes, akid: str) -> tuple[int, Any]:
        if method == "GET" and len(parts) == 2 and parts[0] == "device":
            arn = parts[1]
            if arn not in self.devices:
                return 404, ("ResourceNotFoundException", f"Braket device '{arn}' not found")
            return 200, self._device(arn, full=True)
        if method == "POST" and parts == ["devices"]:
            return 200, {"devices": [self._device(a, full=False) for a in self.devices]}
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            return 400, ("ValidationException", "request body is not JSON")
        if method == "POST" and parts == ["quantum-task"]:
            return self._create(req, akid)
        if method == "GET" and len(parts) == 2 and parts[0] == "quantum-task":
            with self._lock:
                task = self.tasks.get(parts[1])
                if task is None:
                    return 404, ("ResourceNotFoundException", "quantum task not found")
                return 200, self._task_view(task, "QueueInfo" in
                                            query.get("additionalAttributeNames", []))
        if method == "PUT" and len(parts) == 3 and parts[0] == "quantum-task" and \
                parts[2] == "cancel":
            with self._lock:
                task = self.tasks.get(parts[1])
                if task is None:
                    return 404, ("ResourceNotFoundException", "quantum task not found")
                if task["status"] not in TERMINAL:
                    task["status"] = "CANCELLING"
                    task["cancel"] = True
                return 200, {"quantumTaskArn": task["arn"],
                             "cancellationStatus": "CANCELLED" if task["status"] == "CANCELLED"
                             else "CANCELLING"}
        if method == "POST" and parts == ["quantum-tasks"]:
            return 200, self._search(req)
        return 404, ("ResourceNotFoundException", f"no route {method} /{'/'.join(parts)}")

    def _device(self, arn: str, full: bool) -> dict[str, Any]:
        out = {"deviceArn": arn, "deviceName": arn.rsplit("/", 1)[-1].upper(),
               "providerName": "Amazon Braket",
               "deviceType": "SIMULATOR" if "quantum-simulator" in arn else "QPU",
               "deviceStatus": "ONLINE"}
        if full:
            with self._lock:
                queued = sum(1 for t in self.tasks.values()
                             if t["device"] == arn and t["status"] == "QUEUED")
            out["deviceCapabilities"] = self.capabilities(arn)
            out["deviceQueueInfo"] = [
                {"queue": "QUANTUM_TASKS_QUEUE", "queueSize": str(queued),
                 "queuePriority": "Normal"},
                {"queue": "QUANTUM_TASKS_QUEUE", "queueSize": "0", "queuePriority": "Priority"},
                {"queue": "JOBS_QUEUE", "queueSize": "0"}]
        return out

    def _create(self, req: dict[str, Any], akid: str) -> tuple[int, Any]:
        missing = [k for k in ("clientToken", "deviceArn", "shots", "outputS3Bucket",
                               "outputS3KeyPrefix", "action") if k not in req]
        if missing:
            return 400, ("ValidationException", f"missing {', '.join(missing)}")
        arn = req["deviceArn"]
        if arn not in self.devices:
            return 404, ("ResourceNotFoundException", f"Braket device '{arn}' not found")
        if req["outputS3Bucket"] not in self.objects:
            return 400, ("ValidationException", f"Caller doesn't have access to "
                         f"amzn-braket-{req['outputS3Bucket']} or it doesn't exist.")
        try:
            action = json.loads(req["action"])
            shots = int(req["shots"])
        except (ValueError, TypeError):
            return 400, ("ValidationException", "action is not a JSON program")
        if action.get("braketSchemaHeader", {}).get("name") != "braket.ir.openqasm.program":
            return 400, ("ValidationException", "only OpenQASM programs are supported")
        tid = str(uuid.uuid4())
        region = self.region
        task = {"arn": f"arn:aws:braket:{region}:{ACCOUNT}:quantum-task/{tid}", "id": tid,
                "device": arn, "shots": shots, "status": "QUEUED", "created": time.time(),
                "ended": None, "execution_ms": None, "access_key": akid,
                "bucket": req["outputS3Bucket"],
                "directory": f"{req['outputS3KeyPrefix'].rstrip('/')}/{tid}",
                "deviceParameters": req.get("deviceParameters") or "{}",
                "tags": req.get("tags") or {}, "action": action, "cancel": False,
                "failureReason": None}
        with self._lock:
            self.tasks[task["arn"]] = task
        threading.Thread(target=self._run, args=(task,), daemon=True).start()
        return 201, {"quantumTaskArn": task["arn"]}

    def _run(self, task: dict[str, Any]) -> None:
        if self.task_delay:
            time.sleep(self.task_delay)
        with self._lock:
            if task["cancel"]:
                task["status"], task["ended"] = "CANCELLED", time.time()
                return
            task["status"] = "RUNNING"
        try:
            from braket.default_simulator import StateVectorSimulator
            from braket.ir.openqasm import Program

            started = time.perf_counter()
            raw = StateVectorSimulator().run_openqasm(Program.parse_obj(task["action"]),
                                                      shots=task["shots"])
            ms = max(1, round((time.perf_counter() - started) * 1000))
            result = json.loads(raw.json(exclude_none=True))
        except Exception as exc:  # noqa: BLE001 - a bad program is a FAILED task, as on AWS
            with self._lock:
                task["status"], task["ended"] = "FAILED", time.time()
                task["failureReason"] = f"{type(exc).__name__}: {exc}"[:500]
            return
        result["taskMetadata"].update({"id": task["arn"], "deviceId": task["device"],
                                       "shots": task["shots"],
                                       "createdAt": _iso(task["created"])})
        result["additionalMetadata"]["simulatorMetadata"] = {
            "braketSchemaHeader": {"name": "braket.task_result.simulator_metadata",
                                   "version": "1"},
            "executionDuration": ms}
        with self._lock:
            ended = time.time()
            result["taskMetadata"]["endedAt"] = _iso(ended)
            self.objects[task["bucket"]][f"{task['directory']}/results.json"] = \
                json.dumps(result).encode()
            task.update(status="COMPLETED", ended=ended, execution_ms=ms)

    def _task_view(self, task: dict[str, Any], queue_info: bool) -> dict[str, Any]:
        out = {"quantumTaskArn": task["arn"], "status": task["status"],
               "deviceArn": task["device"], "deviceParameters": task["deviceParameters"],
               "shots": task["shots"], "outputS3Bucket": task["bucket"],
               "outputS3Directory": task["directory"], "createdAt": _iso(task["created"]),
               "tags": task["tags"]}
        if task["ended"] is not None:
            out["endedAt"] = _iso(task["ended"])
        if task["failureReason"]:
            out["failureReason"] = task["failureReason"]
        if task["status"] == "COMPLETED":
            out["numSuccessfulShots"] = task["shots"]
        if queue_info:
            pos = "None" if task["status"] != "QUEUED" else "1"
            out["queueInfo"] = {"queue": "QUANTUM_TASKS_QUEUE", "position": pos,
                                "queuePriority": "Normal"}
        return out

    def _search(self, req: dict[str, Any]) -> dict[str, Any]:
        filters = req.get("filters") or []
        with self._lock:
            tasks = list(self.tasks.values())
        for f in filters:
            name, values = f.get("name"), set(f.get("values") or [])
            field = {"deviceArn": "device", "status": "status", "quantumTaskArn": "arn"}.get(name)
            if field:
                tasks = [t for t in tasks if t[field] in values]
        return {"quantumTasks": [{"quantumTaskArn": t["arn"], "status": t["status"],
                                  "deviceArn": t["device"], "shots": t["shots"],
                                  "outputS3Bucket": t["bucket"],
                                  "outputS3Directory": t["directory"],
                                  "createdAt": _iso(t["created"]),
                                  **({"endedAt": _iso(t["ended"])} if t["ended"] else {})}
                                 for t in tasks]}

    # -- S3 -------------------------------------------------------------------------------

    def s3(self, method: str, path: str, query: dict[str, list[str]]
           ) -> tuple[int, bytes, str]:
        bucket, _, key = path.lstrip("/").partition("/")
        bucket, key = urllib.parse.unquote(bucket), urllib.parse.unquote(key)
        with self._lock:
            objects = self.objects.get(bucket)
            if objects is None:
                return _s3_error(404, "NoSuchBucket", "The specified bucket does not exist")
            if method in ("GET", "HEAD") and key:
                data = objects.get(key)
                if data is None:
                    return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
                return 200, data, "application/json"
            if method == "GET" and not key and query.get("list-type") == ["2"]:
                prefix = (query.get("prefix") or [""])[0]
                keys = sorted(k for k in objects if k.startswith(prefix))
                rows = "".join(f"<Contents><Key>{escape(k)}</Key><Size>{len(objects[k])}"
                               f"</Size><StorageClass>STANDARD</StorageClass></Contents>"
                               for k in keys)
                xml = ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns='
                       '"http://s3.amazonaws.com/doc/2006-03-01/">'
                       f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>"
                       f"<KeyCount>{len(keys)}</KeyCount><MaxKeys>1000</MaxKeys>"
                       f"<IsTruncated>false</IsTruncated>{rows}</ListBucketResult>")
                return 200, xml.encode(), "application/xml"
        return _s3_error(405, "MethodNotAllowed", "not supported by the stand-in")


def _s3_error(status: int, code: str, message: str) -> tuple[int, bytes, str]:
    xml = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
           f"<Message>{escape(message)}</Message></Error>")
    return status, xml.encode(), "application/xml"


def _make_handler(srv: BraketStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def _send(self, status: int, data: bytes, ctype: str,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _json(self, status: int, payload: Any) -> None:
            if isinstance(payload, tuple):  # (error type, message)
                kind, message = payload
                return self._send(status, json.dumps({"message": message}).encode(),
                                  "application/json", {"x-amzn-ErrorType": kind})
            return self._send(status, json.dumps(payload).encode(), "application/json")

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
            if url.path == "/_log" and self.command == "GET":
                return self._json(200, srv.log())
            if url.path == "/_reset" and self.command == "POST":
                srv.reset()
                return self._json(200, {})
            entry: dict[str, Any] = {"method": self.command, "path": url.path,
                                     "access_key": None, "authorized": False}
            with srv._lock:
                srv.requests.append(entry)
            try:
                scope = sigv4.verify(self.command, f"http://{self.headers.get('Host')}"
                                     f"{self.path}", self.headers, body, srv.keys.get)
            except sigv4.SignatureError as exc:
                guess = "s3" if "/s3/" in str(self.headers.get("Authorization")) else "braket"
                if guess == "s3":
                    return self._send(*_s3_error(exc.status, exc.code, str(exc)))
                return self._json(exc.status, (BRAKET_ERRORS.get(exc.code, exc.code),
                                               str(exc)))
            entry.update(access_key=scope.access_key, authorized=True, service=scope.service)
            if scope.service == "s3":
                return self._send(*srv.s3(self.command, url.path, query))
            if scope.service != "braket":
                return self._json(400, ("UnknownOperationException", scope.service))
            parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
            status, payload = srv.braket(self.command, parts, query, body, scope.access_key)
            return self._json(status, payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

    return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8766)
    ap.add_argument("--key", action="append", required=True, help="ACCESS_KEY_ID:SECRET")
    args = ap.parse_args(argv)
    keys = dict(k.split(":", 1) for k in args.key)
    srv = BraketStandIn(keys, host=args.host, port=args.port).start()
    print(f"braket stand-in at {srv.url}", flush=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
