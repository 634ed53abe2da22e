"""The demo job's task: find the job's QPU with fluxqr.allocation() and run a Bell circuit.

Run inside a hybrid job (``make demo`` submits one). Prints the QPU, its properties,
and the measured counts; exits non-zero if the counts are not Bell-like.
"""

from __future__ import annotations

import os
import sys
from typing import Any

SHOTS = 1000


def bell_counts(qpu: Any) -> dict[str, int]:
    """Run H(0), CX(0,1), measure on the QPU's SDK backend; counts by bitstring."""
    backend = qpu.backend()
    if qpu.device is not None and qpu.device.adapter == "braket":
        from braket.circuits import Circuit

        result = backend.run(Circuit().h(0).cnot(0, 1), shots=SHOTS).result()
        return dict(result.measurement_counts)
    from qiskit import QuantumCircuit, transpile

    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    job = backend.run(transpile(qc, backend, seed_transpiler=1), shots=SHOTS)
    return dict(job.result().get_counts())


def main() -> int:
    import fluxqr

    qpus = fluxqr.allocation()
    qpu = qpus[0]
    props = qpu.properties
    print(f"job {os.environ.get('FLUX_JOB_ID', '-')}: QPU {qpu.name} ({props.get('vendor')}, "
          f"{props.get('technology')}, {qpu.qubits} qubits, status {props.get('status', '?')}), "
          f"session {os.environ.get(f'FLUXQR_QPU_{qpu.name.upper()}_SESSION', 'none')}")
    counts = bell_counts(qpu)
    good = counts.get("00", 0) + counts.get("11", 0)
    print(f"Bell circuit, {SHOTS} shots: {dict(sorted(counts.items()))}  "
          f"(00+11 = {good / SHOTS:.1%})")
    return 0 if good >= 0.9 * SHOTS else 1


if __name__ == "__main__":
    sys.exit(main())
