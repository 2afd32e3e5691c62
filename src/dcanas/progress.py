"""Per-step progress bars: tqdm (steps, images/s, ETA) when stderr is a terminal; nothing otherwise, where
the stages print one line per epoch instead (logs, CI). A search run inside a pool worker shows no bar
(several processes writing bars to one terminal garble each other), nor a torchrun rank other than 0."""
from __future__ import annotations

import multiprocessing
import os
import sys
from typing import Any


def stderr_line(msg: str) -> None:
    """The default progress callback of the library functions: one line on stderr, flushed."""
    print(msg, file=sys.stderr, flush=True)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass


def bars_wanted() -> bool:
    if os.environ.get("DCANAS_PROGRESS") in ("0", "off"):
        return False
    in_pool = multiprocessing.current_process().name != "MainProcess"
    other_rank = os.environ.get("RANK", "0") != "0"  # under torchrun only rank 0 draws
    return sys.stderr.isatty() and not in_pool and not other_rank


def step_bar(total: int, desc: str, unit: str = "img") -> Any:
    """A bar over ``total`` units (images by default: tqdm shows images/s and the ETA), or a no-op."""
    if not bars_wanted():
        return _NoBar()
    import shutil

    from tqdm import tqdm

    size = shutil.get_terminal_size((100, 20))  # a terminal that reports 0 x 0 still gets a bar (tqdm would hide it)
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False, ncols=size.columns or 100,
                nrows=size.lines or 20, file=sys.stderr)
