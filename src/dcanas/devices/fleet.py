"""A fleet's devices: ``--device a,b`` or a fleet YAML (``devices: [rpi4, ./lab-pi.yaml]``) to device profiles."""
from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import UserError
from .schema import DeviceProfile, load_profile


def parse_devices(text: str) -> list[str]:
    """``--device``: one profile, a comma-separated list, or a fleet YAML (``devices: [rpi4, ./lab-pi.yaml]``,
    paths relative to the fleet file)."""
    if "," in text:
        names = [t.strip() for t in text.split(",")]
        if not all(names):
            raise UserError(f"--device {text!r}: an empty name in the list; give profile names or YAML paths separated by commas")
        return names
    path = Path(text).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            return [text]  # load_profile says what is wrong with it
        if isinstance(raw, dict) and "devices" in raw:
            devs = raw["devices"]
            if not isinstance(devs, list) or not devs or not all(isinstance(d, str) and d for d in devs):
                raise UserError(f"{path}: 'devices' must be a non-empty list of profile names or YAML paths, got {devs!r}")
            out = [str((path.parent / d).resolve()) if (path.parent / d).is_file() else d for d in devs]
            for d in out:
                if d == str(path.resolve()):
                    raise UserError(f"{path}: the fleet lists itself in 'devices'; list device profiles (names or YAML paths), "
                                    f"not fleet files")
                if d.endswith((".yaml", ".yml")) and Path(d).is_file() and parse_devices(d) != [d]:
                    raise UserError(f"{path}: 'devices' names another fleet file ({d}); fleets do not nest: list its "
                                    f"devices here")
            return out
    return [text]


def load_fleet(names: list[str]) -> list[DeviceProfile]:
    profiles = [load_profile(n) for n in names]
    seen: dict[str, str] = {}
    for n, p in zip(names, profiles):
        if p.name in seen:
            raise UserError(f"devices {seen[p.name]!r} and {n!r} are both named {p.name!r}; each device of a fleet needs its own name "
                            f"(its run folder is OUT/<name>)")
        seen[p.name] = n
    return profiles
