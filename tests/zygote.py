"""`python -m dcanas ARGS` for the tests without paying for the imports each time: one server process imports torch,
dcanas and the exporters once (about 4 s for torch and 10 s for litert-torch here, per command before) and forks one
child per command. The child is a real process: its own pid, stdin /dev/null, stdout and stderr to files, the
command's environment and working directory, `python -m dcanas` semantics (atexit handlers, SystemExit's code, a
signal's negative return code). What it cannot show is an import-time failure of the CLI, which
tests/test_import_safety.py and every test that starts `python -m dcanas` with subprocess.Popen still cover.
DCANAS_TEST_ZYGOTE=0 runs every command as a fresh process instead.

Protocol on a Unix socket, one connection per command: the client sends one JSON line {argv, env, cwd} with the
stdout and stderr file descriptors attached (SCM_RIGHTS); the server answers "pid N" and, when the child ends,
"status S" (its wait status)."""
from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

PRELOAD = ("torch", "onnx", "onnxruntime", "litert_torch", "dcanas.cli", "dcanas.search.searcher", "dcanas.train.trainer",
           "dcanas.export.exporter", "dcanas.run.pipeline", "dcanas.latency.build", "matplotlib.pyplot")


_SERVER_FDS: list[int] = []  # the server's own descriptors, closed in each child
PARENT_CHECK_S = 2.0  # how often the server looks whether the process that started it is still there


def _child(conn: socket.socket, fds: list[int], req: dict) -> None:
    """In the forked child: become `python -m dcanas ARGV` and exit with its code. Never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for fd in _SERVER_FDS:
            os.close(fd)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python sets it at start-up
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setpgrp()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in (null, *fds):
            os.close(fd)
        conn.close()
        os.environ.clear()
        os.environ.update(req["env"])
        os.chdir(req["cwd"])
        sys.path[0] = req["cwd"]  # where `python -m` looks first (the server's was this file's folder)
        import runpy

        import dcanas

        sys.argv = [str(Path(dcanas.__file__).parent / "__main__.py"), *req["argv"]]
        try:
            runpy.run_module("dcanas", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:  # sys.exit("message"): printed, exit 1
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 - what Python prints for an uncaught exception
            import traceback

            traceback.print_exc()
            code = 1
        import atexit

        atexit._run_exitfuncs()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(path: str) -> None:
    """The server: import once, then fork a child per connection and report its end."""
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd)
    signal.signal(signal.SIGCHLD, lambda *a: None)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ)
    sel.register(rfd, selectors.EVENT_READ)
    _SERVER_FDS.extend([rfd, wfd, sel.fileno()])
    children: dict[int, socket.socket] = {}
    parent = os.getppid()
    print("ready", flush=True)
    while os.getppid() == parent:  # a test run that was killed cannot close() its zygote: it ends with its parent
        for key, _ in sel.select(timeout=PARENT_CHECK_S):
            if key.fileobj is srv:
                conn, _ = srv.accept()
                msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 2)
                req = json.loads(msg.decode())
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    srv.close()
                    _child(conn, fds, req)
                for fd in fds:
                    os.close(fd)
                conn.sendall(f"pid {pid}\n".encode())
                children[pid] = conn
            else:
                os.read(rfd, 4096)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                try:
                    conn.sendall(f"status {status}\n".encode())
                except OSError:
                    pass
                conn.close()
    import shutil

    shutil.rmtree(os.path.dirname(path), ignore_errors=True)  # the folder Zygote made for the socket and this log


class Zygote:
    """The client side: starts the server on first use; :meth:`run` is subprocess.run for `python -m dcanas`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: Optional[subprocess.Popen] = None
        self._dir = tempfile.mkdtemp(prefix="dcanas-zygote-")
        self.path = os.path.join(self._dir, "sock")

    def _start(self) -> None:
        with open(os.path.join(self._dir, "server.log"), "w") as log:  # the server holds its own copy of the handle
            self._proc = subprocess.Popen([sys.executable, __file__, self.path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=log, text=True, start_new_session=True)
        line = self._proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the test zygote did not start: {Path(self._dir, 'server.log').read_text()[-2000:]}")

    def run(self, args: list[str], *, timeout: float = 300, env: Optional[dict] = None, cwd: Optional[str] = None
            ) -> subprocess.CompletedProcess:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
        with tempfile.TemporaryFile("w+b") as out, tempfile.TemporaryFile("w+b") as err:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.path)
            req = {"argv": list(args), "env": dict(os.environ if env is None else env), "cwd": str(cwd or os.getcwd())}
            socket.send_fds(sock, [json.dumps(req).encode()], [out.fileno(), err.fileno()])
            lines = _Lines(sock)
            pid = int(lines.next(60).split()[1])
            line = lines.next(timeout)
            if line is None:
                _kill(pid)
                lines.next(30)
                sock.close()
                raise subprocess.TimeoutExpired(["dcanas", *args], timeout, _read(out), _read(err))
            sock.close()
            if not line:
                raise RuntimeError(f"the test zygote lost the child {pid}: {Path(self._dir, 'server.log').read_text()[-2000:]}")
            code = os.waitstatus_to_exitcode(int(line.split()[1]))
            return subprocess.CompletedProcess([sys.executable, "-m", "dcanas", *args], code, _read(out), _read(err))

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        import shutil

        shutil.rmtree(self._dir, ignore_errors=True)


class _Lines:
    """Lines from a socket, each within a time limit: None when the limit passed, "" at the end of the stream."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def next(self, timeout: float) -> Optional[str]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(4096)
            except (socket.timeout, TimeoutError):
                return None
            if not chunk:
                return ""
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


def _kill(pid: int) -> None:
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except OSError:
            pass


def _read(fh) -> str:
    fh.flush()
    fh.seek(0)
    return fh.read().decode(errors="replace")


if __name__ == "__main__":
    serve(sys.argv[1])
