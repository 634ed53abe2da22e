"""Install the small files through which Flux finds fluxqr.

Flux discovers commands, CLI plugins and broker modules by file: ``flux-qr.py``
on ``FLUX_EXEC_PATH`` (or ``<libexecdir>/flux/cmd``), a plugin ``.py`` on
``FLUX_CLI_PLUGINPATH`` (or ``<confdir>/cli/plugins``), and a module path given
to ``flux module load``. Flux runs them with *its* Python, which usually does
not see the environment fluxqr was installed into, so each shim records where
fluxqr lives.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from pathlib import Path

from ._io import atomic_write

_HEADER = '''# Installed by "fluxqr flux-install" -- regenerate rather than edit.
import sys

for _p in {paths!r}:
    if _p not in sys.path:
        sys.path.append(_p)
'''

COMMAND = '''# Installed by "fluxqr flux-install": runs the fluxqr CLI as "flux qr".
import os
import sys

_python = {python!r}
os.execv(_python, [_python, "-c",
                   "import sys; from fluxqr.cli import main; sys.exit(main(prog='flux qr'))",
                   *sys.argv[1:]])
'''

PLUGIN = _HEADER + '''
from fluxqr.fluxplugin import QuantumPlugin  # noqa: E402,F401  (found by flux's plugin loader)
'''

MODULE = _HEADER + '''
from fluxqr.brokermod import FluxqrModule  # noqa: E402,F401  (flux module load entry point)
'''


def search_paths() -> list[str]:
    """Directories that make ``import fluxqr`` and its dependencies work from Flux's Python."""
    paths = [str(Path(__file__).resolve().parent.parent)]
    for p in [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
              *site.getsitepackages()]:
        if p not in paths:
            paths.append(p)
    return paths


def install(prefix: str | os.PathLike) -> dict[str, Path]:
    """Write ``cmd/flux-qr.py``, ``cli/plugins/fluxqr.py`` and ``modules/fluxqr.py``."""
    prefix = Path(prefix)
    files = {
        "command": (prefix / "cmd" / "flux-qr.py", COMMAND.format(python=sys.executable)),
        "plugin": (prefix / "cli" / "plugins" / "fluxqr.py", PLUGIN.format(paths=search_paths())),
        "module": (prefix / "modules" / "fluxqr.py", MODULE.format(paths=search_paths())),
    }
    out = {}
    for key, (path, text) in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fp, t=text: fp.write(t))
        if key == "command":
            path.chmod(0o755)
        out[key] = path
    return out
