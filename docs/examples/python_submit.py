"""Submit a hybrid job from Python: a flux-core JobspecV1 plus a quantum request.

Run inside a Flux instance set up as fluxqr's admin guide shows:

    flux python docs/examples/python_submit.py     (or any Python that has fluxqr)
"""

import flux
from flux.job import JobspecV1, event_wait

from fluxqr.flux.submit import add_quantum, submit

spec = JobspecV1.from_command(["hostname"], num_tasks=1)
add_quantum(spec, qubits=2, technology="simulator")   # the quantum: keys of a hybrid YAML
jobid = submit(spec)
print(jobid.f58)

# wait for it, and show which QPU Fluxion allocated with the node
handle = flux.Flux()
event_wait(handle, jobid, "clean")
R = flux.job.job_kvs_lookup(handle, jobid, keys=["R"])["R"]
print(" ".join(n["metadata"]["name"] for n in R["scheduling"]["graph"]["nodes"]
               if n["metadata"]["type"] == "qpu"))
