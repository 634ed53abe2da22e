"""Hybrid resource graphs: quantum devices as vertices in Fluxion's JGF graph.

A QPU becomes a small containment subtree under the cluster root::

    /cluster0/ibm_fez                         type qpu        (device properties)
    /cluster0/ibm_fez/session0 .. sessionK-1  type session    (one per concurrent job)
    /cluster0/ibm_fez/session0/qubit0         type qubit      size = qubit count (a pool)
    /cluster0/ibm_fez/vendor.ibm0             type vendor.ibm        size K
    /cluster0/ibm_fez/device.ibm_fez0         type device.ibm_fez    size K
    /cluster0/ibm_fez/tech.superconducting0   type tech.superconducting  size K

Fluxion matches by vertex *type* only, so selection by vendor, device or
technology is a request for one unit of the matching typed "marker" vertex, and
">= N qubits" is a request for N units of a session's qubit pool. Markers have
K units so that each of the K concurrent sessions can claim one.

The graph is a :class:`networkx.DiGraph` of containment edges keyed by JGF vertex
id. Classical resources read from an R_lite are kept compact — each node
vertex carries its core/gpu ids as a *pool* — and are expanded only while
writing, so that a 4,096-node cluster streams to disk without materializing
400,000 Python objects.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import networkx as nx

from fluxqr._io import dump_json, load_structured, write_chunks
from fluxqr.core import rfc
from fluxqr.core.inventory import Device
from fluxqr.core.model import QPU, QUBIT, SESSION, marker_type
from fluxqr.errors import GraphError

#: Most vertices an R may expand to (ranks x their cores/gpus): bounds the work and the
#: memory of reading a hostile R whose few lines name billions of cores.
MAX_VERTICES = 8 << 20
#: JGF vertex metadata fields and the JSON types Fluxion reads them as.
_META_TYPES: dict[str, type | tuple[type, ...]] = {
    "type": str, "basename": str, "name": str, "id": int, "uniq_id": int, "rank": int,
    "exclusive": bool, "unit": str, "size": int, "properties": dict,
    "paths": dict}


class ResourceGraph:
    """A Fluxion resource graph (containment subsystem) with QPU subtrees.

    Attributes:
        g: the containment graph; node key = JGF vertex id (str), node data
            ``meta`` = JGF vertex metadata, and for compact nodes ``pool`` =
            ``[(type, [ids...]), ...]`` plus ``pool_base`` (first child uniq id).
        root: id of the root (cluster) vertex.
        properties_by_rank: R ``execution.properties`` (property -> ranks).
    """

    def __init__(self, g: nx.DiGraph, root: str, where: str = "<graph>"):
        self.g = g
        self.root = root
        self.where = where

    # -- inspection ----------------------------------------------------------------------

    @property
    def root_path(self) -> str:
        return self.g.nodes[self.root]["meta"]["paths"]["containment"]

    def _next_id(self) -> int:
        cached = self.g.graph.get("next_id")
        if cached is not None and str(cached - 1) in self.g:
            return cached
        top = -1
        for vid, data in self.g.nodes(data=True):
            top = max(top, _int_id(vid))
            pool = data.get("pool")
            if pool:
                top = max(top, data["pool_base"] + sum(len(ids) for _, ids in pool) - 1)
        return top + 1

    def counts(self) -> dict[str, int]:
        """Vertex counts by type (compact pools counted as if expanded)."""
        c: Counter[str] = Counter()
        for _, data in self.g.nodes(data=True):
            c[data["meta"]["type"]] += 1
            for rtype, ids in data.get("pool") or ():
                c[rtype] += len(ids)
        return dict(sorted(c.items()))

    def qpus(self) -> list[dict[str, Any]]:
        """Metadata of every QPU vertex, in graph order."""
        return [d["meta"] for _, d in self.g.nodes(data=True) if d["meta"]["type"] == QPU]

    def qpu_vertex(self, name: str) -> str | None:
        for vid, d in self.g.nodes(data=True):
            meta = d["meta"]
            if meta["type"] == QPU and meta.get("name") == name:
                return vid
        return None

    def ranks(self) -> list[tuple[int, str, dict[str, list[int]], dict[str, str]]]:
        """``(rank, hostname, {core: ids, gpu: ids}, properties)`` for every node vertex."""
        out = []
        for vid, d in self.g.nodes(data=True):
            meta = d["meta"]
            if meta["type"] != "node" or meta.get("rank", -1) < 0:
                continue
            children: dict[str, list[int]] = {}
            if d.get("pool") is not None:
                for rtype, ids in d["pool"]:
                    children.setdefault(rtype, []).extend(ids)
            else:
                for desc in nx.descendants(self.g, vid):
                    dm = self.g.nodes[desc]["meta"]
                    if dm["type"] in ("core", "gpu"):
                        children.setdefault(dm["type"], []).append(int(dm.get("id", 0)))
            name = meta.get("name") or f"{meta.get('basename', 'node')}{meta.get('id', '')}"
            out.append((int(meta["rank"]), name, children, dict(meta.get("properties") or {})))
        out.sort(key=lambda t: t[0])
        return out

    # -- QPUs ----------------------------------------------------------------------------

    def add_device(self, device: Device, properties: dict[str, str] | None = None,
                   status_down: bool = False) -> str:
        """Add (or replace) a QPU subtree for ``device``; returns the QPU vertex id.

        ``properties`` are merged over the device's static properties (live values from a
        snapshot). ``status_down`` marks the QPU down so Fluxion will not allocate it.
        """
        if self.qpu_vertex(device.name) is not None:
            self.remove_device(device.name)
        for _, d in self.g.nodes(data=True):
            meta = d["meta"]
            if meta.get("name") == device.name and meta["type"] != QPU:
                raise GraphError(f"device name '{device.name}' is also the name of a "
                                 f"{meta['type']} vertex", where=self.where,
                                 fix="rename the device in devices.yaml")
        index = len(self.qpus())
        uid = self._next_id()
        root_path = self.root_path
        props = device.static_properties()
        props.update(properties or {})
        qpath = f"{root_path}/{device.name}"
        qpu_id = str(uid)
        meta = _full_meta(QPU, QPU, device.name, index, uid, 1, qpath)
        meta["properties"] = dict(sorted(props.items()))
        if status_down:
            meta["status"] = 1
        self.g.add_node(qpu_id, meta=meta)
        _add_edge(self.g, self.root, qpu_id)
        uid += 1
        k = device.sessions
        for s in range(k):
            spath = f"{qpath}/{SESSION}{s}"
            sid = str(uid)
            self.g.add_node(sid, meta=_full_meta(SESSION, SESSION, f"{SESSION}{s}", s, uid, 1,
                                                 spath))
            _add_edge(self.g, qpu_id, sid)
            uid += 1
            qid = str(uid)
            self.g.add_node(qid, meta=_full_meta(QUBIT, QUBIT, f"{QUBIT}0", 0, uid,
                                                 device.qubits, f"{spath}/{QUBIT}0"))
            _add_edge(self.g, sid, qid)
            uid += 1
        for kind, value in (("vendor", device.vendor), ("device", device.name),
                            ("technology", device.technology)):
            mtype = marker_type(kind, value)
            mid = str(uid)
            self.g.add_node(mid, meta=_full_meta(mtype, mtype, f"{mtype}0", 0, uid, k,
                                                 f"{qpath}/{mtype}0"))
            _add_edge(self.g, qpu_id, mid)
            uid += 1
        self.g.graph["next_id"] = uid
        return qpu_id

    def remove_device(self, name: str) -> None:
        """Remove a QPU and everything under it."""
        vid = self.qpu_vertex(name)
        if vid is None:
            raise GraphError(f"no QPU named '{name}' to remove", where=self.where,
                             fix=f"QPUs in this graph: {', '.join(self.qpu_names()) or 'none'}")
        self.g.remove_nodes_from([vid, *nx.descendants(self.g, vid)])

    def qpu_names(self) -> list[str]:
        return [m["name"] for m in self.qpus()]

    def set_qpu_properties(self, name: str, properties: dict[str, str],
                           remove: Iterable[str] = ()) -> None:
        """Update a QPU vertex's properties in place (offline refresh)."""
        vid = self.qpu_vertex(name)
        if vid is None:
            raise GraphError(f"no QPU named '{name}'", where=self.where)
        meta = self.g.nodes[vid]["meta"]
        props = dict(meta.get("properties") or {})
        for key in remove:
            props.pop(key, None)
        props.update(properties)
        meta["properties"] = dict(sorted(props.items()))

    def set_qpu_status(self, name: str, up: bool) -> None:
        vid = self.qpu_vertex(name)
        if vid is None:
            raise GraphError(f"no QPU named '{name}'", where=self.where)
        meta = self.g.nodes[vid]["meta"]
        if up:
            meta.pop("status", None)
        else:
            meta["status"] = 1

    # -- JGF output ----------------------------------------------------------------------

    def _pool_text(self, vid: str, data: dict[str, Any]) -> str:
        """The JGF text of a compact node's expanded children (hot path: ~100 per node).

        Written from a template rather than json.dumps per vertex: it is most of the
        time of writing a large cluster. Same bytes as dump_json would produce.
        """
        meta = data["meta"]
        base = data["pool_base"]
        path = json.dumps(meta["paths"]["containment"])[1:-1]
        rank = meta["rank"]
        parts = []
        for rtype, ids in data["pool"]:
            t = json.dumps(rtype)[1:-1]
            for i in ids:
                parts.append(f',{{"id":"{base}","metadata":{{"type":"{t}","id":{i},'
                             f'"rank":{rank},"paths":{{"containment":"{path}/{t}{i}"}}}}}}')
                base += 1
        return "".join(parts)

    def iter_jgf_chunks(self) -> Iterator[str]:
        """JGF text in chunks (deterministic; the same graph gives the same bytes)."""
        yield '{"graph":{"nodes":['
        first = True
        for vid, data in self.g.nodes(data=True):
            yield ('' if first else ',') + '{"id":' + json.dumps(vid) + ',"metadata":' \
                + dump_json(data["meta"]) + '}'
            first = False
            if data.get("pool"):
                yield self._pool_text(vid, data)
        yield '],"edges":['
        first = True
        # Edges keep the order they were read or added in (networkx groups them by source).
        edges = [(d["seq"], _edge_text(s, t, d.get("edge")))
                 for s, t, d in self.g.edges(data=True)]
        edges.extend((seq, dump_json(e)) for seq, e in self.g.graph.get("other_edges", ()))
        edges.sort(key=lambda e: e[0])
        for _, text in edges:
            yield ('' if first else ',') + text
            first = False
        for vid, d in self.g.nodes(data=True):
            pool = d.get("pool")
            if pool:
                base = d["pool_base"]
                n = sum(len(ids) for _, ids in pool)
                src = json.dumps(vid)
                text = "".join(f',{{"source":{src},"target":"{base + i}"}}' for i in range(n))
                yield text[1:] if first and text else text
                first = first and not text
        extra = self.g.graph.get("jgf_extra")
        yield "]" + ("," + dump_json(extra)[1:-1] if extra else "") + "}}"

    def to_jgf(self) -> dict[str, Any]:
        """The graph as a JGF dict (fine for small graphs; large ones should stream)."""
        return json.loads("".join(self.iter_jgf_chunks()))

    # -- R output ------------------------------------------------------------------------

    def r_execution(self) -> dict[str, Any]:
        """RFC 20 ``execution`` (R_lite, nodelist, properties) of the classical nodes."""
        ranks = self.ranks()
        if not ranks:
            raise GraphError("the graph has no node vertices with a broker rank",
                             where=self.where,
                             fix="give the input R/JGF at least one node with rank >= 0")
        groups: dict[str, list[int]] = {}
        order: list[str] = []
        props: dict[str, list[int]] = {}
        for rank, _host, children, nprops in ranks:
            key = json.dumps({t: rfc.encode_idset(ids) for t, ids in sorted(children.items())})
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(rank)
            for p in nprops:
                props.setdefault(p, []).append(rank)
        r_lite = [{"rank": rfc.encode_idset(groups[k]), "children": json.loads(k)}
                  for k in order]
        execution: dict[str, Any] = {
            "R_lite": r_lite,
            "nodelist": [rfc.encode_hostlist(h for _, h, _, _ in ranks)],
            "starttime": 0,
            "expiration": 0,
        }
        if props:
            execution["properties"] = {p: rfc.encode_idset(r) for p, r in sorted(props.items())}
        return execution

    def iter_r_chunks(self) -> Iterator[str]:
        """A complete R (version 1, execution, scheduling JGF) as text chunks."""
        yield '{"version":1,"execution":' + dump_json(self.r_execution()) + ',"scheduling":'
        yield from self.iter_jgf_chunks()
        yield "}"

    def to_r(self) -> dict[str, Any]:
        return json.loads("".join(self.iter_r_chunks()))


# -- construction ------------------------------------------------------------------------


def _int_id(vid: str) -> int:
    try:
        return int(vid)
    except ValueError:
        return -1


def _add_edge(g: nx.DiGraph, src: str, tgt: str) -> None:
    seq = g.graph.get("seq", 0)
    g.add_edge(src, tgt, seq=seq)
    g.graph["seq"] = seq + 1


def _full_meta(rtype: str, basename: str, name: str, rid: int, uid: int, size: int,
               path: str) -> dict[str, Any]:
    return {"type": rtype, "basename": basename, "name": name, "id": rid, "uniq_id": uid,
            "rank": -1, "exclusive": False, "unit": "", "size": size,
            "paths": {"containment": path}}


def _edge_text(src: str, tgt: str, edge_meta: dict[str, Any] | None) -> str:
    text = '{"source":' + json.dumps(src) + ',"target":' + json.dumps(tgt)
    if edge_meta is not None:
        text += ',"metadata":' + dump_json(edge_meta)
    return text + "}"


def from_jgf(data: Any, where: str = "<jgf>") -> ResourceGraph:
    """Read a Fluxion JGF (full or compact form) into a :class:`ResourceGraph`.

    Only the containment subsystem is kept as edges; other subsystems' edges are
    preserved for output but do not affect the tree.
    """
    if not isinstance(data, dict) or not isinstance(data.get("graph"), dict):
        raise GraphError("not a JGF document: expected a top-level 'graph' object", where=where,
                         fix="pass a Fluxion JGF file or an R with a 'scheduling' key")
    graph = data["graph"]
    nodes, edges = graph.get("nodes"), graph.get("edges", [])
    if not isinstance(nodes, list) or not isinstance(edges, list):
        raise GraphError("graph.nodes and graph.edges must be arrays (JGF v1)", where=where,
                         fix="Fluxion reads JSON Graph Format v1, not v2's nodes map")
    g = nx.DiGraph()
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("id"), str):
            raise GraphError(f"graph.nodes[{i}].id: missing or not a string", where=where)
        meta = node.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("type"), str):
            raise GraphError(f"graph.nodes[{i}].metadata.type: missing", where=where,
                             fix="every vertex needs metadata.type")
        paths = meta.get("paths")
        if not isinstance(paths, dict) or not paths or not all(
                isinstance(p, str) for p in paths.values()):
            raise GraphError(f"graph.nodes[{i}].metadata.paths: missing or malformed",
                             where=where, fix="every vertex needs e.g. paths.containment")
        _check_meta(meta, f"graph.nodes[{i}].metadata", where)
        if node["id"] in g:
            raise GraphError(f"graph.nodes[{i}].id: duplicate vertex id '{node['id']}'",
                             where=where, fix="vertex ids must be unique")
        g.add_node(node["id"], meta=meta)
    other_edges = []
    for i, edge in enumerate(edges):
        if not isinstance(edge, dict):
            raise GraphError(f"graph.edges[{i}]: not an object", where=where)
        src, tgt = edge.get("source"), edge.get("target")
        for end, vid in (("source", src), ("target", tgt)):
            if not isinstance(vid, str):
                raise GraphError(f"graph.edges[{i}].{end}: must be a vertex id string, not "
                                 f"{type(vid).__name__}", where=where)
            if vid not in g:
                raise GraphError(f"graph.edges[{i}].{end}: '{vid}' is not a vertex (dangling "
                                 f"edge)", where=where,
                                 fix="remove the edge or add the missing vertex")
        emeta = edge.get("metadata")
        if emeta is not None and not isinstance(emeta, dict):
            raise GraphError(f"graph.edges[{i}].metadata: must be an object", where=where)
        subsystem = (emeta or {}).get("subsystem", "containment")
        if subsystem != "containment":
            other_edges.append((i, edge))
            continue
        g.add_edge(src, tgt, edge=emeta, seq=i)
    g.graph["seq"] = len(edges)
    roots = [v for v, d in g.nodes(data=True)
             if g.in_degree(v) == 0 and "containment" in d["meta"]["paths"]]
    if len(roots) != 1:
        raise GraphError(f"expected one root vertex, found {len(roots)}", where=where,
                         fix="the containment edges must form a single tree")
    rg = ResourceGraph(g, roots[0], where)
    extra = {k: v for k, v in graph.items() if k not in ("nodes", "edges")}
    if extra:
        g.graph["jgf_extra"] = extra
    if other_edges:
        g.graph["other_edges"] = other_edges
    return rg


def from_r(r: Any, where: str = "<R>") -> ResourceGraph:
    """Read an RFC 20 R: its ``scheduling`` JGF if present, else expand its R_lite."""
    if not isinstance(r, dict) or not isinstance(r.get("execution"), dict):
        raise GraphError("not an RFC 20 R: expected 'version' and 'execution'", where=where,
                         fix="produce it with 'flux resource R' or 'fluxqr graph build'")
    if r.get("version") != 1:
        raise GraphError(f"version: unsupported R version {r.get('version')!r}", where=where,
                         fix="only R version 1 is supported")
    if r.get("scheduling") is not None:
        rg = from_jgf(r["scheduling"], where=f"{where}: scheduling")
        if not rg.ranks():
            raise GraphError("R has no nodes (scheduling graph has no ranked node vertex)",
                             where=where)
        return rg
    ex = r["execution"]
    r_lite = ex.get("R_lite")
    if not isinstance(r_lite, list) or not r_lite:
        raise GraphError("execution.R_lite: R has no nodes", where=where,
                         fix="R_lite must list at least one rank with cores")
    nodelist = ex.get("nodelist") or []
    if not isinstance(nodelist, list) or not all(isinstance(h, str) for h in nodelist):
        raise GraphError(f"execution.nodelist: must be a list of hostlist strings, not "
                         f"{_json_type(nodelist)}", where=where,
                         fix='write e.g. "nodelist": ["node[0-3]"]')
    try:
        hosts = rfc.decode_hostlist(nodelist)
    except ValueError as exc:
        raise GraphError(f"execution.nodelist: {exc}", where=where) from None
    entries: list[tuple[int, dict[str, list[int]]]] = []
    vertices = 0
    for i, entry in enumerate(r_lite):
        try:
            if not isinstance(entry, dict) or not isinstance(entry.get("children") or {}, dict):
                raise ValueError("expected {\"rank\": IDSET, \"children\": {TYPE: IDSET}}")
            ranks = rfc.decode_idset(_idset_text(entry["rank"]))
            children = {str(t): rfc.decode_idset(_idset_text(v))
                        for t, v in (entry.get("children") or {}).items()}
        except (KeyError, ValueError) as exc:
            raise GraphError(f"execution.R_lite[{i}]: malformed entry ({exc})", where=where,
                             fix="each entry needs 'rank' and 'children' idsets") from None
        vertices += len(ranks) * (1 + sum(len(ids) for ids in children.values()))
        if vertices > MAX_VERTICES:
            raise GraphError(f"execution.R_lite: more than {MAX_VERTICES} vertices (ranks x "
                             f"cores/gpus)", where=where,
                             fix="check the R; a real cluster's R is far smaller")
        entries.extend((rank, children) for rank in ranks)
    entries.sort(key=lambda e: e[0])
    if len({rank for rank, _ in entries}) != len(entries):
        raise GraphError("execution.R_lite: a rank is listed twice", where=where)
    if len(hosts) < len(entries):
        raise GraphError(f"execution.nodelist: {len(hosts)} host(s) for {len(entries)} "
                         "rank(s)", where=where, fix="list one hostname per rank")
    props: dict[int, dict[str, str]] = {}
    rprops = ex.get("properties") or {}
    if not isinstance(rprops, dict):
        raise GraphError(f"execution.properties: must be an object (property -> idset of "
                         f"ranks), not {_json_type(rprops)}", where=where,
                         fix='write e.g. "properties": {"bigmem": "0-3"}')
    for pname, ids in rprops.items():
        try:
            for rank in rfc.decode_idset(_idset_text(ids)):
                props.setdefault(rank, {})[pname] = ""
        except ValueError as exc:
            raise GraphError(f"execution.properties.{pname}: {exc}", where=where) from None
    return _from_ranks(
        ((rank, hosts[i], children, props.get(rank)) for i, (rank, children)
         in enumerate(entries)), where)


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    for typ, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"),
                      (str, "a string"), (list, "a list"), (dict, "an object")):
        if isinstance(value, typ):
            return name
    return "null" if value is None else type(value).__name__


def _idset_text(value: Any) -> str:
    """An idset as text: RFC 20 writes strings, but a single rank may be an integer."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"idset must be a string, not {_json_type(value)}")
    return str(value)


def _check_meta(meta: dict[str, Any], loc: str, where: str) -> None:
    """JGF vertex metadata fields must have the types Fluxion reads them as."""
    for key, typ in _META_TYPES.items():
        value = meta.get(key)
        if value is None:
            continue
        bad = (isinstance(value, bool) and typ is not bool) or not isinstance(value, typ)
        if bad:
            want = {str: "a string", int: "an integer", bool: "a boolean",
                    dict: "an object"}[typ]  # type: ignore[index]
            raise GraphError(f"{loc}.{key}: must be {want}, not {_json_type(value)}",
                             where=where, fix="Fluxion would reject this graph too")
    props = meta.get("properties")
    if props and not all(isinstance(v, str) for v in props.values()):
        raise GraphError(f"{loc}.properties: values must be strings", where=where,
                         fix='write e.g. "properties": {"bigmem": ""}')


def _from_ranks(ranks: Iterable[tuple[int, str, dict[str, list[int]], dict | None]],
                where: str) -> ResourceGraph:
    """Build the compact form Fluxion's own R encoder uses: cluster -> node -> core/gpu."""
    g = nx.DiGraph()
    g.add_node("0", meta={"type": "cluster", "paths": {"containment": "/cluster0"}})
    uid = 1
    for rank, host, children, props in ranks:
        meta: dict[str, Any] = {"type": "node", "name": host, "rank": rank}
        if props:
            meta["properties"] = props
        meta["paths"] = {"containment": f"/cluster0/{host}"}
        pool = [(t, ids) for t, ids in children.items() if ids]
        g.add_node(str(uid), meta=meta, pool=pool, pool_base=uid + 1)
        _add_edge(g, "0", str(uid))
        uid += 1 + sum(len(ids) for _, ids in pool)
    return ResourceGraph(g, "0", where)


def synthesize(nodes: int, cores: int, gpus: int = 0, prefix: str = "node") -> ResourceGraph:
    """A classical cluster of identical nodes (``prefix0..``), ranks 0..nodes-1."""
    if nodes < 1 or cores < 1 or gpus < 0:
        raise GraphError(f"synthetic cluster needs nodes >= 1 and cores >= 1 (got nodes={nodes}, "
                         f"cores={cores}, gpus={gpus})", fix="pass --nodes N --cores C")
    children = {"core": list(range(cores))}
    if gpus:
        children["gpu"] = list(range(gpus))
    return _from_ranks(((r, f"{prefix}{r}", children, None) for r in range(nodes)),
                       f"synthetic {nodes}x{cores}c{gpus}g")


def read(path: str | os.PathLike) -> ResourceGraph:
    """Read an R (RFC 20, with or without ``scheduling``) or a Fluxion JGF file."""
    data = load_structured(path, "resource")
    if isinstance(data, dict) and "execution" in data:
        return from_r(data, str(path))
    if isinstance(data, dict) and "graph" in data:
        return from_jgf(data, str(path))
    raise GraphError("neither an RFC 20 R nor a JGF graph", where=str(path),
                     fix="pass the output of 'flux resource R', 'flux R encode' or a .jgf file")


def add_devices(graph: ResourceGraph, devices: Iterable[Device],
                snapshots: dict[str, Any] | None = None) -> ResourceGraph:
    """Add every device as a QPU; live values come from ``snapshots`` (name -> DeviceSnapshot)."""
    for dev in devices:
        snap = (snapshots or {}).get(dev.name)
        props = snap.properties() if snap is not None else {}
        down = snap is not None and snap.ok and snap.status in ("offline", "maintenance")
        if down:  # the refresh loop's mark; a QPU down without one is an admin's
            props["down_reason"] = " ".join(f"device reports {snap.status}: "
                                            f"{snap.status_reason or ''}".split()).rstrip(":")
        graph.add_device(dev, props, status_down=down)
    return graph


def write_jgf(graph: ResourceGraph, path: str | os.PathLike) -> None:
    """Atomically write the graph as Fluxion JGF."""
    write_chunks(path, _with_newline(graph.iter_jgf_chunks()))


def write_r(graph: ResourceGraph, path: str | os.PathLike) -> None:
    """Atomically write a complete R that ``[resource] path=`` loads."""
    write_chunks(path, _with_newline(graph.iter_r_chunks()))


def _with_newline(chunks: Iterable[str]) -> Iterator[str]:
    yield from chunks
    yield "\n"
