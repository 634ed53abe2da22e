"""Real Flux test instances: :class:`fluxqr.flux.localinstance.LocalInstance` plus test helpers.

Tests that use these run whenever a ``flux`` with Fluxion is found (``PATH``, then
``$FLUX_PREFIX/bin``, default ``/opt/flux/bin``) and are skipped with the reason
otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fluxqr.flux import env as fluxenv
from fluxqr.flux.localinstance import LocalInstance

FLUX = fluxenv.flux_command()
HAVE_FLUX = bool(FLUX) and fluxenv.has_fluxion()
SKIP_REASON = ("no Flux with Fluxion found (put flux-core + flux-sched's bin on PATH, or "
               "install them under /opt/flux)") if not HAVE_FLUX else ""

requires_flux = pytest.mark.skipif(not HAVE_FLUX, reason=SKIP_REASON)
ROOT = str(Path(__file__).resolve().parent.parent)


class FluxInstance(LocalInstance):
    """A test instance: :meth:`run` fails the test on a non-zero exit unless ``check=False``."""

    def __init__(self, workdir: Path, r_path: Path, size: int = 2, hosts: str | None = None,
                 config: str = "", validator: bool = True, env: dict[str, str] | None = None,
                 devices: Path | None = None, agent_args: tuple[str, ...] = (),
                 agent: bool = True):
        # the instance's python commands (flux qr, the plugin, the prolog) import this checkout
        env = dict(env or {})
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
        super().__init__(workdir, r_path, size=size, hosts=hosts, config=config,
                         validator=validator, devices=devices, env=env,
                         agent=agent, agent_args=agent_args)
        self.env["FLUXQR_MODULE"] = str(self.module)

    def run(self, argv: list[str], check: bool = True, timeout: float = 120,
            input: str | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
        r = super().run(argv, timeout=timeout, input=input, env=env)
        if check and r.returncode != 0:
            raise AssertionError(f"{argv} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def python(self, code: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        """Run Python code (the test's interpreter) inside the instance."""
        return self.run([sys.executable, "-c", code], check=check, **kw)

    def submit(self, jobspec: dict[str, Any]) -> str:
        return self.run(["flux", "job", "submit"], input=json.dumps(jobspec)).stdout.strip()


def fluxqr_env(directory: Path) -> dict[str, str]:
    """Install fluxqr's Flux files under ``directory``; the env that makes Flux find them."""
    from fluxqr.flux import install as fluxinstall

    files = fluxinstall.install(directory)
    return {"FLUX_EXEC_PATH": str(files["command"].parent),
            "FLUX_CLI_PLUGINPATH": str(files["plugin"].parent),
            "FLUXQR_MODULE": str(files["module"])}


def build_r(path: Path, nodes: int = 2, cores: int = 4, devices: Path | None = None) -> Path:
    """A synthetic R (hosts node0..) with the given devices, as `fluxqr graph build` writes it."""
    from fluxqr.core import graph, inventory

    g = graph.synthesize(nodes, cores)
    if devices:
        graph.add_devices(g, inventory.load(devices))
    graph.write_r(g, path)
    return path


#: A hybrid task that submits ``argv[1]`` sampler jobs into its session with the real qrmi
#: client (through the credential gateway), waits for them and prints their ids (never a
#: secret); with ``argv[2] == "hold"`` it then runs until killed.
QRMI_SAMPLER_TASK = r"""
import json, sys, time
import qrmi
qasm = ('OPENQASM 3.0; include "stdgates.inc"; bit[1] c; qubit[1] q; '
        'c[0] = measure q[0];')
ids = []
for r in qrmi.QRMIService().resources():
    for _ in range(int(sys.argv[1])):
        ids.append(r.task_start(qrmi.Payload.QiskitPrimitive(input=json.dumps(
            {"pubs": [[qasm]], "shots": 1, "version": 2}), program_id="sampler")))
    deadline = time.monotonic() + 60  # a hang guard
    while time.monotonic() < deadline and any(
            str(r.task_status(t)).rsplit(".", 1)[-1] in ("Queued", "Running") for t in ids):
        time.sleep(0.2)
print(json.dumps(ids), flush=True)
if sys.argv[2:] == ["hold"]:
    time.sleep(3600)
"""


#: A task that hands its QRMI settings to the test (an owner-only file, not its output, so
#: that its job token stays out of the KVS) and runs until the test lets it end.
PROBE = r"""
import json, os, sys, time
work = sys.argv[1]
env = {k: v for k, v in os.environ.items() if "QRMI" in k}
fd = os.open(os.path.join(work, "probe.tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, json.dumps(env).encode())
os.close(fd)
os.rename(os.path.join(work, "probe.tmp"), os.path.join(work, "probe.json"))
deadline = time.monotonic() + 120
while not os.path.exists(os.path.join(work, "probe.go")) and time.monotonic() < deadline:
    time.sleep(0.1)
"""

#: live values as the refresh loop would push them (what selection tests select on)
LIVE_VALUES = (("/cluster0/fake_fez", ["error_2q=0.0042", "queue_depth=7", "status=online"]),
               ("/cluster0/iqm_garnet", ["error_2q=0.011", "queue_depth=0", "status=online"]))


def local_devices_instance(work: Path, devices: Path):
    """An instance (as the admin guide sets one up, without the agent) over ``devices``,
    with :data:`LIVE_VALUES` pushed into Fluxion; a context manager."""
    instance = FluxInstance(work, build_r(work / "R.json", devices=devices),
                            hosts="node[0-1]", env=fluxqr_env(work / "fluxqr"))
    instance.start()
    for path, kv in LIVE_VALUES:
        for item in kv:
            instance.run(["flux", "ion-resource", "set-property", path, item])
    return instance


def njobs(inst: FluxInstance) -> int:
    """How many jobs the instance has seen (a refused submission adds none)."""
    return len(inst.run(["flux", "jobs", "-a", "-no", "{id}"]).stdout.split())


def qpus_of(inst: FluxInstance, jobid: str) -> list[str]:
    """The QPU names in a completed job's R (which must also hold its nodes)."""
    info = inst.wait_job(jobid)
    assert info["result"] == "COMPLETED", info
    r = inst.job_R(jobid)
    assert r["execution"]["R_lite"], "the job's R must hold its nodes"
    return sorted(n["metadata"]["name"] for n in r["scheduling"]["graph"]["nodes"]
                  if n["metadata"]["type"] == "qpu")


def relay_info(inst: FluxInstance, rank: int = 1, env: dict[str, str] | None = None
               ) -> dict[str, Any]:
    """What rank ``rank``'s credential relay answers (``url``, ``error``), or ``errno``."""
    code = ("import flux, json, sys\n"
            "try:\n"
            "    print(json.dumps(flux.Flux().rpc('fluxqr-relay.info', "
            "nodeid=int(sys.argv[1])).get()))\n"
            "except OSError as e:\n"
            "    print(json.dumps({'errno': e.errno, 'error': e.strerror}))\n")
    return json.loads(inst.run([sys.executable, "-c", code, str(rank)], env=env).stdout)


def gateway_url(inst: FluxInstance) -> str:
    """Where the agent's credential gateway listens (its last ``flux dmesg`` line)."""
    import re

    found = re.findall(r"credential gateway at (http://\S+)",
                       inst.run(["flux", "dmesg"]).stdout)
    assert found, "the agent logs where its gateway listens"
    return found[-1]

