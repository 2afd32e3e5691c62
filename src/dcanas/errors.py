"""Errors a user can cause: the CLI prints them as one line and exits with code 2; and the termination signals."""

import signal


class UserError(Exception):
    """Bad input (file, option, budget, device): the message says what, what is valid, and how to fix it."""


class DataError(UserError, RuntimeError):
    """The data is missing or malformed; the message says where to put it or how to get it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: handled as Ctrl-C is (the device's work folder removed, the run's state saved), then the
    shell's exit code for that signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
