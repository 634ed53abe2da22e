"""Flux RFC 22 idsets and RFC 29 hostlists, without needing the flux bindings.

``flux.idset``/``flux.hostlist`` exist only where flux-core is installed; graph
building must also work on a laptop, so these few functions stand in for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_HOST_RE = re.compile(r"^(.*?)\[([^\]]+)\](.*)$")


def decode_idset(text: str) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]`` (also accepts ``"[0-3]"``)."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    ids: list[int] = []
    if not text:
        return ids
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.strip().isdigit() or (sep and not hi.strip().isdigit()):
            raise ValueError(f"invalid idset {text!r}")
        a = int(lo)
        b = int(hi) if sep else a
        if b < a:
            raise ValueError(f"invalid idset range {part!r}")
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


def decode_hostlist(items: str | Iterable[str]) -> list[str]:
    """Expand RFC 29 hostlists: ``["node[0-2,5]", "login"]`` -> names in order."""
    if isinstance(items, str):
        items = _split_top(items)
    hosts: list[str] = []
    for item in items:
        for token in _split_top(item):
            m = _HOST_RE.match(token)
            if not m:
                hosts.append(token)
                continue
            prefix, body, suffix = m.groups()
            for part in body.split(","):
                lo, sep, hi = part.partition("-")
                width = len(lo)
                if not sep:
                    hosts.append(f"{prefix}{lo}{suffix}")
                    continue
                for i in range(int(lo), int(hi) + 1):
                    hosts.append(f"{prefix}{i:0{width}d}{suffix}")
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
