"""The ``qrmi`` adapter: devices behind the Quantum Resource Management Interface.

The real ``qrmi`` client is built per device with
``qrmi.QuantumResource.from_config(resource_id, resource_type, config)`` where
``config`` is ``params.config`` (QRMI variable suffix -> value, e.g.
``QRMI_IBM_QCS_ENDPOINT``) plus, for each ``credentials`` entry, the secret read
from the named environment variable at that moment — never stored, logged or
shown: secret values are scrubbed out of every error message. With neither
``config`` nor ``credentials``, qrmi reads ``<resource_id>_QRMI_*`` environment
variables itself.

A read is ``status()`` (status, reason, pending jobs, capacity) then ``target()``
(IBM configuration + properties JSON, converted to a Qiskit ``Target`` with
qiskit-ibm-runtime's converter and reduced to medians). qrmi's ``target()``
answers nulls rather than raising when the service is down; that is a failed
read here. Non-IBM resources (Pasqal, IQM, …) report status and queue only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fluxqr.devices.base import SDK_LOCK, Adapter, iso_utc, require, scrub, target_summary
from fluxqr.devices.snapshot import DeviceSnapshot
from fluxqr.errors import FluxqrError

if TYPE_CHECKING:
    from fluxqr.core.inventory import Device

EXTRA = "qrmi"

#: devices.yaml resource_type spellings -> qrmi.ResourceType member (qrmi's own
#: strings, plus the names the IBM services went by before qrmi renamed them).
RESOURCE_TYPES = {
    "ibm-quantum-system": "IBMQuantumSystem",
    "direct-access": "IBMQuantumSystem",
    "ibm-direct-access": "IBMQuantumSystem",
    "ibm-quantum-compute-service": "IBMQuantumComputeService",
    "ibm-quantum-platform": "IBMQuantumComputeService",
    "qiskit-runtime-service": "IBMQiskitRuntimeService",
    "pasqal-cloud": "PasqalCloud",
    "pasqal-local": "PasqalLocal",
    "alice-bob-felis": "AliceBobFelis",
    "iqm-server": "IQMServer",
    "oqtopus": "OQTOPUS",
}
#: qrmi.ResourceType member -> what it executes (``qrmi``: qrmi's own task API)
QRMI_FORMATS = {"IBMQuantumSystem": ("qiskit", "qrmi"),
                "IBMQuantumComputeService": ("qiskit", "qrmi"),
                "IBMQiskitRuntimeService": ("qiskit", "qrmi"),
                "PasqalCloud": ("pulser", "qrmi"), "PasqalLocal": ("pulser", "qrmi")}
IBM_TYPES = frozenset({"IBMQuantumSystem", "IBMQuantumComputeService", "IBMQiskitRuntimeService"})


def resource_type_member(qrmi: Any, text: str) -> Any:
    """The ``qrmi.ResourceType`` for a devices.yaml ``resource_type`` (a string or member name)."""
    members = {name: getattr(qrmi.ResourceType, name) for name in dir(qrmi.ResourceType)
               if not name.startswith("_")
               and isinstance(getattr(qrmi.ResourceType, name), qrmi.ResourceType)}
    key = text.strip()
    name = RESOURCE_TYPES.get(key.lower())
    if name is None:
        name = next((m for m in members if m.lower() == key.lower()), None)
    if name is None or name not in members:
        valid = [k for k, v in RESOURCE_TYPES.items() if v in members]
        raise FluxqrError(f"unknown QRMI resource_type '{text}'",
                          fix=f"use one of: {', '.join(valid)}, or a qrmi.ResourceType name "
                              f"such as IBMQuantumComputeService")
    return members[name]


def map_status(code: str, reason: str | None) -> str:
    """qrmi's online/offline/paused (+ reason) as a snapshot status."""
    code = (code or "").rsplit(".", 1)[-1].lower()
    if code == "online":
        return "online"
    text = (reason or "").lower()
    if "calibrat" in text:
        return "calibrating"
    if "maint" in text:
        return "maintenance"
    # Paused: reachable but not running jobs — closest to a maintenance window.
    return {"offline": "offline", "paused": "maintenance"}.get(code, "unknown")


def ibm_target_summary(value: str) -> dict[str, Any]:
    """Snapshot fields from the JSON of an IBM resource's ``target()``."""
    data = json.loads(value)
    if not isinstance(data, dict):
        raise FluxqrError(f"QRMI target() returned {type(data).__name__}, not an object")
    conf, props = data.get("configuration"), data.get("properties")
    if not conf:
        raise FluxqrError("QRMI target() returned no configuration "
                          "(service unreachable, or the backend is unknown to it)")
    with SDK_LOCK:  # conversion is CPU work and imports lazily
        decoder = require("qiskit_ibm_runtime.utils.backend_decoder", EXTRA)
        converter = require("qiskit_ibm_runtime.utils.backend_converter", EXTRA)
        configuration = decoder.configuration_from_server_data(dict(conf))
        if configuration is None:
            raise FluxqrError("QRMI target(): malformed backend configuration")
        properties = decoder.properties_from_server_data(dict(props)) if props else None
        target = converter.convert_to_target(configuration=configuration,
                                             properties=properties)
        fields = target_summary(target, EXTRA)
    if isinstance(conf.get("max_shots"), int):
        fields["max_shots"] = conf["max_shots"]
    if props and props.get("last_update_date"):
        fields["calibrated_at"] = iso_utc(props["last_update_date"])
    return fields


class QrmiAdapter(Adapter):
    """A QRMI resource; also acquires and releases it (sessions)."""

    name = "qrmi"
    extra = EXTRA
    #: Kept between refresh reads: the qrmi client holds its IAM token, so a cycle costs
    #: the status and calibration calls only.
    reusable = True

    def __init__(self, device: Device):
        super().__init__(device)
        self._resource: Any = None

    @property
    def resource_id(self) -> str:
        return str(self.params["resource_id"])

    def _config(self) -> dict[str, str]:
        """params.config plus secrets from the environment, keys as QRMI variable suffixes."""
        prefix = f"{self.resource_id}_"
        config = {k.removeprefix(prefix): str(v)
                  for k, v in (self.params.get("config") or {}).items()}
        for setting, value in self.required_credentials().items():
            config[setting.removeprefix(prefix)] = value
        return config

    def _fail(self, action: str, err: Exception) -> FluxqrError:
        text = scrub(" ".join(str(err).split()), self.credential_values().values())
        kind = type(err).__name__.rstrip("_")  # qrmi's base class is "QrmiError_"
        return FluxqrError(f"device '{self.device.name}': QRMI {action} failed: {kind}: {text}")

    def resource(self) -> Any:
        """The ``qrmi.QuantumResource`` for this device (built once per adapter)."""
        if self._resource is None:
            qrmi = require("qrmi", EXTRA)
            rtype = resource_type_member(qrmi, str(self.params["resource_type"]))
            config = self._config()
            try:
                if config:
                    self._resource = qrmi.QuantumResource.from_config(self.resource_id, rtype,
                                                                      config)
                else:  # qrmi reads <resource_id>_QRMI_* environment variables itself
                    self._resource = qrmi.QuantumResource(self.resource_id, rtype)
            except Exception as err:
                raise self._fail("configuration", err) from None
        return self._resource

    def _is_ibm(self) -> bool:
        return str(self.resource().resource_type()).rsplit(".", 1)[-1] in IBM_TYPES

    def read(self) -> DeviceSnapshot:
        resource = self.resource()
        try:
            status = resource.status().to_dict()
        except Exception as err:
            raise self._fail("status()", err) from None
        reason = status.get("status_reason") or ""
        capacity = status.get("capacity") or {}
        fields: dict[str, Any] = {
            "status": map_status(str(status.get("status")), reason),
            "status_reason": reason,
            "queue_depth": status.get("pending_job_count"),
            "session_capacity": capacity.get("max_slots") if isinstance(capacity, dict)
            else None,
        }
        member = self._member()
        fields["executes"] = True
        fields["formats"] = ",".join(QRMI_FORMATS.get(member, ("qrmi",)))
        if self._is_ibm():
            try:
                value = resource.target().value
            except Exception as err:
                raise self._fail("target()", err) from None
            fields.update(ibm_target_summary(value))
        return self.snapshot(**fields)

    def _member(self) -> str:
        return str(self.resource().resource_type()).rsplit(".", 1)[-1]

    def sdks(self) -> list[str]:
        return ["native", "qiskit"] if self._is_ibm() else ["native"]

    def backend(self) -> Any:
        """Native: qrmi's Qiskit backend for IBM resources, else the ``qrmi.QuantumResource``
        (what qrmi's own Pulser and task APIs take)."""
        if self._is_ibm():
            return self.qiskit_backend()
        return self.resource()

    def qiskit_backend(self) -> Any:
        """qrmi's Qiskit ``BackendV2`` for an IBM resource (target from the live service)."""
        if not self._is_ibm():
            raise self.unsupported("qiskit", "only IBM QRMI resources have a Qiskit backend")
        ibm = require("qrmi.primitives.ibm", EXTRA)
        try:
            return ibm.get_backend(self.resource())
        except Exception as err:
            raise self._fail("backend", err) from None

    def acquire(self) -> str:
        """Acquire the resource (open a session); returns the acquisition token."""
        try:
            return str(self.resource().acquire())
        except FluxqrError:
            raise
        except Exception as err:
            raise self._fail("acquire()", err) from None

    def release(self, token: str) -> None:
        """Release an acquisition (close the session) made by :meth:`acquire`."""
        try:
            self.resource().release(token)
        except FluxqrError:
            raise
        except Exception as err:
            raise self._fail("release()", err) from None


def _ibm_api(adapter: QrmiAdapter, timeout: float) -> Callable[[str], Any]:
    """A reader of IBM Quantum Compute Service's REST API as the resource is configured
    (endpoint, IAM endpoint and API key, service CRN): ``get(path_and_query)`` -> JSON.
    qrmi 0.26 exposes neither the session record nor the job list, hence this. The IAM
    token is fetched here, once; every call has ``timeout``. Raises on any failure (the
    callers scrub the text)."""
    import urllib.parse
    import urllib.request

    config = adapter._config()
    endpoint = config.get("QRMI_IBM_QCS_ENDPOINT", "").rstrip("/")
    iam = config.get("QRMI_IBM_QCS_IAM_ENDPOINT", "").rstrip("/")
    apikey = config.get("QRMI_IBM_QCS_IAM_APIKEY", "")
    if not endpoint or not iam:
        raise FluxqrError(f"device '{adapter.device.name}': no QRMI_IBM_QCS_ENDPOINT / "
                          "IAM endpoint configured")
    form = urllib.parse.urlencode({"grant_type": "urn:ibm:params:oauth:grant-type:apikey",
                                   "apikey": apikey}).encode()
    req = urllib.request.Request(f"{iam}/identity/token", data=form, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        token = json.loads(resp.read())["access_token"]
    headers = {"Authorization": f"Bearer {token}",
               "Service-CRN": config.get("QRMI_IBM_QCS_SERVICE_CRN", "")}

    def get(path: str) -> Any:
        with urllib.request.urlopen(urllib.request.Request(f"{endpoint}{path}",
                                                           headers=headers),
                                    timeout=timeout) as resp:
            return json.loads(resp.read())

    return get


def ibm_session_info(adapter: QrmiAdapter, session_id: str, timeout: float = 10.0
                     ) -> dict[str, Any]:
    """IBM Quantum Compute Service's record of a session (``GET /sessions/{id}``): its
    ``state``, ``interactive_ttl``, ``activated_at`` and ``elapsed_time`` (the billed
    seconds). Raises :class:`FluxqrError` (secrets scrubbed) on any failure.
    """
    import urllib.parse

    try:
        data = _ibm_api(adapter, timeout)(f"/sessions/{urllib.parse.quote(session_id)}")
    except FluxqrError:
        raise
    except Exception as err:  # noqa: BLE001 - every failure becomes one scrubbed line
        raise adapter._fail("GET /sessions/{id}", err) from None
    if not isinstance(data, dict):
        raise FluxqrError(f"device '{adapter.device.name}': malformed session record")
    return data


#: jobs per page of ``GET /jobs`` (the API's default and largest page)
JOBS_PAGE = 200


def ibm_session_jobs(adapter: QrmiAdapter, session_id: str, timeout: float = 10.0,
                     most: int = 100_000) -> list[str]:
    """The ids of every job submitted in a session, whatever its state (``GET
    /jobs?session_id=…``, page by page, as the REST API lists them; qrmi 0.26 only calls
    it with ``pending=true`` inside ``release()``). ``most`` bounds the pages read (a
    hostile or broken endpoint must not keep the agent paging). Raises
    :class:`FluxqrError` (secrets scrubbed) on any failure or malformed reply.
    """
    import urllib.parse

    ids: list[str] = []
    try:
        get = _ibm_api(adapter, timeout)
        while len(ids) < most:
            query = urllib.parse.urlencode({"session_id": session_id, "limit": JOBS_PAGE,
                                            "offset": len(ids), "exclude_params": "true"})
            page = get(f"/jobs?{query}")
            jobs = page.get("jobs") if isinstance(page, dict) else None
            if not isinstance(jobs, list) or not all(
                    isinstance(j, dict) and isinstance(j.get("id"), str) for j in jobs):
                raise FluxqrError(f"device '{adapter.device.name}': malformed job list")
            ids.extend(j["id"] for j in jobs)
            count = page.get("count")
            if not jobs or len(jobs) < JOBS_PAGE or (isinstance(count, int)
                                                     and len(ids) >= count):
                break
    except FluxqrError:
        raise
    except Exception as err:  # noqa: BLE001 - every failure becomes one scrubbed line
        raise adapter._fail("GET /jobs?session_id=", err) from None
    return list(dict.fromkeys(ids))  # a job listed twice (moved across pages) counts once
