"""``dcanas`` command line. Heavy imports (torch, fvcore, ...) stay inside the handlers so
``dcanas --help`` is instant; library code never sees an argparse namespace."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Callable, Optional

from .errors import RECEIVED, TERMINATION, Terminated, UserError, first_termination, raise_if_received, terminate, termination_in

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:

    parser = _Parser(prog="dcanas", description="Device Constraints-Aware NAS: device budget -> searched, trained, exported, profiled network.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    from .nets.cli import add_cost_parser
    add_cost_parser(sub)
    from .search.cli import add_lug_parser, add_search_parser
    add_search_parser(sub)
    add_lug_parser(sub)
    from .train.cli import add_train_parsers
    add_train_parsers(sub)
    from .export.cli import add_export_parser
    add_export_parser(sub)
    from .devices.cli import add_devices_parser
    add_devices_parser(sub)
    from .profile.cli import add_profile_parser
    add_profile_parser(sub)
    from .latency.cli import add_latency_parser
    add_latency_parser(sub)
    from .run.cli import add_run_parser
    add_run_parser(sub)
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2, as argparse)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    RECEIVED.clear()
    if threading.current_thread() is threading.main_thread():
        for sig in TERMINATION:
            if signal.getsignal(sig) == signal.SIG_DFL:  # a process that chose otherwise (nohup: SIGHUP ignored) keeps it
                signal.signal(sig, terminate)
    try:
        from .argtypes import resolve_dataset

        resolve_dataset(args)
        code = args.func(args)
        raise_if_received()  # a signal whose exception was lost on the way (errors.raise_if_received) still ends the command
        return code
    except UserError as exc:
        print(f"dcanas {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        # a library may re-raise ours as a plain KeyboardInterrupt
        signum = exc.signum if isinstance(exc, Terminated) else first_termination()
        if signum is not None:
            return _terminated(args.command, signum)
        print(f"dcanas {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        signum = termination_in(exc)  # our Terminated, wrapped by Python in another exception
        if signum is None:
            raise
        return _terminated(args.command, signum)


def _terminated(command: str, signum: int) -> int:
    print(f"dcanas {command}: terminated ({signal.Signals(signum).name})", file=sys.stderr)
    return 128 + signum


if __name__ == "__main__":  # pragma: no cover - use `python -m dcanas`
    raise SystemExit(main())
