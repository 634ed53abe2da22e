# <confdir>/modprobe/rc1.d/fluxqr.py: load the module declared in modprobe.d/fluxqr.toml
# when the instance starts (flux modprobe removes it again at shutdown).


def setup(context):
    context.load_modules(["fluxqr"])
