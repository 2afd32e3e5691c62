"""The tests' command server (tests/zygote.py) does not outlive the test run that started it."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie has ended; only its entry waits for a reaper


def test_the_zygote_ends_when_the_test_run_that_started_it_is_killed():
    """A killed pytest cannot call Zygote.close(); the server, in a session of its own, notices its parent is gone."""
    starter = subprocess.Popen([sys.executable, "-c", "import sys, time; from zygote import Zygote; z = Zygote(); z._start(); "
                                "print(z._proc.pid, z._dir, flush=True); time.sleep(600)"], cwd=HERE, stdout=subprocess.PIPE, text=True)
    server = 0
    try:
        pid, folder = starter.stdout.readline().split()
        server = int(pid)
        assert _alive(server)
        starter.send_signal(signal.SIGKILL)
        starter.wait(10)
        deadline = time.monotonic() + 30
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(server), "the zygote outlived the process that started it"
        assert not Path(folder).exists(), "the zygote left its socket's folder behind"
    finally:
        starter.kill()
        if server and _alive(server):
            os.kill(server, signal.SIGKILL)
