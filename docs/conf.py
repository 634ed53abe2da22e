"""Sphinx configuration for the fluxqr documentation (``make docs``)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(ROOT))

_project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

project = "fluxqr"
author = "fluxqr developers"
copyright = "fluxqr developers"  # noqa: A001 - Sphinx's name for it
release = _project["version"]
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "fluxqr_docs",
]

# fluxqr.agent.module and fluxqr.flux.cliplugin import the flux bindings at import time;
# the docs must build where Flux is not installed.
autodoc_mock_imports = ["flux"]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

exclude_patterns = ["_build", "examples"]
templates_path: list[str] = []
html_theme = "alabaster"
html_theme_options = {"description": _project["description"], "fixed_sidebar": True}
html_static_path: list[str] = []
pygments_style = "sphinx"
