"""Device profiles: YAML files (shipped ones under ``profiles/``, or any path) validated into
frozen dataclasses. Every error names the key, the bad value and the valid choices."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ..errors import UserError

PROFILES_DIR = Path(__file__).parent / "profiles"
BUDGET_KEYS = ("params", "flops", "latency_ms", "peak_memory_mb", "model_size_kb")
ENGINES = ("onnxruntime", "tflite")
PRECISIONS = ("fp32", "fp16", "int8")
TRANSPORTS = ("local", "ssh", "adb")


class ProfileError(UserError):
    pass


@dataclass(frozen=True)
class Runtime:
    engine: str = "onnxruntime"
    threads: int = 1
    precision: str = "fp32"


@dataclass(frozen=True)
class Connection:
    transport: str = "local"
    host: Optional[str] = None
    port: Optional[int] = None
    user: Optional[str] = None
    key_file: Optional[str] = None
    known_hosts: Optional[str] = None
    python: str = "python3"
    workdir: Optional[str] = None
    serial: Optional[str] = None          # adb device serial
    trust_on_first_use: bool = False      # record an unknown host key instead of refusing it
    connect_timeout_s: float = 10.0
    retries: int = 3


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    budget: dict[str, float]
    runtime: Runtime = field(default_factory=Runtime)
    connection: Connection = field(default_factory=Connection)
    emulated: bool = False
    source: str = ""

    @property
    def search_metric(self) -> Optional[str]:
        """The budget that drives the search: params, else flops."""
        return next((m for m in ("params", "flops") if m in self.budget), None)


def _expect(cond: bool, where: str, value: Any, valid: str) -> None:
    if not cond:
        raise ProfileError(f"{where}: invalid value {value!r}; valid: {valid}")


def _section(raw: dict, key: str, source: str) -> dict:
    sec = raw.get(key) or {}
    _expect(isinstance(sec, dict), f"{source}: '{key}'", sec, "a mapping of keys")
    return sec


def _known(sec: dict, allowed: tuple[str, ...], where: str) -> None:
    for k in sec:
        if k not in allowed:
            raise ProfileError(f"{where}: unknown key {k!r}; valid keys: {', '.join(allowed)}")


def parse_profile(raw: Any, source: str) -> DeviceProfile:
    _expect(isinstance(raw, dict), source, type(raw).__name__, "a YAML mapping with name, budget, runtime, connection")
    _known(raw, ("name", "description", "budget", "runtime", "connection", "emulated"), source)
    name = raw.get("name")
    _expect(isinstance(name, str) and name != "", f"{source}: 'name'", name, "a non-empty string")
    budget = _section(raw, "budget", source)
    _known(budget, BUDGET_KEYS, f"{source}: 'budget'")
    _expect(bool(budget), f"{source}: 'budget'", budget, f"at least one of {', '.join(BUDGET_KEYS)}")
    for k, v in budget.items():
        _expect(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, f"{source}: 'budget.{k}'", v, "a positive number")
    rt = _section(raw, "runtime", source)
    _known(rt, ("engine", "threads", "precision"), f"{source}: 'runtime'")
    runtime = Runtime(**rt)
    _expect(runtime.engine in ENGINES, f"{source}: 'runtime.engine'", runtime.engine, ", ".join(ENGINES))
    _expect(runtime.precision in PRECISIONS, f"{source}: 'runtime.precision'", runtime.precision, ", ".join(PRECISIONS))
    _expect(isinstance(runtime.threads, int) and runtime.threads >= 1, f"{source}: 'runtime.threads'", runtime.threads, "an integer >= 1")
    _expect(not (runtime.engine == "onnxruntime" and runtime.precision != "fp32"), f"{source}: 'runtime.precision'",
            runtime.precision, "fp32 with engine onnxruntime (quantized formats are TFLite)")
    con = _section(raw, "connection", source)
    fields = tuple(Connection.__dataclass_fields__)
    _known(con, fields, f"{source}: 'connection'")
    connection = Connection(**con)
    _expect(connection.transport in TRANSPORTS, f"{source}: 'connection.transport'", connection.transport, ", ".join(TRANSPORTS))
    if connection.transport == "ssh":
        _expect(isinstance(connection.host, str) and connection.host != "", f"{source}: 'connection.host'", connection.host,
                "a host name, an address or an ~/.ssh/config alias")
    if connection.port is not None:
        _expect(isinstance(connection.port, int) and 0 < connection.port < 65536, f"{source}: 'connection.port'", connection.port, "1..65535")
    return DeviceProfile(name=name, description=str(raw.get("description", "")), budget=dict(budget), runtime=runtime,
                         connection=connection, emulated=bool(raw.get("emulated", False)), source=source)


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | os.PathLike) -> DeviceProfile:
    """A shipped profile by name (``rpi4``) or a YAML file path."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if not path.is_file():
        shipped = PROFILES_DIR / f"{text}.yaml"
        if not shipped.is_file():
            raise ProfileError(f"device {text!r} is neither a YAML file nor a shipped profile; shipped: {', '.join(list_profiles())}")
        path = shipped
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ProfileError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    try:
        return parse_profile(raw, str(path))
    except TypeError as exc:  # a wrongly typed section
        raise ProfileError(f"{path}: {exc}") from None
