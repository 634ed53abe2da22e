"""A small VQE on the job's QPU: the ground state of H = Z0 Z1 + 0.5 (X0 + X1).

The classical optimizer runs here (coordinate descent on two RY angles); every energy
is measured on the QPU through ``qpu.backend("qiskit")``, so the script runs unchanged
on any device Qiskit can drive. Submitted by vqe-ibm.yaml.
"""

from __future__ import annotations

import argparse
import math

from qiskit import QuantumCircuit, transpile

import fluxqr

SHOTS = 2000


def ansatz(theta: list[float], basis: str) -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.ry(theta[0], 0)
    qc.ry(theta[1], 1)
    qc.cx(0, 1)
    if basis == "x":  # measure X on both qubits
        qc.h([0, 1])
    qc.measure_all()
    return qc


def expectation(counts: dict[str, int], term: str) -> float:
    """<Z0 Z1> (term "zz") or <Z0> + <Z1> (term "z") from counts of one basis."""
    total = sum(counts.values())
    value = 0.0
    for bits, n in counts.items():
        b1, b0 = int(bits[0]), int(bits[1])  # Qiskit bitstrings are little-endian
        if term == "zz":
            value += n * (1 - 2 * (b0 ^ b1))
        else:
            value += n * ((1 - 2 * b0) + (1 - 2 * b1))
    return value / total


def energy(backend, theta: list[float]) -> float:
    circuits = [transpile(ansatz(theta, basis), backend, seed_transpiler=1)
                for basis in ("z", "x")]
    zz = expectation(backend.run(circuits[0], shots=SHOTS).result().get_counts(), "zz")
    xx = expectation(backend.run(circuits[1], shots=SHOTS).result().get_counts(), "z")
    return zz + 0.5 * xx


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=20)
    args = p.parse_args()
    qpu = fluxqr.allocation()[0]
    print(f"VQE on {qpu.name} ({qpu.num_qubits} qubits, median 2q error {qpu.error_2q})")
    backend = qpu.backend("qiskit")
    theta, step = [0.1, 0.1], math.pi / 4
    best = energy(backend, theta)
    for it in range(args.iterations):
        for i in range(len(theta)):
            for delta in (step, -step):
                trial = list(theta)
                trial[i] += delta
                e = energy(backend, trial)
                if e < best:
                    theta, best = trial, e
        step /= 2
        print(f"iteration {it + 1}: E = {best:.4f}")
    # exact ground energy of this H is -sqrt(2) ~ -1.414 (and 1 for the start state)
    print(f"final energy {best:.4f} at theta = {[round(t, 3) for t in theta]}")
    return 0 if best < 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
