"""Flux RFC 22 idsets and RFC 29 hostlists, without needing the flux bindings.

``flux.idset``/``flux.hostlist`` exist only where flux-core is installed; graph
building must also work on a laptop, so these few functions stand in for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_HOST_RE = re.compile(r"^(.*?)\[([^\]]+)\](.*)$")
_DIGITS = re.compile(r"[0-9]{1,10}")

#: Most ids one idset may expand to (a node's cores, or an instance's ranks).
MAX_IDS = 1 << 20
#: Most hosts one hostlist may expand to.
MAX_HOSTS = 1 << 20
#: Largest id (Flux ranks and core ids are 32-bit).
MAX_ID = (1 << 32) - 1


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:39] + "…"


def _number(text: str, what: str) -> int:
    text = text.strip()
    if not _DIGITS.fullmatch(text) or int(text) > MAX_ID:
        raise ValueError(f"invalid {what} {_short(text)!r} (expected an integer 0-{MAX_ID})")
    return int(text)


def decode_idset(text: str, limit: int = MAX_IDS) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]`` (also accepts ``"[0-3]"``).

    Raises:
        ValueError: for malformed text, or an idset of more than ``limit`` ids (checked
            before anything is expanded, so ``0-999999999`` costs nothing).
    """
    if not isinstance(text, str):
        raise ValueError(f"idset must be a string, not {type(text).__name__}")
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    ids: list[int] = []
    if not text:
        return ids
    ranges = []
    total = 0
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        a = _number(lo, "idset id")
        b = _number(hi, "idset id") if sep else a
        if b < a:
            raise ValueError(f"invalid idset range {_short(part)!r}")
        total += b - a + 1
        if total > limit:
            raise ValueError(f"idset {_short(text)!r} has more than {limit} ids")
        ranges.append((a, b))
    for a, b in ranges:
        ids.extend(range(a, b + 1))
    return ids


def encode_idset(ids: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 7]`` -> ``"0-3,7"``."""
    out: list[str] = []
    run: list[int] = []
    for i in sorted(set(ids)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def decode_hostlist(items: str | Iterable[str], limit: int = MAX_HOSTS) -> list[str]:
    """Expand RFC 29 hostlists: ``["node[0-2,5]", "login"]`` -> names in order.

    Raises:
        ValueError: for malformed input (also a non-string item), or more than ``limit``
            hosts (counted before expanding).
    """
    if isinstance(items, str):
        items = _split_top(items)
    elif not isinstance(items, list | tuple):
        raise ValueError(f"hostlist must be a string or a list of strings, not "
                         f"{type(items).__name__}")
    plan: list[tuple[str, str, list[tuple[int, int, int]]] | str] = []
    total = 0
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"hostlist entry must be a string, not {type(item).__name__}")
        for token in _split_top(item):
            m = _HOST_RE.match(token)
            if not m:
                plan.append(token)
                total += 1
            else:
                prefix, body, suffix = m.groups()
                ranges = []
                for part in body.split(","):
                    lo, sep, hi = part.partition("-")
                    a = _number(lo, "hostlist index")
                    b = _number(hi, "hostlist index") if sep else a
                    if b < a:
                        raise ValueError(f"invalid hostlist range {_short(part)!r}")
                    ranges.append((a, b, len(lo.strip())))
                    total += b - a + 1
                plan.append((prefix, suffix, ranges))
            if total > limit:
                raise ValueError(f"hostlist has more than {limit} hosts")
    hosts: list[str] = []
    for entry in plan:
        if isinstance(entry, str):
            hosts.append(entry)
            continue
        prefix, suffix, ranges = entry
        for a, b, width in ranges:
            hosts.extend(f"{prefix}{i:0{width}d}{suffix}" for i in range(a, b + 1))
    return hosts


def encode_hostlist(hosts: Iterable[str]) -> str:
    """Compress host names: ``node0,node1,node2`` -> ``node[0-2]`` (order kept)."""
    out: list[str] = []
    cur_prefix: str | None = None
    cur: list[tuple[int, str]] = []

    def flush() -> None:
        if cur_prefix is None:
            return
        if len(cur) == 1:
            out.append(f"{cur_prefix}{cur[0][1]}")
            return
        parts: list[str] = []
        start = prev = cur[0]
        for item in cur[1:] + [(-2, "")]:
            if item[0] == prev[0] + 1 and len(item[1]) == len(prev[1]):
                prev = item
                continue
            parts.append(start[1] if start is prev else f"{start[1]}-{prev[1]}")
            start = prev = item
        out.append(f"{cur_prefix}[{','.join(parts)}]")

    for host in hosts:
        m = re.match(r"^(.*?)(\d+)$", host)
        if not m:
            flush()
            cur_prefix, cur = None, []
            out.append(host)
            continue
        prefix, num = m.groups()
        if prefix != cur_prefix or (cur and int(num) <= cur[-1][0]):
            flush()
            cur_prefix, cur = prefix, []
        cur.append((int(num), num))
    flush()
    return ",".join(out)


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]
