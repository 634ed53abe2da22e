"""Keep secret values out of what vendor SDKs print or log.

Adapters scrub the errors they raise, but an SDK may also log through Python's
``logging`` (qrmi's Python layer logs as ``qrmi``) or write to file descriptor 2
directly from native code (qrmi is Rust: its ``env_logger`` output and panic
messages). :class:`ScrubFilter` covers the first; :class:`StderrScrubber` the
second, by putting a pipe in front of fd 2 and copying it line by line to the
real stderr with every secret replaced by ``***``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator

from fluxqr.devices.base import scrub

#: Loggers of vendor SDKs that fluxqr drives (their records pass a ScrubFilter).
SDK_LOGGERS = ("qrmi", "qiskit_ibm_runtime", "braket", "urllib3", "requests")


class ScrubFilter(logging.Filter):
    """A logging filter that replaces secret values in a record's final message."""

    def __init__(self, secrets: Callable[[], Iterable[str]]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is passed through as is
            return True
        clean = scrub(message, self.secrets())
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_log_filters(secrets: Callable[[], Iterable[str]]) -> ScrubFilter:
    """Scrub every record of fluxqr's and the SDKs' loggers (also on their handlers)."""
    flt = ScrubFilter(secrets)
    for name in ("fluxqr", *SDK_LOGGERS):
        logger = logging.getLogger(name)
        if not any(isinstance(f, ScrubFilter) for f in logger.filters):
            logger.addFilter(flt)
    return flt


class StderrScrubber:
    """Route file descriptor 2 through a pipe whose lines are scrubbed of secrets.

    Native code writing to fd 2 (Rust's ``eprintln!``, ``env_logger``, panics) then
    reaches the terminal or log without secret values. Lines are copied as they
    complete; a partial line is flushed once it is 64 KiB or at :meth:`close`.
    """

    MAX_PARTIAL = 64 * 1024

    def __init__(self, secrets: Callable[[], Iterable[str]], fd: int = 2):
        self.secrets = secrets
        self.fd = fd
        self._saved = os.dup(fd)
        rfd, wfd = os.pipe()
        os.dup2(wfd, fd)
        os.close(wfd)
        self._rfd = rfd
        self._thread = threading.Thread(target=self._pump, daemon=True,
                                        name="fluxqr-stderr-scrub")
        self._thread.start()

    def _write(self, data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        out = scrub(text, self.secrets()).encode()
        while out:
            out = out[os.write(self._saved, out):]

    def _pump(self) -> None:
        buf = b""
        try:
            while True:
                chunk = os.read(self._rfd, 65536)
                if not chunk:
                    break
                buf += chunk
                if b"\n" in buf:
                    head, _, buf = buf.rpartition(b"\n")
                    self._write(head + b"\n")
                if len(buf) >= self.MAX_PARTIAL:
                    self._write(buf)
                    buf = b""
        except Exception:  # noqa: BLE001 - never let stderr writers block on a full pipe
            with contextlib.suppress(OSError):
                os.dup2(self._saved, self.fd)
        if buf:
            with contextlib.suppress(Exception):
                self._write(buf)

    def close(self) -> None:
        """Put the real stderr back and flush what is left."""
        with contextlib.suppress(OSError):
            os.dup2(self._saved, self.fd)  # closes the pipe's write end held by fd 2
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            os.close(self._rfd)
        with contextlib.suppress(OSError):
            os.close(self._saved)


@contextlib.contextmanager
def scrubbed_stderr(secrets: Callable[[], Iterable[str]]) -> Iterator[None]:
    """Scrub fluxqr's and the SDKs' logs and fd 2 for the duration of the block."""
    install_log_filters(secrets)
    import sys

    with contextlib.suppress(Exception):
        sys.stderr.flush()
    scrubber = StderrScrubber(secrets)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        scrubber.close()


def inventory_secrets(inventory: Iterable) -> Callable[[], list[str]]:
    """A callable giving the current secret values of an inventory's credentials."""

    def values() -> list[str]:
        return [os.environ[v] for d in inventory for v in d.credentials.values()
                if os.environ.get(v)]

    return values
