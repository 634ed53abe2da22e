"""The demo job's task: find the job's QPU with fluxqr.allocation() and run a Bell circuit.

Run inside a hybrid job (``make demo`` submits one). Prints the QPU, its properties,
and the measured counts; exits non-zero if the counts are not Bell-like.

``--sdk qiskit`` (the default) runs one Qiskit circuit on whatever device the job got,
through ``qpu.backend("qiskit")``; ``--sdk native`` uses the device's own SDK object
(a Braket circuit on a Braket device, the Qiskit circuit otherwise); ``--sdk braket``
a Braket circuit through ``qpu.backend("braket")``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

SHOTS = 1000


def qiskit_bell() -> Any:
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return qc


def bell_counts(qpu: Any, sdk: str = "qiskit") -> dict[str, int]:
    """Run H(0), CX(0,1), measure on the QPU through ``sdk``; counts by bitstring."""
    backend = qpu.backend(sdk)
    adapter = qpu.device.adapter if qpu.device is not None else qpu.adapter
    if sdk == "braket" or (sdk == "native" and adapter == "braket"):
        from braket.circuits import Circuit

        result = backend.run(Circuit().h(0).cnot(0, 1), shots=SHOTS).result()
        return dict(result.measurement_counts)
    from qiskit import transpile

    job = backend.run(transpile(qiskit_bell(), backend, seed_transpiler=1), shots=SHOTS)
    return dict(job.result().get_counts())


def main(argv: list[str] | None = None) -> int:
    import fluxqr

    p = argparse.ArgumentParser(prog="python -m fluxqr.demo_task")
    p.add_argument("--sdk", default="qiskit", choices=("qiskit", "native", "braket"))
    args = p.parse_args(argv)
    qpus = fluxqr.allocation()
    qpu = qpus[0]
    print(f"job {os.environ.get('FLUX_JOB_ID', '-')}: QPU {qpu.name} ({qpu.vendor}, "
          f"{qpu.technology}, {qpu.qubits} qubits, status {qpu.status or '?'}), "
          f"session {os.environ.get(f'FLUXQR_QPU_{qpu.name.upper()}_SESSION', 'none')}")
    counts = bell_counts(qpu, args.sdk)
    good = counts.get("00", 0) + counts.get("11", 0)
    print(f"Bell circuit ({args.sdk}), {SHOTS} shots: {dict(sorted(counts.items()))}  "
          f"(00+11 = {good / SHOTS:.1%})")
    return 0 if good >= 0.9 * SHOTS else 1


if __name__ == "__main__":
    sys.exit(main())
