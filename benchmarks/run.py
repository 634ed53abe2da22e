"""Run every ``benchmarks/bench_*.py``, each in its own process (``make bench``).

Each benchmark runs with this interpreter in a fresh subprocess, so one's memory or
imports cannot affect another's figures; output is streamed as it comes. The exit
status is non-zero only if a benchmark crashed (a missed target is reported by the
benchmark itself, not treated as a failure).

    python benchmarks/run.py            # all of them
    python benchmarks/run.py graph      # only those whose name contains "graph"
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover(filters: list[str]) -> list[Path]:
    """The benchmark scripts, sorted; only those matching a filter when filters are given."""
    scripts = sorted(HERE.glob("bench_*.py"))
    if filters:
        scripts = [s for s in scripts if any(f in s.stem for f in filters)]
    return scripts


def run_one(script: Path) -> tuple[int, float]:
    """Run one benchmark, streaming its output; returns (exit status, seconds)."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-u", str(script)], cwd=HERE.parent)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    return rc, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    filters = sys.argv[1:] if argv is None else argv
    scripts = discover(filters)
    if not scripts:
        print(f"no benchmarks/bench_*.py matching {filters or '*'}", file=sys.stderr)
        return 1
    results: list[tuple[str, int, float]] = []
    for script in scripts:
        print(f"\n##### {script.name}", flush=True)
        rc, secs = run_one(script)
        results.append((script.name, rc, secs))
    print("\n##### summary")
    for name, rc, secs in results:
        status = "ok" if rc == 0 else f"CRASHED (exit {rc})"
        print(f"  {name:<28} {secs:7.1f} s  {status}")
    crashed = [name for name, rc, _ in results if rc != 0]
    if crashed:
        print(f"{len(crashed)} benchmark(s) crashed: {', '.join(crashed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
