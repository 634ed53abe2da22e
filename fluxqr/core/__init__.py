"""The pure library: inventory, resource graph, jobspecs, sessions bookkeeping — no Flux import.

Everything here works on files and plain data; :mod:`fluxqr.flux` talks to a running
instance, :mod:`fluxqr.agent` runs inside one.
"""
