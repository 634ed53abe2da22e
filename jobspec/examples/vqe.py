"""A small VQE on the job's QPU: the ground state of H = Z0 Z1 + 0.5 (X0 + X1).

The classical optimizer runs here (coordinate descent on two RY angles); every energy
is measured on the QPU through ``qpu.backend("qiskit")``, so the script runs unchanged
on any device Qiskit can drive. Submitted by vqe-ibm.yaml.
"""

from __future__ import annotations

import argparse
import math

from qiskit import QuantumCircuit, transpile
from qiskit.circuit import ParameterVector

import fluxqr

SHOTS = 2000


def ansatz(basis: str) -> tuple[QuantumCircuit, ParameterVector]:
    theta = ParameterVector("theta", 2)
    qc = QuantumCircuit(2)
    qc.ry(theta[0], 0)
    qc.ry(theta[1], 1)
    qc.cx(0, 1)
    if basis == "x":  # measure X on both qubits
        qc.h([0, 1])
    qc.measure_all()
    return qc, theta


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


class Energy:
    """<H> at given angles, measured on the backend (circuits transpiled once)."""

    def __init__(self, backend):
        self.backend = backend
        self.circuits = {}
        for basis in ("z", "x"):
            qc, theta = ansatz(basis)
            self.circuits[basis] = (transpile(qc, backend, seed_transpiler=1), theta)

    def __call__(self, *points: list[float]) -> list[float]:
        """The energies at several points, from one backend call (one job, many circuits)."""
        bound = [qc.assign_parameters(dict(zip(theta, angles, strict=True)))
                 for angles in points for qc, theta in self.circuits.values()]
        result = self.backend.run(bound, shots=SHOTS).result()
        counts = [result.get_counts(i) for i in range(len(bound))]
        return [expectation(counts[2 * k], "zz") + 0.5 * expectation(counts[2 * k + 1], "z")
                for k in range(len(points))]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=3)
    args = p.parse_args()
    qpu = fluxqr.allocation()[0]
    print(f"VQE on {qpu.name} ({qpu.num_qubits} qubits, median 2q error {qpu.error_2q})")
    energy = Energy(qpu.backend("qiskit"))
    theta, step = [0.1, 0.1], math.pi / 2
    (best,) = energy(theta)
    for it in range(args.iterations):
        for i in range(len(theta)):
            trials = [[t + (d if j == i else 0.0) for j, t in enumerate(theta)]
                      for d in (step, -step)]
            for trial, e in zip(trials, energy(*trials), strict=True):
                if e < best:
                    theta, best = trial, e
        step /= 2
        print(f"iteration {it + 1}: E = {best:.4f}")
    # exact ground energy of this H is -sqrt(2) ~ -1.414 (and 1 for the start state)
    print(f"final energy {best:.4f} at theta = {[round(t, 3) for t in theta]}")
    return 0 if best < 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
