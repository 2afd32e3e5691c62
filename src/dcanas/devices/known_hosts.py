"""known_hosts as OpenSSH writes it, read without crashing and appended to atomically.

paramiko's own loader raises on valid OpenSSH lines it does not know (``@cert-authority``,
``@revoked``) and its ``save_host_keys`` rewrites the whole file, dropping comments and key types
it cannot parse. Here: markers and unknown key types are skipped with a warning (``@revoked`` keys
are kept and refused), and trust-on-first-use appends ONE hashed line (``HashKnownHosts yes``)
through a temporary file and a rename, leaving every other byte as it was.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..files import atomic_write


@dataclass
class KnownHosts:
    path: Path
    keys: object                                   # paramiko.HostKeys
    revoked: set[tuple[str, str]] = field(default_factory=set)   # (key type, base64)
    skipped: list[str] = field(default_factory=list)             # "line N: why"


def load_known_hosts(path: Path, keys) -> KnownHosts:
    """Read ``path`` into ``keys`` (a paramiko ``HostKeys``, e.g. ``client.get_host_keys()``)."""
    from paramiko.hostkeys import HostKeyEntry

    kh = KnownHosts(path, keys)
    if not path.is_file():
        return kh
    for n, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            fields_ = line.split()
            if fields_[0] == "@revoked" and len(fields_) >= 4:
                kh.revoked.add((fields_[2], fields_[3]))
            else:
                kh.skipped.append(f"line {n}: {fields_[0]} (host certificates are not supported by paramiko)")
            continue
        try:
            entry = HostKeyEntry.from_line(line, n)
        except Exception as exc:  # noqa: BLE001 - any unparsable line is skipped, never fatal
            entry, why = None, f"{type(exc).__name__}"
        else:
            why = f"key type {line.split()[1] if len(line.split()) > 1 else '?'} not supported by paramiko"
        if entry is None:
            kh.skipped.append(f"line {n}: {why}")
            continue
        for name in entry.hostnames:
            keys.add(name, entry.key.get_name(), entry.key)
    return kh


def host_entry_name(hostname: str, port: int) -> str:
    return hostname if port == 22 else f"[{hostname}]:{port}"


def append_host_key(path: Path, name: str, key) -> None:
    """Append one hashed line for ``name`` atomically (other lines byte for byte, mode kept)."""
    import paramiko

    line = f"{paramiko.HostKeys.hash_host(name)} {key.get_name()} {key.get_base64()}\n".encode()
    old = path.read_bytes() if path.is_file() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    mode = path.stat().st_mode & 0o777 if path.is_file() else 0o600
    atomic_write(path, lambda fh: fh.write(old + line), mode=mode)
