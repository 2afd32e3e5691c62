"""argparse types that refuse out-of-range numbers at parse time (one line, exit 2), before any work."""
from __future__ import annotations

import argparse
from typing import Callable


def _bounded(cast: Callable, lo: float, what: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not v >= lo:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return v
    parse.__name__ = what
    return parse


positive_int = _bounded(int, 1, "an integer >= 1")
nonneg_int = _bounded(int, 0, "an integer >= 0")
nonneg_float = _bounded(float, 0.0, "a number >= 0")
positive_float = _bounded(float, 1e-300, "a number > 0")
