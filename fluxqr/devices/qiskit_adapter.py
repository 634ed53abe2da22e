"""The ``qiskit`` adapter: any local Qiskit ``BackendV2`` named in devices.yaml.

``params.backend`` is one of:

* ``fake_<name>`` — a qiskit-ibm-runtime fake backend (``fake_fez``, ``fake_torino``,
  …): real IBM calibration data, frozen at the date it was captured;
* ``aer_simulator`` — qiskit-aer's ``AerSimulator`` (ideal, fully connected);
* ``generic:<n>`` — Qiskit's ``GenericBackendV2`` with n qubits and random but
  reproducible calibration (``params.seed``, default 0).

These backends are local: always online, never queued.
"""

from __future__ import annotations

import warnings
from typing import Any

from fluxqr.devices.base import SDK_LOCK, Adapter, iso_utc, require, target_summary
from fluxqr.devices.snapshot import DeviceSnapshot
from fluxqr.errors import FluxqrError

EXTRA = "qiskit"


def fake_backend_class(name: str) -> type:
    """The qiskit-ibm-runtime fake backend class whose ``backend_name`` is ``name``."""
    fake_provider = require("qiskit_ibm_runtime.fake_provider", EXTRA)
    FakeBackendV2 = require("qiskit_ibm_runtime.fake_provider.fake_backend", EXTRA).FakeBackendV2

    known = []
    for attr in dir(fake_provider):
        cls = getattr(fake_provider, attr)
        if isinstance(cls, type) and issubclass(cls, FakeBackendV2):
            backend_name = getattr(cls, "backend_name", None)
            if backend_name == name:
                return cls
            if isinstance(backend_name, str):
                known.append(backend_name)
    raise FluxqrError(f"no qiskit-ibm-runtime fake backend named '{name}'",
                      fix=f"use one of: {', '.join(sorted(set(known)))}")


def backend_extras(backend: Any) -> dict[str, Any]:
    """max_shots and calibrated_at of a backend, where it reports them."""
    extras: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # configuration()/properties() are deprecated on some
        config = backend.configuration() if hasattr(backend, "configuration") else None
        max_shots = getattr(config, "max_shots", None) or getattr(backend, "max_shots", None)
        if isinstance(max_shots, int) and max_shots > 0:
            extras["max_shots"] = max_shots
        props = backend.properties() if hasattr(backend, "properties") else None
        if props is not None and getattr(props, "last_update_date", None):
            extras["calibrated_at"] = iso_utc(props.last_update_date)
    return extras


class QiskitAdapter(Adapter):
    """A local Qiskit backend: its ``Target`` is the calibration."""

    name = "qiskit"
    extra = EXTRA

    def backend(self) -> Any:
        spec = str(self.params.get("backend", ""))
        seed = self.params.get("seed")
        if spec == "aer_simulator":
            aer = require("qiskit_aer", EXTRA)
            return aer.AerSimulator() if seed is None else aer.AerSimulator(seed_simulator=seed)
        if spec.startswith("generic:"):
            try:
                n = int(spec.split(":", 1)[1])
            except ValueError:
                n = 0
            if n < 1:
                raise FluxqrError(f"device '{self.device.name}': backend '{spec}' needs a "
                                  f"positive qubit count, e.g. generic:5")
            fake = require("qiskit.providers.fake_provider", EXTRA)
            return fake.GenericBackendV2(n, seed=0 if seed is None else int(seed))
        if spec.startswith("fake_"):
            return fake_backend_class(spec)()
        raise FluxqrError(f"device '{self.device.name}': unknown qiskit backend '{spec}'",
                          fix="use fake_<name>, aer_simulator or generic:<qubits>")

    def qiskit_backend(self) -> Any:
        return self.backend()

    def sdks(self) -> list[str]:
        return ["native", "qiskit"]

    def read(self) -> DeviceSnapshot:
        with SDK_LOCK:  # all local CPU work: nothing to overlap, and SDK imports stay serial
            backend = self.backend()
            return self.snapshot(status="online", queue_depth=0, formats="qiskit",
                                 executes=True, **target_summary(backend.target),
                                 **backend_extras(backend))
