"""Sphinx directives that generate reference text from fluxqr itself, so it cannot drift.

* ``.. fluxqr-cli::`` — every ``fluxqr`` subcommand with its usage and options, from
  :func:`fluxqr.cli.build_parser`.
* ``.. fluxqr-submit-options::`` — the ``--qpu*`` options the Flux CLI plugin adds to
  ``flux submit``/``run``/``batch``/``alloc``, from :data:`fluxqr.flux.cliplugin.OPTIONS`.
* ``.. fluxqr-extras::`` — the vendor-SDK extras of pyproject.toml.
* ``.. fluxqr-schema:: devices|hybrid-jobspec`` — field tables from the shipped JSON Schemas.
* ``.. fluxqr-jgf-example::`` — the JGF vertices and edges of one QPU, built by
  :mod:`fluxqr.core.graph` from a one-device inventory.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def esc(text: str) -> str:
    """Escape reST inline markup in plain help text."""
    return re.sub(r"([\\*`|_])", r"\\\1", " ".join(str(text).split()))


class _Generated(SphinxDirective):
    has_content = False

    def render(self, lines: list[str]) -> list[nodes.Node]:
        node = nodes.Element()
        nested_parse_with_titles(self.state, StringList(lines, source=self.get_source_info()[0]),
                                 node)
        return node.children


def _list_table(header: list[str], rows: list[list[str]], widths: str) -> list[str]:
    out = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header, *rows]:
        out.append(f"   * - {row[0] or ' '}")
        out.extend(f"     - {cell or ' '}" for cell in row[1:])
    return out + [""]


# -- the fluxqr command --------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, sub, helps.get(name, "")


#: help for arguments the parser leaves without one (by metavar or dest)
FALLBACK_HELP = {"JOB.yaml": "a hybrid jobspec file (YAML or JSON)", "json": "print JSON"}


def _option_rows(parser: argparse.ArgumentParser) -> list[list[str]]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.option_strings:
            takes = action.nargs != 0
            metavar = action.metavar or (
                "{" + ",".join(map(str, action.choices)) + "}" if action.choices
                else action.dest.upper())
            names = ", ".join(f"``{o}{' ' + metavar if takes else ''}``"
                              for o in action.option_strings)
        else:
            names = f"``{action.metavar or action.dest}``"
        text = esc(action.help or FALLBACK_HELP.get(action.metavar or action.dest, ""))
        if action.choices and action.option_strings and action.metavar:
            text += f" (one of: {', '.join(f'``{c}``' for c in action.choices)})"
        if action.required and action.option_strings and "default" not in text:
            text += " (required)"
        rows.append([names, text])
    return rows


def cli_lines(parser: argparse.ArgumentParser, path: str, help_text: str, depth: int) -> list[str]:
    leaves = list(_subparsers(parser))
    lines: list[str] = []
    if depth:
        title = f"``{path}``"
        lines += [title, "-~^"[min(depth - 1, 2)] * len(title), ""]
        if help_text:
            lines += [esc(help_text[0].upper() + help_text[1:]) + ".", ""]
    if leaves and depth:
        lines += [f"Actions: {', '.join(f'``{n}``' for n, _, _ in leaves)}.", ""]
    if not leaves or not depth:
        parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=88)
        first, *rest = parser.format_usage().strip().removeprefix("usage: ").splitlines()
        lines += [".. code-block:: text", "", "   " + first]
        lines += ["   " + ln[len("usage: "):] for ln in rest] + [""]
        rows = _option_rows(parser)
        if rows:
            lines += _list_table(["Option", "Meaning"], rows, "35 65")
    for name, sub, text in leaves:
        lines += cli_lines(sub, f"{path} {name}", text or "", depth + 1)
    return lines


class CliDirective(_Generated):
    def run(self) -> list[nodes.Node]:
        from fluxqr import cli

        return self.render(cli_lines(cli.build_parser("fluxqr"), "fluxqr", "", 0))


# -- pip extras ----------------------------------------------------------------------------

#: extra -> the devices.yaml adapter it serves
EXTRA_ADAPTERS = {"qiskit": "qiskit", "qrmi": "qrmi", "qdmi": "qdmi", "braket": "braket"}


class ExtrasDirective(_Generated):
    """The vendor-SDK extras of pyproject.toml, as a table."""

    def run(self) -> list[nodes.Node]:
        import tomllib
        from pathlib import Path

        root = Path(__file__).resolve().parents[2]
        project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
        extras = project["optional-dependencies"]
        rows = []
        for name in [*EXTRA_ADAPTERS, "all"]:
            reqs = extras[name]
            if name == "all":
                text = "all of the above"
            else:
                text = ", ".join(f"``{r}``" for r in reqs)
            adapter = f"``{EXTRA_ADAPTERS[name]}``" if name in EXTRA_ADAPTERS else ""
            rows.append([f"``{name}``", text, adapter])
        return self.render(_list_table(["Extra", "Installs", "For ``adapter:``"], rows,
                                       "15 60 25"))


# -- the flux submit plugin ----------------------------------------------------------------

#: QuantumRequest field -> the key under ``quantum:`` in a hybrid jobspec YAML
YAML_KEYS = {"session_mode": "session.mode", "session_max_time": "session.max_time"}


class SubmitOptionsDirective(_Generated):
    def run(self) -> list[nodes.Node]:
        from sphinx.ext.autodoc.mock import mock

        with mock(["flux"]):  # the plugin subclasses flux.cli.plugin.CLIPlugin
            from fluxqr.flux import cliplugin as fluxplugin
        rows = []
        for name, (field, kw) in fluxplugin.OPTIONS.items():
            opt = f"``{name}={kw['metavar']}``" if "metavar" in kw else f"``{name}``"
            text = esc(kw.get("help", ""))
            if kw.get("choices") and "choices" not in text:
                text += f" ({', '.join(f'``{c}``' for c in kw['choices'])})"
            rows.append([opt, f"``{YAML_KEYS.get(field, field)}``", text])
        lines = _list_table(["Option", "``quantum:`` key", "Meaning"], rows, "28 20 52")
        progs = ", ".join(f"``flux {p}``" for p in fluxplugin.PROGRAMS)
        lines += [f"The options are added to {progs}.", ""]
        return self.render(lines)


# -- JSON Schemas --------------------------------------------------------------------------


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        ref = node["$ref"].removeprefix("#/")
        target: Any = schema
        for part in ref.split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _type(schema: dict[str, Any], node: dict[str, Any]) -> str:
    node = _resolve(schema, node)
    if "const" in node:
        return f"``{json.dumps(node['const'])}``"
    if "enum" in node:
        return "one of " + ", ".join(f"``{v}``" for v in node["enum"])
    if "oneOf" in node:
        return " or ".join(_type(schema, n) for n in node["oneOf"])
    kind = node.get("type", "")
    if kind == "array":
        kind = f"list of {_type(schema, node.get('items', {}))}"
    elif kind == "object" and "additionalProperties" in node and isinstance(
            node["additionalProperties"], dict):
        kind = f"mapping to {_type(schema, node['additionalProperties'])}"
    elif kind == "object" and "properties" in node and set(node["properties"]) == {"exclusive"}:
        kind = "``{exclusive: true}``"
    elif kind == "object" and "properties" in node and set(node["properties"]) == {"sessions"}:
        kind = "``{sessions: N}``"
    limits = []
    for key, sym in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                     ("minItems", "items >=")):
        if key in node:
            limits.append(f"{sym} {node[key]}")
    if "pattern" in node:
        limits.append(f"matching ``{node['pattern']}``")
    return " ".join([kind, *([f"({', '.join(limits)})"] if limits else [])]).strip()


def _field_rows(schema: dict[str, Any], obj: dict[str, Any], prefix: str = "") -> list[list[str]]:
    obj = _resolve(schema, obj)
    required = set(obj.get("required", []))
    rows = []
    for key, sub in obj.get("properties", {}).items():
        res = _resolve(schema, sub)
        desc = esc(res.get("description", ""))
        rows.append([f"``{prefix}{key}``", "yes" if key in required else "", _type(schema, sub),
                     desc])
    return rows


def _schema(name: str) -> dict[str, Any]:
    from importlib import resources

    return json.loads(resources.files("fluxqr.schemas").joinpath(f"{name}.schema.json")
                      .read_text())


def schema_lines(name: str) -> list[str]:
    schema = _schema(name)
    header = ["Key", "Required", "Type", "Meaning"]
    widths = "22 10 28 40"
    lines: list[str] = []
    if name == "devices":
        lines += ["Top level:", ""] + _list_table(header, _field_rows(schema, schema), widths)
        lines += ["Each entry of ``devices:``:", ""]
        lines += _list_table(header, _field_rows(schema, schema["$defs"]["device"]), widths)
        for rule in schema["$defs"]["device"].get("allOf", []):
            adapter = rule["if"]["properties"]["adapter"]["const"]
            params = rule["then"]["properties"]["params"]
            lines += [f"``params`` of an ``adapter: {adapter}`` device:", ""]
            lines += _list_table(header, _field_rows(schema, params), widths)
    elif name == "hybrid-jobspec":
        lines += ["Top level:", ""] + _list_table(header, _field_rows(schema, schema), widths)
        quantum = schema["$defs"]["quantum"]
        lines += ["Under ``quantum:``:", ""]
        rows = _field_rows(schema, quantum)
        rows += _field_rows(schema, quantum["properties"]["session"], "session.")
        lines += _list_table(header, rows, widths)
    else:
        raise ValueError(f"unknown schema {name!r}")
    return lines


class SchemaDirective(_Generated):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        return self.render(schema_lines(self.arguments[0]))


# -- the graph -----------------------------------------------------------------------------

EXAMPLE_DEVICE = {"version": 1, "devices": [
    {"name": "ibm_fez", "adapter": "qiskit", "qubits": 156, "vendor": "ibm",
     "technology": "superconducting", "sharing": {"sessions": 2},
     "params": {"backend": "fake_fez"}}]}


def jgf_example() -> str:
    from fluxqr.core import graph, inventory

    g = graph.synthesize(1, 1)
    graph.add_devices(g, inventory.parse(EXAMPLE_DEVICE, "example"))
    jgf = g.to_jgf()["graph"]
    qpu_ids = {n["id"] for n in jgf["nodes"]
               if n["metadata"]["paths"]["containment"].startswith("/cluster0/ibm_fez")}
    root = {n["id"] for n in jgf["nodes"] if n["metadata"]["type"] == "cluster"}
    nodes_ = [n for n in jgf["nodes"] if n["id"] in qpu_ids]
    edges = [e for e in jgf["edges"] if e["target"] in qpu_ids and
             (e["source"] in qpu_ids or e["source"] in root)]
    out = ['{"graph": {', '  "nodes": [']
    out += [f"    {json.dumps(n)}," for n in nodes_]
    out[-1] = out[-1].rstrip(",")
    out += ["  ],", '  "edges": [']
    out += [f"    {json.dumps(e)}," for e in edges]
    out[-1] = out[-1].rstrip(",")
    out += ["  ]", "}}"]
    return "\n".join(out)


class JgfExampleDirective(_Generated):
    def run(self) -> list[nodes.Node]:
        block = nodes.literal_block(text := jgf_example(), text, language="json")
        return [block]


def setup(app) -> dict[str, Any]:
    app.add_directive("fluxqr-cli", CliDirective)
    app.add_directive("fluxqr-submit-options", SubmitOptionsDirective)
    app.add_directive("fluxqr-extras", ExtrasDirective)
    app.add_directive("fluxqr-schema", SchemaDirective)
    app.add_directive("fluxqr-jgf-example", JgfExampleDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
