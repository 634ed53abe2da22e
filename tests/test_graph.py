"""The hybrid resource graph: reading, QPU vertices, JGF/R output, bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jsonschema
import pytest
from conftest import GRAPHS, assert_user_error, run_cli

from fluxqr.core import graph, inventory
from fluxqr.devices.snapshot import DeviceSnapshot
from fluxqr.errors import GraphError

DEMO_INV = GRAPHS / "local-devices.yaml"


def _inv(*devices: dict) -> inventory.Inventory:
    return inventory.parse({"version": 1, "devices": list(devices)})


FEZ = {"name": "ibm_fez", "adapter": "qiskit", "qubits": 156, "vendor": "IBM",
       "technology": "superconducting", "params": {"backend": "fake_fez"}}
SIM = {"name": "sv", "adapter": "braket", "qubits": 34, "vendor": "amazon",
       "technology": "simulator", "sharing": {"sessions": 3},
       "params": {"device": "local:braket_sv"}}


# -- conformance with upstream reference data -------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "power", "rabbit", "node-add-test"])
def test_fluxion_reference_jgf_round_trips_exactly(shared: Path, name: str) -> None:
    original = json.loads((shared / "fluxion-jgf" / f"{name}.json").read_text())
    g = graph.from_jgf(original, name)
    assert g.to_jgf() == original


def test_output_validates_against_jgf_v1_schema(shared: Path) -> None:
    schema = json.loads((shared / "jgf" / "json-graph-schema_v1.json").read_text())
    tiny = graph.from_jgf(json.loads((shared / "fluxion-jgf" / "tiny.json").read_text()))
    graph.add_devices(tiny, _inv(FEZ, SIM))
    synthetic = graph.add_devices(graph.synthesize(3, 4, 1), _inv(FEZ))
    for g in (tiny, synthetic):
        jsonschema.validate(g.to_jgf(), schema)
        jsonschema.validate(g.to_r()["scheduling"], schema)


def test_rfc20_example_reads_and_keeps_its_r_lite(shared: Path) -> None:
    r = json.loads((shared / "flux-rfc" / "spec_20" / "example1.json").read_text())
    g = graph.from_r(r)
    assert g.counts() == {"cluster": 1, "core": 4 * 48, "gpu": 4 * 8, "node": 4}
    out = g.r_execution()
    assert out["R_lite"] == r["execution"]["R_lite"]
    assert out["nodelist"] == r["execution"]["nodelist"]


def test_tiny_jgf_gives_r_lite_from_its_socket_tree(shared: Path) -> None:
    g = graph.from_jgf(json.loads((shared / "fluxion-jgf" / "tiny.json").read_text()))
    ex = g.r_execution()
    # tiny: 2 nodes, 2 sockets x 18 cores and 1 gpu each per socket pair
    assert ex["nodelist"] == ["node[0-1]"]
    assert {e["rank"] for e in ex["R_lite"]} == {"0-1"}
    assert ex["R_lite"][0]["children"]["core"] == "0-35"


# -- QPU representation --------------------------------------------------------------------


def test_qpu_subtree_shape_and_properties() -> None:
    g = graph.synthesize(2, 4)
    snap = DeviceSnapshot("ibm_fez", "qiskit", "online", median_2q_error=0.0031,
                          median_t1_us=151.25, queue_depth=4, dead_couplers=2)
    graph.add_devices(g, _inv(FEZ, SIM), {"ibm_fez": snap})
    jgf = g.to_jgf()
    by_path = {n["metadata"]["paths"]["containment"]: n["metadata"] for n in jgf["graph"]["nodes"]}
    fez = by_path["/cluster0/ibm_fez"]
    assert fez["type"] == "qpu" and fez["rank"] == -1
    assert fez["properties"]["vendor"] == "IBM"
    assert fez["properties"]["num_qubits"] == "156"
    assert fez["properties"]["error_2q"] == "0.0031"
    assert fez["properties"]["t1_us"] == "151.25"
    assert fez["properties"]["queue_depth"] == "4"
    assert fez["properties"]["dead_couplers"] == "2"
    assert by_path["/cluster0/ibm_fez/session0/qubit0"]["size"] == 156
    assert by_path["/cluster0/ibm_fez/vendor.ibm0"]["type"] == "vendor.ibm"
    assert by_path["/cluster0/ibm_fez/device.ibm_fez0"]["size"] == 1
    assert by_path["/cluster0/ibm_fez/tech.superconducting0"]["type"] == "tech.superconducting"
    # shared device: one session (with its own qubit pool) per concurrent job, markers sized K
    assert [p for p in by_path if p.startswith("/cluster0/sv/session")] == [
        "/cluster0/sv/session0", "/cluster0/sv/session0/qubit0",
        "/cluster0/sv/session1", "/cluster0/sv/session1/qubit0",
        "/cluster0/sv/session2", "/cluster0/sv/session2/qubit0"]
    assert by_path["/cluster0/sv/vendor.amazon0"]["size"] == 3
    # every edge joins existing vertices; ids are unique
    ids = [n["id"] for n in jgf["graph"]["nodes"]]
    assert len(ids) == len(set(ids))
    assert all(e["source"] in ids and e["target"] in ids for e in jgf["graph"]["edges"])


def test_offline_device_is_marked_down_in_the_graph() -> None:
    g = graph.synthesize(1, 1)
    graph.add_devices(g, _inv(FEZ), {"ibm_fez": DeviceSnapshot("ibm_fez", "qiskit", "offline")})
    assert g.qpus()[0]["status"] == 1
    g.set_qpu_status("ibm_fez", True)
    assert "status" not in g.qpus()[0]


def test_inventory_without_live_data_gives_a_valid_graph() -> None:
    g = graph.add_devices(graph.synthesize(1, 2), inventory.load(DEMO_INV))
    assert [q["name"] for q in g.qpus()] == [d.name for d in inventory.load(DEMO_INV)]
    assert all("num_qubits" in q["properties"] for q in g.qpus())


def test_replace_and_remove_device() -> None:
    g = graph.add_devices(graph.synthesize(1, 2), _inv(FEZ, SIM))
    before = g.counts()
    graph.add_devices(g, _inv(dict(FEZ, qubits=133)))  # same name: replaced, not duplicated
    assert g.counts() == before
    assert g.qpus()[-1]["properties"]["num_qubits"] == "133"
    g.remove_device("sv")
    assert g.qpu_names() == ["ibm_fez"]
    assert "device.sv" not in g.counts()
    with pytest.raises(GraphError, match="no QPU named 'nope'"):
        g.remove_device("nope")


def test_device_named_like_a_host_is_refused() -> None:
    with pytest.raises(GraphError, match="also the name of a node"):
        graph.add_devices(graph.synthesize(1, 1), _inv(dict(FEZ, name="node0")))


def test_same_input_gives_byte_identical_output(tmp_path: Path) -> None:
    outs = []
    for i in range(2):
        out = tmp_path / f"r{i}.json"
        r = run_cli("graph", "build", "--nodes", "3", "--cores", "4", "--gpus", "1",
                    "--devices", str(DEMO_INV), "-o", str(out))
        assert r.returncode == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    r = json.loads(outs[0])
    assert r["execution"]["R_lite"] == [{"rank": "0-2", "children": {"core": "0-3", "gpu": "0"}}]
    assert graph.from_r(r).qpu_names() == [d.name for d in inventory.load(DEMO_INV)]


def test_build_from_r_and_jgf_inputs_and_remove(tmp_path: Path, shared: Path) -> None:
    out = tmp_path / "tiny-hybrid.jgf"
    r = run_cli("graph", "build", "-i", str(shared / "fluxion-jgf" / "tiny.json"),
                "--devices", str(DEMO_INV), "-f", "jgf", "-o", str(out))
    assert r.returncode == 0, r.stderr
    g = graph.read(out)
    assert g.counts()["qpu"] == 5 and g.counts()["core"] == 72
    out2 = tmp_path / "tiny-less.R.json"
    r = run_cli("graph", "build", "-i", str(out), "--remove", "aer", "-o", str(out2))
    assert r.returncode == 0, r.stderr
    assert "aer" not in graph.read(out2).qpu_names()


def test_graph_show_json_lists_qpus() -> None:
    r = run_cli("graph", "show", str(GRAPHS / "demo.R.json"), "--json")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["counts"]["qpu"] == 5
    fez = next(q for q in shown["qpus"] if q["name"] == "fake_fez")
    assert fez["properties"]["num_qubits"] == "156" and fez["status"] == "up"
    r = run_cli("graph", "show", str(GRAPHS / "demo.R.json"))
    assert "fake_fez" in r.stdout and "qpu" in r.stdout


def test_reference_graphs_do_not_drift(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("regenerate", GRAPHS / "regenerate.py")
    regen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(regen)
    regen.main(tmp_path)
    for name in regen.OUTPUTS:
        assert (tmp_path / name).read_bytes() == (GRAPHS / name).read_bytes(), \
            f"graphs/{name} drifted: run 'make graphs' and commit"


def test_atomic_write_leaves_old_file_on_error(tmp_path: Path) -> None:
    out = tmp_path / "R.json"
    out.write_text("old")

    class Boom(graph.ResourceGraph):
        def iter_r_chunks(self):
            yield '{"version":1'
            raise RuntimeError("disk on fire")

    g = graph.synthesize(1, 1)
    boom = Boom(g.g, g.root)
    with pytest.raises(RuntimeError):
        graph.write_r(boom, out)
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["R.json"]


# -- bad input -----------------------------------------------------------------------------

BAD_INVENTORIES = {
    "bad-yaml": ("version: 1\ndevices: [\n", "invalid YAML"),
    "unknown-adapter": ("version: 1\ndevices:\n- {name: a, adapter: ibmq, qubits: 5}\n",
                        "unknown adapter 'ibmq'"),
    "duplicate": ("version: 1\ndevices:\n"
                  "- {name: a, adapter: qiskit, qubits: 5, params: {backend: aer_simulator}}\n"
                  "- {name: a, adapter: qiskit, qubits: 5, params: {backend: aer_simulator}}\n",
                  "duplicate device name 'a'"),
    "negative-qubits": ("version: 1\ndevices:\n"
                        "- {name: a, adapter: qiskit, qubits: -3, params: {backend: x}}\n",
                        "devices[0].qubits"),
    "unknown-field": ("version: 1\ndevices:\n"
                      "- {name: a, adapter: qiskit, qubits: 5, qbits: 4, params: {backend: x}}\n",
                      "'qbits' was unexpected"),
    "secret-value": ("version: 1\ndevices:\n- {name: a, adapter: braket, qubits: 5, "
                     "params: {device: 'local:braket_sv'}, credentials: {key: 'abc/123+xyz='}}\n",
                     "must name an environment variable"),
}


@pytest.mark.parametrize("case", sorted(BAD_INVENTORIES))
def test_bad_inventory_is_one_line_exit_2_nothing_written(tmp_path: Path, case: str) -> None:
    text, needle = BAD_INVENTORIES[case]
    devfile = tmp_path / "devices.yaml"
    devfile.write_text(text)
    out = tmp_path / "out.json"
    r = run_cli("graph", "build", "--nodes", "1", "--devices", str(devfile), "-o", str(out))
    assert_user_error(r, str(devfile), needle)
    assert not out.exists()


BAD_RESOURCES = {
    "r-without-nodes": ({"version": 1, "execution": {"R_lite": [], "nodelist": []}},
                        "R has no nodes"),
    "jgf-dangling-edge": ({"graph": {"nodes": [
        {"id": "0", "metadata": {"type": "cluster", "paths": {"containment": "/c0"}}}],
        "edges": [{"source": "0", "target": "7"}]}}, "dangling edge"),
    "jgf-v2-map": ({"graph": {"nodes": {"0": {}}, "edges": []}}, "JGF v1"),
    "not-a-graph": ({"hello": 1}, "neither an RFC 20 R nor a JGF"),
    "r-short-nodelist": ({"version": 1, "execution": {
        "R_lite": [{"rank": "0-1", "children": {"core": "0"}}], "nodelist": ["n0"]}},
        "1 host(s) for 2 rank(s)"),
}


@pytest.mark.parametrize("case", sorted(BAD_RESOURCES))
def test_bad_resources_are_one_line_exit_2_nothing_written(tmp_path: Path, case: str) -> None:
    data, needle = BAD_RESOURCES[case]
    src = tmp_path / "in.json"
    src.write_text(json.dumps(data))
    out = tmp_path / "out.json"
    r = run_cli("graph", "build", "-i", str(src), "--devices", str(DEMO_INV), "-o", str(out))
    assert_user_error(r, str(src), needle)
    assert not out.exists()


def test_missing_input_and_conflicting_options() -> None:
    assert_user_error(run_cli("graph", "build"), "no classical resources given")
    assert_user_error(run_cli("graph", "build", "-i", "x.json", "--nodes", "2"),
                      "either --input or --nodes")
    assert_user_error(run_cli("graph", "build", "--nodes", "0"), "--nodes", "between 1 and")
