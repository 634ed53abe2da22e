"""A researcher's sandbox: a local Flux instance with the built-in quantum devices.

``fluxqr sandbox`` probes the devices of ``graphs/local-devices.yaml`` (or ``--devices``),
builds a hybrid graph (two 4-core nodes, as in the admin guide) with their live
properties, starts a local instance
on it (:class:`~fluxqr.flux.localinstance.LocalInstance`: sessions on, the fluxqr
module loaded, the ``--qpu*`` options and ``flux qr`` installed) and then:

* with ``-- CMD ...``: runs CMD inside it (e.g. ``flux run -N1 --qpu-device=aer
  python3 qiskit_bell.py``) and exits with its status;
* with ``--job JOB.yaml``: submits that hybrid jobspec, as written, waits for it and
  prints its output;
* otherwise: starts ``$SHELL`` inside it; the instance stops when the shell exits.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fluxqr._io import load_structured
from fluxqr.errors import FluxqrError

#: The built-in devices, next to the package in a source checkout.
DEFAULT_DEVICES = Path(__file__).resolve().parent.parent / "graphs" / "local-devices.yaml"


def default_devices() -> Path:
    if not DEFAULT_DEVICES.is_file():
        raise FluxqrError(f"no built-in devices file at {DEFAULT_DEVICES}",
                          fix="pass --devices devices.yaml")
    return DEFAULT_DEVICES


#: The sandbox's classical part: the admin guide's test instance (node[0-1], 4 cores each).
NODES, CORES = 2, 4


def build_graph(devices_file: str | os.PathLike, workdir: Path, echo: bool = True) -> Path:
    """Probe the devices and write a hybrid R (NODES x CORES) with their live properties."""
    from fluxqr import devices
    from fluxqr.core import graph, inventory

    inv = inventory.load(devices_file)
    snaps = devices.probe(inv)
    if echo:
        print(devices.format_table(snaps), flush=True)
    g = graph.add_devices(graph.synthesize(NODES, CORES), inv, {s.device: s for s in snaps})
    r_path = workdir / "R.json"
    graph.write_r(g, r_path)
    return r_path


@contextmanager
def local_instance(devices_file: str | os.PathLike, workdir: str | os.PathLike,
                   echo: bool = True) -> Iterator[Any]:
    """A started LocalInstance with the devices and the fluxqr agent loaded.

    Its environment puts this interpreter's ``python3`` and the instance's ``flux`` first
    on PATH, so jobs and commands run with the fluxqr this process uses.
    """
    from fluxqr.flux import env as fluxenv
    from fluxqr.flux.localinstance import LocalInstance

    if not (fluxenv.flux_command() and fluxenv.has_fluxion()):
        raise FluxqrError("no Flux with Fluxion found",
                          fix="install flux-core and flux-sched (see the README)")
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    devices_path = Path(devices_file).resolve()
    r_path = build_graph(devices_path, work, echo=echo)
    path = [str(Path(sys.executable).parent), str(Path(fluxenv.flux_command()).parent),
            os.environ.get("PATH", "")]
    env = {"PATH": os.pathsep.join(path)}
    pythonpath = os.environ.get("PYTHONPATH")
    src = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, pythonpath) if p)
    with LocalInstance(work / "instance", r_path, size=NODES, hosts=f"node[0-{NODES - 1}]",
                       devices=devices_path, env=env, agent_args=("interval=30",)) as inst:
        yield inst


def job_for_instance(job: str | os.PathLike, workdir: Path) -> Path:
    """The user's jobspec as written, with ``python3`` made this interpreter and relative
    paths anchored at the jobspec's directory (unless it sets ``cwd``)."""
    data = load_structured(job, "jobspec")
    if not isinstance(data, dict):
        raise FluxqrError("expected a hybrid jobspec mapping", where=str(job))
    command = data.get("command")
    if isinstance(command, str):
        command = shlex.split(command)
    if isinstance(command, list) and command and command[0] in ("python3", "python"):
        command = [sys.executable, *command[1:]]
    data["command"] = command
    data.setdefault("cwd", str(Path(job).resolve().parent))
    out = workdir / (Path(job).stem + ".json")
    out.write_text(json.dumps(data))
    return out


def submit_and_wait(inst: Any, job: str | os.PathLike, workdir: Path,
                    timeout: float = 600) -> int:
    """Submit a hybrid jobspec in the instance, wait, print its output; its exit status."""
    sub = inst.fluxqr("submit", str(job_for_instance(job, workdir)))
    if sub.returncode != 0:
        print(sub.stderr.strip(), file=sys.stderr)
        return sub.returncode or 1
    jobid = sub.stdout.strip()
    print(f"submitted {job} as {jobid}; waiting for it", flush=True)
    info = inst.wait_job(jobid, timeout=timeout)
    out = inst.run(["flux", "job", "attach", jobid])
    sys.stdout.write(out.stdout)
    sys.stderr.write(out.stderr)
    print(f"job {jobid}: {info.get('result')}", flush=True)
    return 0 if info.get("result") == "COMPLETED" else 1


def main(devices_file: str | None, workdir: str, job: str | None,
         command: list[str]) -> int:
    """``fluxqr sandbox``: see the module docstring."""
    if job and command:
        raise FluxqrError("give either --job JOB.yaml or a command after --, not both")
    devices_file = devices_file or str(default_devices())
    work = Path(workdir).resolve()
    print(f"fluxqr sandbox: probing {devices_file}", flush=True)
    with local_instance(devices_file, work) as inst:
        if job:
            return submit_and_wait(inst, job, work)
        if command:
            return subprocess.run(command, env=inst.env).returncode
        shell = os.environ.get("SHELL") or "/bin/sh"
        print(f"fluxqr sandbox: a Flux instance with the devices above ({inst.uri}).\n"
              f"Try: flux run -N1 --qpu-device=aer python3 qiskit_bell.py; "
              f"flux qr status. Exit the shell to stop it.", flush=True)
        return subprocess.run([shell], env=dict(inst.env, PS1="(fluxqr) $ ")).returncode
