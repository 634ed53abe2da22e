"""Finding a Flux installation and its Python bindings.

The ``flux`` Python module must match the installed flux-core exactly, so fluxqr
never installs its own: it uses the bindings that come with the Flux on
``PATH`` (or under ``$FLUX_PREFIX``; unset: ``/opt/flux``, then
``~/.local/flux``, the prefixes ``scripts/build-flux.sh`` installs into).
``python -m fluxqr.flux.env link`` writes a ``.pth`` file so a virtualenv sees
them, once the virtualenv has the third-party packages they import.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from functools import cache
from pathlib import Path

DEFAULT_PREFIX = "/opt/flux"
#: where scripts/build-flux.sh installs when DEFAULT_PREFIX is not writable
USER_PREFIX = "~/.local/flux"


def prefixes() -> list[Path]:
    """Where to look for Flux after ``$PATH``: ``$FLUX_PREFIX`` if set, else the defaults."""
    if os.environ.get("FLUX_PREFIX"):
        return [Path(os.environ["FLUX_PREFIX"])]
    return [Path(DEFAULT_PREFIX), Path(USER_PREFIX).expanduser()]


@cache
def flux_command() -> str | None:
    """Path of the ``flux`` executable: ``$PATH`` first, then ``<prefix>/bin``."""
    found = shutil.which("flux")
    if found:
        return found
    for prefix in prefixes():
        candidate = prefix / "bin" / "flux"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@cache
def bindings_dir() -> str | None:
    """The site-packages directory that holds this Flux's ``flux`` Python package."""
    flux = flux_command()
    if not flux:
        return None
    code = "import flux, os; print(os.path.dirname(os.path.dirname(flux.__file__)))"
    try:
        out = subprocess.run([flux, "python", "-c", code], capture_output=True, text=True,
                             timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    path = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    return path if path and os.path.isdir(path) else None


@cache
def has_fluxion() -> bool:
    """True when this Flux has Fluxion's ``ion-resource`` command (flux-sched installed)."""
    flux = flux_command()
    if not flux:
        return False
    prefix = Path(flux).resolve().parent.parent
    return any((prefix / d / "flux" / "cmd" / "flux-ion-resource.py").exists()
               for d in ("libexec", "lib"))


def import_flux():
    """Import and return the ``flux`` module, adding the installed bindings to the path."""
    try:
        import flux  # noqa: F401
    except ImportError:
        path = bindings_dir()
        if path and path not in sys.path:
            sys.path.append(path)
    try:
        import flux
    except ImportError:
        from fluxqr.errors import FluxUnavailableError

        raise FluxUnavailableError(
            "the flux Python bindings are not importable",
            fix="run inside a Flux instance (flux start / flux alloc), or put flux-core's "
                "bin directory on PATH",
        ) from None
    return flux


#: import name -> PyPI name, where they differ
PYPI_NAMES = {"yaml": "pyyaml", "_cffi_backend": "cffi", "icu": "PyICU"}
#: top-level packages of the Flux bindings directory (flux-core's and Fluxion's)
_OWN = {"flux", "_flux", "fluxion", "_fluxion"}


def binding_imports(path: str | os.PathLike) -> set[str]:
    """Third-party modules the Python packages in ``path`` (a bindings directory) import.

    Read from the bindings themselves, so a newer flux-core that needs another package is
    covered: the unguarded imports of their ``.py`` files (an import inside ``try`` is
    optional, like parsedatetime's ``icu``; ``setup.py`` files are not run), and
    ``_cffi_backend`` when their compiled modules were made by cffi.
    """
    found: set[str] = set()
    root = Path(path)
    for top in (d for d in root.iterdir() if d.name in _OWN and d.is_dir()):
        for f in top.rglob("*.py"):
            if f.name == "setup.py":
                continue
            try:
                tree = ast.parse(f.read_bytes(), str(f))
            except (SyntaxError, ValueError, OSError):
                continue
            guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try)
                       for stmt in t.body for n in ast.walk(stmt)}
            for node in ast.walk(tree):
                if id(node) in guarded:
                    continue
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                found.update(n.split(".")[0] for n in names)
        if any(b"_cffi_backend" in so.read_bytes() for so in top.glob("*.so")):
            found.add("_cffi_backend")
    return {m for m in found if m not in sys.stdlib_module_names and m not in _OWN}


def missing_binding_imports(path: str | os.PathLike) -> list[str]:
    """PyPI names of what the bindings in ``path`` import and this interpreter lacks."""
    return sorted(PYPI_NAMES.get(m, m) for m in binding_imports(path)
                  if importlib.util.find_spec(m) is None)


class LinkError(Exception):
    """The bindings cannot be linked into this interpreter (one-line reason and fix)."""


def link(venv_site: str | None = None) -> str | None:
    """Write ``fluxqr-flux-bindings.pth`` into this interpreter's site-packages.

    Returns the linked directory, or None when no Flux is found (a stale link is removed).
    Raises :class:`LinkError` without writing anything when the bindings are for another
    Python or import packages this interpreter lacks.
    """
    path = bindings_dir()
    site = venv_site or sysconfig.get_paths()["purelib"]
    pth = Path(site) / "fluxqr-flux-bindings.pth"
    if not path:
        pth.unlink(missing_ok=True)
        return None
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if pyver not in path:
        # Compiled bindings for another Python would fail at import; say so instead.
        raise LinkError(f"Flux bindings at {path} are not for {pyver}; use a {pyver} venv "
                        f"made with the Python Flux was built with")
    missing = missing_binding_imports(path)
    if missing:
        # Linked without them, `import flux` works but job submission and the session
        # prolog fail later, at the first jobspec parsed: refuse now, saying the fix.
        raise LinkError(f"Flux's Python bindings at {path} import {', '.join(missing)}, "
                        f"which {sys.executable} lacks: run `{sys.executable} -m pip install "
                        f"{' '.join(missing)}` (or install fluxqr[flux]), then link again")
    pth.write_text(path + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["link"]:
        try:
            path = link()
        except LinkError as exc:
            print(f"fluxqr: {exc}", file=sys.stderr)
            return 1
        print(f"fluxqr: Flux bindings linked from {path}" if path else
              "fluxqr: no Flux found (real-Flux tests will be skipped)")
        return 0
    print(f"flux: {flux_command()}\nbindings: {bindings_dir()}\nfluxion: {has_fluxion()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
