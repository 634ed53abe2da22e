"""``flux submit/run/batch/alloc`` options for quantum devices (a Flux CLI plugin).

Installed as a discovery shim in a directory on ``FLUX_CLI_PLUGINPATH`` (or the
site's ``<confdir>/cli/plugins``), it adds ``--qpu=COUNT``, ``--qubits=N``,
``--qpu-vendor``, ``--qpu-device``, ``--qpu-tech``, ``--qpu-max-error``,
``--qpu-min-t1``, ``--qpu-max-queue``, ``--qpu-online``, ``--qpu-policy``,
``--qpu-sdk``, ``--qpu-exclusive``, ``--qpu-start`` and
``--qpu-session-mode``/``--qpu-session-time``; they mean what the same keys under
``quantum:`` mean in a hybrid jobspec YAML.

The plugin only records the request (``attributes.system.quantum.request``); fluxqr's
job-ingest frobnicator (:mod:`fluxqr.flux.ingest`) turns it into resources on the
instance. It imports no vendor SDK, and nothing beyond flux itself unless a ``--qpu*``
option is given.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flux.cli.plugin import CLIPlugin

#: option -> (QuantumRequest field, argparse kwargs)
OPTIONS = {
    "--qpu": ("qpus", {"metavar": "COUNT|NAMES",
                       "help": "allocate COUNT quantum devices with the job, or the devices "
                               "named (e.g. ibm_fez,ibm_torino: all of them); default 1 when "
                               "any --qpu-*/--qubits option is given"}),
    "--qubits": ("qubits", {"metavar": "N",
                            "help": "qubits needed on each QPU"}),
    "--qpu-vendor": ("vendor", {"metavar": "VENDOR", "help": "only QPUs from VENDOR"}),
    "--qpu-device": ("device", {"metavar": "NAME", "help": "exactly the QPU named NAME"}),
    "--qpu-tech": ("technology", {"metavar": "TECH",
                                  "help": "only QPUs of technology TECH (e.g. superconducting)"}),
    "--qpu-max-error": ("max_error_2q", {"metavar": "P",
                                         "help": "highest acceptable median 2-qubit gate error"}),
    "--qpu-min-t1": ("min_t1_us", {"metavar": "US",
                                   "help": "lowest acceptable median T1 in microseconds"}),
    "--qpu-max-queue": ("max_queue", {"metavar": "N",
                                      "help": "at most N jobs waiting in the device's queue"}),
    "--qpu-online": ("online", {"action": "store_true", "default": None,
                                "help": "only devices whose last read said online"}),
    "--qpu-policy": ("policy", {"metavar": "POLICY",
                                "help": "choice among qualifying QPUs: any (Fluxion picks), "
                                        "first, shortest_queue, best_fidelity"}),
    "--qpu-sdk": ("sdk", {"metavar": "SDK",
                          "choices": ("any", "none", "qiskit", "braket", "pulser", "qrmi",
                                      "openqasm2", "openqasm3", "qir"),
                          "help": "only QPUs that execute SDK's circuits (qiskit, braket, "
                                  "pulser, ...); none: the job runs nothing on the QPU"}),
    "--qpu-exclusive": ("exclusive", {"action": "store_true", "default": None,
                                      "help": "hold the whole device (all session slots)"}),
    "--qpu-session-mode": ("session_mode", {"metavar": "MODE",
                                            "help": "vendor session mode (dedicated, batch, "
                                                    "none)"}),
    "--qpu-start": ("start", {"metavar": "WHEN", "choices": ("ready", "predicted", "now"),
                              "help": "when the nodes start: ready (held until the vendor "
                                      "grants the QPU; default behind a vendor queue), "
                                      "predicted (timed to meet the vendor's grant), now"}),
    "--qpu-session-time": ("session_max_time", {"metavar": "FSD",
                                                "help": "longest the vendor session may stay "
                                                        "open (e.g. 30m)"}),
}

PROGRAMS = ("submit", "run", "batch", "alloc", "bulksubmit")
#: the running command's own options namespace (see QuantumPlugin.preinit)
_COMMAND: dict[str, object] = {}


def _urgency(value: object) -> int:
    """``flux submit --urgency`` as a number (it also takes default, hold and expedite)."""
    named = {None: 16, "default": 16, "hold": 0, "expedite": 31}
    return named[value] if value in named else int(str(value))


#: the programs that start a Flux instance: the child gets the parent's fluxqr settings
NESTED = ("batch", "alloc")


def parse_qpus(value: str) -> dict[str, Any]:
    """``--qpu=2`` -> ``{"qpus": 2}``; ``--qpu=ibm_fez,ibm_torino`` -> ``{"devices": [...]}``."""
    value = value.strip()
    if value.isdigit():
        return {"qpus": int(value)}
    return {"devices": [name.strip() for name in value.split(",")]}

#: Options converted here rather than by argparse, whose errors print the whole usage: a
#: bad value must give one line. (QuantumRequest.validate checks ranges and choices.)
CONVERT = {"qpus": int, "qubits": int, "max_queue": int, "max_error_2q": float,
           "min_t1_us": float}


class QuantumPlugin(CLIPlugin):
    """Allocate quantum devices (QPUs) together with a job's nodes, as one Fluxion match.

    Examples:
      flux submit -N2 --qpu=1 --qubits=100 --qpu-vendor=ibm ./hybrid.py
      flux submit -n1 --qpu=ibm_fez,ibm_torino ./two-devices.py
      flux run -n1 --qpu=1 --qpu-max-error=0.01 --qpu-policy=best_fidelity python vqe.py

    The options only set the request, attributes.system.quantum.request; fluxqr's job-ingest
    frobnicator on the instance resolves it (live requirements against the properties fluxqr
    keeps current in Fluxion) and turns it into the QPU resources, as it does for every other
    way a job is submitted. flux batch/alloc also give the child instance the parent's
    fluxqr settings (--conf), so QPU selection works inside it.
    """

    def __init__(self, prog: str, prefix: str | None = None):
        super().__init__(prog, prefix=None)
        if self.prog in PROGRAMS:
            for name, (_, kwargs) in OPTIONS.items():
                self.add_option(name, **kwargs)

    def _values(self, args: Any) -> dict[str, Any]:
        """The --qpu* options given, as QuantumRequest fields (empty: a classical job)."""
        values: dict[str, Any] = {}
        for name, (fld, _) in OPTIONS.items():
            value = getattr(args, name[2:].replace("-", "_"), None)
            if value is None:
                continue
            if fld == "qpus":
                values.update(parse_qpus(str(value)))
            else:
                values[fld] = value
        return values

    def preinit(self, args: Any) -> None:
        # flux-core 0.88 hands modify_jobspec() a copy of the options (and builds a second
        # plugin registry for it); preinit() gets the command's own namespace, whose
        # urgency `flux submit` reads after the hooks. Kept at module level, which both
        # registries share.
        _COMMAND["args"] = args
        if self.prog in NESTED and self._values(args):
            with _one_line():
                _child_conf(args)

    def modify_jobspec(self, args: Any, jobspec: Any) -> None:
        values = self._values(args)
        if not values:
            return  # a classical job: nothing imported, nothing changed
        with _one_line():
            _convert(values)
            handle, conf = set_request(jobspec, values)
            if hold(jobspec, conf, _urgency(getattr(args, "urgency", None))):
                # The agent takes the vendor side first and releases the job (restoring
                # the user's urgency) when the vendor grants the device.
                from fluxqr.flux import instance

                instance.check_agent(handle)
                (_COMMAND.get("args") or args).urgency = 0


def _convert(values: dict[str, Any]) -> None:
    """Option strings to numbers, each bad value one line naming its option."""
    from fluxqr.errors import FluxqrError

    for name, (fld, _) in OPTIONS.items():
        if fld in CONVERT and fld in values and not isinstance(values[fld], int | float):
            try:
                values[fld] = CONVERT[fld](values[fld])
            except ValueError:
                raise FluxqrError(f"{name}: invalid {CONVERT[fld].__name__} value "
                                  f"{str(values[fld])[:40]!r}") from None


@contextmanager
def _one_line() -> Iterator[None]:
    """flux's CLI prints ValueError text as one line and exits non-zero."""
    from fluxqr.errors import FluxqrError

    try:
        yield
    except FluxqrError as exc:
        raise ValueError(f"fluxqr: {exc}") from None


def set_request(jobspec: Any, values: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Check the request here (no round trip for a typo), then record it for the instance.
    Returns the handle and the instance configuration."""
    # Imported here so classical submissions never pay for it.
    from fluxqr.core.jobspec import check_environment, request_record, scrub_environment
    from fluxqr.flux import instance

    record = request_record(values, "--qpu options")
    handle = instance.connect()
    conf = instance.config(handle)
    instance.check_validator(handle, conf)
    jobspec.setattr("system.quantum.request", record)
    # Secrets never go into a jobspec. The frobnicator scrubs too, but job-ingest may keep
    # the environment apart from what it hands the plugins, so do it here as well.
    system = jobspec.jobspec["attributes"]["system"]
    if "environment" in system:
        system["environment"] = scrub_environment(system["environment"],
                                                  instance.credential_names(conf))
        check_environment(system["environment"])
    return handle, conf


def hold(jobspec: Any, conf: dict[str, Any], urgency: int) -> bool:
    """Whether to submit held, recording the user's urgency for the agent to restore.

    The frobnicator decides the start mode on the instance; here the same default is
    taken from the site's inventory (no Fluxion round trip): held when the request says
    ready/predicted, or says nothing and a device it may get sits behind a vendor queue.
    If the instance then decides ``now``, the agent releases the job at once.
    """
    from fluxqr.core.jobspec import HELD_STARTS, might_hold

    record = jobspec.jobspec["attributes"]["system"]["quantum"]
    start = record["request"].get("start")
    if start is None:
        start = might_hold(record["request"], (conf.get("fluxqr") or {}).get("devices"))
    if start not in HELD_STARTS:
        return False
    record["urgency"] = int(urgency)
    return True


def _child_conf(args: Any) -> None:
    """Give a batch/alloc child the parent's fluxqr settings; the user's --conf wins."""
    from fluxqr.flux import instance

    parent = instance.config(instance.connect())
    ours: dict[str, Any] = {}
    for key in ("ingest", "fluxqr"):
        if key in parent:
            ours[key] = parent[key]
    fmt = (parent.get("sched-fluxion-resource") or {}).get("match-format")
    if fmt:  # the child's own jobs need their QPU vertices in R too
        ours["sched-fluxion-resource"] = {"match-format": fmt}
    if ours:
        args.conf.config = _merge(ours, args.conf.config or {})


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out
