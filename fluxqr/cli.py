"""The ``fluxqr`` command (also ``flux qr``): a thin layer over the library.

Each subcommand parses its options, calls one library function, and prints.
User errors (:class:`fluxqr.errors.FluxqrError`) become one line on stderr and
exit status 2; nothing is half-written because every writer is atomic.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from fluxqr.core.tables import format_rows
from fluxqr.errors import FluxqrError

DEVICES_ENV = "FLUXQR_DEVICES"
#: Largest synthetic cluster ``graph build --nodes`` makes (nodes, and cores/gpus per node).
MAX_SYNTH_NODES = 65536
MAX_SYNTH_PER_NODE = 4096
#: Shortest ``refresh --interval``: below it the cycle cannot keep its rhythm (a cycle
#: costs an RPC round trip per change plus the reads) and the vendor APIs are hammered.
MIN_INTERVAL = 1.0


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one ``--help`` away), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        text = " ".join(message.split())
        self.exit(2, f"{self.prog}: {text}; see '{self.prog} --help'\n")


def bounded(kind: type, lo: float, hi: float) -> Callable[[str], Any]:
    """An argparse ``type`` that accepts a finite ``kind`` value in ``[lo, hi]``."""

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} {text[:40]!r}") from None
        if not (math.isfinite(value) and lo <= value <= hi):
            raise argparse.ArgumentTypeError(f"{text[:40]} is not between {lo:g} and {hi:g}")
        return value

    convert.__name__ = kind.__name__
    return convert


def _add_devices_opt(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--devices", "-d", metavar="FILE", default=os.environ.get(DEVICES_ENV),
                   required=required and not os.environ.get(DEVICES_ENV),
                   help=f"device inventory (devices.yaml); default ${DEVICES_ENV}")


# -- graph ---------------------------------------------------------------------------------


def cmd_graph_build(args: argparse.Namespace) -> int:
    from fluxqr.core import graph, inventory

    if args.input and args.nodes is not None:
        raise FluxqrError("give either --input or --nodes, not both",
                          fix="use --input R_OR_JGF, or --nodes/--cores/--gpus to synthesize")
    if args.input:
        g = graph.read(args.input)
    elif args.nodes is not None:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,63}", args.prefix):
            raise FluxqrError(f"--prefix: invalid hostname prefix {args.prefix[:40]!r}",
                              fix="use letters, digits, '-' and '_' (at most 64)")
        g = graph.synthesize(args.nodes, args.cores, args.gpus, args.prefix)
    else:
        raise FluxqrError("no classical resources given",
                          fix="use --input R_OR_JGF, or --nodes N --cores C [--gpus G]")
    for name in args.remove or ():
        g.remove_device(name)
    if args.devices:
        inv = inventory.load(args.devices)
        snaps = None
        if args.probe:
            from fluxqr import devices

            snaps = {s.device: s for s in devices.probe(inv)}
        graph.add_devices(g, inv, snaps)
    write = graph.write_r if args.format == "r" else graph.write_jgf
    if args.output in (None, "-"):
        chunks = g.iter_r_chunks() if args.format == "r" else g.iter_jgf_chunks()
        text = "".join(chunks)  # built fully first: an error leaves stdout empty
        sys.stdout.write(text + "\n")
    else:
        write(g, args.output)
    return 0


def cmd_graph_show(args: argparse.Namespace) -> int:
    from fluxqr.core import graph

    g = graph.read(args.file)
    counts = g.counts()
    qpus = g.qpus()
    if args.json:
        print(json.dumps({"counts": counts,
                          "qpus": [{"name": q["name"], "path": q["paths"]["containment"],
                                    "status": "down" if q.get("status") else "up",
                                    "properties": q.get("properties", {})} for q in qpus]},
                         indent=2))
        return 0
    print("vertices by type:")
    for rtype, n in counts.items():
        print(f"  {rtype:<28} {n}")
    if not qpus:
        print("no QPUs")
        return 0
    keys = ["vendor", "technology", "num_qubits", "status", "error_2q", "t1_us", "queue_depth",
            "calibrated_at"]
    rows = [["qpu", "up", *keys]]
    for q in qpus:
        p = q.get("properties", {})
        rows.append([q["name"], "down" if q.get("status") else "up",
                     *(p.get(k, "-") for k in keys)])
    print(format_rows(rows))
    return 0


# -- devices -------------------------------------------------------------------------------


def cmd_devices_list(args: argparse.Namespace) -> int:
    from fluxqr.core import inventory

    inv = inventory.load(args.devices)
    if args.json:
        print(json.dumps([d.__dict__ for d in inv], indent=2, default=str))
        return 0
    rows = [["device", "adapter", "qubits", "vendor", "technology", "sharing", "target"]]
    for d in inv:
        target = next(iter(d.params.values()), "-") if d.params else "-"
        sharing = "exclusive" if d.exclusive else f"{d.sessions} sessions"
        rows.append([d.name, d.adapter, str(d.qubits), d.vendor, d.technology, sharing,
                     str(target)])
    print(format_rows(rows))
    return 0


def cmd_devices_probe(args: argparse.Namespace) -> int:
    from fluxqr import devices
    from fluxqr.core import inventory
    from fluxqr.devices import scrubio

    inv = inventory.load(args.devices)
    with scrubio.scrubbed_stderr(scrubio.inventory_secrets(inv)):
        snaps = devices.probe(inv, timeout=args.timeout)
    if args.json:
        print(json.dumps([s.to_dict() for s in snaps], indent=2))
    else:
        print(devices.format_table(snaps))
    return 0


# -- jobspec / submit ----------------------------------------------------------------------


def _view(args: argparse.Namespace, handle=None):
    """Current devices: from --graph FILE, else from the enclosing instance's Fluxion."""
    from fluxqr.core import jobspec

    if getattr(args, "graph", None):
        from fluxqr.core import graph

        return jobspec.view_from_graph(graph.read(args.graph), f"graph file {args.graph}")
    if handle is None:
        if not os.environ.get("FLUX_URI"):
            raise FluxqrError("no device information: not inside a Flux instance",
                              fix="run inside one (flux start / flux alloc), or pass "
                                  "--graph R_OR_JGF")
        from fluxqr.flux import instance

        handle = instance.connect()
    from fluxqr.flux import instance

    return instance.resource_view(handle, cores=True)


def cmd_jobspec(args: argparse.Namespace) -> int:
    from fluxqr.core import jobspec

    req = jobspec.load_request(args.file)
    view = _view(args) if req.quantum else None
    js = jobspec.translate(req, view)
    print(json.dumps(js, indent=2 if args.pretty else None, sort_keys=False))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from fluxqr.core import jobspec
    from fluxqr.flux import instance

    req = jobspec.load_request(args.file)
    handle = instance.connect()
    conf = instance.config(handle)
    if req.quantum:
        instance.check_validator(handle, conf)
    view = _view(args, handle) if req.quantum else None
    js = jobspec.translate(req, view, secret_names=instance.credential_names(conf))
    if req.quantum:
        instance.check_feasible(handle, js)
    if args.dry_run:
        print(json.dumps(js))
        return 0
    jobid = instance.submit(handle, js, urgency=args.urgency)
    print(jobid.f58)
    return 0


# -- refresh / status ----------------------------------------------------------------------


def cmd_refresh(args: argparse.Namespace) -> int:
    from fluxqr.agent import refresh
    from fluxqr.core import inventory

    if args.interval is not None and args.interval < MIN_INTERVAL:
        raise FluxqrError(f"--interval {args.interval:g} is below the minimum of "
                          f"{MIN_INTERVAL:g} s", fix=f"use --interval {MIN_INTERVAL:g} or more")
    inv = inventory.load(args.devices)
    if args.graph:
        target = refresh.GraphFileTarget(args.graph)
    else:
        from fluxqr.flux import instance

        target = refresh.FluxionTarget(instance.connect())
    import logging

    from fluxqr.devices import scrubio

    # Up/down transitions and scheduler reconciliation: one line each, on stderr.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("fluxqr: %(message)s"))
    rlog = logging.getLogger("fluxqr.agent.refresh")
    rlog.addHandler(handler)
    rlog.setLevel(logging.WARNING)
    rlog.propagate = False
    with scrubio.scrubbed_stderr(scrubio.inventory_secrets(inv)):
        return _refresh_loop(args, refresh.Refresher(
            inv, target, failure_threshold=args.failure_threshold, timeout=args.timeout))


def _refresh_loop(args: argparse.Namespace, r: Any) -> int:
    from fluxqr.agent import refresh

    def report(rep: refresh.CycleReport) -> None:
        down = sorted(s.name for s in r.states.values() if s.path and not s.up)
        print(f"cycle {r.cycles}: {rep.rpcs} RPCs, {rep.changes} changes, {len(rep.errors)} "
              f"errors, {rep.seconds:.2f} s; down: {', '.join(down) or 'none'}", flush=True)
        for err in rep.errors:
            print(f"  error: {err}", file=sys.stderr, flush=True)

    try:
        if args.interval is None:
            report(r.cycle())
            return 0
        refresh.run_forever(r, args.interval, on_cycle=report)
    except KeyboardInterrupt:
        # Not a device failure: nothing is recorded for the cycle that was cut short.
        print(f"fluxqr refresh: interrupted after {r.cycles} cycle(s)", file=sys.stderr,
              flush=True)
        return 130
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from fluxqr.agent import refresh
    from fluxqr.flux import instance

    handle = instance.connect()
    try:
        status = instance.rpc(handle, "fluxqr.status")
    except OSError as exc:
        if exc.errno == 38:  # ENOSYS: nobody answers fluxqr.status
            raise FluxqrError("the fluxqr refresh module is not loaded in this instance",
                              fix="flux module load <prefix>/modules/fluxqr.py devices=FILE "
                                  "(see fluxqr flux-install)") from None
        raise FluxqrError(f"fluxqr.status failed: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(refresh.format_status(status))
    return 0


# -- sessions ------------------------------------------------------------------------------


def _jobid(args: argparse.Namespace) -> str:
    jobid = args.jobid or os.environ.get("FLUX_JOB_ID")
    if not jobid:
        raise FluxqrError("no job id given and FLUX_JOB_ID is not set",
                          fix="pass JOBID (the job-manager prolog/epilog set FLUX_JOB_ID)")
    return jobid


def cmd_session(args: argparse.Namespace) -> int:
    from fluxqr.agent import sessions as session
    from fluxqr.flux import instance

    handle = instance.connect()
    jobid = _jobid(args)
    if args.action == "env":
        env = session.remote_environment(handle, jobid)
        if env is None:  # no module: read rank 0's state directly (single node, or shared)
            env = session.job_environment(session.instance_context(handle), jobid)
        for key, value in env.items():
            print(f"{key}={value}")
        print("FLUXQR_SESSION_ENV=ok")  # the shell plugin's proof of a complete answer
        return 0
    ctx = session.instance_context(handle)
    if args.action == "prolog":
        js = session.prolog(ctx, jobid)
        if js is not None:
            opened = [r.device for r in js.records if r.token]
            print(f"fluxqr: job {jobid}: sessions open on {', '.join(opened) or 'none needed'}")
        return 0
    errors = session.epilog(ctx, jobid)
    for err in errors:
        print(f"fluxqr: job {jobid}: {err}", file=sys.stderr)
    return 1 if errors else 0


# -- installation --------------------------------------------------------------------------


def cmd_flux_install(args: argparse.Namespace) -> int:
    from fluxqr.flux import install as fluxinstall

    files = fluxinstall.install(args.prefix)
    for path in files.values():
        print(f"wrote {path}")
    print("\nto use them, set in the instance's environment (or copy the files into the "
          "system directories named in the admin guide):")
    print(f"  export FLUX_EXEC_PATH={files['command'].parent}")
    print(f"  export FLUX_CLI_PLUGINPATH={files['plugin'].parent}")
    print(f"  flux module load {files['module']} [devices=FILE] [interval=SECONDS]")
    print(f"  flux start -Sconf.shell_initrc={files['shell_initrc']} ...  (or copy "
          f"{files['shell_plugin']} into the system shell lua.d)")
    return 0


# -- plumbing ------------------------------------------------------------------------------


def build_parser(prog: str = "fluxqr") -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog, description="Flux Quantum Resources: quantum "
                                     "devices as schedulable Flux resources.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    graph_p = sub.add_parser("graph", help="build and inspect hybrid resource graphs")
    gsub = graph_p.add_subparsers(dest="graph_command", metavar="ACTION")
    gsub.required = True
    b = gsub.add_parser("build", help="build a Fluxion JGF or R with QPU vertices")
    b.add_argument("--input", "-i", metavar="FILE",
                   help="classical resources: an RFC 20 R (R_lite, or with 'scheduling') or a "
                        "Fluxion JGF")
    b.add_argument("--nodes", type=bounded(int, 1, MAX_SYNTH_NODES),
                   help="synthesize N identical nodes instead of --input")
    b.add_argument("--cores", type=bounded(int, 1, MAX_SYNTH_PER_NODE), default=1,
                   help="cores per synthetic node")
    b.add_argument("--gpus", type=bounded(int, 0, MAX_SYNTH_PER_NODE), default=0,
                   help="GPUs per synthetic node")
    b.add_argument("--prefix", default="node", help="hostname prefix of synthetic nodes")
    _add_devices_opt(b, required=False)
    b.add_argument("--probe", action="store_true",
                   help="read live device properties through the adapters first")
    b.add_argument("--remove", action="append", metavar="NAME",
                   help="remove a QPU from the input graph (repeatable)")
    b.add_argument("--format", "-f", choices=("r", "jgf"), default="r",
                   help="output an R for [resource] path= (default) or a bare JGF")
    b.add_argument("--output", "-o", metavar="FILE",
                   help="write atomically to FILE (default: stdout)")
    b.set_defaults(func=cmd_graph_build)
    s = gsub.add_parser("show", help="vertex counts and each QPU's properties")
    s.add_argument("file", metavar="FILE", help="an R or JGF file")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_graph_show)

    dev_p = sub.add_parser("devices", help="the device inventory and live device reads")
    dsub = dev_p.add_subparsers(dest="devices_command", metavar="ACTION")
    dsub.required = True
    lst = dsub.add_parser("list", help="list the devices in an inventory")
    _add_devices_opt(lst)
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=cmd_devices_list)
    pr = dsub.add_parser("probe", help="read every device now and print its snapshot")
    _add_devices_opt(pr)
    pr.add_argument("--timeout", type=bounded(float, 0.001, 3600),
                    help="seconds per device (default: per device)")
    pr.add_argument("--json", action="store_true", help="machine-readable output")
    pr.set_defaults(func=cmd_devices_probe)

    js = sub.add_parser("jobspec", help="translate a hybrid jobspec YAML into canonical "
                        "RFC 14 JSON (pipe it to flux job submit)")
    js.add_argument("file", metavar="JOB.yaml", help="hybrid jobspec (YAML or JSON)")
    js.add_argument("--graph", metavar="FILE", help="resolve devices against this R/JGF "
                    "instead of the running Fluxion")
    js.add_argument("--pretty", action="store_true", help="indent the JSON")
    js.set_defaults(func=cmd_jobspec)
    su = sub.add_parser("submit", help="submit a hybrid jobspec YAML; prints the job id")
    su.add_argument("file", metavar="JOB.yaml", help="hybrid jobspec (YAML or JSON)")
    su.add_argument("--urgency", type=bounded(int, 0, 31), help="job urgency (0-31)")
    su.add_argument("--dry-run", action="store_true", help="print the jobspec, do not submit")
    su.set_defaults(func=cmd_submit)
    rf = sub.add_parser("refresh", help="push live device properties and status into the "
                        "running Fluxion (or a graph file)")
    _add_devices_opt(rf)
    mode = rf.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one cycle, then exit (default)")
    mode.add_argument("--interval", type=bounded(float, 0, 86400), metavar="SECONDS",
                      help="run a cycle every SECONDS until interrupted")
    rf.add_argument("--graph", metavar="FILE",
                    help="offline: update this R/JGF file atomically instead of an instance")
    rf.add_argument("--timeout", type=bounded(float, 0.001, 3600), metavar="SECONDS",
                    help="seconds per device read (default: per device)")
    rf.add_argument("--failure-threshold", type=bounded(int, 1, 1000), default=3, metavar="N",
                    help="failed reads in a row before a device goes down (default 3)")
    rf.set_defaults(func=cmd_refresh)
    st = sub.add_parser("status", help="the refresh module's view of every device")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)
    se = sub.add_parser("session", help="quantum sessions of jobs (job-manager prolog/epilog "
                        "and the job shell plugin call these)")
    se.add_argument("action", choices=("prolog", "epilog", "env"),
                    help="prolog: open the job's sessions; epilog: release them; env: print "
                         "the tasks' environment")
    se.add_argument("jobid", nargs="?", help="job id (default: $FLUX_JOB_ID)")
    se.set_defaults(func=cmd_session)
    fi = sub.add_parser("flux-install", help="write the files through which Flux finds "
                        "fluxqr (flux qr command, submit plugin, broker module, job shell "
                        "plugin)")
    fi.add_argument("--prefix", required=True, metavar="DIR",
                    help="directory to write cmd/, cli/plugins/, modules/ and shell/ into")
    fi.set_defaults(func=cmd_flux_install)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "fluxqr") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FluxqrError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def console_main(prog: str = "fluxqr") -> None:
    """Entry point of the ``fluxqr`` script and ``flux qr``: :func:`main`, then exit.

    mqt-core's nanobind bindings print "leaked" warnings at interpreter teardown; once
    the command's work and output are done, skip the teardown when they were loaded.
    """
    exit_quietly(main(prog=prog))


def exit_quietly(code: int) -> None:
    """Exit with ``code``, skipping interpreter teardown if mqt-core was loaded."""
    if "mqt.core" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console_main()
