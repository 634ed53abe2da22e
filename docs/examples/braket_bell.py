"""A Bell pair on the job's QPU, through Amazon Braket (run it with --qpu-vendor=amazon)."""

from braket.circuits import Circuit

import fluxqr

qpu = fluxqr.allocation()[0]
device = qpu.backend("braket")  # braket LocalSimulator, or AwsDevice for a device ARN

task = device.run(Circuit().h(0).cnot(0, 1), shots=1000)
print(qpu.name, dict(task.result().measurement_counts))
