"""``flux submit/run/batch/alloc`` options for quantum devices (a Flux CLI plugin).

Installed as a discovery shim in a directory on ``FLUX_CLI_PLUGINPATH`` (or the
site's ``<confdir>/cli/plugins``), it adds ``--qpu=COUNT``, ``--qubits=N``,
``--qpu-vendor``, ``--qpu-device``, ``--qpu-tech``, ``--qpu-max-error``,
``--qpu-min-t1``, ``--qpu-max-queue``, ``--qpu-online``, ``--qpu-policy``,
``--qpu-exclusive`` and ``--qpu-session-mode``/``--qpu-session-time``; they
mean what the same keys under ``quantum:`` mean in a hybrid jobspec YAML.

The plugin imports no vendor SDK, and nothing beyond flux itself unless a
``--qpu*`` option is given.
"""

from __future__ import annotations

from flux.cli.plugin import CLIPlugin

#: option -> (QuantumRequest field, argparse kwargs)
OPTIONS = {
    "--qpu": ("qpus", {"metavar": "COUNT",
                       "help": "allocate COUNT quantum devices with the job (default 1 when any "
                               "--qpu-*/--qubits option is given)"}),
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
    "--qpu-exclusive": ("exclusive", {"action": "store_true", "default": None,
                                      "help": "hold the whole device (all session slots)"}),
    "--qpu-session-mode": ("session_mode", {"metavar": "MODE",
                                            "help": "vendor session mode (dedicated, batch, "
                                                    "none)"}),
    "--qpu-session-time": ("session_max_time", {"metavar": "FSD",
                                                "help": "longest the vendor session may stay "
                                                        "open (e.g. 30m)"}),
}

PROGRAMS = ("submit", "run", "batch", "alloc", "bulksubmit")

#: Options converted here rather than by argparse, whose errors print the whole usage: a
#: bad value must give one line. (QuantumRequest.validate checks ranges and choices.)
CONVERT = {"qpus": int, "qubits": int, "max_queue": int, "max_error_2q": float,
           "min_t1_us": float}


class QuantumPlugin(CLIPlugin):
    """Allocate quantum devices (QPUs) together with a job's nodes, as one Fluxion match.

    Examples:
      flux submit -N2 --qpu=1 --qubits=100 --qpu-vendor=ibm ./hybrid.py
      flux run -n1 --qpu=1 --qpu-max-error=0.01 --qpu-policy=best_fidelity python vqe.py

    Live requirements (--qpu-max-error, --qpu-min-t1, --qpu-max-queue, --qpu-online) are
    checked at submit time against the properties fluxqr keeps current in Fluxion; the
    chosen device and the values that decided it are recorded in the jobspec under
    attributes.system.quantum. The instance must accept non-V1 jobspecs:
    [ingest.validator] args = ["--require-version=any"].
    """

    def __init__(self, prog: str, prefix: str | None = None):
        super().__init__(prog, prefix=None)
        if self.prog in PROGRAMS:
            for name, (_, kwargs) in OPTIONS.items():
                self.add_option(name, **kwargs)

    def _request(self, args):
        values = {}
        for name, (fld, _) in OPTIONS.items():
            value = getattr(args, name[2:].replace("-", "_"), None)
            if value is not None:
                values[fld] = value
        return values

    def modify_jobspec(self, args, jobspec) -> None:
        values = self._request(args)
        if not values:
            return  # a classical job: nothing imported, nothing changed
        # Imported here so classical submissions never pay for it.
        from fluxqr.core.jobspec import (
            QuantumRequest,
            apply_quantum,
            check_environment,
            parse_duration,
            scrub_environment,
        )
        from fluxqr.errors import FluxqrError

        try:
            for name, (fld, _) in OPTIONS.items():
                if fld in CONVERT and fld in values:
                    try:
                        values[fld] = CONVERT[fld](values[fld])
                    except ValueError:
                        raise FluxqrError(f"{name}: invalid {CONVERT[fld].__name__} value "
                                          f"{str(values[fld])[:40]!r}") from None
            if "session_max_time" in values:
                values["session_max_time"] = parse_duration(values["session_max_time"],
                                                            "--qpu-session-time")
            req = QuantumRequest(**values)
            req.validate()
            import flux

            from fluxqr.flux import instance

            handle = flux.Flux()
            conf = instance.config(handle)
            instance.check_validator(handle, conf)
            resources = jobspec.jobspec.get("resources") or [{}]
            view = instance.resource_view(handle, cores=resources[0].get("type") == "slot")
            apply_quantum(jobspec.jobspec, req, view)
            system = jobspec.jobspec["attributes"]["system"]
            if "environment" in system:
                system["environment"] = scrub_environment(system["environment"],
                                                          instance.credential_names(conf))
                check_environment(system["environment"])
            instance.check_feasible(handle, jobspec.jobspec)
        except FluxqrError as exc:
            # flux's CLI prints ValueError text as one line and exits non-zero.
            raise ValueError(f"fluxqr: {exc}") from None
