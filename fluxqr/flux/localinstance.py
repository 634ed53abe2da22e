"""A local Flux instance configured for fluxqr (``flux start --test-size=N``).

Used by ``make demo`` and the real-Flux tests, and handy for trying fluxqr on a
laptop: it writes the instance TOML an admin would (resource graph, ingest plugins,
Fluxion match format and queue policy, ``[fluxqr]``), installs fluxqr's Flux files,
loads the fluxqr agent when devices are given, and runs commands inside the instance.
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

from fluxqr.flux import env as fluxenv
from fluxqr.flux import install as fluxinstall

CONFIG = """
[resource]
path = "{r_path}"
noverify = true

[sched-fluxion-resource]
match-format = "rv1"
"""


AGENT = """
[fluxqr]
devices = "{devices}"
"""


class LocalInstance:
    """A running local instance; commands run inside it with :meth:`run`."""

    def __init__(self, workdir: str | os.PathLike, r_path: str | os.PathLike, size: int = 2,
                 hosts: str | None = None, config: str = "", validator: bool = True,
                 devices: str | os.PathLike | None = None, env: dict[str, str] | None = None,
                 agent: bool = True, agent_args: tuple[str, ...] = (), relays: bool = True):
        self.flux = fluxenv.flux_command()
        if not self.flux:
            from fluxqr.errors import FluxUnavailableError

            raise FluxUnavailableError("no flux command found",
                                       fix="install flux-core and flux-sched (see the README)")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.r_path = Path(r_path)
        self.size = size
        self.hosts = hosts
        self.devices = Path(devices) if devices else None
        self.agent = agent and self.devices is not None
        self.agent_args = tuple(agent_args)
        self.relays = relays  # with the agent: the credential relay on ranks 1..size-1
        self.files = fluxinstall.install(self.workdir / "fluxqr")
        self.env = dict(os.environ)
        self.env.update({"FLUX_EXEC_PATH": str(self.files["command"].parent),
                         "FLUX_CLI_PLUGINPATH": str(self.files["plugin"].parent)})
        self.env.update(env or {})
        # validator=False: a plain instance, without fluxqr's job-ingest plugins
        text = CONFIG.format(r_path=self.r_path) + \
            (fluxinstall.ingest_config(self.files) if validator else "")
        if self.devices:
            text += AGENT.format(devices=self.devices)
        self.config_text = text + config
        self.uri: str | None = None
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def module(self) -> Path:
        """The fluxqr broker module file to ``flux module load``."""
        return self.files["module"]

    def start(self, timeout: float = 90) -> LocalInstance:
        conf = self.workdir / "conf"
        conf.mkdir(exist_ok=True)
        (conf / "instance.toml").write_text(self.config_text)
        urifile = self.workdir / "uri"
        urifile.unlink(missing_ok=True)
        cmd = [self.flux, "start", f"--test-size={self.size}", f"--config-path={conf}"]
        if self.devices:  # sessions on: the shell plugin gives tasks their session environment
            # This R describes simulated nodes, not this machine's cores: no CPU binding
            # (the cpu-affinity plugin would report the missing cores on every job).
            # beside the installed initrc: the shell reads lua.d/ next to the initrc it runs
            initrc = self.files["shell_initrc"].with_name("initrc-local.lua")
            initrc.write_text('shell.options["cpu-affinity"] = "off"\n'
                              f'source ("{self.files["shell_initrc"]}")\n')
            cmd.append(f"-Sconf.shell_initrc={initrc}")
        if self.hosts:
            cmd.append(f"--test-hosts={self.hosts}")
        cmd += ["sh", "-c", f'echo "$FLUX_URI" > {urifile}.tmp && mv {urifile}.tmp {urifile}'
                            " && exec sleep 100000"]
        self._log = open(self.workdir / "flux-start.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not urifile.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"flux start failed: {self.startlog()}")
            time.sleep(0.1)
        self.uri = urifile.read_text().strip()
        self.env["FLUX_URI"] = self.uri
        while True:  # Fluxion has loaded the graph when find answers
            r = self.run(["flux", "ion-resource", "find", "status=up"])
            if r.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"Fluxion did not come up: {r.stderr}\n{self.startlog()}")
            time.sleep(0.3)
        if self.agent:
            self.load_agent()
            if self.relays:
                self.load_relays()
        return self

    def load_agent(self, *args: str) -> None:
        """Load the fluxqr agent (the broker module) with the instance's ``[fluxqr]``."""
        r = self.run(["flux", "module", "load", str(self.module), *self.agent_args, *args])
        if r.returncode != 0:
            raise RuntimeError(f"loading the fluxqr agent failed: {r.stderr}")

    def load_relays(self) -> None:
        """Load the credential relay (``modules/fluxqr-relay.py``) on every rank but 0."""
        if self.size < 2:
            return
        ranks = "1" if self.size == 2 else f"1-{self.size - 1}"
        r = self.run(["flux", "exec", "-r", ranks, self.flux, "module",
                      "load", str(self.files["relay"])])
        if r.returncode != 0:
            raise RuntimeError(f"loading the fluxqr credential relays failed: {r.stderr}")

    def startlog(self) -> str:
        try:
            return (self.workdir / "flux-start.log").read_text()[-4000:]
        except OSError:
            return ""

    def run(self, argv: list[str], timeout: float = 120, input: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a command inside the instance; ``flux`` means the instance's flux."""
        if argv and argv[0] == "flux":
            argv = [self.flux, *argv[1:]]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=dict(self.env, **(env or {})), input=input)

    def fluxqr(self, *args: str, **kw: Any) -> subprocess.CompletedProcess:
        """Run the fluxqr CLI (this interpreter) inside the instance."""
        return self.run([sys.executable, "-m", "fluxqr.cli", *args], **kw)

    def wait_job(self, jobid: str, timeout: float = 120) -> dict[str, Any]:
        """Wait until a job is inactive; its ``flux jobs --json`` record."""
        self.run(["flux", "job", "wait-event", "-t", str(timeout), jobid, "clean"],
                 timeout=timeout + 10)
        return self.job_info(jobid)

    def job_info(self, jobid: str) -> dict[str, Any]:
        return json.loads(self.run(["flux", "jobs", "--json", jobid]).stdout)

    def job_R(self, jobid: str) -> dict[str, Any]:
        return json.loads(self.run(["flux", "job", "info", jobid, "R"]).stdout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            if self.uri:
                self.run(["flux", "shutdown", "--quiet"], timeout=60)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
