"""Regenerate the reference graphs in graphs/ (run: make graphs).

Each output is built from inputs in this directory only, without live device reads,
so it is byte-identical on every machine; tests/test_graph.py fails if a committed
file drifts from what this script writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fluxqr.core import graph, inventory

HERE = Path(__file__).resolve().parent

#: output file -> (builder args) ; kept small so reviewers can read them
OUTPUTS = {
    "demo.R.json": dict(nodes=2, cores=4, gpus=0, devices="local-devices.yaml", fmt="r"),
    "demo.jgf.json": dict(nodes=2, cores=4, gpus=0, devices="local-devices.yaml", fmt="jgf"),
    "site-example.R.json": dict(nodes=4, cores=8, gpus=2, devices="site-example-devices.yaml",
                                fmt="r"),
}


def build(spec: dict, src: Path = HERE) -> str:
    g = graph.synthesize(spec["nodes"], spec["cores"], spec["gpus"])
    graph.add_devices(g, inventory.load(src / spec["devices"]))
    chunks = g.iter_r_chunks() if spec["fmt"] == "r" else g.iter_jgf_chunks()
    return "".join(chunks) + "\n"


def main(outdir: Path = HERE) -> int:
    for name, spec in OUTPUTS.items():
        (outdir / name).write_text(build(spec))
        print(f"wrote {outdir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE))
