"""Hostile inputs that are too big, too binary or too repetitive to keep as files.

:func:`generated` writes them at test time; each is ``name -> (file name, needle)``.
The same structural attacks apply to every kind of input file (devices.yaml, R/JGF
graphs, hybrid jobspecs), since they all go through one loader.
"""

from __future__ import annotations

import json
from pathlib import Path

#: A valid document of each kind, to wrap an attack in.
VALID = {
    "devices": "version: 1\ndevices:\n  - {name: aer, adapter: qiskit, qubits: 3, "
               "params: {backend: aer_simulator}}\n",
    "jobspecs": "version: 1\ncommand: ['true']\n",
    "graphs": "version: 1\nexecution:\n  R_lite: [{rank: '0', children: {core: '0'}}]\n"
              "  nodelist: [n0]\n",
}
#: Key under which an attack is nested inside a valid document.
SLOT = {"devices": "site", "jobspecs": "name", "graphs": "extra"}

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _cases(kind: str) -> dict[str, tuple[str, bytes, str]]:
    """name -> (suffix, content, needle) for the attacks shared by every kind."""
    valid = VALID[kind].encode()
    slot = SLOT[kind]
    deep = 50_000
    return {
        "non-utf8-start": (".yaml", b"\xff\xfe" + valid, "not UTF-8"),
        "non-utf8-in-value": (".yaml", valid + f"{slot}: ".encode() + b"caf\xe9\n",
                              "not UTF-8"),
        "utf16-bom": (".yaml", VALID[kind].encode("utf-16"), "not UTF-8"),
        "nul-bytes": (".yaml", valid + b"\x00\x00\x00", "invalid YAML"),
        "deep-yaml-flow": (".yaml", b"a: " + b"[" * deep + b"]" * deep,
                           "nesting deeper than"),
        "deep-yaml-block": (".yaml", "".join(f"{' ' * i}k{i}:\n" for i in range(200)).encode()
                            + b" " * 200 + b"x: 1\n", "nesting deeper than"),
        "deep-json-array": (".json", b"[" * deep + b"]" * deep, "nesting deeper than"),
        "deep-json-object": (".json", b'{"a":' * 100 + b"1" + b"}" * 100,
                             "nesting deeper than"),
        "deep-flow-no-suffix": ("", b'{"a":' * deep + b"1" + b"}" * deep,
                                "nesting deeper than"),
        "alias-bomb": (".yaml", BILLION_LAUGHS.encode(), "alias bomb"),
        "alias-bomb-in-slot": (".yaml", valid + BILLION_LAUGHS.replace("a: &a", f"{slot}x: &a")
                               .encode(), "alias bomb"),
        "recursive-alias": (".yaml", valid + f"{slot}: &x [1, *x]\n".encode(),
                            "recursive YAML alias"),
        "duplicate-top-key-yaml": (".yaml", valid + b"version: 1\n", "duplicate key 'version'"),
        "duplicate-key-json": (".json", b'{"version": 1, "version": 1}', "duplicate key"),
        "json-nan": (".json", b'{"version": NaN}', "NaN"),
        "json-infinity": (".json", b'{"version": Infinity}', "Infinity"),
        "json-huge-float": (".json", b'{"version": 1e999}', "out of range"),
        "huge-integer": (".yaml", valid + f"{slot}x: {'9' * 5000}\n".encode(),
                         "more than 4300 digits"),
        "json-huge-integer": (".json", b'{"version": ' + b"9" * 5000 + b"}",
                              "more than 4300 digits"),
        "non-string-key": (".yaml", valid + b"12: x\n", "is not a string"),
        "invalid-json": (".json", b'{"version": 1,', "invalid JSON"),
        "binary-garbage": (".yaml", bytes(range(256)) * 4, "not UTF-8"),
        "empty": (".yaml", b"", "neither an RFC 20 R" if kind == "graphs"
                  else "expected a mapping"),
        "python-object-tag": (".yaml", b"!!python/object/apply:os.system ['true']\n",
                              "invalid YAML"),
        "ten-megabytes": (".yaml", valid + b"#" * (10 << 20), "limit"),
    }


def attack_names(kind: str) -> list[str]:
    """The names of the shared attacks (for test parametrization)."""
    return sorted(_cases(kind))


def generated(kind: str, directory: Path) -> dict[str, tuple[Path, str]]:
    """Write the shared attacks for ``kind`` into ``directory``; name -> (path, needle)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (suffix, content, needle) in _cases(kind).items():
        path = directory / f"{name}{suffix}"
        path.write_bytes(content)
        out[name] = (path, needle)
    return out


def big_environment(directory: Path) -> Path:
    """A jobspec whose environment is 10 MB (one variable of 10 MB)."""
    path = directory / "environment-10mb.json"
    path.write_text(json.dumps({"version": 1, "command": ["true"],
                                "environment": {"BIG": "x" * (10 << 20)}}))
    return path


def big_submitting_environment() -> dict[str, str]:
    """Nine variables of 127 KB: each can be exec'd, together over the 1 MiB limit."""
    return {f"FLUXQR_HOSTILE_{i}": "z" * (127 * 1024) for i in range(9)}
