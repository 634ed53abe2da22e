"""The documentation builds without warnings, and every command it shows works as shown.

Convention for shell examples in docs/ (docs/index.rst states it for readers):

* Shell examples are ``.. code-block:: console`` blocks (never ``bash``/``sh``/``shell``).
* A line ``$ COMMAND`` is run by this file exactly as written (through ``bash``, so pipes
  and ``~`` work), in a scratch directory holding the example files that docs/index.rst
  names, and must exit 0. Offline commands run there directly; commands that need a
  running Flux (``flux qr ...``, ``flux submit/run ...``, ``fluxqr submit/status``,
  ``fluxqr jobspec`` and ``fluxqr refresh`` without ``--graph``, ``fluxqr usage``
  without ``--db``) run inside one real
  test instance (tests/fluxinst.py) set up as the admin guide says, with the refresh
  module loaded at start-up by the admin guide's modprobe files. Without a Flux those
  are skipped with fluxinst.SKIP_REASON.
* A line ``# COMMAND`` is a site-administration step (pip/Spack installs, copying into
  system directories, ``flux module load``, editing configuration) and is not run. A
  ``fluxqr``/``flux qr`` command may not be written this way: every one shown is run.
* Lines without a prompt are output and are not compared (ids and times differ).

Commands are run page by page in the order they appear, so a page may use a file an
earlier command on it wrote. TOML, JSON and Python shown in the docs are parsed too.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import GRAPHS, JOBSPECS, ROOT

DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
PAGES = sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts)

#: what docs/index.rst promises is in the directory the examples run in
WORKDIR_FILES = {
    "devices.yaml": GRAPHS / "local-devices.yaml",
    **{p.name: p for p in sorted((JOBSPECS / "examples").iterdir())},
    **{p.name: p for p in sorted(EXAMPLES.glob("*.py"))},
    "qrmi_config.json": ROOT / "tests" / "data" / "qrmi_config.json.example",
}
#: the admin guide's site paths, replaced by the test instance's own in its modprobe files
SITE_MODULE = "/opt/fluxqr/flux/modules/fluxqr.py"
SITE_RELAY = "/opt/fluxqr/flux/modules/fluxqr-relay.py"
#: fluxqr subcommands the docs need not show being run (called by Flux, not by people)
NOT_SHOWN = {"session"}
SHELL_LANGUAGES = {"bash", "sh", "shell", "shell-session", "sh-session", "zsh"}


# -- reading the docs ----------------------------------------------------------------------

DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. (?P<kind>code-block|code|sourcecode|"
                       r"literalinclude)::\s*(?P<arg>\S*)\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the block's first body line
    kind: str  # code-block, literalinclude, or literal (a "::" paragraph)
    arg: str  # language, or the included file
    options: tuple[str, ...]
    lines: tuple[str, ...]  # dedented body

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


@dataclass(frozen=True)
class Command:
    page: Path
    line: int
    prompt: str  # "$" or "#"
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = DIRECTIVE.match(lines[i])
        text = lines[i].rstrip()
        is_literal = not m and text.endswith("::") and not text.lstrip().startswith("..")
        if not (m or is_literal):
            i += 1
            continue
        indent = len(lines[i]) - len(lines[i].lstrip())
        j = i + 1
        body: list[str] = []
        while j < len(lines) and (not lines[j].strip()
                                  or len(lines[j]) - len(lines[j].lstrip()) > indent):
            body.append(lines[j])
            j += 1
        body_text = textwrap.dedent("\n".join(body)).splitlines()
        options = []
        while body_text and re.match(r"^:[\w-]+:", body_text[0]):
            options.append(body_text.pop(0))
        first = i + 2 + len(options)
        while body_text and not body_text[0].strip():
            body_text.pop(0)
            first += 1
        out.append(Block(page, first, m.group("kind") if m else "literal",
                         m.group("arg") if m else "", tuple(options), tuple(body_text)))
        i = j
    return out


def all_blocks() -> list[Block]:
    return [b for page in PAGES for b in blocks(page)]


def commands(page: Path) -> list[Command]:
    out = []
    for b in blocks(page):
        if b.kind != "code-block" or b.arg != "console":
            continue
        k = 0
        while k < len(b.lines):
            line = b.lines[k]
            if line[:2] in ("$ ", "# "):
                text, start = line[2:], k
                while text.endswith("\\") and k + 1 < len(b.lines):
                    k += 1
                    text = text[:-1] + " " + b.lines[k].strip()
                out.append(Command(page, b.line + start, line[0], text.strip()))
            k += 1
    return out


def _segments(text: str) -> list[list[str]]:
    return [shlex.split(part) for part in re.split(r"\|(?!\|)", text.split(" > ")[0])
            if part.strip()]


def _fluxqr_args(words: list[str]) -> list[str] | None:
    """The fluxqr arguments of ``fluxqr ...`` / ``flux qr ...``, else None."""
    if words[:1] == ["fluxqr"]:
        return words[1:]
    if words[:2] == ["flux", "qr"]:
        return words[2:]
    return None


def needs(cmd: Command) -> str:
    """What a command needs: "none", "flux" (the flux command), or "instance"."""
    need = "none"
    for words in _segments(cmd.text):
        args = _fluxqr_args(words)
        if args is not None:
            if args[:1] == ["sandbox"]:
                need = "flux"  # starts its own instance
            elif args[:1] in (["submit"], ["status"], ["session"]) or (
                    args[:1] in (["jobspec"], ["refresh"]) and "--graph" not in args) or (
                    args[:1] == ["usage"] and "--db" not in args):
                return "instance"
        elif words[:1] == ["flux"]:
            if words[1:2] in (["R"], ["config"]):
                need = "flux"
            else:
                return "instance"
    return need


def _tokens(text: str) -> list[str]:
    """Shell words and operators (``>``, ``|``, ...) of a command line."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    return list(lex)


#: options of the shown commands that name a file the command writes
OUTPUT_OPTIONS = ("-o", "--output")


def writes(cmd: Command) -> set[str]:
    """Files a command writes: redirections, ``tee FILE`` and ``-o/--output FILE``."""
    tokens = _tokens(cmd.text)
    out = set()
    for k, tok in enumerate(tokens):
        nxt = tokens[k + 1] if k + 1 < len(tokens) else None
        if tok in (">", ">>", "tee", *OUTPUT_OPTIONS) and nxt and not nxt.startswith("-"):
            out.add(nxt)
        elif tok.startswith("--output="):
            out.add(tok.split("=", 1)[1])
    return out


def unavailable_input(cmd: Command, unavailable: dict[str, Command]) -> str | None:
    """A file the command names that only a skipped command would have written, else None."""
    words = _tokens(cmd.text)
    named = set(words) | {w.split("=", 1)[1] for w in words if w.startswith("--") and "=" in w}
    return next((f for f in sorted(named - writes(cmd)) if f in unavailable), None)


def plan(cmds: list[Command], have_flux: bool) -> list[tuple[Command, str | None]]:
    """Each command with the reason it cannot run here (None: run it).

    Without Flux, a command that needs Flux is skipped, and so is every later command that
    reads a file one of the skipped commands writes (``flux R encode > classical.json``
    then ``fluxqr graph build --input classical.json``): run without that file it would
    fail for a reason that is not its own.
    """
    unavailable: dict[str, Command] = {}  # file -> the skipped command that writes it
    out: list[tuple[Command, str | None]] = []
    for cmd in cmds:
        reason = None
        if needs(cmd) != "none" and not have_flux:
            reason = "needs Flux"
        elif (f := unavailable_input(cmd, unavailable)) is not None:
            reason = f"reads {f}, which `{unavailable[f].text}` ({unavailable[f].where}) writes"
        for f in writes(cmd):
            if reason:
                unavailable[f] = cmd
            else:
                unavailable.pop(f, None)
        out.append((cmd, reason))
    return out


# -- running commands ----------------------------------------------------------------------


def _shims(directory: Path) -> Path:
    """``fluxqr`` and ``python3`` as a user with fluxqr installed has them."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, target in (("fluxqr", f'"{sys.executable}" -m fluxqr.cli'),
                         ("python3", f'"{sys.executable}"')):
        path = directory / name
        path.write_text(f'#!/bin/sh\nexec {target} "$@"\n')
        path.chmod(0o755)
    return directory


def _workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, src in WORKDIR_FILES.items():
        shutil.copy(src, path / name)
    return path


def _env(base: dict[str, str], workdir: Path, shims: Path) -> dict[str, str]:
    from fluxinst import FLUX

    env = dict(base)
    path = [str(shims)] + ([str(Path(FLUX).parent)] if FLUX else []) + [env.get("PATH", "")]
    env["PATH"] = os.pathsep.join(path)
    env["HOME"] = str(workdir)  # so "~/..." in the docs lands in the scratch directory
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("FLUXQR_DEVICES", None)
    return env


def run_command(cmd: Command, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", cmd.text], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (f"{cmd.where}: `{cmd.text}` exited {r.returncode}\n"
                               f"--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}")
    return r


def _flux_status(inst) -> dict:
    r = inst.run(["flux", "qr", "status", "--json"], check=False)
    return json.loads(r.stdout) if r.returncode == 0 else {}


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    """A real instance set up as the admin guide says: graph, TOML, modprobe-loaded module."""
    from fluxinst import HAVE_FLUX, SKIP_REASON, FluxInstance, build_r, fluxqr_env

    if not HAVE_FLUX:
        pytest.skip(SKIP_REASON)
    work = tmp_path_factory.mktemp("docs-instance")
    devices = shutil.copy(GRAPHS / "local-devices.yaml", work / "devices.yaml")
    env = fluxqr_env(work / "fluxqr")
    modprobe = work / "modprobe"
    (modprobe / "modprobe.d").mkdir(parents=True)
    (modprobe / "rc1.d").mkdir()
    toml = (EXAMPLES / "modprobe" / "fluxqr.toml").read_text()
    assert SITE_MODULE in toml, f"docs/examples/modprobe/fluxqr.toml must load {SITE_MODULE}"
    relay = Path(env["FLUXQR_MODULE"]).with_name("fluxqr-relay.py")
    (modprobe / "modprobe.d" / "fluxqr.toml").write_text(
        toml.replace(SITE_MODULE, env["FLUXQR_MODULE"]).replace(SITE_RELAY, str(relay)))
    shutil.copy(EXAMPLES / "modprobe" / "fluxqr.py", modprobe / "rc1.d" / "fluxqr.py")
    env["FLUX_MODPROBE_PATH_APPEND"] = str(modprobe)
    kwargs: dict = {}
    if "devices" in inspect.signature(FluxInstance).parameters:
        kwargs["devices"] = Path(devices)  # [fluxqr] devices
        if "agent" in inspect.signature(FluxInstance).parameters:
            kwargs["agent"] = False  # the documented modprobe files load it
    else:
        kwargs["config"] = f'\n[fluxqr]\ndevices = "{devices}"\n'
    inst = FluxInstance(work, build_r(work / "R.json", devices=Path(devices)),
                        hosts="node[0-1]", env=env, **kwargs).start()
    try:
        # The module was loaded by modprobe at start-up; wait for its first cycle, so the
        # live properties the examples select on (error_2q, status) are in Fluxion.
        deadline = time.monotonic() + 180
        while _flux_status(inst).get("cycles", 0) < 1:
            assert time.monotonic() < deadline, \
                "the fluxqr module loaded by the documented modprobe files never ran a " \
                f"cycle:\n{inst.run(['flux', 'dmesg'], check=False).stdout[-3000:]}"
            time.sleep(0.5)
        # ... and the credential relay on rank 1 (the documented modprobe files again)
        info = inst.run([sys.executable, "-c", "import flux, json; print(json.dumps("
                         "flux.Flux().rpc('fluxqr-relay.info', nodeid=1).get()))"],
                        check=False)
        assert info.returncode == 0 and '"url": "http://127.0.0.1:' in info.stdout, \
            f"no credential relay on rank 1: {info.stderr}"
        yield inst
    finally:
        inst.stop()


PAGES_WITH_COMMANDS = [p for p in PAGES if any(c.prompt == "$" for c in commands(p))]


@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS,
                         ids=[str(p.relative_to(DOCS)) for p in PAGES_WITH_COMMANDS])
def test_every_command_on_the_page_works(page: Path, request, tmp_path: Path) -> None:
    from fluxinst import HAVE_FLUX, SKIP_REASON

    workdir = _workdir(tmp_path / "work")
    shims = _shims(tmp_path / "bin")
    skipped = []
    for cmd, reason in plan([c for c in commands(page) if c.prompt == "$"], HAVE_FLUX):
        if reason:
            skipped.append(f"{cmd.where} `{cmd.text}` {reason}")
            continue
        if needs(cmd) == "instance":
            inst = request.getfixturevalue("instance")
            env = _env(inst.env, workdir, shims)
        else:
            env = _env({k: v for k, v in os.environ.items() if k != "FLUX_URI"}, workdir,
                       shims)
        run_command(cmd, workdir, env)
    if skipped:
        pytest.skip(f"{len(skipped)} command(s) not run, {SKIP_REASON}: " + "; ".join(skipped))


# -- the conventions -----------------------------------------------------------------------


def test_docs_show_commands_of_every_kind() -> None:
    cmds = [c for p in PAGES for c in commands(p) if c.prompt == "$"]
    kinds = {needs(c) for c in cmds}
    assert {"none", "instance"} <= kinds, kinds
    shown = set()
    for c in cmds:
        for words in _segments(c.text):
            args = _fluxqr_args(words)
            if args:
                shown.add(args[0])
    from fluxqr import cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    missing = set(sub.choices) - shown - NOT_SHOWN
    assert not missing, f"no page shows `fluxqr {sorted(missing)[0]}` being run"


def test_commands_reading_a_skipped_commands_output_are_skipped_with_it() -> None:
    page = DOCS / "admin.rst"
    cmds = [Command(page, n, "$", text) for n, text in enumerate([
        "flux R encode --hosts=node[0-1] --cores=0-3 > classical.json",
        "fluxqr graph build --input classical.json --devices devices.yaml -o R.json",
        "fluxqr graph show R.json",
        "fluxqr graph build --nodes 2 --cores 4 --devices devices.yaml --output=R.json",
        "fluxqr graph show R.json | tee shown.txt",
        "fluxqr devices --devices devices.yaml",
    ], start=1)]
    without = [reason for _, reason in plan(cmds, have_flux=False)]
    assert without[0] == "needs Flux"
    assert without[1] and "reads classical.json" in without[1] and ":1)" in without[1]
    assert without[2] and "reads R.json" in without[2] and ":2)" in without[2]
    # R.json written again by a command that runs: its readers run again
    assert without[3:] == [None, None, None]
    assert [reason for _, reason in plan(cmds, have_flux=True)] == [None] * len(cmds)
    assert writes(cmds[4]) == {"shown.txt"} and writes(cmds[3]) == {"R.json"}


def test_index_names_the_files_the_examples_run_with() -> None:
    text = (DOCS / "index.rst").read_text()
    missing = [n for n in WORKDIR_FILES if f"``{n}``" not in text]
    assert not missing, f"docs/index.rst does not name {missing} among the example files"


def test_shell_examples_follow_the_convention() -> None:
    problems = []
    for b in all_blocks():
        if b.kind in ("code-block", "code", "sourcecode") and b.arg in SHELL_LANGUAGES:
            problems.append(f"{b.where}: shell example in a '{b.arg}' block: use console")
        if b.kind != "literalinclude" and b.arg != "console":
            for k, line in enumerate(b.lines):
                if line.startswith(("$ ", "fluxqr ", "flux qr ")):
                    problems.append(f"{b.where}+{k}: a command outside a console block: "
                                    f"{line!r}")
        if b.arg == "console" and not any(ln[:2] in ("$ ", "# ") for ln in b.lines):
            problems.append(f"{b.where}: console block without a $ or # command")
    for page in PAGES:
        for c in commands(page):
            words = (_segments(c.text) or [[]])[0]
            if c.prompt == "#" and _fluxqr_args(words) is not None:
                problems.append(f"{c.where}: `{c.text}` is marked '#' (not run); every "
                                f"fluxqr command shown must be one the tests run ('$')")
    assert not problems, "\n".join(problems)


# -- what the docs show in other languages -------------------------------------------------


def _included(b: Block) -> Path:
    return (b.page.parent / b.arg).resolve()


def _sources(language: str) -> list[tuple[str, str]]:
    out = []
    for b in all_blocks():
        if b.kind == "literalinclude" and f":language: {language}" in b.options:
            out.append((b.where, _included(b).read_text()))
        elif b.kind in ("code-block", "code") and b.arg == language:
            out.append((b.where, "\n".join(b.lines)))
    return out


def test_toml_examples_parse_and_their_fluxqr_table_is_valid() -> None:
    try:
        from fluxqr.core.config import settings
    except ImportError:  # before fluxqr.core.config existed
        from fluxqr.agent.refresh import settings
    shown = _sources("toml")
    assert shown
    for where, text in shown:
        try:
            conf = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            pytest.fail(f"{where}: invalid TOML: {exc}")
        if "fluxqr" in conf:
            settings(conf, ())  # raises FluxqrError on an unknown key or bad value


def test_json_and_python_examples_parse() -> None:
    for where, text in _sources("json"):
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            pytest.fail(f"{where}: invalid JSON: {exc}")
    for where, text in _sources("python"):
        compile(text, where, "exec")


def test_documented_instance_config_is_the_tested_one(instance) -> None:
    """docs/examples/instance.toml says what the test instances are really configured with."""
    doc = tomllib.loads((EXAMPLES / "instance.toml").read_text())
    real = tomllib.loads((instance.workdir / "conf" / "instance.toml").read_text())
    for table in ("sched-fluxion-resource", "sched-fluxion-qmanager"):
        assert doc.get(table) == real.get(table), table

    def plugins(conf: dict) -> dict:  # the shims' directory is the admin's flux-install prefix
        return {stage: [p.rsplit("/", 1)[-1] for p in t["plugins"]]
                for stage, t in conf["ingest"].items()}
    assert plugins(doc) == plugins(real)
    assert set(doc["ingest"]) == set(real["ingest"]) == {"frobnicator", "validator"}
    assert doc["resource"]["noverify"] == real["resource"]["noverify"]
    shown = dict(_sources("toml"))
    sessions = [tomllib.loads(t) for t in shown.values() if "job-manager" in t]
    if "job-manager" in real:
        assert sessions, "the admin guide shows no [job-manager] prolog/epilog config"
        doc_jm, real_jm = sessions[0]["job-manager"], real["job-manager"]
        assert doc_jm["plugins"] == real_jm["plugins"]
        for key in ("prolog", "epilog"):
            assert doc_jm[key]["command"][1:] == real_jm[key]["command"][1:], key


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    pytest.importorskip("sphinx", reason="sphinx is not installed (pip install sphinx)")
    r = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                        "html", str(DOCS), str(tmp_path / "html")],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-5000:]
    html = (tmp_path / "html" / "reference" / "cli.html").read_text()
    for sub in ("fluxqr graph build", "fluxqr flux-install", "--qpu-max-error"):
        assert sub in html, sub
