"""The device inventory: ``devices.yaml``.

An inventory lists the quantum devices a site schedules. Each entry names its
adapter (``qrmi``, ``qdmi``, ``qiskit``, ``braket``) and that adapter's
parameters, its static properties (vendor, technology, labels), how it is
shared, and — only by environment-variable *name* — the credentials it needs.
The format is defined by ``fluxqr/schemas/devices.schema.json``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from fluxqr._io import json_path, load_structured
from fluxqr.errors import InventoryError

ADAPTERS = ("qrmi", "qdmi", "qiskit", "braket")
DEFAULT_TIMEOUT = 10.0

#: Values that look like a credential itself rather than the name of a variable holding
#: one: AWS access key ids, long hex strings (40-hex API tokens), and long mixed-case
#: alphanumeric runs (API keys). Checked on ``credentials`` names and ``params.config``
#: values, which end up in logs, graphs and task environments.
LITERAL_SECRET = re.compile(
    r"^(?:(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)[A-Z0-9]{16}"
    r"|[0-9A-Fa-f]{32,}"
    r"|(?=[A-Za-z0-9_-]*[a-z])(?=[A-Za-z0-9_-]*[A-Z])(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{32,}"
    r"|(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*[A-Z])(?=[A-Za-z0-9]*[0-9])[A-Za-z0-9]{20,})$")
#: ``params.config`` settings whose value is a secret: they belong under ``credentials``.
SECRET_SETTING = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSW(OR)?D|PRIVATE_KEY|ACCESS_KEY)",
                            re.IGNORECASE)
#: A URL with a password in it (``https://user:secret@host``).
URL_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
#: Variables a device's settings must never name: they change how every program runs.
DANGEROUS_ENV = re.compile(r"^(LD_|DYLD_|PYTHON|PATH$|HOME$|IFS$|BASH_ENV$|ENV$|SHELL$|"
                           r"FLUX_|PERL5|RUBY|NODE_OPTIONS$)")


def looks_like_secret(value: str) -> bool:
    """True if ``value`` looks like a credential rather than a name or a URL."""
    return bool(LITERAL_SECRET.match(value))


@cache
def schema() -> dict[str, Any]:
    """The devices.yaml JSON Schema shipped with the package."""
    text = resources.files("fluxqr.schemas").joinpath("devices.schema.json").read_text()
    return json.loads(text)


@dataclass(frozen=True)
class Device:
    """One inventory entry, with defaults applied."""

    name: str
    adapter: str
    qubits: int
    params: dict[str, Any] = field(default_factory=dict)
    vendor: str = "unknown"
    technology: str = "unknown"
    labels: dict[str, str] = field(default_factory=dict)
    sessions: int = 1
    exclusive: bool = True
    timeout: float = DEFAULT_TIMEOUT
    credentials: dict[str, str] = field(default_factory=dict)

    def static_properties(self) -> dict[str, str]:
        """Properties known without a live read (strings, as Fluxion stores them)."""
        props = {
            "device": self.name,
            "adapter": self.adapter,
            "vendor": self.vendor,
            "technology": self.technology,
            "num_qubits": str(self.qubits),
            "sessions": str(self.sessions),
        }
        if self.gateway_braket:
            # The job shell asks the agent for the gateway's settings only for these.
            props["access"] = "gateway"
        for key, value in sorted(self.labels.items()):
            props[f"label_{key}"] = value
        return props

    @property
    def gateway_braket(self) -> bool:
        """A Braket ARN device with site-held credentials and a results bucket: its
        tasks reach Braket through the agent's credential gateway."""
        return (self.adapter == "braket" and bool(self.credentials)
                and str(self.params.get("device", "")).startswith("arn:")
                and bool(self.params.get("s3_bucket")))


@dataclass(frozen=True)
class Inventory:
    """A validated inventory: devices in file order, plus where it came from."""

    devices: tuple[Device, ...]
    path: str = "<memory>"
    site: str | None = None

    def __iter__(self):
        return iter(self.devices)

    def __len__(self) -> int:
        return len(self.devices)

    def get(self, name: str) -> Device:
        for dev in self.devices:
            if dev.name == name:
                return dev
        known = ", ".join(d.name for d in self.devices) or "none"
        raise InventoryError(f"no device named '{name}'", where=self.path,
                             fix=f"known devices: {known}")

    def kinds(self) -> set[str]:
        return {d.adapter for d in self.devices}


def _schema_error_line(err: Any) -> str:
    loc = json_path(err.absolute_path)
    if err.validator == "additionalProperties":
        return f"{loc}: {err.message} (remove it, or check its spelling)"
    if err.validator == "enum" and err.absolute_path and err.absolute_path[-1] == "adapter":
        return f"{loc}: unknown adapter {err.instance!r} (use one of: {', '.join(ADAPTERS)})"
    if err.validator == "pattern" and "credentials" in list(err.absolute_path):
        return (f"{loc}: credentials must name an environment variable, not hold a secret "
                f"(e.g. MY_SITE_API_KEY)")
    return f"{loc}: {err.message}"


def parse(data: Any, path: str = "<memory>") -> Inventory:
    """Validate inventory data (already parsed YAML/JSON) and build an :class:`Inventory`.

    Raises:
        InventoryError: with one line naming the file, the field and the fix.
    """
    import jsonschema  # lazy: only commands that read inventories pay for it

    if not isinstance(data, dict):
        raise InventoryError("expected a mapping with 'version: 1' and 'devices:'", where=path,
                             fix="see the devices.yaml reference in the docs")
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        # The deepest error is usually the precise one (oneOf/if-then wrap others).
        best = jsonschema.exceptions.best_match(errors)
        raise InventoryError(_schema_error_line(best), where=path)
    defaults = data.get("defaults", {})
    seen: dict[str, int] = {}
    devices = []
    for i, entry in enumerate(data["devices"]):
        _check_secrets(entry, i, path)
        name = entry["name"]
        if name in seen:
            raise InventoryError(f"devices[{i}].name: duplicate device name '{name}' "
                                 f"(also devices[{seen[name]}])", where=path,
                                 fix="give every device a unique name")
        seen[name] = i
        sharing = entry.get("sharing", defaults.get("sharing", {"exclusive": True}))
        sessions = int(sharing.get("sessions", 1))
        devices.append(Device(
            name=name,
            adapter=entry["adapter"],
            qubits=int(entry["qubits"]),
            params=dict(entry.get("params", {})),
            vendor=entry.get("vendor", "unknown"),
            technology=entry.get("technology", "unknown"),
            labels=dict(entry.get("labels", {})),
            sessions=sessions,
            exclusive="exclusive" in sharing,
            timeout=float(entry.get("timeout", defaults.get("timeout", DEFAULT_TIMEOUT))),
            credentials=dict(entry.get("credentials", {})),
        ))
    return Inventory(devices=tuple(devices), path=path, site=data.get("site"))


def _check_secrets(entry: dict[str, Any], i: int, path: str) -> None:
    """Settings that would put a secret, or a dangerous name, where users can read it."""
    for setting, var in (entry.get("credentials") or {}).items():
        loc = f"devices[{i}].credentials.{setting}"
        if looks_like_secret(var):
            raise InventoryError(f"{loc}: this looks like a secret itself, not the name of an "
                                 "environment variable", where=path,
                                 fix="put the secret in a variable (e.g. export "
                                     "SITE_API_KEY=...) and write its NAME here")
        if DANGEROUS_ENV.match(var) or DANGEROUS_ENV.match(setting):
            raise InventoryError(f"{loc}: '{var}' is not a credential variable",
                                 where=path, fix="name a variable that holds only the secret")
    params = entry.get("params") or {}
    config = params.get("config") if isinstance(params.get("config"), dict) else {}
    rid = str(params.get("resource_id", ""))
    for key, value in config.items():
        loc = f"devices[{i}].params.config.{key}"
        suffix = key.removeprefix(f"{rid}_") if rid else key
        if SECRET_SETTING.search(suffix):
            raise InventoryError(f"{loc}: a secret setting does not belong in params.config "
                                 "(it reaches logs and task environments)", where=path,
                                 fix=f"move it to credentials: {{{suffix}: ENV_VAR_NAME}}")
        if looks_like_secret(str(value)) or URL_PASSWORD.search(str(value)):
            raise InventoryError(f"{loc}: the value looks like a secret", where=path,
                                 fix=f"move it to credentials: {{{suffix}: ENV_VAR_NAME}}")
        if not suffix.startswith("QRMI_"):
            raise InventoryError(f"{loc}: not a setting of resource '{rid}'", where=path,
                                 fix=f"write it as {key[key.find('QRMI_'):]} (the "
                                     f"<resource_id>_ prefix is optional)")


def load(path: str | os.PathLike) -> Inventory:
    """Read and validate a devices.yaml (or .json) file."""
    data = load_structured(path, "devices")
    inv = parse(data, str(path))
    base = Path(path).resolve().parent
    # Relative paths inside the inventory are relative to the file, as a user expects.
    fixed = []
    for dev in inv.devices:
        params = dict(dev.params)
        for key in ("config_file", "library"):
            if key in params and not os.path.isabs(params[key]):
                params[key] = str(base / params[key])
        fixed.append(Device(**{**dev.__dict__, "params": params}))
    return Inventory(devices=tuple(fixed), path=str(path), site=inv.site)

