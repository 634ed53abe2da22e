"""Small file helpers shared by the graph, refresh and jobspec modules."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from fluxqr.errors import FluxqrError


def atomic_write(path: str | os.PathLike, writer: Callable[[IO[str]], None]) -> None:
    """Write a file through ``writer`` so that readers see the old or the new file, never half.

    The data goes to a temporary file in the same directory, is fsynced, then renamed over
    ``path``. On any error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fp:
            writer(fp)
            fp.flush()
            os.fsync(fp.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_chunks(path: str | os.PathLike, chunks: Iterable[str]) -> None:
    """Atomically write an iterable of text chunks (used for large streamed JSON)."""

    def _write(fp: IO[str]) -> None:
        buf: list[str] = []
        size = 0
        for chunk in chunks:
            buf.append(chunk)
            size += len(chunk)
            if size > 1 << 20:
                fp.write("".join(buf))
                buf.clear()
                size = 0
        fp.write("".join(buf))

    atomic_write(path, _write)


def dump_json(obj: Any) -> str:
    """Deterministic, compact JSON (same input -> byte-identical output)."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=False)


def load_structured(path: str | os.PathLike, what: str) -> Any:
    """Read a YAML or JSON file, turning every read/parse failure into one clear line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FluxqrError(f"{what} file not found", where=str(path),
                          fix="check the path") from None
    except OSError as exc:
        raise FluxqrError(f"cannot read {what} file: {exc.strerror}", where=str(path)) from None
    import yaml  # lazy: the submit plugin path should not pay for it

    try:
        if str(path).endswith(".json"):
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise FluxqrError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                          where=str(path), fix=f"fix the {what} file's syntax") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise FluxqrError(f"invalid YAML{loc}: {problem}", where=str(path),
                          fix=f"fix the {what} file's syntax") from None


def json_path(parts: Iterable[Any]) -> str:
    """Render a jsonschema error path as ``devices[2].qubits``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"
