"""The quantum agent: a Flux broker module, run by the instance owner.

It refreshes device properties and up/down in Fluxion, follows hybrid jobs through the
job-manager journal, opens and closes vendor sessions, decides when a held job may start,
and serves the session environment to job shells. It builds on :mod:`fluxqr.flux` and
:mod:`fluxqr.core`.
"""
