"""A real OpenSSH sshd on 127.0.0.1 for the profiler tests: its own host key, authorized key and
config, stopped by its pid. The device stand-in is this machine, reached over real SSH."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@dataclass
class Sshd:
    root: Path
    port: int
    user: str
    key: Path
    host_pub: str
    proc: subprocess.Popen
    known_hosts: Path

    def profile_yaml(self, path: Path, **overrides) -> Path:
        import yaml

        con = dict(transport="ssh", host="127.0.0.1", port=self.port, user=self.user, key_file=str(self.key),
                   known_hosts=str(self.known_hosts), python=sys.executable, workdir=str(self.root / "remote"),
                   retries=1, connect_timeout_s=5)
        con.update(overrides.pop("connection", {}))
        data = dict(name="loopback", description="sshd on 127.0.0.1", budget=dict(latency_ms=1000, peak_memory_mb=4096),
                    runtime=dict(engine="onnxruntime", threads=1, precision="fp32"), connection=con)
        data.update(overrides)
        path.write_text(yaml.safe_dump(data))
        return path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_sshd(root: Path, extra: str = "", subsystem: str = "internal-sftp") -> Sshd:
    """``extra``: more sshd_config lines (e.g. AllowTcpForwarding no, ForceCommand); ``subsystem``: the sftp server."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "remote").mkdir(exist_ok=True)
    keygen(root / "host_key")
    keygen(root / "user_key")
    shutil.copy(root / "user_key.pub", root / "authorized_keys")
    os.chmod(root / "authorized_keys", 0o600)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = root / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {root / 'host_key'}
PidFile {root / 'sshd.pid'}
AuthorizedKeysFile {root / 'authorized_keys'}
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp {subsystem}
LogLevel VERBOSE
{extra}
""")
    proc = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(root / "sshd.log")])
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(root / 'sshd.log').read_text()[-2000:]}") from None
            time.sleep(0.05)
    host_pub = (root / "host_key.pub").read_text().split()[:2]
    known = root / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    return Sshd(root, port, getpass.getuser(), root / "user_key", " ".join(host_pub), proc, known)
