"""Import the Slurm QRMI plugin's admin config (``qrmi_config.json``) as a devices.yaml.

The Slurm SPANK plugin (qiskit-community/spank-plugins, ``spank_qrmi``) reads::

    {"resources": [{"name": "test_heron", "type": "ibm-quantum-system",
                    "environment": {"QRMI_IBM_QS_ENDPOINT": "http://...", ...}}, ...]}

and exports each ``environment`` entry to the job as ``<name>_<KEY>``. Here each
resource becomes a ``qrmi`` device with ``params.resource_id = name``,
``params.resource_type = type`` and the non-secret entries as ``params.config``;
entries whose names look secret (API keys, tokens, secret keys, passwords) become
``credentials`` naming an environment variable — ``<name>_<KEY>``, the very variable
qrmi itself reads — and their values are dropped. The task environment fluxqr then
builds is the one the Slurm plugin built, once those variables are set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fluxqr.core.jobspec import SECRET_ENV
from fluxqr.errors import InventoryError

#: qrmi resource type -> (vendor, technology) for the inventory's markers
TYPE_MARKERS = {
    "ibm-quantum-system": ("ibm", "superconducting"),
    "direct-access": ("ibm", "superconducting"),
    "ibm-direct-access": ("ibm", "superconducting"),
    "ibm-quantum-compute-service": ("ibm", "superconducting"),
    "ibm-quantum-platform": ("ibm", "superconducting"),
    "qiskit-runtime-service": ("ibm", "superconducting"),
    "pasqal-cloud": ("pasqal", "neutral_atom"),
    "pasqal-local": ("pasqal", "neutral_atom"),
    "iqm-server": ("iqm", "superconducting"),
    "alice-bob-felis": ("alice_bob", "superconducting"),
    "oqtopus": ("oqtopus", "unknown"),
}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


def is_secret(key: str) -> bool:
    """True for a QRMI setting that holds a secret (by its name, as for jobspecs)."""
    return bool(SECRET_ENV.search(key))


def env_name(resource_id: str, key: str) -> str:
    """The variable that holds a secret setting: qrmi's own ``<resource_id>_<KEY>``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{resource_id}_{key}")


def _qubits_for(name: str, qubits: Mapping[str, int], default: int | None, where: str) -> int:
    n = qubits.get(name, default)
    if n is None:
        raise InventoryError(f"resources '{name}': qrmi_config.json has no qubit count",
                             where=where, fix=f"pass --qubits {name}=N (or --qubits N for all)")
    if n < 1:
        raise InventoryError(f"resources '{name}': qubit count must be >= 1 (got {n})",
                             where=where)
    return n


def from_qrmi_config(data: Any, qubits: Mapping[str, int] | None = None,
                     default_qubits: int | None = None,
                     where: str = "qrmi_config.json") -> dict[str, Any]:
    """A devices.yaml mapping for a qrmi_config.json mapping (validated by the caller).

    Raises:
        InventoryError: one line, for a config that is not the Slurm plugin's format or
            a resource without a qubit count.
    """
    if not isinstance(data, dict) or not isinstance(data.get("resources"), list):
        raise InventoryError("not a Slurm QRMI config: expected {\"resources\": [...]}",
                             where=where, fix="pass the qrmi_config.json of spank_qrmi")
    devices = []
    seen: set[str] = set()
    for i, res in enumerate(data["resources"]):
        if not isinstance(res, dict):
            raise InventoryError(f"resources[{i}]: not an object", where=where)
        name, rtype = res.get("name"), res.get("type")
        env = res.get("environment") or {}
        if not isinstance(name, str) or not _NAME.match(name):
            raise InventoryError(f"resources[{i}].name: {name!r} is not a usable device name",
                                 where=where, fix="use letters, digits, '_', '.', '-'")
        if name in seen:
            raise InventoryError(f"resources[{i}].name: duplicate resource '{name}'",
                                 where=where)
        seen.add(name)
        if not isinstance(rtype, str) or not rtype:
            raise InventoryError(f"resources[{i}].type: missing", where=where,
                                 fix="e.g. ibm-quantum-system, qiskit-runtime-service")
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise InventoryError(f"resources[{i}].environment: must map names to strings",
                                 where=where)
        vendor, technology = TYPE_MARKERS.get(rtype.lower(), ("unknown", "unknown"))
        params: dict[str, Any] = {"resource_id": name, "resource_type": rtype}
        config = {k: v for k, v in env.items() if not is_secret(k)}
        credentials = {k: env_name(name, k) for k in env if is_secret(k)}
        if config:
            params["config"] = config
        device: dict[str, Any] = {
            "name": name, "adapter": "qrmi",
            "qubits": _qubits_for(name, qubits or {}, default_qubits, where),
            "vendor": vendor, "technology": technology, "params": params,
        }
        if credentials:
            device["credentials"] = credentials
        devices.append(device)
    return {"version": 1, "site": f"imported from {where}", "devices": devices}
