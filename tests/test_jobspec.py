"""Hybrid jobspec: YAML request -> canonical RFC 14 jobspec, resolution, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import GRAPHS, JOBSPECS, assert_user_error, run_cli

from fluxqr.core import graph, inventory, jobspec
from fluxqr.devices.snapshot import DeviceSnapshot
from fluxqr.errors import JobspecError

EXAMPLES = sorted(p for p in (JOBSPECS / "examples").glob("*") if p.suffix != ".py")


def _live_graph() -> graph.ResourceGraph:
    """The demo devices with live values, as the refresh loop would have set them."""
    g = graph.synthesize(4, 8)
    snaps = {
        "fake_fez": DeviceSnapshot("fake_fez", "qiskit", "online", median_2q_error=0.0042,
                                   median_t1_us=140.0, queue_depth=7, formats="qiskit",
                                   executes=True),
        "iqm_garnet": DeviceSnapshot("iqm_garnet", "qdmi", "online", median_2q_error=0.011,
                                     median_t1_us=40.0, queue_depth=0),
        "aer": DeviceSnapshot("aer", "qiskit", "online", queue_depth=0, formats="qiskit",
                              executes=True),
        "ddsim": DeviceSnapshot("ddsim", "qdmi", "offline", queue_depth=0, formats="qiskit",
                                executes=True),
    }
    return graph.add_devices(g, inventory.load(GRAPHS / "local-devices.yaml"), snaps)


@pytest.fixture
def view() -> jobspec.ResourceView:
    return jobspec.view_from_graph(_live_graph())


class _Schema:
    """An upstream RFC schema; RFC 14's reference to RFC 26 (not in shared/) accepts anything."""

    def __init__(self, shared: Path, spec: str):
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT7

        self.schema = json.loads((shared / "flux-rfc" / spec / "schema.json").read_text())
        anything = Resource.from_contents({}, default_specification=DRAFT7)
        registry = Registry().with_resource("file:data/spec_26/schema.json", anything)
        self.validator = jsonschema.Draft7Validator(self.schema, registry=registry)

    def validate(self, instance: dict) -> None:
        self.validator.validate(instance)


def _schema(shared: Path, spec: str) -> _Schema:
    return _Schema(shared, spec)


def _translate(data: dict, view: jobspec.ResourceView) -> dict:
    return jobspec.translate(jobspec.parse_request({"version": 1, "command": "true", **data}),
                             view, environment={"HOME": "/home/u"})


def _qpu_entries(js: dict) -> list[dict]:
    return [r for r in js["resources"] if r["type"] == "qpu"]


def _markers(entry: dict) -> set[str]:
    return {c["type"] for c in entry["with"] if "." in c["type"]}


# -- schema conformance --------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_translate_to_valid_rfc14(path: Path, shared: Path, view) -> None:
    req = jobspec.load_request(path)
    js = jobspec.translate(req, view, environment={})
    _schema(shared, "spec_14").validate(js)
    assert _qpu_entries(js), "every example asks for a QPU"
    assert js["resources"][0]["type"] == "node"


def test_examples_validate_against_the_shipped_schema() -> None:
    schema = json.loads((JOBSPECS / "hybrid-jobspec.schema.json").read_text())
    for path in EXAMPLES:
        data = json.loads(path.read_text()) if path.suffix == ".json" else \
            yaml.safe_load(path.read_text())
        jsonschema.validate(data, schema)


@pytest.mark.parametrize("classical", [
    {}, {"nodes": 2}, {"nodes": 2, "tasks": 5}, {"tasks": 12, "cores_per_task": 2},
    {"nodes": 1, "tasks": 2, "gpus_per_task": 1, "duration": "10m"},
])
def test_classical_only_requests_stay_valid_v1(classical: dict, shared: Path, view) -> None:
    js = _translate(classical, view)
    _schema(shared, "spec_25").validate(js)
    _schema(shared, "spec_14").validate(js)


def test_reference_rfc14_use_cases_stay_valid_after_adding_a_qpu(shared: Path, view) -> None:
    """apply_quantum on upstream jobspecs (the flux submit plugin's path) keeps them valid."""
    schema = _schema(shared, "spec_14")
    done = 0
    for path in sorted((shared / "flux-rfc" / "spec_14").glob("*.yaml")):
        js = yaml.safe_load(path.read_text())
        js.setdefault("attributes", {})
        jobspec.apply_quantum(js, jobspec.QuantumRequest(qubits=2), view)
        schema.validate(js)
        assert js["resources"][-1]["type"] == "qpu"
        done += 1
    assert done >= 10


# -- translation ---------------------------------------------------------------------------


def test_classical_tree_matches_flux_submit(view) -> None:
    js = _translate({"nodes": 2, "tasks": 5, "cores_per_task": 3, "gpus_per_task": 1}, view)
    node = js["resources"][0]
    assert node == {"type": "node", "count": 2, "with": [
        {"type": "slot", "count": 3, "label": "task",
         "with": [{"type": "core", "count": 3}, {"type": "gpu", "count": 1}]}]}
    assert js["tasks"][0]["count"] == {"total": 5}


def test_tasks_without_nodes_become_the_fewest_nodes(view) -> None:
    # 8 cores per node in the view: 12 tasks x 2 cores need 3 nodes
    js = _translate({"tasks": 12, "cores_per_task": 2}, view)
    assert js["resources"][0]["count"] == 3
    assert js["resources"][0]["with"][0]["count"] == 4


def test_quantum_settings_recorded_and_secrets_scrubbed(view) -> None:
    req = jobspec.parse_request({"version": 1, "command": "x",
                                 "environment": {"EXTRA": "1"},
                                 "quantum": {"qubits": 2, "vendor": "iqm",
                                             "session": {"mode": "batch", "max_time": "30m"}}})
    env = {"HOME": "/h", "QRMI_IBM_QCS_IAM_APIKEY": "s3cret", "MY_TOKEN": "t0k",
           "AWS_SECRET_ACCESS_KEY": "k", "SITE_CRED": "c"}
    js = jobspec.translate(req, view, environment=env, secret_names=["SITE_CRED"])
    assert js["attributes"]["system"]["environment"] == {"HOME": "/h", "EXTRA": "1"}
    q = js["attributes"]["system"]["quantum"]
    assert q["request"]["session_mode"] == "batch"
    assert q["request"]["session_max_time"] == 1800.0
    assert q["resolution"]["candidates"] == ["iqm_garnet"]
    assert "s3cret" not in json.dumps(js) and "t0k" not in json.dumps(js)


def test_static_selection_lets_fluxion_pick(view) -> None:
    js = _translate({"quantum": {"qpus": 2, "qubits": 20, "technology": "simulator"}}, view)
    (entry,) = _qpu_entries(js)
    assert entry["count"] == 2 and _markers(entry) == {"tech.simulator"}
    assert js["attributes"]["system"]["quantum"]["resolution"]["pinned"] is None


def test_live_requirements_pin_the_qualifying_device(view) -> None:
    js = _translate({"quantum": {"qubits": 10, "max_error_2q": 0.005}}, view)
    (entry,) = _qpu_entries(js)
    assert _markers(entry) == {"device.fake_fez"}
    decided = js["attributes"]["system"]["quantum"]["resolution"]["decided_by"]
    assert decided == {"fake_fez": {"num_qubits": "156", "status": "online",
                                    "technology": "superconducting", "error_2q": "0.0042",
                                    "t1_us": "140", "queue_depth": "7", "formats": "qiskit"},
                       # devices skipped because the value they were judged on is unknown
                       jobspec.SKIPPED: {"aer": "error_2q unknown", "ddsim": "error_2q unknown",
                                         "braket_sv": "error_2q unknown"}}


@pytest.mark.parametrize("policy,expected", [
    # qualifying (online, queue <= 7): fake_fez (q 7, err .0042), iqm_garnet (q 0, err .011),
    # aer (q 0, no error value)
    ("shortest_queue", "iqm_garnet"),  # queue 0 ties; the known error beats an unknown one
    ("best_fidelity", "fake_fez"),
    ("first", "aer"),                  # inventory order
])
def test_policies(policy: str, expected: str, view) -> None:
    js = _translate({"quantum": {"qubits": 2, "online": True, "max_queue": 7,
                                 "policy": policy}}, view)
    assert js["attributes"]["system"]["quantum"]["resolution"]["pinned"] == [expected]


def test_online_requirement_skips_offline_and_unread_devices(view) -> None:
    # simulators: aer online, ddsim offline (down in the graph), braket_sv never read
    js = _translate({"quantum": {"qubits": 2, "online": True, "technology": "simulator"}}, view)
    res = js["attributes"]["system"]["quantum"]["resolution"]
    assert res["pinned"] == ["aer"] and res["candidates"] == ["aer"]
    with pytest.raises(JobspecError, match="braket_sv: status=unknown"):
        _translate({"quantum": {"qpus": 2, "qubits": 2, "online": True,
                                "technology": "simulator"}}, view)


# -- bad input (library) -------------------------------------------------------------------

BAD = {
    "too-many-qubits": ({"qubits": 500}, "no QPU has 500 qubits: largest is fake_fez with 156"),
    "unknown-vendor": ({"vendor": "rigetti"}, "no QPU with vendor 'rigetti'"),
    "unknown-device": ({"device": "ibm_kyiv"}, "no QPU with device 'ibm_kyiv'"),
    "unknown-tech": ({"technology": "photonic"}, "no QPU with technology 'photonic'"),
    "too-many-qpus": ({"qpus": 3, "qubits": 100}, "3 QPUs asked for but only 1 match"),
    "live-unmet": ({"max_error_2q": 0.001}, "closest: fake_fez: error_2q=0.0042"),
    "offline-only": ({"device": "ddsim", "online": True}, "ddsim: down (status=offline)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_unsatisfiable_requests_raise_one_line(case: str, view) -> None:
    quantum, needle = BAD[case]
    with pytest.raises(JobspecError) as err:
        _translate({"quantum": quantum}, view)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_graph_without_qpus_is_refused() -> None:
    view = jobspec.view_from_graph(graph.synthesize(1, 4), "classical.R")
    with pytest.raises(JobspecError, match="has no QPUs"):
        _translate({"quantum": {"qubits": 2}}, view)


# -- bad input (CLI: one line, exit 2, nothing printed on stdout) ---------------------------

BAD_FILES = {
    "malformed.yaml": ("version: 1\ncommand: [a\n", "invalid YAML"),
    "unknown-key.yaml": ("version: 1\ncommand: x\nquantum: {qubitz: 3}\n", "'qubitz'"),
    "top-unknown.yaml": ("version: 1\ncommand: x\nnodez: 3\n", "unknown key"),
    "bad-policy.yaml": ("version: 1\ncommand: x\nquantum: {policy: cheapest}\n", "cheapest"),
    "no-command.yaml": ("version: 1\nnodes: 2\n", "'command' is a required property"),
    "big.yaml": ("version: 1\ncommand: x\nquantum: {qubits: 500}\n",
                 "largest is fake_fez with 156 qubits"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_cli_bad_jobspec_files(tmp_path: Path, name: str) -> None:
    text, needle = BAD_FILES[name]
    path = tmp_path / name
    path.write_text(text)
    r = run_cli("jobspec", str(path), "--graph", str(GRAPHS / "demo.R.json"))
    assert_user_error(r, name, needle) if name != "big.yaml" else assert_user_error(r, needle)
    assert r.stdout == ""


def test_cli_outside_flux_without_graph_explains(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "FLUX_URI"}
    r = run_cli("jobspec", str(JOBSPECS / "examples" / "bell.yaml"), env=env)
    assert_user_error(r, "not inside a Flux instance", "--graph")


# -- the fast request check (the `flux submit --qpu…` path) must never pass what the schema
# rejects; it may be stricter (then the schema decides and words the error) ----------------

_TRICKY = [None, True, False, 0, 1, 2, 64, 65, -1, 10**12, 0.0, 0.5, 1.0, 2.0, 1e-9,
           float("nan"), float("inf"), -0.0, 1e9, 1e9 + 1, 2592000, 2592001, "", "ibm",
           "ibm_fez", "ib m", "ibm\n", "1x", "d" * 64, "d" * 65, "30m", "0", "1.5h", "soon",
           "30m\n", "3" * 33, "any", "first", "random", "qiskit", "ready", "later",
           "dedicated", "batch", "none", [], ["ibm_fez"], ["ibm_fez", "ibm_fez"],
           ["ibm_fez", "ibm_torino"], ["a b"], [1], ["x"] * 65, {}, {"mode": "batch"},
           {"mode": "weird"}, {"max_time": "10m"}, {"max_time": 0}, {"max_time": "10m\n"},
           {"mode": "dedicated", "max_time": 600}, {"extra": 1}]
_KEYS = [*jobspec._REQUEST_KEYS, "bogus", "session_mode"]


def _schema_valid(data: object) -> bool:
    validator = jsonschema.Draft202012Validator(jobspec._request_schema())
    return not list(validator.iter_errors(data))


def test_fast_request_check_never_passes_what_the_schema_rejects() -> None:
    import random

    rng = random.Random(1405)
    cases: list[object] = [[], "qpus", 1, None]
    for key in _KEYS:  # every value under every key
        cases += [{key: value} for value in _TRICKY]
    for _ in range(3000):  # and mixtures
        keys = rng.sample(_KEYS, rng.randint(1, 5))
        cases.append({k: rng.choice(_TRICKY) for k in keys})
    passed = 0
    for data in cases:
        if jobspec.request_ok(data):
            passed += 1
            assert _schema_valid(data), data
    assert passed > 100  # the fast check does pass valid requests (it is not always False)


@pytest.mark.parametrize("values", [
    {"qpus": 1, "qubits": 2}, {"devices": ["ibm_fez", "ibm_torino"]},
    {"qpus": 1, "vendor": "ibm", "technology": "superconducting", "max_error_2q": 0.01,
     "min_t1_us": 50.0, "max_queue": 10, "online": True, "policy": "best_fidelity",
     "sdk": "qiskit", "exclusive": True, "start": "predicted", "session_mode": "batch",
     "session_max_time": "30m"},
    {"device": "ibm_fez", "session": {"mode": "dedicated", "max_time": 600}}])
def test_valid_requests_take_the_fast_path_without_jsonschema(values: dict,
                                                              monkeypatch) -> None:
    """What `flux submit --qpu…` records is checked without importing jsonschema."""
    import subprocess
    import sys

    code = ("import json, sys\nfrom fluxqr.core.jobspec import request_record\n"
            f"print(json.dumps([request_record({values!r}), 'jsonschema' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    record, imported = json.loads(out.stdout)
    assert not imported, "the valid request loaded jsonschema"
    monkeypatch.setattr(jobspec, "request_ok", lambda data: False)  # the schema path
    assert record == jobspec.request_record(values)  # the same record either way
