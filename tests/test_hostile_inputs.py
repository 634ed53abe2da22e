"""The hostile-input corpus: every malformed input gives one line, exit 2, and no output.

Every case runs through the real ``fluxqr`` command (a separate process). The corpus is
``tests/corpus/``: one file per reported bad input, by kind —

- ``devices/*.yaml`` (read by ``fluxqr graph build --devices``), ``jobspecs/*.yaml`` (read
  by ``fluxqr jobspec --graph``), each starting with ``# expect: TEXT``: a piece of the
  one-line error (the field or the limit it names);
- ``graphs/*.json`` (read by ``fluxqr graph build --input``), needles in ``EXPECT.json``;
- ``generate.py``: attacks written at test time (10 MB files, 50,000-deep nesting, alias
  bombs, bytes that are not UTF-8), applied to every kind.

To add a reported bad input, drop the file into the right folder. The subprocess timeout
is only a hang guard: a case that runs away fails instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GRAPHS, ROOT, assert_user_error, run_cli

sys.path.insert(0, str(Path(__file__).parent))
from corpus.generate import (  # noqa: E402
    attack_names,
    big_environment,
    big_submitting_environment,
    generated,
)

CORPUS = Path(__file__).parent / "corpus"
BASE_GRAPH = GRAPHS / "demo.R.json"
#: Hang guard per case (seconds): generous, not a speed target.
GUARD = 120


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXQR_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fluxqr.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env or _env(), timeout=GUARD)


def _needle(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), f"{path} must start with '# expect: TEXT'"
    return first.removeprefix("# expect: ").strip()


def _command(kind: str, path: Path, out: Path) -> list[str]:
    if kind == "devices":
        return ["graph", "build", "--nodes", "1", "--devices", str(path), "-o", str(out)]
    if kind == "graphs":
        return ["graph", "build", "--input", str(path), "-o", str(out)]
    return ["jobspec", str(path), "--graph", str(BASE_GRAPH)]


def _check(kind: str, path: Path, needle: str, tmp_path: Path,
           env: dict[str, str] | None = None) -> None:
    out = tmp_path / "out.json"
    result = _run(*_command(kind, path, out), env=env)
    assert_user_error(result, needle)
    assert result.stdout == "", "nothing may be printed on error"
    assert not out.exists(), "nothing may be written on error"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.json")] == []


# -- the corpus files ----------------------------------------------------------------------

STATIC = sorted([("devices", p) for p in (CORPUS / "devices").glob("*.yaml")]
                + [("jobspecs", p) for p in (CORPUS / "jobspecs").glob("*.yaml")]
                + [("graphs", p) for p in (CORPUS / "graphs").glob("*.json")
                   if p.name != "EXPECT.json"])
GRAPH_NEEDLES = json.loads((CORPUS / "graphs" / "EXPECT.json").read_text())


def test_corpus_is_complete() -> None:
    """Every graph has a needle, and the corpus still holds what the issue reported."""
    assert sorted(GRAPH_NEEDLES) == sorted(p.name for k, p in STATIC if k == "graphs")
    assert len(STATIC) >= 150


@pytest.mark.parametrize("kind,path", STATIC, ids=[f"{k}/{p.stem}" for k, p in STATIC])
def test_corpus_file(kind: str, path: Path, tmp_path: Path) -> None:
    needle = GRAPH_NEEDLES[path.name] if kind == "graphs" else _needle(path)
    _check(kind, path, needle, tmp_path)


# -- attacks written at test time, for every kind ------------------------------------------

GENERATED = [(kind, name) for kind in ("devices", "jobspecs", "graphs")
             for name in attack_names(kind)]


@pytest.mark.parametrize("kind,name", GENERATED, ids=[f"{k}/{n}" for k, n in GENERATED])
def test_generated_attack(kind: str, name: str, tmp_path: Path) -> None:
    cases = generated(kind, tmp_path / "in")
    path, needle = cases[name]
    env = None
    if kind == "graphs" and name == "ten-megabytes":
        # graphs may be large (256 MiB by default); the limit is exercised at 1 MiB
        env = _env({"FLUXQR_MAX_RESOURCE_MB": "1"})
    _check(kind, path, needle, tmp_path, env=env)


# -- special files and environments --------------------------------------------------------


@pytest.mark.parametrize("kind", ["devices", "jobspecs", "graphs"])
def test_endless_file_is_cut_at_the_limit(kind: str, tmp_path: Path) -> None:
    env = _env({"FLUXQR_MAX_RESOURCE_MB": "1"}) if kind == "graphs" else None
    _check(kind, Path("/dev/zero"), "limit", tmp_path, env=env)


@pytest.mark.parametrize("kind", ["devices", "jobspecs", "graphs"])
def test_directory_and_missing_file(kind: str, tmp_path: Path) -> None:
    _check(kind, tmp_path, "cannot read", tmp_path)
    _check(kind, tmp_path / "missing.yaml", "not found", tmp_path)


def test_ten_megabyte_environment_in_jobspec(tmp_path: Path) -> None:
    _check("jobspecs", big_environment(tmp_path), "limit", tmp_path)


def test_oversized_submitting_environment(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("version: 1\ncommand: ['true']\n")
    result = _run("jobspec", str(job), env=_env(big_submitting_environment()))
    assert_user_error(result, "MiB limit")
    assert result.stdout == ""


def test_environment_variable_over_exec_limit(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("version: 1\ncommand: ['true']\nenvironment: {BIG: " + "b" * 140_000 + "}\n")
    assert_user_error(_run("jobspec", str(job)), "environment")


# -- command-line options ------------------------------------------------------------------

BAD_OPTIONS = {
    "nodes-1e9": (["graph", "build", "--nodes", "1000000000"], "--nodes"),
    "nodes-negative": (["graph", "build", "--nodes", "-1"], "--nodes"),
    "nodes-word": (["graph", "build", "--nodes", "many"], "--nodes"),
    "cores-1e9": (["graph", "build", "--nodes", "2", "--cores", "1000000000"], "--cores"),
    "gpus-negative": (["graph", "build", "--nodes", "2", "--gpus", "-1"], "--gpus"),
    "prefix-space": (["graph", "build", "--nodes", "2", "--prefix", "a b"], "--prefix"),
    "prefix-newline": (["graph", "build", "--nodes", "2", "--prefix", "a\nb"], "--prefix"),
    "format-bogus": (["graph", "build", "--nodes", "2", "-f", "xml"], "--format"),
    "interval-tenth": (["refresh", "-d", "graphs/local-devices.yaml", "--graph", "x",
                        "--interval", "0.1"], "minimum"),
    "interval-zero": (["refresh", "-d", "graphs/local-devices.yaml", "--graph", "x",
                       "--interval", "0"], "minimum"),
    "interval-nan": (["refresh", "-d", "x", "--interval", "nan"], "--interval"),
    "interval-negative": (["refresh", "-d", "x", "--interval", "-5"], "--interval"),
    "interval-huge": (["refresh", "-d", "x", "--interval", "1e30"], "--interval"),
    "refresh-timeout-zero": (["refresh", "-d", "x", "--timeout", "0"], "--timeout"),
    "refresh-timeout-inf": (["refresh", "-d", "x", "--timeout", "inf"], "--timeout"),
    "failure-threshold-zero": (["refresh", "-d", "x", "--failure-threshold", "0"],
                               "--failure-threshold"),
    "probe-timeout-nan": (["devices", "probe", "-d", "x", "--timeout", "nan"], "--timeout"),
    "urgency-99": (["submit", "x.yaml", "--urgency", "99"], "--urgency"),
    "unknown-option": (["graph", "show", "--colour", "x"], "unrecognized arguments"),
    "unknown-command": (["frobnicate"], "invalid choice"),
    "missing-argument": (["jobspec"], "required"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_option(case: str) -> None:
    argv, needle = BAD_OPTIONS[case]
    result = run_cli(*argv)
    assert_user_error(result, needle)
    assert result.stdout == ""


# -- flux submit --qpu* options (the CLI plugin; rejected before any instance is contacted) --

QPU_OPTIONS = {
    "qpu-zero": ("--qpu=0", "qpus must be"),
    "qpu-1000": ("--qpu=1000", "qpus must be"),
    "qpu-word": ("--qpu=1x", "invalid name"),  # a count, or device names: neither
    "qubits-1e12": ("--qubits=1000000000000", "qubits must be"),
    "qubits-negative": ("--qubits=-1", "qubits must be"),
    "vendor-space": ("--qpu-vendor=ib m", "vendor: invalid name"),
    "vendor-newline": ("--qpu-vendor=ibm\nLD_PRELOAD=x", "vendor: invalid name"),
    "device-long": ("--qpu-device=" + "d" * 5000, "device: invalid name"),
    "tech-semicolon": ("--qpu-tech=a;b", "technology: invalid name"),
    "max-error-nan": ("--qpu-max-error=nan", "max_error_2q"),
    "max-error-zero": ("--qpu-max-error=0", "max_error_2q"),
    "max-error-two": ("--qpu-max-error=2", "max_error_2q"),
    "min-t1-inf": ("--qpu-min-t1=inf", "min_t1_us"),
    "min-t1-negative": ("--qpu-min-t1=-5", "min_t1_us"),
    "max-queue-negative": ("--qpu-max-queue=-1", "max_queue"),
    "session-time-zero": ("--qpu-session-time=0", "max_time"),
    "session-time-absurd": ("--qpu-session-time=100000000000d", "max_time"),
    "session-time-garbage": ("--qpu-session-time=soon", "invalid duration"),
    "policy-bogus": ("--qpu-policy=random", "unknown QPU policy"),
}


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    from fluxinst import HAVE_FLUX, SKIP_REASON, fluxqr_env

    if not HAVE_FLUX:
        pytest.skip(SKIP_REASON)
    env = _env(fluxqr_env(tmp_path_factory.mktemp("plugin")))
    env["FLUX_URI"] = "local:///nonexistent/fluxqr-hostile"  # nothing may be contacted
    return env


@pytest.mark.parametrize("case", sorted(QPU_OPTIONS))
def test_bad_qpu_option(case: str, plugin_env: dict[str, str]) -> None:
    from fluxinst import FLUX

    option, needle = QPU_OPTIONS[case]
    result = subprocess.run([FLUX, "submit", "--dry-run", "-n1", option, "true"],
                            capture_output=True, text=True, env=plugin_env, timeout=GUARD)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[-1], result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
