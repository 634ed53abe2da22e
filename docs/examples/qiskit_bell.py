"""A Bell pair on the job's QPU, through Qiskit (run it with flux run/submit --qpu...)."""

from qiskit import QuantumCircuit, transpile

import fluxqr

qpu = fluxqr.allocation()[0]  # the job's first (here: only) QPU
print(f"{qpu.name}: {qpu.qubits} qubits, median 2q error {qpu.properties.get('error_2q', '-')}")

bell = QuantumCircuit(2)
bell.h(0)
bell.cx(0, 1)
bell.measure_all()

with fluxqr.session() as s:  # the job's session: opened by the agent, or here if none was
    backend = s.backend(qpu.name, sdk="qiskit")  # a Qiskit BackendV2, whatever the device
    result = backend.run(transpile(bell, backend), shots=1000).result()
    print(result.get_counts())
