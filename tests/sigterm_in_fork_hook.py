"""`dcanas` with a SIGTERM sent to itself from inside the Nth at-fork hook (DCANAS_TEST_SIGTERM_AT_FORK=N): where a
handler's exception is lost ("Exception ignored in ..."), as when a real SIGTERM lands in logging's at-fork hook while
ray.init starts Ray's processes (CI, stop 39: the build then ran to its end with exit code 0)."""
import os
import signal
import sys

forks: list[int] = []


def _after_fork_in_parent() -> None:
    forks.append(1)
    if len(forks) == int(os.environ["DCANAS_TEST_SIGTERM_AT_FORK"]):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside the hook


os.register_at_fork(after_in_parent=_after_fork_in_parent)

from dcanas.cli import main  # noqa: E402 - the hook is in place before dcanas is imported

sys.exit(main(sys.argv[1:]))
