# <confdir>/modprobe/rc1.d/fluxqr.py: load the modules declared in modprobe.d/fluxqr.toml
# when the instance starts: the agent on rank 0, the credential relay on the other ranks
# (flux modprobe removes them again at shutdown).


def setup(context):
    context.load_modules(["fluxqr", "fluxqr-relay"])
