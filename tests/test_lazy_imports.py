"""Importing fluxqr must not import any vendor SDK: they cost seconds each."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["fluxqr", "fluxqr.cli", "fluxqr.devices", "fluxqr.core.inventory"]
HEAVY = ["qiskit", "qiskit_aer", "qiskit_ibm_runtime", "braket", "boto3", "mqt", "qrmi"]


def test_fluxqr_imports_no_vendor_sdk():
    # fluxqr.cli is written elsewhere; check it once it exists.
    modules = [m for m in MODULES if importlib.util.find_spec(m) is not None]
    assert "fluxqr.devices" in modules
    code = (f"import json, sys\nfor m in {modules!r}: __import__(m)\n"
            f"print(json.dumps(sorted({{n.split('.')[0] for n in sys.modules}})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout))
    assert not loaded & set(HEAVY), f"importing {modules} pulled in {sorted(loaded & set(HEAVY))}"


def test_adapter_modules_import_no_vendor_sdk_either():
    code = ("import json, sys\n"
            "import fluxqr.devices.base, fluxqr.devices.qiskit_adapter, "
            "fluxqr.devices.qrmi_adapter, fluxqr.devices.qdmi_adapter, "
            "fluxqr.devices.braket_adapter\n"
            "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert not set(json.loads(out.stdout)) & set(HEAVY)
