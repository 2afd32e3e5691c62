"""Errors a user can cause: the CLI prints them as one line and exits with code 2; and the termination signals."""

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Callable, Iterator, Optional

TERMINATION = (signal.SIGTERM, signal.SIGHUP)
RECEIVED: list[int] = []  # the termination signals this process received, in order (and a SIGINT noted in a wait)


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


def terminate(signum: int, frame: Optional[FrameType]) -> None:
    """The CLI's handler for SIGTERM and SIGHUP: noted, then raised as :class:`Terminated` where the program is."""
    RECEIVED.append(signum)
    raise Terminated(signum)


def note(signum: int, frame: Optional[FrameType]) -> None:
    """A handler that only notes the signal, for code that acts on it later (:func:`raise_if_received`)."""
    RECEIVED.append(signum)


def _raise(signum: int) -> None:
    if signum == signal.SIGINT:  # noted by signals_noted(interrupt=True): the Ctrl-C it is
        raise KeyboardInterrupt
    raise Terminated(signum)


def termination_in(exc: BaseException) -> Optional[int]:
    """The signal of a :class:`Terminated` that ``exc`` is or was caused by, if any. Python wraps an exception raised in
    some places, so a signal's exception can arrive as the cause of another: a SIGTERM that lands while a dataclass is
    created (``__set_name__``) reaches the CLI as a RuntimeError (seen in a Ray LUG build terminated 1.5 s after start)."""
    seen: set[int] = set()
    e: Optional[BaseException] = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, Terminated):
            return e.signum
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def first_termination() -> Optional[int]:
    """The first SIGTERM/SIGHUP received, if any (a noted SIGINT is not one)."""
    return next((s for s in RECEIVED if s != signal.SIGINT), None)


def raise_if_received() -> None:
    """Raise :class:`Terminated` for a termination signal received earlier. A handler's exception can be lost: raised
    inside an at-fork hook or a finaliser, Python prints "Exception ignored in ..." and goes on (seen with Ray: a SIGTERM
    that landed in logging's at-fork hook while ``ray.init`` started its processes was dropped, and the build ran to its
    end with exit code 0); long waits look here too."""
    if RECEIVED:
        _raise(RECEIVED[0])


def raise_if_received_since(seen: int) -> None:
    """Raise :class:`Terminated` for a termination signal received after the first ``seen`` ones (KeyboardInterrupt for
    a noted SIGINT): for a wait that cleanup code also runs after a signal (the remote folder's removal), so that only a
    newer signal ends it."""
    if len(RECEIVED) > seen:
        _raise(RECEIVED[seen])


@contextmanager
def signals_noted(any_handler: bool = False, interrupt: bool = False) -> Iterator[Callable[[], None]]:
    """While the block runs, our SIGTERM/SIGHUP handler only notes the signal; the block raises it at a point of its
    choosing by calling what it is given (:func:`raise_if_received_since` for the signals noted since it began). For
    waits inside a library whose state an exception raised anywhere could leave half-changed (paramiko's channel and
    locks): the cleanup that follows then still talks to the device.
    ``any_handler``: every handler but SIG_IGN is swapped, not only ours (nohup's SIGHUP stays ignored), and each
    handler is put back as it was whatever the block installed: for a library that installs its own (Ray).
    ``interrupt``: Ctrl-C too, when Python's default handler has it (noted as SIGINT, raised as KeyboardInterrupt). A
    KeyboardInterrupt raised in paramiko between a lock's ``acquire()`` and its ``try`` leaves the lock held; its reader
    thread then blocks on it and the connection, the cleanup's included, hangs (seen in CI)."""
    saved = {}
    seen = len(RECEIVED)
    if threading.current_thread() is threading.main_thread():
        if interrupt and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            saved[signal.SIGINT] = signal.default_int_handler
            signal.signal(signal.SIGINT, note)
        for sig in TERMINATION:
            handler = signal.getsignal(sig)
            if handler is terminate or (any_handler and handler is not None):
                saved[sig] = handler
                if handler is not signal.SIG_IGN:
                    signal.signal(sig, note)
    try:
        yield lambda: raise_if_received_since(seen)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
