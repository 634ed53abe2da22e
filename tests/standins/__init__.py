"""Loopback stand-ins for vendor services the adapters talk to.

Only the far end of a connection is faked: the real vendor clients (qrmi, …) run
unchanged and reach these servers over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LoopbackServer:
    """A stand-in's HTTP server on a thread: start it (or use it as a context manager),
    then point the real client at :attr:`url`."""

    def _serve(self, host: str, port: int, handler: type[BaseHTTPRequestHandler],
               name: str) -> None:
        self._server = ThreadingHTTPServer((host, port), handler)
        # A stalled reply must not keep the test process alive or block close().
        self._server.daemon_threads = True
        self._name = name
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Any:
        self._thread = threading.Thread(target=self._server.serve_forever, name=self._name,
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
