"""The Spack recipe (spack/packages/py-fluxqr/package.py) agrees with pyproject.toml.

Checked statically (Spack is not needed, and not imported): the recipe is parsed with
``ast`` and its ``version``/``variant``/``depends_on`` directives are compared with
pyproject's version, requires-python, build requirements, dependencies and extras.
A change to pyproject.toml that the recipe does not follow fails here, naming the
line to add or fix in the recipe.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SPACK = ROOT / "spack"
RECIPE = SPACK / "packages" / "py-fluxqr" / "package.py"

#: PyPI name -> Spack package name. A new dependency must be added here *and* to the recipe.
SPACK_NAMES = {
    "setuptools": "py-setuptools",
    "wheel": "py-wheel",
    "networkx": "py-networkx",
    "jsonschema": "py-jsonschema",
    "pyyaml": "py-pyyaml",
    "qiskit": "py-qiskit",
    "qiskit-aer": "py-qiskit-aer",
    "qiskit-ibm-runtime": "py-qiskit-ibm-runtime",
    "qrmi": "py-qrmi",
    "mqt-core": "py-mqt-core",
    "amazon-braket-sdk": "py-amazon-braket-sdk",
    "qiskit-braket-provider": "py-qiskit-braket-provider",
}
#: extras that are not vendor SDKs: "all" aggregates the SDK extras, "dev" is for developers,
#: "flux" is what Flux's own Python bindings import (in Spack, flux-core depends on those),
#: "report" draws charts (matplotlib: a site adds py-matplotlib to its Spack environment).
NOT_VARIANTS = {"all", "dev", "flux", "report"}
#: Spack packages the recipe needs that pyproject cannot name.
SPACK_ONLY = {"flux-core", "flux-sched"}


# -- reading both sides --------------------------------------------------------------------


@dataclass(frozen=True)
class Dep:
    name: str
    lower: str | None  # "3.2" for "@3.2:"; None without a version
    types: frozenset[str]
    when: str | None
    spec: str


def _const(node: ast.AST) -> object:
    return ast.literal_eval(node)


def _parse_spec(spec: str) -> tuple[str, str | None]:
    m = re.fullmatch(r"([a-z0-9][a-z0-9-]*)(?:@([0-9][0-9A-Za-z.]*):)?", spec.strip())
    assert m, (f"recipe: depends_on({spec!r}) is not of the form 'name' or 'name@X:' "
               f"(a lower bound, like pyproject's '>=X'); extend tests/test_spack.py if "
               f"another form is needed")
    return m.group(1), m.group(2)


class Recipe:
    """The directives of the PyFluxqr class, read from its AST."""

    def __init__(self, path: Path):
        self.source = path.read_text()
        self.tree = ast.parse(self.source, str(path))
        classes = [n for n in self.tree.body if isinstance(n, ast.ClassDef)]
        assert [c.name for c in classes] == ["PyFluxqr"], \
            f"{path}: expected exactly one class, PyFluxqr (got {[c.name for c in classes]})"
        self.cls = classes[0]
        self.bases = [ast.unparse(b) for b in self.cls.bases]
        self.versions: dict[str, dict[str, object]] = {}
        self.variants: dict[str, dict[str, object]] = {}
        self.deps: list[Dep] = []
        self._walk(self.cls.body, None)
        self.methods = {n.name: n for n in self.cls.body if isinstance(n, ast.FunctionDef)}

    def _walk(self, body: list[ast.stmt], when: str | None) -> None:
        for stmt in body:
            if isinstance(stmt, ast.With):  # with when("+x"): depends_on(...)
                conds = [_const(i.context_expr.args[0]) for i in stmt.items
                         if isinstance(i.context_expr, ast.Call)
                         and getattr(i.context_expr.func, "id", "") == "when"]
                assert len(conds) == len(stmt.items), ast.unparse(stmt)
                inner = " ".join(c for c in [when, *conds] if c)
                self._walk(stmt.body, inner)
                continue
            if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
                    and isinstance(stmt.value.func, ast.Name)):
                continue
            call = stmt.value
            kwargs = {k.arg: _const(k.value) for k in call.keywords}
            args = [_const(a) for a in call.args]
            if call.func.id == "version":
                self.versions[args[0]] = kwargs
            elif call.func.id == "variant":
                self.variants[args[0]] = kwargs
            elif call.func.id == "depends_on":
                name, lower = _parse_spec(args[0])
                types = kwargs.get("type", ("build", "link"))
                types = (types,) if isinstance(types, str) else tuple(types)
                cond = " ".join(c for c in [when, kwargs.get("when")] if c) or None
                self.deps.append(Dep(name, lower, frozenset(types), cond, args[0]))

    def deps_named(self, name: str, when: str | None = None) -> list[Dep]:
        return [d for d in self.deps if d.name == name and d.when == when]


def _requirement(text: str) -> tuple[str, str | None]:
    """'networkx>=3.2' -> ('networkx', '3.2'); only the forms the recipe can mirror."""
    m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:>=\s*([0-9][0-9A-Za-z.]*))?\s*",
                     text)
    assert m, (f"pyproject requirement {text!r} is not 'name' or 'name>=X': extend "
               f"tests/test_spack.py and the recipe to express it")
    return m.group(1).lower().replace("_", "-"), m.group(2)


def _spack_name(pypi: str) -> str:
    assert pypi in SPACK_NAMES, (f"pyproject names '{pypi}', which has no Spack name in "
                                 f"tests/test_spack.py: add it to SPACK_NAMES and a depends_on "
                                 f"to {RECIPE.relative_to(ROOT)}")
    return SPACK_NAMES[pypi]


def _expect(recipe: Recipe, pypi: str, lower: str | None, when: str | None,
            types: set[str], where: str) -> None:
    name = _spack_name(pypi)
    found = recipe.deps_named(name, when)
    want = f'depends_on("{name}{f"@{lower}:" if lower else ""}", ' \
           f'type={tuple(sorted(types))}{f", when={when!r}" if when else ""})'
    assert found, f"{where}: '{pypi}' is not in the recipe; add {want}"
    assert [d.lower for d in found] == [lower], \
        f"{where}: '{pypi}' has lower bound {lower} but the recipe says " \
        f"{[d.spec for d in found]}; make it {want}"
    assert types <= found[0].types, f"{where}: '{pypi}' must be type {sorted(types)} ({want})"


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def recipe() -> Recipe:
    return Recipe(RECIPE)


def _extras(pyproject: dict) -> dict[str, list[str]]:
    return pyproject["project"].get("optional-dependencies", {})


def _sdk_extras(pyproject: dict) -> list[str]:
    return sorted(set(_extras(pyproject)) - NOT_VARIANTS)


# -- the checks ----------------------------------------------------------------------------


def test_recipe_is_a_python_package_in_spack_style(recipe: Recipe) -> None:
    assert recipe.bases == ["PythonPackage"], recipe.bases
    assert "from spack.package import *" in recipe.source
    assert ast.get_docstring(recipe.cls), "a Spack recipe's class docstring is its description"
    body = {t.id for n in recipe.cls.body if isinstance(n, ast.Assign) for t in n.targets
            if isinstance(t, ast.Name)}
    assert {"homepage", "git"} <= body, body


def test_version_is_pyprojects(recipe: Recipe, pyproject: dict) -> None:
    version = pyproject["project"]["version"]
    numeric = [v for v in recipe.versions if re.fullmatch(r"[0-9][0-9.]*", v)]
    assert numeric, "the recipe has no release version()"
    newest = max(numeric, key=lambda v: tuple(int(p) for p in v.split(".")))
    assert newest == version, (f"pyproject version is {version} but the recipe's newest release "
                               f"is {newest}: add version(\"{version}\", tag=\"v{version}\")")


def test_python_bound_matches_requires_python(recipe: Recipe, pyproject: dict) -> None:
    rp = pyproject["project"]["requires-python"]
    m = re.fullmatch(r">=\s*([0-9.]+)", rp)
    assert m, f"requires-python {rp!r} is not '>=X': extend this test and the recipe"
    found = recipe.deps_named("python")
    assert [d.lower for d in found] == [m.group(1)], \
        f"requires-python is {rp} but the recipe has {[d.spec for d in found]}"
    assert {"build", "run"} <= found[0].types


def test_build_requirements(recipe: Recipe, pyproject: dict) -> None:
    for text in pyproject["build-system"]["requires"]:
        name, lower = _requirement(text)
        _expect(recipe, name, lower, None, {"build"}, "[build-system] requires")


def test_core_dependencies(recipe: Recipe, pyproject: dict) -> None:
    wanted = set()
    for text in pyproject["project"]["dependencies"]:
        name, lower = _requirement(text)
        _expect(recipe, name, lower, None, {"build", "run"}, "[project] dependencies")
        wanted.add(_spack_name(name))
    build = {_spack_name(_requirement(t)[0]) for t in pyproject["build-system"]["requires"]}
    stale = {d.name for d in recipe.deps if d.when is None and d.name.startswith("py-")
             } - wanted - build
    assert not stale, f"the recipe depends on {sorted(stale)}, which pyproject does not: " \
                      f"remove them, or add them to pyproject"


def test_every_sdk_extra_is_a_variant_with_its_dependencies(recipe: Recipe,
                                                            pyproject: dict) -> None:
    extras = _extras(pyproject)
    sdk = _sdk_extras(pyproject)
    assert sorted(recipe.variants) == sdk, \
        f"pyproject's SDK extras are {sdk} but the recipe's variants are " \
        f"{sorted(recipe.variants)}: one variant per extra (or list a non-SDK extra in " \
        f"NOT_VARIANTS in tests/test_spack.py)"
    for extra in sdk:
        assert recipe.variants[extra].get("default") is False, f"+{extra} must default to off"
        wanted = set()
        for text in extras[extra]:
            name, lower = _requirement(text)
            _expect(recipe, name, lower, f"+{extra}", {"build", "run"}, f"extra '{extra}'")
            wanted.add(_spack_name(name))
        have = {d.name for d in recipe.deps if d.when == f"+{extra}"}
        assert have == wanted, f"+{extra} depends on {sorted(have - wanted)} too, which " \
                               f"pyproject's '{extra}' extra does not list"
    conditions = {d.when for d in recipe.deps if d.when}
    assert conditions <= {f"+{e}" for e in sdk}, f"unexpected when= conditions {conditions}"


def test_all_extra_is_exactly_the_variants(pyproject: dict) -> None:
    (text,) = _extras(pyproject)["all"]
    m = re.fullmatch(r"fluxqr\[([a-z,\s-]+)\]", text)
    assert m, f"'all' extra {text!r} is not fluxqr[...]"
    assert sorted(x.strip() for x in m.group(1).split(",")) == _sdk_extras(pyproject)


def test_flux_is_a_run_dependency(recipe: Recipe, pyproject: dict) -> None:
    for pkg in SPACK_ONLY:
        found = recipe.deps_named(pkg)
        assert found and "run" in found[0].types, f"the recipe needs depends_on({pkg!r}, " \
                                                  f"type='run')"


def test_install_places_the_flux_files_and_sets_the_search_paths(recipe: Recipe,
                                                                 tmp_path: Path) -> None:
    from fluxqr.flux import install as fluxinstall

    step = next((m for m in recipe.methods.values()
                 if any(ast.unparse(d) == "run_after('install')" for d in m.decorator_list)),
                None)
    assert step is not None, "the recipe needs a @run_after(\"install\") step"
    text = ast.unparse(step)
    assert "'flux-install'" in text and "'--prefix'" in text, \
        "the install step must run `fluxqr flux-install --prefix ...`"
    env = recipe.methods.get("setup_run_environment")
    assert env is not None, "the recipe needs setup_run_environment"
    prepends: dict[str, tuple[str, ...]] = {}
    for call in ast.walk(env):
        if isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "prepend_path":
            var = _const(call.args[0])
            join = call.args[1]
            assert isinstance(join, ast.Call) and ast.unparse(join.func) == "join_path", \
                ast.unparse(call)
            prepends[var] = tuple(_const(a) for a in join.args[1:])
    # the directories must be where `fluxqr flux-install` really writes
    files = fluxinstall.install(tmp_path)
    rel = {k: p.parent.relative_to(tmp_path).parts for k, p in files.items()}
    assert prepends.get("FLUX_EXEC_PATH") == rel["command"], (prepends, rel)
    assert prepends.get("FLUX_CLI_PLUGINPATH") == rel["plugin"], (prepends, rel)


def test_repo_yaml_names_the_namespace_and_its_layout(recipe: Recipe) -> None:
    conf = yaml.safe_load((SPACK / "repo.yaml").read_text())
    repo = conf["repo"]
    assert repo["namespace"] == "fluxqr"
    api = str(repo.get("api", "v1.0"))
    assert re.fullmatch(r"v[12]\.[0-9]+", api), api
    packages = SPACK / repo.get("subdirectory", "packages")
    dirs = sorted(p.name for p in packages.iterdir() if (p / "package.py").is_file())
    assert dirs, f"no packages under {packages}"
    for d in dirs:
        if api.startswith("v1"):  # v1: directory named like the package, class mangled
            assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", d), d
            cls = "".join(p.capitalize() for p in d.split("-"))
        else:  # v2: directories are Python module names
            assert d.isidentifier(), f"Package API {api} needs module-named dirs, got {d}"
            cls = "".join(p.capitalize() for p in d.split("_"))
        source = (packages / d / "package.py").read_text()
        assert f"class {cls}(" in source, f"{d}/package.py must define class {cls}"


# -- with a real Spack (skipped without one) -----------------------------------------------
#
# These run `spack spec` for the base package and every variant, and a real `spack install`
# of the base package from this checkout, with this interpreter's world as externals:
# flux-core/flux-sched = the Flux fluxqr finds; python = this venv's base interpreter;
# python-venv = this venv (Spack installs Python packages with a python-venv, and an external
# one keeps the site-packages layout this venv really has); py-* = the packages in this venv.
# The installed files are then used from a real instance without `spack load`.

SPACK_EXE = shutil.which("spack")
requires_spack = pytest.mark.skipif(not SPACK_EXE, reason="no `spack` on PATH (these checks "
                                    "run the recipe through a real Spack)")
#: Spack package -> the distribution name that satisfies it as an external
EXTERNAL_DISTS = {v: k for k, v in SPACK_NAMES.items() if v.startswith("py-")}
EXTERNAL_DISTS["py-pip"] = "pip"  # PythonPackage's installer, a build dependency of every one
#: what a base install cannot do without: pip, the build backend, the core dependencies
BASE_DISTS = ["pip", "setuptools", "wheel", "networkx", "jsonschema", "pyyaml"]
VARIANTS = ["", *(f"+{e}" for e in _sdk_extras(tomllib.loads((ROOT / "pyproject.toml")
                                                             .read_text())))]


def _spack_major() -> int:
    out = subprocess.run([SPACK_EXE, "--version"], capture_output=True, text=True, timeout=120)
    m = re.match(r"\s*(\d+)\.", out.stdout)
    return int(m.group(1)) if m else 0


def _flux_sched_version(prefix: Path) -> str:
    """flux-sched's version: scripts/build-flux.sh's stamp, else $FLUX_SCHED_VERSION."""
    stamp = prefix / ".fluxqr-build"
    if stamp.is_file():
        m = re.search(r"flux-sched (\S+)", stamp.read_text())
        if m:
            return m.group(1)
    if os.environ.get("FLUX_SCHED_VERSION"):
        return os.environ["FLUX_SCHED_VERSION"]
    pytest.skip(f"cannot tell the flux-sched version in {prefix} (no .fluxqr-build stamp): "
                f"set FLUX_SCHED_VERSION")


@pytest.fixture(scope="module")
def spack_scope(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Spack config scope: this repo; Flux, Python and this venv's packages as externals;
    a private install tree and stage."""
    from importlib import metadata

    from fluxqr.flux import env as fluxenv

    flux = fluxenv.flux_command()
    if not flux or not fluxenv.has_fluxion():
        pytest.skip("no Flux with Fluxion to declare as the external flux-core/flux-sched")
    if sys.prefix == sys.base_prefix:
        pytest.skip("run the tests from a virtualenv: it is declared the external python-venv")
    missing = []
    for dist in BASE_DISTS:
        try:
            metadata.version(dist)
        except metadata.PackageNotFoundError:
            missing.append(dist)
    if missing:
        pytest.skip(f"this venv lacks {', '.join(missing)}, which the Spack install uses as "
                    f"externals (pip install {' '.join(missing)})")
    flux_prefix = Path(flux).resolve().parent.parent
    core = subprocess.run([flux, "version"], capture_output=True, text=True,
                          check=True).stdout.split()[1]
    python = "python@" + ".".join(map(str, sys.version_info[:3]))
    in_venv = [{"spec": "python-venv"}]  # site-packages paths from the venv, not a guess
    pkgs: dict = {
        "python": {"buildable": False, "externals": [
            {"spec": python, "prefix": sys.base_prefix}]},
        "python-venv": {"buildable": False, "externals": [
            {"spec": "python-venv@1.0", "prefix": sys.prefix,
             "dependencies": [{"spec": "python"}]}]},
        "flux-core": {"buildable": False, "require": "@0.84:", "externals": [
            {"spec": f"flux-core@{core}", "prefix": str(flux_prefix)}]},
        "flux-sched": {"buildable": False, "require": "@0.51:", "externals": [
            {"spec": f"flux-sched@{_flux_sched_version(flux_prefix)}",
             "prefix": str(flux_prefix)}]},
    }
    for spack_name, dist in EXTERNAL_DISTS.items():
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue  # a variant needing it then fails to concretize, naming it
        pkgs[spack_name] = {"buildable": False, "externals": [
            {"spec": f"{spack_name}@{version}", "prefix": sys.prefix,
             "dependencies": in_venv}]}
    base = tmp_path_factory.mktemp("spack")
    scope = base / "scope"
    scope.mkdir()
    (scope / "packages.yaml").write_text(yaml.safe_dump({"packages": pkgs}))
    repos = {"fluxqr": str(SPACK)} if _spack_major() >= 1 else [str(SPACK)]
    (scope / "repos.yaml").write_text(yaml.safe_dump({"repos": repos}))
    (scope / "config.yaml").write_text(yaml.safe_dump({"config": {
        "install_tree": {"root": str(base / "opt")},
        "build_stage": [str(base / "stage")]}}))
    return scope


def _spack(scope: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([SPACK_EXE, "-C", str(scope), *args], capture_output=True,
                          text=True, timeout=timeout)


@requires_spack
@pytest.mark.parametrize("variant", VARIANTS)
def test_spack_concretizes_each_variant_with_externals(variant: str, spack_scope: Path) -> None:
    r = _spack(spack_scope, "spec", f"py-fluxqr{variant}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "py-fluxqr@" in r.stdout and "flux-core@" in r.stdout and "flux-sched@" in r.stdout
    (root,) = [line for line in r.stdout.splitlines() if "py-fluxqr@" in line]
    for extra in (v.lstrip("+") for v in VARIANTS if v):  # the asked variant, and only it, on
        assert ("+" if variant == f"+{extra}" else "~") + extra in root, root


@requires_spack
def test_spack_install_works_without_spack_load(spack_scope: Path, tmp_path: Path) -> None:
    """`spack install` from this checkout; then, in an environment with no PYTHONPATH and no
    venv, Flux finds the installed `flux qr`, --qpu plugin, ingest plugins and broker module
    through FLUX_EXEC_PATH / FLUX_CLI_PLUGINPATH / file paths alone."""
    from fluxqr.flux import env as fluxenv
    from fluxqr.flux.install import ingest_config
    from fluxqr.flux.localinstance import LocalInstance

    src = tmp_path / "src"  # a copy: a Spack dev_path build writes into its source tree
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    spec = f"py-fluxqr@{version}"
    r = _spack(spack_scope, "install", spec, f"dev_path={src}")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    r = _spack(spack_scope, "location", "-i", spec, f"dev_path={src}")
    assert r.returncode == 0, r.stderr
    share = Path(r.stdout.strip()) / "share" / "fluxqr" / "flux"
    installed = {"command": share / "cmd" / "flux-qr.py",
                 "plugin": share / "cli" / "plugins" / "fluxqr.py",
                 "module": share / "modules" / "fluxqr.py",
                 "frobnicator": next((share / "ingest").glob("*frob*")),
                 "validator": next((share / "ingest").glob("*valid*"))}
    for path in installed.values():
        assert path.is_file(), path
        text = path.read_text()
        assert str(src) not in text, f"{path} points into the build's source"
        assert f"'{ROOT}'" not in text, f"{path} points into this checkout, not the install"

    flux = fluxenv.flux_command()
    # no spack load, no venv: only the search paths the recipe's run environment sets
    clean = {"PATH": f"{Path(flux).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
             "PYTHONPATH": "",
             "FLUX_EXEC_PATH": str(installed["command"].parent),
             "FLUX_CLI_PLUGINPATH": str(installed["plugin"].parent)}
    r = subprocess.run([flux, "qr", "graph", "build", "--nodes", "1", "--cores", "2",
                        "--devices", str(ROOT / "graphs" / "local-devices.yaml"),
                        "-o", str(tmp_path / "R.json")],
                       env=clean, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    inst = LocalInstance(tmp_path / "instance", tmp_path / "R.json", size=1, hosts="node0",
                         validator=False, config=ingest_config(installed),
                         devices=ROOT / "graphs" / "local-devices.yaml", agent=False)
    inst.env = dict(clean)
    inst.files["shell_initrc"] = share / "shell" / "initrc.lua"
    with inst:
        r = inst.run(["flux", "run", "--qpu=aer", "printenv", "FLUXQR_QPUS"])
        assert r.returncode == 0 and r.stdout.strip() == "aer", r.stdout + r.stderr
        r = inst.run(["flux", "submit", "--qpu=nosuch", "true"])
        assert r.returncode != 0 and "nosuch" in r.stderr, r.stderr
        r = inst.run(["flux", "run", "hostname"])  # a classical job
        assert r.returncode == 0, r.stderr
        r = inst.run(["flux", "module", "load", str(installed["module"])])
        assert r.returncode == 0, r.stderr
        r = inst.run(["flux", "qr", "status"])
        assert r.returncode == 0 and "aer" in r.stdout, r.stdout + r.stderr
