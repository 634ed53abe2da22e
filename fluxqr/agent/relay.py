"""The credential relay: a loopback endpoint of the credential gateway on every node.

The agent (:mod:`fluxqr.agent.module`, rank 0) runs the credential gateway
(:mod:`fluxqr.agent.gateway`) on loopback. Hybrid tasks on other nodes reach it through
this broker module, loaded on every other rank (``modules/fluxqr-relay.py`` from
``fluxqr flux-install``): it listens on ``127.0.0.1`` and a free port of its node, reads
each request within the gateway's own bounds (:class:`~fluxqr.agent.gateway.BoundedHandler`),
looks the caller's uid up in ``/proc/net/tcp`` (:func:`~fluxqr.agent.gateway.peer_uid`)
and forwards ``{uid, method, target, headers, body}`` to the agent's owner-only
``fluxqr.relay`` service over the Flux overlay (authenticated and encrypted by the
overlay's CURVE keys), then hands the gateway's answer back to the task. Tokens thus
never cross the network in clear text, and the owner check by socket holds on every node.

The agent asks a node's relay where it listens (``fluxqr-relay.info``) when a job shell
of that node asks for its session environment. Both services are owner-only: a user can
neither pose as a node's relay nor forward requests in another uid's name.

Flux handles are not thread-safe: HTTP handler threads never touch the module's handle.
They queue their request for the reactor thread (a pipe wakes it), which sends the RPC
and completes the handler's future from the RPC's continuation.

A relay that cannot start (no port, no loopback) stays loaded and idle, says why in one
line of ``flux dmesg`` and never stops its broker: jobs on that node then get no
credential and a one-line notice in their output. Module argument: ``port=N`` (default 0,
a free port).
"""

from __future__ import annotations

import base64
import errno
import os
import queue
import signal
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import ThreadingHTTPServer
from typing import Any

from flux.brokermod import BrokerModule, request_handler
from flux.constants import FLUX_POLLIN

from fluxqr.agent.gateway import READ_TIMEOUT, BoundedHandler, peer_uid

#: the agent's service for relayed requests
FORWARD_TOPIC = "fluxqr.relay"
#: seconds a task waits for the agent's answer (the gateway's own vendor calls are bounded
#: by the device's timeout; this only frees a handler thread if the agent never answers)
ANSWER_TIMEOUT = 300.0
#: request headers never forwarded: hop-by-hop, or about the task's connection to the relay
HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization",
                         "te", "trailer", "transfer-encoding", "upgrade", "expect"})
#: the most header bytes forwarded (http.server already allows at most 100 headers)
MAX_HEADER_BYTES = 256 * 1024


def encode_request(uid: int, method: str, target: str, headers: Any, body: bytes
                   ) -> dict[str, Any]:
    """The ``fluxqr.relay`` payload for one request (the body base64: JSON is text)."""
    pairs = [[str(k), str(v)] for k, v in headers.items() if k.lower() not in HOP_HEADERS]
    return {"uid": uid, "method": method, "target": target, "headers": pairs,
            "body": base64.b64encode(body).decode()}


def decode_request(payload: Any) -> tuple[int, str, str, Any, bytes]:
    """(uid, method, target, headers, body) from a ``fluxqr.relay`` request, checked as
    strictly as the relay reads it; ValueError naming what is wrong."""
    import binascii
    from http.client import HTTPMessage

    from fluxqr.agent.gateway import MAX_BODY

    if not isinstance(payload, dict):
        raise ValueError("payload is not an object")
    uid, method, target = payload.get("uid"), payload.get("method"), payload.get("target")
    if not isinstance(uid, int) or isinstance(uid, bool) or not 0 <= uid < 2**32:
        raise ValueError("bad uid")
    if not isinstance(method, str) or not method.isalpha() or not 0 < len(method) <= 20:
        raise ValueError("bad method")
    if not isinstance(target, str) or not target.startswith("/") or len(target) > 65536:
        raise ValueError("bad target")
    pairs, text = payload.get("headers"), payload.get("body")
    if not isinstance(pairs, list) or len(pairs) > 200 or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
            for p in pairs) or sum(len(k) + len(v) for k, v in pairs) > MAX_HEADER_BYTES:
        raise ValueError("bad headers")
    if not isinstance(text, str) or len(text) > (MAX_BODY // 3 + 1) * 4:
        raise ValueError("bad body")
    try:
        body = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("bad body") from None
    headers = HTTPMessage()
    for key, value in pairs:
        headers[key] = value  # appends: repeated headers stay as the task sent them
    return uid, method, target, headers, body


def encode_reply(status: int, data: bytes, ctype: str | None, extra: dict[str, str]
                 ) -> dict[str, Any]:
    """The ``fluxqr.relay`` response for the gateway's answer."""
    headers = [[k, v] for k, v in extra.items()]
    if ctype:
        headers.append(["Content-Type", ctype])
    return {"status": status, "headers": headers, "body": base64.b64encode(data).decode()}


def decode_reply(payload: Any) -> tuple[int, bytes, str | None, dict[str, str]]:
    """The gateway's answer from a ``fluxqr.relay`` response; ValueError if malformed."""
    if not isinstance(payload, dict) or not isinstance(payload.get("status"), int) or \
            not isinstance(payload.get("headers"), list):
        raise ValueError("malformed answer")
    headers = {str(k): str(v) for k, v in payload["headers"]}
    ctype = headers.pop("Content-Type", None)
    return payload["status"], base64.b64decode(str(payload.get("body") or "")), ctype, headers


def _port(args: tuple[str, ...]) -> int:
    """The ``port=N`` module argument (default 0: a free port); ValueError if bad."""
    port = 0
    for arg in args:
        key, _, value = arg.partition("=")
        if key != "port" or not value.isdigit() or int(value) > 65535:
            raise ValueError(f"bad argument {arg[:40]!r} (the relay takes port=N only)")
        port = int(value)
    return port


class Relay:
    """The loopback HTTP server of one node; ``forward(payload)`` gives a Future of the
    agent's answer (a ``fluxqr.relay`` response payload, or OSError)."""

    def __init__(self, forward: Any, host: str = "127.0.0.1", port: int = 0,
                 timeout: float = READ_TIMEOUT):
        self.forward = forward
        relay = self

        class Handler(BoundedHandler):
            read_timeout = timeout  # the gateway's own bound on reading a request

            def answer(self, body: bytes) -> tuple[int, bytes, str | None, dict[str, str]]:
                return relay.answer(self, body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a dropped connection is the task's business, not the broker log's

        self._server = Server((host, port), Handler)
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="fluxqr-relay", daemon=True)
        self._thread.start()

    def answer(self, req: BoundedHandler, body: bytes
               ) -> tuple[int, bytes, str | None, dict[str, str]]:
        """(A handler thread) forward one request to the agent and wait for its answer."""
        uid = peer_uid(req.client_address, req.connection.getsockname())
        if uid is None:  # loopback only: an unknown caller is never forwarded
            return req.error_reply(403, "AccessDenied", "fluxqr relay: caller not identified")
        payload = encode_request(uid, req.command, req.path, req.headers, body)
        if sum(len(k) + len(v) for k, v in payload["headers"]) > MAX_HEADER_BYTES:
            return req.error_reply(431, "InvalidArgument", "request headers too large")
        try:
            return decode_reply(self.forward(payload).result(ANSWER_TIMEOUT))
        except FutureTimeout:
            return req.error_reply(504, "ServiceUnavailable",
                                   "fluxqr relay: the agent did not answer")
        except OSError as exc:
            why = "the fluxqr agent is not running" if exc.errno == errno.ENOSYS else \
                f"the fluxqr agent refused: {exc.strerror or exc}"
            return req.error_reply(503, "ServiceUnavailable", f"fluxqr relay: {why}")
        except (ValueError, TypeError):
            return req.error_reply(502, "ServiceUnavailable",
                                   "fluxqr relay: malformed answer from the agent")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class RelayModule(BrokerModule):
    """The broker module (see the module docstring)."""

    def __init__(self, h, *args):
        super().__init__(h, *args)
        self.rank = h.get_rank()
        self.relay: Relay | None = None
        self.error: str | None = None
        self._sends: queue.SimpleQueue = queue.SimpleQueue()
        self._rfd, self._wfd = os.pipe()
        self._fdw = h.fd_watcher_create(self._rfd, self._on_sends, events=FLUX_POLLIN)
        self._fdw.start()
        self._sigterm = h.signal_watcher_create(signal.SIGTERM, lambda *_: self.stop())
        self._sigterm.start()
        try:
            self.relay = Relay(self._submit, port=_port(args))
        except Exception as exc:  # noqa: BLE001 - never stops the broker: idle, says why
            self.error = f"{type(exc).__name__}: {exc}"
            self.log.error(f"fluxqr: credential relay not started on rank {self.rank}: "
                           f"{self.error} (tasks on this node get no vendor credential)")
            return
        self.log.info(f"fluxqr: credential relay at {self.relay.url}")

    @request_handler("info")
    def _info(self, msg) -> None:
        """Where this node's relay listens (owner-only: the agent asks it for each job
        shell of this node, so a relay reloaded on a new port is never stale)."""
        self.handle.respond(msg, {"rank": self.rank,
                                  "url": self.relay.url if self.relay else None,
                                  "error": self.error})

    # -- forwarding: handler threads -> the reactor -> the agent ---------------------------

    def _submit(self, payload: dict[str, Any]) -> Future:
        """(A handler thread) queue one request for the reactor thread."""
        future: Future = Future()
        self._sends.put((payload, future))
        os.write(self._wfd, b"x")
        return future

    def _on_sends(self, *_args) -> None:
        os.read(self._rfd, 4096)
        while not self._sends.empty():
            payload, future = self._sends.get()
            try:
                fut = self.handle.rpc(FORWARD_TOPIC, payload, nodeid=0)
            except OSError as exc:
                future.set_exception(exc)
                continue
            fut.then(self._answered, future)

    def _answered(self, fut: Any, future: Future) -> None:
        try:
            future.set_result(fut.get())
        except OSError as exc:
            future.set_exception(exc)
        except Exception as exc:  # noqa: BLE001 - the waiting task gets a 502, not a hang
            future.set_exception(ValueError(type(exc).__name__))

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.relay is not None:
                self.relay.stop()
            for watcher in (self._fdw, self._sigterm):
                watcher.stop()
            os.close(self._rfd)
            os.close(self._wfd)
