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


def _qubit_counts(values: list[str] | None) -> tuple[dict[str, int], int | None]:
    """``--qubits N`` (every device) and ``--qubits NAME=N`` options."""
    per, default = {}, None
    for text in values or ():
        name, _, count = text.rpartition("=")
        try:
            n = int(count)
        except ValueError:
            raise FluxqrError(f"--qubits {text}: not a count", fix="use --qubits N or "
                              "--qubits NAME=N") from None
        if name:
            per[name] = n
        else:
            default = n
    return per, default


def cmd_devices_import(args: argparse.Namespace) -> int:
    import yaml

    from fluxqr._io import atomic_write, load_structured
    from fluxqr.core import inventory, qrmi_import

    data = load_structured(args.file, "QRMI config")
    per, default = _qubit_counts(args.qubits)
    out = qrmi_import.from_qrmi_config(data, per, default, where=str(args.file))
    inventory.parse(out, str(args.output or "<stdout>"))  # what we write must load
    text = ("# Imported from the Slurm QRMI plugin's " + os.path.basename(args.file)
            + " by 'fluxqr devices import'.\n# Secrets are not copied: set the variables "
            "named under credentials.\n" + yaml.safe_dump(out, sort_keys=False))
    if args.output:
        atomic_write(args.output, lambda fp: fp.write(text))
    else:
        sys.stdout.write(text)
    names = sorted({v for d in out["devices"] for v in d.get("credentials", {}).values()})
    if names:
        print(f"fluxqr: set these secrets in the agent's environment: {', '.join(names)}",
              file=sys.stderr)
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
            raise FluxqrError("the fluxqr agent is not loaded in this instance",
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
                          fix="pass JOBID (a job's tasks and shell have FLUX_JOB_ID)")
    return jobid


def cmd_session(args: argparse.Namespace) -> int:
    from fluxqr.agent.sessions import remote_environment
    from fluxqr.flux import instance

    notices: list[str] = []
    env = remote_environment(instance.connect(), _jobid(args), notices)
    for key, value in env.items():
        print(f"{key}={value}")
    for notice in notices:  # the job shell logs it into the job's output
        print(f"FLUXQR_NOTICE={notice}")
    print("FLUXQR_SESSION_ENV=ok")  # the shell plugin's proof of a complete answer
    return 0


# -- usage (QPU accounting) ----------------------------------------------------------------


def _usage_db(args: argparse.Namespace) -> str:
    """--db, else the instance's ledger; ":memory:" (an empty one) when the instance's
    ledger does not exist yet, since no hybrid job has been recorded there."""
    if args.db:
        return args.db
    if not os.environ.get("FLUX_URI"):
        raise FluxqrError("no accounting database given and not inside a Flux instance",
                          fix="pass --db FILE, or run inside the instance (flux qr usage)")
    from fluxqr.flux import instance

    path = instance.accounting_db(instance.connect())
    return path if os.path.exists(path) else ":memory:"


def _when(epoch: float | None) -> str:
    import datetime as dt

    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def cmd_usage(args: argparse.Namespace) -> int:
    import csv
    import time

    from fluxqr.core import accounting

    now = time.time()
    since = accounting.parse_time(args.since, now, "--since")
    until = accounting.parse_time(args.until, now, "--until")
    if since is not None and until is not None and since > until:
        raise FluxqrError("--since is later than --until", fix="swap them")
    group_by = [k.strip() for k in args.by.split(",") if k.strip()] if args.by else []
    filters = {"user": args.user, "device": args.device, "queue": args.queue,
               "since": since, "until": until, "now": now}
    path = _usage_db(args)
    with accounting.Ledger(path, create=path == ":memory:") as led:
        totals = led.totals(group_by, **filters)
        grand = led.totals((), **filters)
        jobs = led.usage(**filters)
    for row in jobs:
        row["f58"] = accounting.f58(row["jobid"])
    if args.chart:  # first: a failed chart must not follow a printed report
        from fluxqr.core import usagechart

        usagechart.write_chart(args.chart, jobs, since, until if until is not None else now)
    if args.format == "json":
        print(json.dumps({"since": since, "until": until, "group_by": group_by,
                          "totals": totals, "jobs": jobs}, indent=2))
    elif args.format == "csv":
        columns = accounting.JOB_COLUMNS if args.jobs else (*group_by,
                                                            *accounting.TOTAL_COLUMNS)
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(accounting.iter_rows(jobs if args.jobs else totals, columns))
    elif args.jobs:
        rows = [["job", "user", "queue", "bank", "device", "activated", "closed", "QPU s",
                 "source", "tasks", "exit"]]
        for r in jobs:
            rows.append([r["f58"], r["username"] or str(r["userid"]), r["queue"] or "-",
                         r["bank"] or "-", r["device"], _when(r["activated"]),
                         _when(r["closed"]), _secs(r["seconds"]), r["source"],
                         str(r["tasks"]), r["exit"] or "running"])
        print(format_rows(rows) if jobs else "no usage recorded in this window")
    else:
        window = f"{_when(since) if since is not None else 'start'} .. " \
                 f"{_when(until) if until is not None else 'now'}"
        print(f"QPU usage {window}")
        if not totals:
            print("no usage recorded in this window")
            return 0
        rows = [[*group_by, "jobs", "QPU s", "vendor s", "wall s", "tasks", "shots"]]
        for t in totals:
            rows.append([*(str(t[k]) if t[k] is not None else "-" for k in group_by),
                         str(t["jobs"]), _secs(t["seconds"]), _secs(t["qpu_seconds"]),
                         _secs(t["wall_seconds"]), str(t["tasks"]), str(t["shots"])])
        if group_by and len(totals) > 1:
            g = grand[0]
            rows.append(["total", *([""] * (len(group_by) - 1)), str(g["jobs"]),
                         _secs(g["seconds"]), _secs(g["qpu_seconds"]),
                         _secs(g["wall_seconds"]), str(g["tasks"]), str(g["shots"])])
        print(format_rows(rows))
    if args.chart:
        print(f"wrote {args.chart}", file=sys.stderr)
    return 0


# -- installation --------------------------------------------------------------------------


def cmd_sandbox(args: argparse.Namespace) -> int:
    from fluxqr import sandbox

    command = list(args.cmd or [])
    if command[:1] == ["--"]:
        command = command[1:]
    return sandbox.main(args.devices, args.workdir, args.job, command)


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
    print("\nand add to the instance's TOML configuration (the job-ingest plugins that turn "
          "every submission's quantum request into QPU resources):\n")
    print(fluxinstall.ingest_config(files))
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
    im = dsub.add_parser("import", help="turn the Slurm QRMI plugin's qrmi_config.json into "
                         "a devices.yaml (secrets become environment-variable names)")
    im.add_argument("file", metavar="qrmi_config.json", help="the spank_qrmi admin config")
    im.add_argument("--qubits", action="append", metavar="[NAME=]N",
                    help="qubit count of device NAME, or of every device (repeatable; "
                         "qrmi_config.json has none)")
    im.add_argument("--output", "-o", metavar="FILE",
                    help="write atomically to FILE (default: stdout)")
    im.set_defaults(func=cmd_devices_import)

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
    se = sub.add_parser("session", help="a hybrid job's session environment, from the "
                        "fluxqr agent (the job shell plugin calls this)")
    se.add_argument("action", choices=("env",),
                    help="env: print the tasks' environment (waits while a session opens)")
    se.add_argument("jobid", nargs="?", help="job id (default: $FLUX_JOB_ID)")
    se.set_defaults(func=cmd_session)
    us = sub.add_parser("usage", help="QPU usage: totals or per-job rows by user, device, "
                        "queue and time window (the quantum agent records it)")
    us.add_argument("--db", metavar="FILE", help="accounting database (default: the "
                    "instance's [fluxqr] accounting-db, else <statedir>/fluxqr/accounting.db)")
    us.add_argument("--since", metavar="WHEN", help="from: a span ago (7d, 12h), a date "
                    "(2026-11-01), a date and time, or epoch seconds")
    us.add_argument("--until", metavar="WHEN", help="to (same forms as --since; default now)")
    us.add_argument("--user", help="only this user (name or uid)")
    us.add_argument("--device", help="only this device")
    us.add_argument("--queue", help="only this queue")
    us.add_argument("--by", default="user,device", metavar="KEYS",
                    help="group totals by these comma-separated keys: user, device, vendor, "
                         "queue, bank, project, exit, day (default user,device; '' = one total)")
    us.add_argument("--jobs", action="store_true",
                    help="one row per job and device instead of totals")
    us.add_argument("--format", choices=("table", "json", "csv"), default="table",
                    help="output format (json has totals and jobs)")
    us.add_argument("--chart", metavar="FILE.png",
                    help="also draw usage over time per device into this PNG (needs "
                         "matplotlib: the 'report' extra)")
    us.set_defaults(func=cmd_usage)
    sb = sub.add_parser("sandbox", help="start a local Flux instance with the built-in "
                        "quantum devices; run CMD or a jobspec in it, or a shell")
    sb.add_argument("--devices", "-d", metavar="FILE",
                    help="device inventory (default: the built-in graphs/local-devices.yaml)")
    sb.add_argument("--job", metavar="JOB.yaml", help="submit this hybrid jobspec, wait for "
                    "it and print its output")
    sb.add_argument("--workdir", default=".sandbox", metavar="DIR",
                    help="where the instance's files go (default .sandbox)")
    sb.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...",
                    help="run CMD inside the instance instead of a shell")
    sb.set_defaults(func=cmd_sandbox)
    fi = sub.add_parser("flux-install", help="write the files through which Flux finds "
                        "fluxqr (flux qr command, submit plugin, broker module, job-ingest "
                        "plugins, job shell plugin)")
    fi.add_argument("--prefix", required=True, metavar="DIR",
                    help="directory to write cmd/, cli/plugins/, modules/, ingest/ and shell/ "
                         "into")
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
