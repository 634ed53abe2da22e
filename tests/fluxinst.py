"""Real Flux test instances (``flux start --test-size=N``) loaded with a fluxqr graph.

Tests that use these run whenever a ``flux`` with Fluxion is found (``PATH``, then
``$FLUX_PREFIX/bin``, default ``/opt/flux/bin``) and are skipped with the reason
otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fluxqr import fluxenv

FLUX = fluxenv.flux_command()
HAVE_FLUX = bool(FLUX) and fluxenv.has_fluxion()
SKIP_REASON = ("no Flux with Fluxion found (put flux-core + flux-sched's bin on PATH, or "
               "install them under /opt/flux)") if not HAVE_FLUX else ""

requires_flux = pytest.mark.skipif(not HAVE_FLUX, reason=SKIP_REASON)

BASE_CONFIG = """
[resource]
path = "{r_path}"
noverify = true

[ingest.validator]
args = ["--require-version=any"]

[sched-fluxion-resource]
match-format = "rv1"

[sched-fluxion-qmanager]
queue-policy = "easy"
"""


class FluxInstance:
    """A running test instance; commands run inside it with :meth:`run`."""

    def __init__(self, workdir: Path, r_path: Path, size: int = 2, hosts: str | None = None,
                 config: str = "", validator: bool = True, env: dict[str, str] | None = None):
        self.workdir = Path(workdir)
        self.r_path = Path(r_path)
        self.size = size
        self.hosts = hosts
        self.extra_config = config
        self.validator = validator
        self.env = dict(os.environ)
        # The instance's python commands (flux qr, the plugin) must import this checkout.
        root = str(Path(__file__).resolve().parent.parent)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, self.env.get("PYTHONPATH")) if p)
        self.env.update(env or {})
        self.uri: str | None = None
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> FluxInstance:
        conf = self.workdir / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        text = BASE_CONFIG.format(r_path=self.r_path)
        if not self.validator:
            text = text.replace('[ingest.validator]\nargs = ["--require-version=any"]\n', "")
        (conf / "instance.toml").write_text(text + self.extra_config)
        urifile = self.workdir / "uri"
        urifile.unlink(missing_ok=True)
        cmd = [FLUX, "start", f"--test-size={self.size}", f"--config-path={conf}"]
        if self.hosts:
            cmd.append(f"--test-hosts={self.hosts}")
        cmd += ["sh", "-c", f'echo "$FLUX_URI" > {urifile}.tmp && mv {urifile}.tmp {urifile}'
                            " && exec sleep 100000"]
        self.log = open(self.workdir / "flux-start.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not urifile.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"flux start failed: {self.startlog()}")
            time.sleep(0.1)
        self.uri = urifile.read_text().strip()
        self.env["FLUX_URI"] = self.uri
        # Wait until Fluxion has loaded the graph and the queue is ready.
        while True:
            r = self.run(["flux", "ion-resource", "find", "status=up"], check=False)
            if r.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"Fluxion did not come up: {r.stderr}\n{self.startlog()}")
            time.sleep(0.3)
        return self

    def startlog(self) -> str:
        try:
            return (self.workdir / "flux-start.log").read_text()[-4000:]
        except OSError:
            return ""

    def run(self, argv: list[str], check: bool = True, timeout: float = 120,
            input: str | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
        """Run a command inside the instance (``flux`` resolves to the tested Flux)."""
        if argv and argv[0] == "flux":
            argv = [FLUX, *argv[1:]]
        full_env = dict(self.env, **(env or {}))
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env,
                           input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"{argv} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def python(self, code: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        """Run Python code (the test's interpreter) inside the instance."""
        return self.run([sys.executable, "-c", code], check=check, **kw)

    def submit(self, jobspec: dict[str, Any]) -> str:
        return self.run(["flux", "job", "submit"], input=json.dumps(jobspec)).stdout.strip()

    def wait_job(self, jobid: str, timeout: float = 60) -> dict[str, Any]:
        """Wait for a job to become inactive; return its ``flux jobs`` record."""
        self.run(["flux", "job", "wait-event", "-t", str(timeout), jobid, "clean"],
                 timeout=timeout + 10)
        return self.job_info(jobid)

    def job_info(self, jobid: str) -> dict[str, Any]:
        out = self.run(["flux", "jobs", "--json", jobid]).stdout
        return json.loads(out)

    def job_R(self, jobid: str) -> dict[str, Any]:
        return json.loads(self.run(["flux", "job", "info", jobid, "R"]).stdout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            if self.uri:
                self.run(["flux", "shutdown", "--quiet"], check=False, timeout=60)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()

    def __enter__(self) -> FluxInstance:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def fluxqr_env(directory: Path) -> dict[str, str]:
    """Install fluxqr's Flux shims under ``directory``; the env that makes Flux find them."""
    from fluxqr import fluxinstall

    files = fluxinstall.install(directory)
    return {"FLUX_EXEC_PATH": str(files["command"].parent),
            "FLUX_CLI_PLUGINPATH": str(files["plugin"].parent),
            "FLUXQR_MODULE": str(files["module"])}


def build_r(path: Path, nodes: int = 2, cores: int = 4, devices: Path | None = None) -> Path:
    """A synthetic R (hosts node0..) with the given devices, as `fluxqr graph build` writes it."""
    from fluxqr import graph, inventory

    g = graph.synthesize(nodes, cores)
    if devices:
        graph.add_devices(g, inventory.load(devices))
    graph.write_r(g, path)
    return path
