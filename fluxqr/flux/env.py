"""Finding a Flux installation and its Python bindings.

The ``flux`` Python module must match the installed flux-core exactly, so fluxqr
never installs its own: it uses the bindings that come with the Flux on
``PATH`` (or under ``$FLUX_PREFIX``, default ``/opt/flux``). ``python -m
fluxqr.flux.env link`` writes a ``.pth`` file so a virtualenv sees them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from functools import cache
from pathlib import Path

DEFAULT_PREFIX = "/opt/flux"


@cache
def flux_command() -> str | None:
    """Path of the ``flux`` executable: ``$PATH`` first, then ``$FLUX_PREFIX/bin``."""
    found = shutil.which("flux")
    if found:
        return found
    candidate = Path(os.environ.get("FLUX_PREFIX", DEFAULT_PREFIX)) / "bin" / "flux"
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


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


def link(venv_site: str | None = None) -> str | None:
    """Write ``flux-bindings.pth`` into this interpreter's site-packages, if Flux is found."""
    path = bindings_dir()
    site = venv_site or sysconfig.get_paths()["purelib"]
    pth = Path(site) / "fluxqr-flux-bindings.pth"
    if not path:
        pth.unlink(missing_ok=True)
        return None
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if pyver not in path:
        # Compiled bindings for another Python would fail at import; say so instead.
        print(f"fluxqr: Flux bindings at {path} are not for {pyver}; not linking them",
              file=sys.stderr)
        return None
    pth.write_text(path + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["link"]:
        path = link()
        print(f"fluxqr: Flux bindings linked from {path}" if path else
              "fluxqr: no Flux found (real-Flux tests will be skipped)")
        return 0
    print(f"flux: {flux_command()}\nbindings: {bindings_dir()}\nfluxion: {has_fluxion()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
