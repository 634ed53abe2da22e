"""Shared fixtures: paths to the project's and the upstream reference data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GRAPHS = ROOT / "graphs"
JOBSPECS = ROOT / "jobspec"
SHARED = ROOT.parent / "shared" / "reference"


@pytest.fixture
def shared() -> Path:
    """Upstream reference data (../shared/reference), or skip when it is not beside the repo."""
    if not SHARED.is_dir():
        pytest.skip(f"upstream reference data not found at {SHARED}")
    return SHARED


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``fluxqr`` as a user would (a separate process), capturing its output."""
    return subprocess.run([sys.executable, "-m", "fluxqr.cli", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, env=env, input=input, timeout=300)


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """A user error: exit 2, exactly one line on stderr mentioning every needle, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    """A real instance over graphs/local-devices.yaml, set up as the admin guide says (no
    agent), with live values in Fluxion; one per test module (a module may define its own
    ``inst`` instead)."""
    from fluxinst import local_devices_instance

    instance = local_devices_instance(tmp_path_factory.mktemp("flux-local"),
                                      GRAPHS / "local-devices.yaml")
    yield instance
    instance.stop()
