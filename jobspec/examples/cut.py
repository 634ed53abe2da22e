"""Two QPUs at once: a 4-qubit circuit cut into two 2-qubit halves, one on each QPU.

The circuit is two Bell pairs with no gate across the cut, so the halves run
independently and the joint distribution is the product of theirs — the simplest
case of circuit cutting, with no sampling overhead. Each half goes through
``qpu.backend("qiskit")``, whatever devices the job got. Submitted by two-simulators.yaml.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from qiskit import QuantumCircuit, transpile

import fluxqr

SHOTS = 1000


def half() -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return qc


def run(qpu) -> dict[str, float]:
    backend = qpu.backend("qiskit")
    counts = backend.run(transpile(half(), backend, seed_transpiler=1), shots=SHOTS).result()
    return {k: v / SHOTS for k, v in counts.get_counts().items()}


def main() -> int:
    qpus = fluxqr.allocation()
    if len(qpus) < 2:
        print(f"this job has {len(qpus)} QPU; cut.py needs two (quantum.qpus: 2)")
        return 2
    with ThreadPoolExecutor(2) as pool:
        left, right = pool.map(run, qpus[:2])
    joint = {a + b: pa * pb for a, pa in left.items() for b, pb in right.items()}
    for qpu, dist in zip(qpus[:2], (left, right), strict=True):
        print(f"{qpu.name}: {dict(sorted(dist.items()))}")
    top = sorted(joint.items(), key=lambda kv: -kv[1])[:4]
    print("joint (4 qubits), most likely:", {k: round(v, 3) for k, v in top})
    bell_like = sum(p for k, p in joint.items() if k[:2] in ("00", "11") and k[2:] in ("00", "11"))
    return 0 if bell_like >= 0.8 else 1


if __name__ == "__main__":
    raise SystemExit(main())
