"""A calibration check: read the job's QPU's calibration and judge it; runs no circuit.

Works on devices that only report properties (like the QDMI iqm_garnet model), which
is why device.json asks for ``"sdk": "none"``. Exits 1 when the median 2-qubit error
is above --max-error or unknown.
"""

from __future__ import annotations

import argparse

import fluxqr


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--max-error", type=float, default=0.02,
                   help="highest acceptable median 2-qubit error")
    args = p.parse_args()
    qpu = fluxqr.allocation()[0]
    print(f"{qpu.name}: {qpu.num_qubits} qubits, status {qpu.status}, "
          f"executes={qpu.executes}, formats={qpu.formats or '-'}")
    for key in ("error_1q", "error_2q", "error_readout", "t1_us", "t2_us",
                "coupling_edges", "dead_couplers", "calibrated_at"):
        print(f"  {key:14} {getattr(qpu, key)}")
    if qpu.error_2q is None:
        print("median 2-qubit error unknown")
        return 1
    ok = qpu.error_2q <= args.max_error
    print(f"median 2-qubit error {qpu.error_2q:.4g} {'<=' if ok else '>'} {args.max_error}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
