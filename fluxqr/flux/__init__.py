"""The Flux adapters: RPCs to a running instance, the CLI and ingest plugins, the files
that install fluxqr into Flux, and a local instance for demos and tests.

Modules here import flux-core's Python bindings (lazily, through :mod:`fluxqr.flux.env`);
they build on :mod:`fluxqr.core` and never on the agent or the CLI.
"""
