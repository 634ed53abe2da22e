"""Small file helpers shared by the graph, refresh and jobspec modules."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Limits:
    """Bounds on one kind of input file (see :data:`LIMITS`)."""

    max_bytes: int
    max_depth: int = 32
    #: Nodes that YAML aliases may add beyond the document's own (alias-bomb guard).
    max_alias_nodes: int = 10_000


#: what -> bounds. devices.yaml and hybrid jobspecs are small, hand-written files; a
#: resource graph of a large cluster is big but shallow.
LIMITS = {
    "devices": Limits(1 << 20),
    "jobspec": Limits(1 << 20),
    "resource": Limits(256 << 20, max_depth=64),
}
DEFAULT_LIMITS = Limits(1 << 20)
#: Environment variable that raises the resource-graph size limit (MiB), for huge clusters.
RESOURCE_MB_ENV = "FLUXQR_MAX_RESOURCE_MB"
#: Above this size (large graphs) JSON is not walked for depth: the walk would cost as
#: much as the parse, and the decoder's own recursion guard still bounds the depth.
_WALK_JSON_BELOW = 1 << 20


def limits_for(what: str) -> Limits:
    """The :class:`Limits` of an input kind, with the resource-size override applied."""
    lim = LIMITS.get(what, DEFAULT_LIMITS)
    if what == "resource" and os.environ.get(RESOURCE_MB_ENV, "").isdigit():
        lim = Limits(int(os.environ[RESOURCE_MB_ENV]) << 20, lim.max_depth, lim.max_alias_nodes)
    return lim


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


def read_bounded(path: str | os.PathLike, what: str, max_bytes: int) -> str:
    """The UTF-8 text of a file of at most ``max_bytes`` bytes, or one clear error line.

    Reads at most ``max_bytes + 1`` bytes, so a huge file, ``/dev/zero`` or an endless
    pipe costs no more than the limit.
    """
    try:
        with open(path, "rb") as fp:
            data = fp.read(max_bytes + 1)
    except FileNotFoundError:
        raise FluxqrError(f"{what} file not found", where=str(path),
                          fix="check the path") from None
    except OSError as exc:
        raise FluxqrError(f"cannot read {what} file: {exc.strerror or exc}",
                          where=str(path)) from None
    if len(data) > max_bytes:
        hint = f" (or raise it with {RESOURCE_MB_ENV}=MiB)" if what == "resource" else ""
        raise FluxqrError(f"{what} file is larger than the {_mib(max_bytes)} limit",
                          where=str(path), fix=f"pass the right file{hint}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FluxqrError(f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                          f"(line {line})", where=str(path),
                          fix=f"save the {what} file as UTF-8") from None


def load_structured(path: str | os.PathLike, what: str) -> Any:
    """Read a YAML or JSON file with bounds, turning every failure into one clear line.

    Bounds (:data:`LIMITS`): file size, nesting depth, nodes added by YAML aliases (an
    "alias bomb" is a few lines that expand to billions of nodes). Also rejected:
    bytes that are not UTF-8, duplicate mapping keys (YAML would silently keep the last),
    mapping keys that are not strings, and NaN/Infinity. JSON is used for ``*.json`` and
    for text that starts with ``{`` and parses as JSON; everything else is YAML.
    """
    lim = limits_for(what)
    where = str(path)
    text = read_bounded(path, what, lim.max_bytes)
    fix = f"fix the {what} file's syntax"
    is_json = where.endswith(".json")
    if is_json or text.lstrip()[:1] == "{":
        try:
            data = json.loads(text, object_pairs_hook=_json_object,
                              parse_constant=_json_constant, parse_float=_json_float)
        except json.JSONDecodeError as exc:
            if is_json:
                raise FluxqrError(f"invalid JSON at line {exc.lineno} column {exc.colno}: "
                                  f"{exc.msg}", where=where, fix=fix) from None
        except _Reject as exc:
            raise FluxqrError(str(exc), where=where, fix=exc.fix or fix) from None
        except RecursionError:
            raise FluxqrError(f"nesting deeper than {lim.max_depth} levels", where=where,
                              fix=f"flatten the {what} file") from None
        except ValueError as exc:  # e.g. an integer of thousands of digits
            raise FluxqrError(f"invalid JSON: {_value_error(exc)}", where=where,
                              fix=fix) from None
        else:
            if len(text) < _WALK_JSON_BELOW:
                depth = _depth(data, lim.max_depth)
                if depth > lim.max_depth:
                    raise FluxqrError(f"nesting deeper than {lim.max_depth} levels",
                                      where=where, fix=f"flatten the {what} file")
            return data
    return _load_yaml(text, where, what, lim)


class _Reject(ValueError):
    """Raised from inside a parser hook; becomes a :class:`FluxqrError`."""

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.fix = fix


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)  # at C speed; only a short dict means a key came twice
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Reject(f"duplicate key {_short(key)!r}", fix="give every key once")
            seen.add(key)
    return out


def _json_constant(name: str) -> Any:
    raise _Reject(f"{name} is not a number JSON allows", fix="use a finite number")


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Reject(f"number {_short(text)} is out of range", fix="use a finite number")
    return value


def _short(value: Any, n: int = 40) -> str:
    text = str(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def _depth(obj: Any, limit: int) -> int:
    """Nesting depth of parsed JSON (iterative; stops counting past ``limit``)."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        item, d = stack.pop()
        if d > deepest:
            deepest = d
            if d > limit:
                break
        if isinstance(item, dict):
            stack.extend((v, d + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, d + 1) for v in item if isinstance(v, dict | list))
    return deepest


def _load_yaml(text: str, where: str, what: str, lim: Limits) -> Any:
    import yaml  # lazy: the submit plugin path should not pay for it

    fix = f"fix the {what} file's syntax"
    loader_cls = _yaml_loader()
    try:
        # 1. Depth from the event stream: libyaml's parser is not recursive, but its
        #    composer is (and crashes the process on very deep input), so this comes first.
        loader = loader_cls(text)
        try:
            depth = 0
            while loader.check_event():
                event = loader.get_event()
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                    if depth > lim.max_depth:
                        raise FluxqrError(f"nesting deeper than {lim.max_depth} levels",
                                          where=where, fix=f"flatten the {what} file")
                elif isinstance(event, yaml.CollectionEndEvent):
                    depth -= 1
        finally:
            loader.dispose()
        # 2. Compose (bounded depth), then measure what aliases would expand to.
        loader = loader_cls(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_aliases(node, lim, where, what)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except _Reject as exc:
        raise FluxqrError(str(exc), where=where, fix=exc.fix or fix) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise FluxqrError(f"invalid YAML{loc}: {problem}", where=where, fix=fix) from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a 5,000-digit integer
        raise FluxqrError(f"invalid YAML value: {_value_error(exc)}", where=where,
                          fix=fix) from None


def _value_error(exc: Exception) -> str:
    text = str(exc)
    if "integer string conversion" in text:
        return "a number has more than 4300 digits"
    return _short(text, 120)


def _check_aliases(root: Any, lim: Limits, where: str, what: str) -> None:
    """Reject recursive aliases and documents whose aliases expand past the limit."""
    import yaml

    sizes: dict[int, int] = {}
    active: set[int] = set()
    distinct = 0

    def size(node: Any) -> int:  # depth is already bounded, so recursion is safe
        nonlocal distinct
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Reject("recursive YAML alias (a node that contains itself)",
                          fix="remove the alias")
        if isinstance(node, yaml.ScalarNode):
            n = 1
        else:
            active.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [
                c for pair in node.value for c in pair]
            n = 1 + sum(size(c) for c in children)
            active.discard(key)
        distinct += 1
        sizes[key] = n
        if n - distinct > lim.max_alias_nodes:
            raise _Reject(f"YAML aliases expand to more than {lim.max_alias_nodes} extra "
                          f"nodes (an alias bomb?)",
                          fix=f"write the {what} file without nested aliases")
        return n

    size(root)


_LOADER: Any = None


def _yaml_loader() -> Any:
    """A safe YAML loader (libyaml when present) that rejects duplicate and non-string keys."""
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class BoundedLoader(base):  # type: ignore[misc,valid-type]
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<: *defaults" may be overridden on purpose
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise _Reject(f"line {key_node.start_mark.line + 1}: key "
                                  f"{_short(key)!r} is not a string",
                                  fix="quote the key")
                if key in seen:
                    raise _Reject(f"line {key_node.start_mark.line + 1}: duplicate key "
                                  f"{_short(key)!r}", fix="give every key once")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_float(self, node: Any) -> float:
            value = super().construct_yaml_float(node)
            if not math.isfinite(value):
                raise _Reject(f"line {node.start_mark.line + 1}: {node.value!r} is not a "
                              f"finite number", fix="use a finite number")
            return value

    BoundedLoader.add_constructor("tag:yaml.org,2002:float",
                                  BoundedLoader.construct_yaml_float)
    _LOADER = BoundedLoader
    return _LOADER


def json_path(parts: Iterable[Any]) -> str:
    """Render a jsonschema error path as ``devices[2].qubits``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"
