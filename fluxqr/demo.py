"""``make demo``: the main hybrid job on the built-in local devices, end to end.

1. probe the local devices (Qiskit Aer and a fake IBM Fez, mqt-core's QDMI devices,
   Braket's local simulator) and print their live properties;
2. build the hybrid resource graph (one node + the QPUs) as an R with those properties;
3. with Flux: start a local instance loaded with it (the fluxqr agent loaded), submit
   ``jobspec/examples/bell.yaml`` — a node and a QPU in one allocation — and show
   what the task printed and the session recorded on the job. Without Flux: show the
   jobspec that would be submitted, and how to get Flux.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fluxqr import devices
from fluxqr.core import graph, inventory, jobspec
from fluxqr.flux import env as fluxenv


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fluxqr.demo")
    p.add_argument("--devices", default="graphs/local-devices.yaml")
    p.add_argument("--job", default="jobspec/examples/bell.yaml")
    p.add_argument("--workdir", default=".demo")
    args = p.parse_args(argv)
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)

    inv = inventory.load(args.devices)
    print(f"== 1. probing {len(inv)} local devices ({args.devices})", flush=True)
    snaps = devices.probe(inv)
    print(devices.format_table(snaps))

    print("\n== 2. hybrid resource graph: 1 node + QPUs, with live properties", flush=True)
    g = graph.add_devices(graph.synthesize(1, 2), inv, {s.device: s for s in snaps})
    r_path = work / "R.json"
    graph.write_r(g, r_path)
    print(f"wrote {r_path}: {', '.join(f'{n} {t}' for t, n in g.counts().items())}")

    req = jobspec.load_request(args.job)
    if not (fluxenv.flux_command() and fluxenv.has_fluxion()):
        js = jobspec.translate(req, jobspec.view_from_graph(g, str(r_path)), environment={})
        print("\n== 3. the hybrid jobspec (canonical RFC 14) that would be submitted:")
        print(json.dumps({k: js[k] for k in ("resources", "tasks")}, indent=1))
        print(json.dumps(js["attributes"]["system"]["quantum"], indent=1))
        print("\nFlux (flux-core + flux-sched) was not found, so the job was not run. Install "
              "both (e.g. spack install flux-sched, or build them from source into /opt/flux) "
              "and run 'make demo' again.")
        return 0
    return _run_in_flux(work, args.devices, args.job)


def _run_in_flux(work: Path, devices_file: str, job: str) -> int:
    """Submit ``job`` as written (its own command) in a local instance with the devices."""
    from fluxqr import sandbox

    print(f"\n== 3. local Flux instance ({fluxenv.flux_command()}) with sessions on; "
          f"submitting {job}", flush=True)
    with sandbox.local_instance(devices_file, work, echo=False) as inst:
        jobfile = sandbox.job_for_instance(job, work)
        sub = inst.fluxqr("submit", str(jobfile))
        if sub.returncode != 0:
            print(sub.stderr, file=sys.stderr)
            return 1
        jobid = sub.stdout.strip()
        print(f"submitted {jobid}; waiting for it", flush=True)
        info = inst.wait_job(jobid, timeout=600)
        out = inst.run(["flux", "job", "attach", jobid])
        r = inst.job_R(jobid)
        qpus = [n["metadata"]["name"] for n in r["scheduling"]["graph"]["nodes"]
                if n["metadata"]["type"] == "qpu"]
        print(f"\njob {jobid}: {info['result']}; allocated node(s) "
              f"{r['execution']['nodelist']} and QPU(s) {qpus} in one match")
        print("task output:\n  " + "\n  ".join(out.stdout.strip().splitlines()))
        if out.stderr.strip():
            print("task stderr:\n  " + "\n  ".join(out.stderr.strip().splitlines()[-5:]))
        memo = json.loads(inst.run(["flux", "jobs", "--json", jobid]).stdout).get(
            "annotations", {}).get("user", {})
        sessions = memo.get("qpu_sessions")
        print("vendor session record on the job: " + (json.dumps(sessions) if sessions else
              "none (a local simulator needs no vendor session)"))
        return 0 if info["result"] == "COMPLETED" else 1


if __name__ == "__main__":
    from fluxqr.cli import exit_quietly

    exit_quietly(main())
