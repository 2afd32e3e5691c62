"""Transports to a device: local subprocess, SSH (paramiko) and adb. A few verbs (fabric's
habit): ``connect``, ``run``, ``put``, ``mkdtemp``, ``rmtree``; used as a context manager.

Every remote command is an argv list joined with ``shlex.join`` (each argument quoted). ``put``
uploads to a temporary name and renames only after the remote sha256 matches, so a half-sent
model never runs under its final name. File-system verbs run through the device's Python, so
they work wherever the runner can run. A link that is cut or goes silent during ``run`` ends in a
:class:`LinkLost` (a :class:`DeviceError`) within seconds, never a hang.
"""
from __future__ import annotations

import errno
import getpass
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..errors import UserError, signals_noted
from ..files import file_sha256
from .known_hosts import append_host_key, host_entry_name, load_known_hosts
from .schema import Connection, DeviceProfile
from ..progress import stderr_line as _stderr

SHA256_PY = "import hashlib,sys;h=hashlib.sha256();f=open(sys.argv[1],'rb');[h.update(c) for c in iter(lambda:f.read(1<<20),b'')];print(h.hexdigest())"
MKDTEMP_PY = "import sys,tempfile;print(tempfile.mkdtemp(prefix='dcanas-',dir=sys.argv[1] if len(sys.argv)>1 else None))"
RENAME_PY = "import os,sys;os.replace(sys.argv[1],sys.argv[2])"
RMTREE_PY = "import shutil,sys;shutil.rmtree(sys.argv[1],ignore_errors=True)"
REMOVE_PY = "import os,sys;os.path.exists(sys.argv[1]) and os.remove(sys.argv[1])"
FREE_PY = "import shutil,sys;print(shutil.disk_usage(sys.argv[1]).free)"
BANNER_FIX = ("the device's login shell prints text on a non-interactive session (an echo or banner in ~/.bashrc, ~/.profile "
              "or /etc/bash.bashrc there), which corrupts the file-transfer channel; print it only in interactive shells "
              "(put `[[ $- == *i* ]] || return` before it)")

Warn = Callable[[str], None]
_WARNED: set = set()


class DeviceError(UserError):
    """The device cannot be reached or refused us: one line with what failed and how to fix it."""


class LinkLost(DeviceError):
    """The connection was cut or went silent while a command ran; the session cannot be used again."""


class RemoteCommandError(DeviceError):
    """A command ran on the device and failed; the message carries its exit code and last stderr line."""

    def __init__(self, message: str, tail: str = "") -> None:
        super().__init__(message)
        self.tail = tail


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


class Transport:
    """The verbs every transport offers. Retries follow ONE policy, the profile's
    ``connection.retries``, for connecting and uploading alike; ``retryable`` names the errors of
    this transport that a retry may cure. Notices go to ``warn`` (the stage log in a run)."""

    python: str = "python3"
    retryable: tuple = (OSError, EOFError)
    conn: Connection
    warn: Warn = staticmethod(_stderr)

    def __enter__(self) -> "Transport":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self, retries: Optional[int] = None, timeout: Optional[float] = None) -> None:
        pass

    def close(self) -> None:
        pass

    def alive(self) -> bool:
        """False once the link was lost: cleanup then goes through a fresh connection."""
        return True

    def describe(self) -> str:
        raise NotImplementedError

    def run(self, argv: list[str], timeout: Optional[float] = None, silence_s: Optional[float] = None,
            check: bool = False) -> Result:
        """Run ``argv`` on the device. ``timeout``: the whole command; ``silence_s``: the longest a
        command that prints heartbeats may go without a byte before the link counts as dead;
        ``check``: a non-zero exit raises :class:`RemoteCommandError` with the remote stderr."""
        r = self._run(argv, timeout, silence_s)
        if check and r.rc != 0:
            tail = (r.stderr.strip().splitlines() or r.stdout.strip().splitlines() or ["no output"])[-1]
            raise RemoteCommandError(f"{self.describe()}: {Path(argv[0]).name} failed with exit code {r.rc} ({tail}); "
                                     f"check connection.python in the profile", tail)
        return r

    def _run(self, argv: list[str], timeout: Optional[float], silence_s: Optional[float]) -> Result:
        raise NotImplementedError

    def _upload(self, local: Path, remote: str, callback: Optional[Callable[[int, int], None]]) -> None:
        raise NotImplementedError

    def py(self, code: str, *args: str, timeout: Optional[float] = 60, check: bool = True) -> Result:
        """A snippet run by the device's Python (``connection.python``); failures raise by default."""
        return self.run([self.python, "-c", code, *args], timeout=timeout, check=check)

    def mkdtemp(self, parent: Optional[str] = None) -> str:
        return self.py(MKDTEMP_PY, *([parent] if parent else [])).stdout.strip().splitlines()[-1]

    def rmtree(self, path: str) -> None:
        self.py(RMTREE_PY, path)

    def exists(self, path: str) -> bool:
        return self.py("import os,sys;print(os.path.exists(sys.argv[1]))", path).stdout.strip() == "True"

    def put(self, local: Path, remote: str, callback: Optional[Callable[[int, int], None]] = None) -> None:
        """Upload to ``remote + '.part'``, check sha256 on the device, then rename to ``remote``;
        an interrupted upload is retried ``connection.retries`` times on a fresh connection."""
        want = file_sha256(local)
        tmp = remote + ".part"
        delay, retries = 0.5, self.conn.retries
        for attempt in range(1, retries + 2):
            try:
                self._upload(local, tmp, callback)
                got = self.py(SHA256_PY, tmp).stdout.strip()
                if got != want:
                    raise OSError(f"sha256 mismatch after upload ({got[:12]} != {want[:12]})")
                self.py(RENAME_PY, tmp, remote)
                return
            except self.retryable as exc:
                self._raise_if_full(local, remote, exc)
                if attempt > retries:
                    raise DeviceError(f"{self.describe()}: upload of {local.name} failed after {attempt} attempts ({type(exc).__name__}: {exc})") from None
                self.warn(f"upload of {local.name} interrupted ({type(exc).__name__}); retry {attempt}/{retries} in {delay:.1f}s")
                time.sleep(delay)
                delay *= 2
                self.reconnect()
                self.py(REMOVE_PY, tmp, check=False)  # the .part name never runs

    def _raise_if_full(self, local: Path, remote: str, exc: BaseException) -> None:
        """A failed upload to a full disk is named as such (no retry can cure it)."""
        folder = str(Path(remote).parent)
        try:
            if not self.alive():
                return
            free = int(self.py(FREE_PY, folder, timeout=20).stdout.strip().splitlines()[-1])
        except Exception:  # noqa: BLE001 - the check is best effort; the retry loop reports the original error
            return
        need = local.stat().st_size
        if free < need or getattr(exc, "errno", None) == errno.ENOSPC:
            self.py(REMOVE_PY, remote, check=False)
            raise DeviceError(f"{self.describe()}: no space left on the device for {local.name} ({need / 1024:.0f} KB; {folder} has "
                              f"{free / 1024:.0f} KB free); free space there, or set connection.workdir to a folder on a larger "
                              f"filesystem") from None

    def sftp_check(self) -> None:
        """Whether files can be sent (the connection check's second half); nothing to do but over SSH."""

    def reconnect(self) -> None:
        self.close()
        self.connect()


class LocalTransport(Transport):
    """This machine: a subprocess (no shell)."""

    def __init__(self, conn: Connection, warn: Warn = _stderr) -> None:
        self.python = sys.executable if conn.python in ("python3", "python", None) else conn.python
        self.conn, self.warn = conn, warn

    def describe(self) -> str:
        return "local"

    def _run(self, argv: list[str], timeout: Optional[float], silence_s: Optional[float]) -> Result:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise DeviceError(f"local: {argv[0]!r} not found ({exc}); check connection.python in the profile") from None
        except subprocess.TimeoutExpired:
            raise DeviceError(f"local: {Path(argv[0]).name} did not finish in {timeout:.0f} s; raise --timeout") from None
        return Result(p.returncode, p.stdout, p.stderr)

    def _upload(self, local: Path, remote: str, callback) -> None:
        shutil.copyfile(local, remote)


class SSHTransport(Transport):
    """paramiko with ~/.ssh/config, keys and the agent only, host keys checked (RejectPolicy, or
    trust-on-first-use appending one hashed line), keepalive on, keys under ``@revoked`` refused."""

    def __init__(self, conn: Connection, warn: Warn = _stderr, jump: Optional[str] = None) -> None:
        import paramiko

        logging.getLogger("paramiko").addHandler(logging.NullHandler())  # no tracebacks of paramiko's threads on stderr
        self.conn, self.warn = conn, warn
        self.retryable = (OSError, EOFError, paramiko.SSHException)
        self.python = conn.python
        entry = ssh_config_entry(conn.host)
        self.hostname = entry.get("hostname", conn.host)
        self.port = int(conn.port or entry.get("port", 22))
        self.user = conn.user or entry.get("user") or getpass.getuser()
        keys = [conn.key_file] if conn.key_file else entry.get("identityfile", [])
        self.key_files = [str(Path(k).expanduser()) for k in keys]
        self.known_hosts = Path(conn.known_hosts or "~/.ssh/known_hosts").expanduser()
        self.client = None
        # how ssh itself would reach the host: through jump hosts (ProxyJump, or ``jump``: the hops before this one)
        # or a local command (ProxyCommand); never silently direct
        self.proxy_jump = jump if jump is not None else entry.get("proxyjump")
        self.proxy_command = entry.get("proxycommand") if jump is None else None
        if (self.proxy_jump or "").lower() == "none":
            self.proxy_jump = None
        if (self.proxy_command or "").lower() == "none":
            self.proxy_command = None
        self._jump: Optional["SSHTransport"] = None

    def describe(self) -> str:
        via = f" via {self.proxy_jump}" if self.proxy_jump else " via ProxyCommand" if self.proxy_command else ""
        return f"{self.user}@{self.hostname}:{self.port}{via}"

    def _sock(self, timeout: float):
        """The socket to the host when ~/.ssh/config routes it: a ``direct-tcpip`` channel through the last jump host
        (itself reached through the hops before it), or a ProxyCommand's pipes; None: connect directly."""
        import paramiko

        if self.proxy_command:
            return paramiko.ProxyCommand(self.proxy_command)
        if not self.proxy_jump:
            return None
        hops = [h.strip() for h in self.proxy_jump.split(",") if h.strip()]
        user, _, hostport = hops[-1].rpartition("@")
        host, port = hostport, None
        if hostport.startswith("["):
            host, _, rest = hostport[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else None
        elif hostport.count(":") == 1:
            host, p = hostport.split(":")
            port = int(p)
        from dataclasses import replace

        hop_conn = replace(self.conn, host=host, port=port, user=user or None, key_file=None if ssh_config_entry(host).get(
            "identityfile") else self.conn.key_file, retries=0)
        self._jump = SSHTransport(hop_conn, warn=self.warn, jump=",".join(hops[:-1]) or "none")
        try:
            self._jump.connect(timeout=timeout)
        except DeviceError as exc:
            raise DeviceError(f"{self.describe()}: the jump host (ProxyJump {self.proxy_jump} in ~/.ssh/config) failed: {exc}") from None
        try:
            return self._jump.client.get_transport().open_channel("direct-tcpip", (self.hostname, self.port), ("127.0.0.1", 0),
                                                                  timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._jump.close()
            raise DeviceError(f"{self.describe()}: the jump host {hops[-1]} (ProxyJump in ~/.ssh/config) did not forward to "
                              f"{self.hostname}:{self.port} ({exc or type(exc).__name__}); allow TCP forwarding there "
                              f"(AllowTcpForwarding) or correct ProxyJump") from None

    def _client(self):
        import paramiko

        client = paramiko.SSHClient()
        kh = load_known_hosts(self.known_hosts, client.get_host_keys())  # paramiko's own loader raises on @markers
        for why in kh.skipped:
            if (self.known_hosts, why) not in _WARNED:  # once per process, not per connection
                _WARNED.add((self.known_hosts, why))
                self.warn(f"warning: {self.known_hosts} {why}: skipped")
        added: list = []

        class Policy(paramiko.MissingHostKeyPolicy):
            def missing_host_key(self_, client_, hostname, key):  # noqa: N805
                if not self.conn.trust_on_first_use:
                    raise paramiko.SSHException(f"known_hosts: unknown host key for {hostname}")
                added.append((hostname, key))

        client.set_missing_host_key_policy(Policy())
        return client, kh, added

    def connect(self, retries: Optional[int] = None, timeout: Optional[float] = None) -> None:
        import paramiko

        for k in self.key_files:
            if not Path(k).is_file():
                raise DeviceError(f"{self.describe()}: key file {k} not found; set connection.key_file to a private key "
                                  f"whose public half is in the device's authorized_keys")
        retries = self.conn.retries if retries is None else retries
        timeout = self.conn.connect_timeout_s if timeout is None else timeout
        delay = 0.5
        for attempt in range(1, retries + 2):
            client, kh, added = self._client()
            try:
                sock = self._sock(timeout)
                client.connect(self.hostname, self.port, username=self.user, key_filename=self.key_files or None,
                               allow_agent=True, look_for_keys=not self.key_files, password=None,
                               timeout=timeout, banner_timeout=timeout, auth_timeout=timeout, sock=sock)
            except paramiko.BadHostKeyException:
                client.close()
                raise DeviceError(f"{self.describe()}: the host key CHANGED since it was recorded in {self.known_hosts}; if the device was "
                                  f"reinstalled, remove the old key with `ssh-keygen -R '[{self.hostname}]:{self.port}' -f {self.known_hosts}`") from None
            except paramiko.PasswordRequiredException:
                client.close()
                raise DeviceError(f"{self.describe()}: the key {', '.join(self.key_files) or '(default)'} is encrypted and no SSH agent "
                                  f"offers it; load it into the agent with `ssh-add {self.key_files[0] if self.key_files else ''}`"
                                  f"{'' if os.environ.get('SSH_AUTH_SOCK') else ' (no agent runs here: start one with eval $(ssh-agent))'}"
                                  f", or use a key without a passphrase") from None
            except paramiko.AuthenticationException as exc:
                client.close()
                raise DeviceError(f"{self.describe()}: authentication failed with {', '.join(self.key_files) or 'the agent/default keys'} "
                                  f"({exc}); add the public key to ~{self.user}/.ssh/authorized_keys on the device") from None
            except paramiko.SSHException as exc:
                client.close()
                if "known_hosts" in str(exc):
                    raise DeviceError(f"{self.describe()}: unknown host key (not in {self.known_hosts}); verify it and add it with "
                                      f"`ssh-keyscan -p {self.port} {self.hostname} >> {self.known_hosts}`, or set "
                                      f"connection.trust_on_first_use: true") from None
                if attempt > retries:
                    raise DeviceError(f"{self.describe()}: SSH failed ({exc}) after {attempt} attempt(s)") from None
            except (OSError, EOFError) as exc:
                client.close()
                if attempt > retries:
                    raise DeviceError(f"cannot reach {self.describe()} ({exc or type(exc).__name__}) after {attempt} attempt(s); is the device on, "
                                      f"sshd running, and connection.host/port right?") from None
            else:
                key = client.get_transport().get_remote_server_key()
                if (key.get_name(), key.get_base64()) in kh.revoked:
                    client.close()
                    raise DeviceError(f"{self.describe()}: the host's key is marked @revoked in {self.known_hosts}; refusing to connect")
                for name, new_key in added:  # trust on first use: one hashed line, appended atomically
                    append_host_key(self.known_hosts, host_entry_name(self.hostname, self.port), new_key)
                    self.warn(f"recorded the host key of {name} ({new_key.get_name()}) in {self.known_hosts} (trust on first use)")
                client.get_transport().set_keepalive(max(1, int(self.conn.keepalive_s)))
                self.client = client
                return
            time.sleep(delay)
            delay *= 2

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._jump is not None:
            self._jump.close()
            self._jump = None

    def sftp_check(self) -> None:
        """Open and close an SFTP session: a login shell that prints on a non-interactive session breaks it, and the
        connection check should say so now, not after a search (``_upload`` says the same)."""
        self._sftp().close()

    def _sftp(self):
        import paramiko

        if self.client is None:
            self.connect()
        try:
            return self.client.open_sftp()
        except paramiko.SFTPError as exc:
            if "garbage" in str(exc).lower():
                raise DeviceError(f"{self.describe()}: SFTP failed ({exc}): {BANNER_FIX}") from None
            raise

    def alive(self) -> bool:
        t = self.client.get_transport() if self.client is not None else None
        return t is not None and t.is_active()

    def _lost(self, why: str) -> LinkLost:
        self.close()  # a cut or frozen session is never reused
        return LinkLost(f"{self.describe()}: {why}")

    def _run(self, argv: list[str], timeout: Optional[float], silence_s: Optional[float]) -> Result:
        import paramiko

        if self.client is None:
            self.connect()
        try:
            chan = self.client.get_transport().open_session(timeout=self.conn.connect_timeout_s)
            chan.exec_command(shlex.join(argv))
        except (paramiko.SSHException, OSError, EOFError, AttributeError) as exc:
            raise self._lost(f"the connection failed before {Path(argv[0]).name} started ({type(exc).__name__}: {exc})") from None
        out, err = bytearray(), bytearray()
        start = last = time.monotonic()
        name = Path(argv[1] if len(argv) > 1 and not argv[1].startswith("-") else argv[0]).name
        with signals_noted(interrupt=True) as check:  # Ctrl-C, SIGTERM, SIGHUP end the wait at its next poll, never inside paramiko
            while True:
                check()
                got = False
                while chan.recv_ready():
                    out += chan.recv(1 << 16)
                    got = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                    got = True
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                now = time.monotonic()
                last = now if got else last
                transport = self.client.get_transport() if self.client else None
                if transport is None or not transport.is_active() or chan.closed:
                    raise self._lost(f"the connection was cut while {name} ran (after {now - start:.0f} s)")
                if timeout is not None and now - start > timeout:
                    raise self._lost(f"{name} did not finish in {timeout:.0f} s; raise --timeout if the model is that slow")
                if silence_s is not None and now - last > silence_s:
                    raise self._lost(f"the link went silent for {silence_s:.0f} s while {name} ran (no heartbeat); "
                                     f"check the network, or raise connection.keepalive_s")
                if not got:
                    time.sleep(0.02)
            check()  # one that came during the last poll
        rc = chan.recv_exit_status()
        if rc == -1:  # the channel closed without an exit status
            if not self.alive():  # the session died under the command
                raise self._lost(f"the connection was cut while {name} ran (after {time.monotonic() - start:.0f} s)")
            tail = (err.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
            raise DeviceError(f"{self.describe()}: {name} was killed on the device without an exit status ({tail})")
        return Result(rc, out.decode(errors="replace"), err.decode(errors="replace"))

    def _upload(self, local: Path, remote: str, callback) -> None:
        with signals_noted(interrupt=True) as check:  # as in _run: a signal ends the upload at its next chunk
            def chunk(done: int, total: int) -> None:  # between two chunks: outside paramiko's locks
                check()
                if callback is not None:
                    callback(done, total)

            sftp = self._sftp()
            try:
                sftp.put(str(local), remote, callback=chunk)
            finally:
                sftp.close()
            check()


class AdbTransport(Transport):
    """An Android phone without sshd, through the ``adb`` binary."""

    def __init__(self, conn: Connection, warn: Warn = _stderr) -> None:
        self.conn, self.warn = conn, warn
        self.python = conn.python
        self.adb = shutil.which("adb")

    def describe(self) -> str:
        return f"adb:{self.conn.serial or 'default device'}"

    def _base(self) -> list[str]:
        return [self.adb] + (["-s", self.conn.serial] if self.conn.serial else [])

    def connect(self, retries: Optional[int] = None, timeout: Optional[float] = None) -> None:
        if not self.adb:
            raise DeviceError("adb not found on PATH; install Android platform-tools (Debian: apt-get install adb) and enable USB debugging")
        r = subprocess.run(self._base() + ["get-state"], capture_output=True, text=True, timeout=30)
        if r.returncode != 0 or "device" not in r.stdout:
            raise DeviceError(f"{self.describe()}: not ready ({(r.stderr or r.stdout).strip()}); check `adb devices`")

    def _run(self, argv: list[str], timeout: Optional[float], silence_s: Optional[float]) -> Result:
        try:
            p = subprocess.run(self._base() + ["shell", shlex.join(argv)], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LinkLost(f"{self.describe()}: {Path(argv[0]).name} did not finish in {timeout:.0f} s") from None
        return Result(p.returncode, p.stdout, p.stderr)

    def _upload(self, local: Path, remote: str, callback) -> None:
        p = subprocess.run(self._base() + ["push", str(local), remote], capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise OSError(p.stderr.strip())


def ssh_config_entry(host: Optional[str]) -> dict:
    """``host``'s entry of ~/.ssh/config (paramiko's reading of it); a line it cannot parse is one line naming it."""
    import paramiko

    path = Path("~/.ssh/config").expanduser()
    if not path.is_file():
        return {}
    try:
        return paramiko.SSHConfig.from_path(str(path)).lookup(host or "")
    except paramiko.ssh_exception.ConfigParseError as exc:
        bad = str(exc).split("line ", 1)[-1].strip().strip("'\"")
        lines = path.read_text(errors="replace").splitlines()
        n = next((i for i, line in enumerate(lines, start=1) if line.strip() and line.strip() in bad or bad in line), None)
        raise DeviceError(f"{path}{f' line {n}' if n else ''}: cannot be parsed ({exc}); fix or comment out that line "
                          f"(`ssh -G {host}` shows how ssh reads the file)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DeviceError(f"{path}: cannot be read ({exc}); fix its permissions or encoding") from None


def make_transport(profile: DeviceProfile, warn: Warn = _stderr) -> Transport:
    kind = profile.connection.transport
    return {"local": LocalTransport, "ssh": SSHTransport, "adb": AdbTransport}[kind](profile.connection, warn=warn)
