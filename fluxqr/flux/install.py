"""Install the small files through which Flux finds fluxqr.

Flux discovers commands, CLI plugins and broker modules by file: ``flux-qr.py``
on ``FLUX_EXEC_PATH`` (or ``<libexecdir>/flux/cmd``), a plugin ``.py`` on
``FLUX_CLI_PLUGINPATH`` (or ``<confdir>/cli/plugins``), a module path given
to ``flux module load``, and job-ingest plugin paths named in ``[ingest.frobnicator]``
and ``[ingest.validator]``. Flux runs them with *its* Python, which usually does
not see the environment fluxqr was installed into, so each shim records where
fluxqr lives.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from pathlib import Path

from fluxqr._io import atomic_write
from fluxqr.flux.instance import FROBNICATOR_SHIM, VALIDATOR_SHIM

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
# where fluxqr and its dependencies were installed (a Spack prefix needs no `spack load`)
_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
os.environ["PYTHONPATH"] = os.pathsep.join([p for p in {paths!r} if p not in _path] + _path)
os.execv(_python, [_python, "-c",
                   "from fluxqr.cli import console_main; console_main('flux qr')",
                   *sys.argv[1:]])
'''

PLUGIN = _HEADER + '''
from fluxqr.flux.cliplugin import QuantumPlugin  # noqa: E402,F401  (found by flux's plugin loader)
'''

# flux-core imports these by path (flux.importer.import_path); the names must not end in
# "p", "y" or "." (it strips ".py" with rstrip).
FROBNICATOR = _HEADER + '''
from fluxqr.flux.ingest import Frobnicator  # noqa: E402,F401  (job-ingest frobnicator plugin)
'''

VALIDATOR = _HEADER + '''
from fluxqr.flux.ingest import Validator  # noqa: E402,F401  (job-ingest validator plugin)
'''

MODULE = _HEADER + '''
from fluxqr.agent.module import FluxqrModule  # noqa: E402,F401  (flux module load entry point)
'''

# loaded on every rank but the agent's: the credential gateway's endpoint on that node. A
# node where fluxqr cannot be imported gets one log line and an idle relay, never a failed
# load (which would fail the broker's rc1 there).
RELAY = _HEADER + '''
try:
    from fluxqr.agent.relay import RelayModule  # noqa: F401  (flux module load entry point)
except Exception as _exc:  # noqa: BLE001
    _why = f"{{type(_exc).__name__}}: {{_exc}}"[:300]

    def mod_main(h, *args):
        import syslog

        from flux.constants import FLUX_MSGTYPE_REQUEST

        h.log(syslog.LOG_ERR, "fluxqr: credential relay not started: cannot import fluxqr "
              f"({{_why}}); tasks on this node get no vendor credential")

        def info(h, _type, msg, _arg):  # the agent asks: it tells the job why
            h.respond(msg, {{"rank": h.get_rank(), "url": None,
                             "error": "cannot import fluxqr"}})

        watcher = h.msg_watcher_create(info, FLUX_MSGTYPE_REQUEST, "fluxqr-relay.info")
        watcher.start()
        h.reactor_run()  # idle until its broker removes it
'''


SHELL_PLUGIN = """-- Installed by "fluxqr flux-install": QPU environment for hybrid tasks.
-- A job without attributes.system.quantum (a classical job) returns at once. FLUXQR_*
-- variables come from the job's R; only when a QPU needs a vendor session (or is reached
-- through the credential gateway: a Braket device with site-held credentials) does the shell
-- ask the fluxqr agent (one call, which waits while a 'now' session is opening) for the
-- QRMI job contract. The values, tokens included, go only into the tasks' environment.
local info = shell.info
local spec = info.jobspec
local system = spec and spec.attributes and spec.attributes.system
if not (system and system.quantum) then return end
local nodes = info.R and info.R.scheduling and info.R.scheduling.graph
              and info.R.scheduling.graph.nodes or {{}}
-- Gateway devices (Braket with site-held credentials) ask too, for the gateway's AWS
-- settings; a job without QRMI devices still runs when the answer is missing.
local names, session, braket = {{}}, false, false
for _, n in ipairs (nodes) do
    local m = n.metadata
    if m and m.type == "qpu" then
        local p = m.properties or {{}}
        local key = "FLUXQR_QPU_" .. string.upper (string.gsub (m.name, "[^%w_]", "_"))
        table.insert (names, m.name)
        shell.setenv (key .. "_ADAPTER", p.adapter or "")
        shell.setenv (key .. "_QUBITS", p.num_qubits or "")
        shell.setenv (key .. "_SESSION", "none")
        if p.adapter == "qrmi" then session = true end
        if p.access == "gateway" then braket = true end
    end
end
shell.setenv ("FLUXQR_QPUS", table.concat (names, ","))
if not session and not braket then return end
local cmd = string.format ("%q -c %q session env %s 2>&1", {python!r}, {code!r},
                           tostring (info.jobid))
local f = io.popen (cmd)
local out = f:read ("*a")
f:close ()
-- Lua 5.1 cannot see the exit status: the command ends a good answer with a marker.
if not out:find ("FLUXQR_SESSION_ENV=ok", 1, true) then
    if not session then
        shell.log ("fluxqr: no Braket gateway environment: " .. out)
        return
    end
    shell.die ("fluxqr: no quantum session environment: " .. out)
end
for line in out:gmatch ("[^\\n]+") do
    local key, value = line:match ("^([%w_]+)=(.*)$")
    if key == "FLUXQR_NOTICE" then
        shell.log ("fluxqr: " .. value)   -- e.g. no credential relay on this node
    elseif key and key ~= "FLUXQR_SESSION_ENV" then
        shell.setenv (key, value)
    end
end
"""

SHELL_INITRC = """-- Installed by "fluxqr flux-install": system shell initrc + fluxqr's plugin.
-- Use with: flux start -Sconf.shell_initrc=THIS_FILE (or copy lua.d/fluxqr.lua into the
-- system's {system_dir}/lua.d instead).
source ({system_initrc!r})   -- its source_rcpath() reads lua.d/ beside this file
source ({system_dir!r} .. "/lua.d/*.lua")
"""


def _system_shell_dir() -> str:
    from fluxqr.flux.env import flux_command

    flux = flux_command()
    prefix = Path(flux).resolve().parent.parent if flux else Path("/usr")
    etc = prefix / "etc" if prefix != Path("/usr") else Path("/etc")
    return str(etc / "flux" / "shell")


def search_paths() -> list[str]:
    """Directories that make ``import fluxqr`` and its dependencies work from Flux's Python."""
    paths = [str(Path(__file__).resolve().parents[2])]  # the directory holding fluxqr/
    # PYTHONPATH too: under Spack each dependency has its own prefix, listed there
    pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    for p in [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
              *site.getsitepackages(), *pythonpath]:
        if p not in paths and os.path.isdir(p):  # a guessed scheme may name no directory
            paths.append(p)
    return paths


# The job shell runs this with the recorded Python but no PYTHONPATH: put fluxqr's (and under
# Spack its dependencies') directories first, as the flux-qr command does.
_ENV_CODE = ("import sys; sys.path[:0] = [p for p in {paths!r} if p not in sys.path]; "
             "from fluxqr.cli import main; sys.exit(main(sys.argv[1:], prog='flux qr'))")


def ingest_config(files: dict[str, Path]) -> str:
    """The instance TOML that loads the ingest plugins ``install`` wrote."""
    return (f'[ingest.frobnicator]\nplugins = ["defaults", "constraints", '
            f'"{files["frobnicator"]}"]\n\n'
            f'[ingest.validator]\nplugins = ["{files["validator"]}"]\n')


def install(prefix: str | os.PathLike) -> dict[str, Path]:
    """Write the command, CLI plugin, broker module, ingest plugins and job shell files."""
    prefix = Path(prefix)
    files = {
        "command": (prefix / "cmd" / "flux-qr.py",
                    COMMAND.format(python=sys.executable, paths=search_paths())),
        "plugin": (prefix / "cli" / "plugins" / "fluxqr.py", PLUGIN.format(paths=search_paths())),
        "module": (prefix / "modules" / "fluxqr.py", MODULE.format(paths=search_paths())),
        "relay": (prefix / "modules" / "fluxqr-relay.py", RELAY.format(paths=search_paths())),
        "frobnicator": (prefix / "ingest" / FROBNICATOR_SHIM,
                        FROBNICATOR.format(paths=search_paths())),
        "validator": (prefix / "ingest" / VALIDATOR_SHIM, VALIDATOR.format(paths=search_paths())),
        "shell_plugin": (prefix / "shell" / "lua.d" / "fluxqr.lua",
                         SHELL_PLUGIN.format(
                             python=sys.executable,
                             code=_ENV_CODE.format(paths=search_paths()))),
        "shell_initrc": (prefix / "shell" / "initrc.lua",
                         SHELL_INITRC.format(system_dir=_system_shell_dir(),
                                             system_initrc=_system_shell_dir() + "/initrc.lua")),
    }
    out = {}
    for key, (path, text) in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fp, t=text: fp.write(t))
        if key == "command":
            path.chmod(0o755)
        out[key] = path
    return out
