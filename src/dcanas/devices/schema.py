"""Device profiles: YAML files (shipped ones under ``profiles/``, or any path) validated into
frozen dataclasses. Every field's type and range is checked (booleans are YAML booleans, never
strings); every error names the key, the bad value and the valid choices. Relative paths in a
profile (key_file, known_hosts) are resolved against the profile's own folder."""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import yaml

from ..errors import UserError
from ..costs.metrics import budget_names, metric, primary

PROFILES_DIR = Path(__file__).parent / "profiles"

ENGINES = ("onnxruntime", "tflite")
PRECISIONS = ("fp32", "fp16", "int8")
TRANSPORTS = ("local", "ssh", "adb")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PATH_FIELDS = ("key_file", "known_hosts")


class ProfileError(UserError):
    pass


@dataclass(frozen=True)
class Runtime:
    engine: str = "onnxruntime"
    threads: int = 1
    precision: str = "fp32"
    sustained_s: Optional[float] = None  # dcanas profile runs back to back this long (--duration overrides)


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
    keepalive_s: float = 5.0              # SSH keepalive and runner heartbeat interval; a run silent for 4x this (>= 10 s) is a dead link


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    budget: dict[str, float]
    runtime: Runtime = field(default_factory=Runtime)
    connection: Connection = field(default_factory=Connection)
    emulated: bool = False
    source: str = ""
    search_on: Optional[str] = None  # the profile's own choice of the budget that drives the search

    @property
    def search_metric(self) -> Optional[str]:
        """The budget that drives the search: the profile's ``search_metric``, else params, else flops."""
        return self.search_on or next((m for m in primary() if m in self.budget and not metric(m).per_device), None)


# ---- one checker per kind of field: (test, what is valid) --------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


KINDS: dict[str, tuple[Any, str]] = {
    "str": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "bool": (lambda v: isinstance(v, bool), "true or false (a YAML boolean, unquoted)"),
    "int>=0": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "int>=1": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "port": (lambda v: _is_int(v) and 0 < v < 65536, "an integer 1..65535"),
    "seconds": (lambda v: _is_num(v) and 0 < v <= 3600, "a number of seconds, 0 < s <= 3600"),
    "positive": (lambda v: _is_num(v) and v > 0, "a positive number"),
}
CONNECTION_KINDS = {"transport": "str", "host": "str", "port": "port", "user": "str", "key_file": "str",
                    "known_hosts": "str", "python": "str", "workdir": "str", "serial": "str", "trust_on_first_use": "bool",
                    "connect_timeout_s": "seconds", "retries": "int>=0", "keepalive_s": "seconds"}
RUNTIME_KINDS = {"engine": "str", "threads": "int>=1", "precision": "str", "sustained_s": "seconds"}


_YAML12_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _number(v: Any) -> Any:
    """``1e-9`` as the number YAML 1.2 reads it: PyYAML (YAML 1.1) wants a dot (``1.0e-9``) and gives a string."""
    return float(v) if isinstance(v, str) and _YAML12_FLOAT.fullmatch(v.strip()) else v


def _expect(cond: bool, where: str, value: Any, valid: str) -> None:
    if not cond:
        raise ProfileError(f"{where}: invalid value {value!r}; valid: {valid}")


def _typed(sec: dict, kinds: dict[str, str], where: str) -> dict:
    for k, v in sec.items():
        if v is None:
            continue  # an explicit null keeps the default
        if kinds[k] in ("seconds", "positive"):
            sec[k] = v = _number(v)
        test, valid = KINDS[kinds[k]]
        _expect(test(v), f"{where}.{k}'", v, valid)
    return {k: v for k, v in sec.items() if v is not None}


def _section(raw: dict, key: str, source: str) -> dict:
    sec = raw.get(key) or {}
    _expect(isinstance(sec, dict), f"{source}: '{key}'", sec, "a mapping of keys")
    return sec


def _known(sec: dict, allowed: tuple[str, ...], where: str) -> None:
    for k in sec:
        if k not in allowed:
            raise ProfileError(f"{where}: unknown key {k!r}; valid keys: {', '.join(allowed)}")


def _resolve(path: Optional[str], folder: Optional[Path]) -> Optional[str]:
    """``~`` expanded; a relative path is relative to the profile's folder (not the current directory)."""
    if path is None:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_absolute() or folder is None else (folder / p).resolve())


def parse_profile(raw: Any, source: str, folder: Optional[Path] = None) -> DeviceProfile:
    _expect(isinstance(raw, dict), source, type(raw).__name__, "a YAML mapping with name, budget, runtime, connection")
    _known(raw, ("name", "description", "budget", "runtime", "connection", "emulated", "search_metric"), source)
    name = raw.get("name")
    _expect(isinstance(name, str) and NAME_RE.fullmatch(name) is not None, f"{source}: 'name'", name,
            "a plain name: letters, digits, '.', '_', '-', starting with a letter or digit, at most 64 characters")
    _expect(isinstance(raw.get("description", ""), str), f"{source}: 'description'", raw.get("description"), "a string")
    _expect(isinstance(raw.get("emulated", False), bool), f"{source}: 'emulated'", raw.get("emulated"), KINDS["bool"][1])
    budget = _section(raw, "budget", source)
    _known(budget, budget_names(), f"{source}: 'budget'")
    _expect(bool(budget), f"{source}: 'budget'", budget, f"at least one of {', '.join(budget_names())}")
    budget = {k: _number(v) for k, v in budget.items()}
    for k, v in budget.items():
        _expect(_is_num(v) and v > 0, f"{source}: 'budget.{k}'", v, "a positive, finite number")
    rt = _section(raw, "runtime", source)
    _known(rt, tuple(RUNTIME_KINDS), f"{source}: 'runtime'")
    runtime = Runtime(**_typed(rt, RUNTIME_KINDS, f"{source}: 'runtime"))
    _expect(runtime.engine in ENGINES, f"{source}: 'runtime.engine'", runtime.engine, ", ".join(ENGINES))
    _expect(runtime.precision in PRECISIONS, f"{source}: 'runtime.precision'", runtime.precision, ", ".join(PRECISIONS))
    _expect(not (runtime.engine == "onnxruntime" and runtime.precision != "fp32"), f"{source}: 'runtime.precision'",
            runtime.precision, "fp32 with engine onnxruntime (quantized formats are TFLite)")
    con = _section(raw, "connection", source)
    _known(con, tuple(f.name for f in fields(Connection)), f"{source}: 'connection'")
    con = _typed(con, CONNECTION_KINDS, f"{source}: 'connection")
    con.update({k: _resolve(con.get(k), folder) for k in PATH_FIELDS if k in con})
    connection = Connection(**con)
    _expect(connection.transport in TRANSPORTS, f"{source}: 'connection.transport'", connection.transport, ", ".join(TRANSPORTS))
    if connection.transport == "ssh":
        _expect(connection.host is not None, f"{source}: 'connection.host'", connection.host,
                "a host name, an address or an ~/.ssh/config alias")
    search_on = raw.get("search_metric")
    if search_on is not None:
        search_on = "latency_ms" if search_on == "latency" else search_on
        _expect(search_on in primary() and search_on in budget, f"{source}: 'search_metric'", raw.get("search_metric"),
                f"one of {', '.join(primary())} (latency: latency_ms) that the budget names")
    return DeviceProfile(name=name, description=raw.get("description", ""), budget=dict(budget), runtime=runtime,
                         connection=connection, emulated=raw.get("emulated", False), source=source, search_on=search_on)


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | os.PathLike) -> DeviceProfile:
    """A shipped profile by name (``rpi4``) or a YAML file path."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if not path.is_file():
        shipped = PROFILES_DIR / f"{text}.yaml"
        if not NAME_RE.fullmatch(text) or not shipped.is_file():
            raise ProfileError(f"device {text!r} is neither a YAML file nor a shipped profile; shipped: {', '.join(list_profiles())}")
        path = shipped
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path}: not a text file (byte {exc.start} is not UTF-8); a device profile is a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProfileError(f"{path}:{where} is not valid YAML ({problem})") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot be read ({exc.strerror})") from None
    return parse_profile(raw, str(path), path.resolve().parent)
