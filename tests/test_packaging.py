"""pip installs: the wheel `python -m build` makes, and linking a venv to Flux's bindings."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from fluxqr.flux import env as fluxenv

ROOT = Path(__file__).resolve().parent.parent
PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"


def _fake_bindings(directory: Path, extra_import: str | None = None) -> Path:
    """A bindings directory shaped like flux-core's: cffi-made modules, ply, yaml, icu."""
    (directory / "_flux").mkdir(parents=True)
    (directory / "_flux" / "_core.so").write_bytes(b"\x7fELF\0..._cffi_backend\0...")
    (directory / "flux" / "shape").mkdir(parents=True)
    (directory / "flux" / "__init__.py").write_text("")
    (directory / "flux" / "util.py").write_text("import json\nimport yaml\n")
    (directory / "flux" / "shape" / "parser.py").write_text(
        "import ply.lex\nfrom ply import yacc\n")
    # optional (inside try) and never-run (setup.py) imports are not requirements
    (directory / "flux" / "icu.py").write_text("try:\n    import icu\nexcept ImportError:\n"
                                               "    icu = None\n")
    (directory / "flux" / "setup.py").write_text("import setuptools\n")
    if extra_import:
        (directory / "flux" / "new.py").write_text(f"def f():\n    import {extra_import}\n")
    return directory


def test_flux_extra_is_what_the_bindings_import(tmp_path: Path) -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    extra = {t.split(">=")[0].strip().lower() for t in extras["flux"]}
    found = fluxenv.binding_imports(_fake_bindings(tmp_path))
    assert found == {"_cffi_backend", "ply", "yaml"}
    assert {fluxenv.PYPI_NAMES.get(m, m).lower() for m in found} == extra


def test_link_says_what_is_missing_and_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    bindings = _fake_bindings(tmp_path / "lib" / "flux" / PYVER, "fluxqr_no_such_module")
    monkeypatch.setattr(fluxenv, "bindings_dir", lambda: str(bindings))
    site = tmp_path / "site"
    site.mkdir()
    with pytest.raises(fluxenv.LinkError) as err:
        fluxenv.link(str(site))
    text = str(err.value)
    assert "\n" not in text and "fluxqr_no_such_module" in text
    assert f"`{sys.executable} -m pip install " in text
    assert not any(site.iterdir()), "nothing may be linked while something is missing"


def test_link_writes_the_pth_when_the_venv_has_what_the_bindings_import(
        tmp_path: Path, monkeypatch) -> None:
    needed = fluxenv.binding_imports(_fake_bindings(tmp_path / "probe"))
    if any(importlib.util.find_spec(m) is None for m in needed):
        pytest.skip(f"this Python lacks some of {sorted(needed)} (pip install fluxqr[flux])")
    bindings = _fake_bindings(tmp_path / "lib" / "flux" / PYVER)
    monkeypatch.setattr(fluxenv, "bindings_dir", lambda: str(bindings))
    site = tmp_path / "site"
    site.mkdir()
    assert fluxenv.link(str(site)) == str(bindings)
    assert (site / "fluxqr-flux-bindings.pth").read_text() == f"{bindings}\n"


def test_real_bindings_need_only_the_flux_extra() -> None:
    path = fluxenv.bindings_dir()
    if not path:
        pytest.skip("no Flux found (its bindings are what this checks)")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    extra = {t.split(">=")[0].strip().lower() for t in extras["flux"]}
    needed = {fluxenv.PYPI_NAMES.get(m, m).lower() for m in fluxenv.binding_imports(path)}
    assert needed <= extra, f"{path} imports {sorted(needed - extra)}: add to the flux extra"


def test_wheel_holds_the_package_its_data_and_the_script(tmp_path: Path) -> None:
    if importlib.util.find_spec("build") is None:
        pytest.skip("the 'build' package is not installed (pip install fluxqr[dev])")
    for mod in ("setuptools", "wheel"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not installed (needed to build without isolation)")
    # build a copy, so the checkout gets no build/ or egg-info
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "_build", "build", "dist", "*.egg-info", "__pycache__",
        ".pytest_cache", ".ruff_cache"))
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                        "--outdir", str(tmp_path / "dist"), str(src)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("fluxqr-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {p.relative_to(ROOT).as_posix() for p in (ROOT / "fluxqr").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert any(n.endswith(".schema.json") for n in want)
    missing = sorted(want - names)
    assert not missing, f"the wheel lacks {missing} (pyproject [tool.setuptools.package-data])"
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    meta = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    for extra in ("all", "flux", "qrmi"):
        assert f"Provides-Extra: {extra}" in meta, extra
    entry = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "fluxqr = fluxqr.cli:console_main" in entry
    assert not any(n.startswith(("tests/", "docs/", "spack/")) for n in names)
