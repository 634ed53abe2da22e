"""Loopback stand-ins for vendor services the adapters talk to.

Only the far end of a connection is faked: the real vendor clients (qrmi, …) run
unchanged and reach these servers over HTTP on 127.0.0.1.
"""
