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


def add_folder_options(p: argparse.ArgumentParser) -> None:
    """--input-size and --val-split, for --dataset folder:PATH (an ImageFolder tree of one's own images)."""
    p.add_argument("--input-size", type=positive_int, help="folder: datasets: the side images are resized and cropped to "
                   "(default: the median shorter side, rounded to a multiple of 8)")
    p.add_argument("--val-split", type=positive_float, help="folder: datasets without val/: the fraction of train/ held out "
                   "for validation (e.g. 0.1)")


def resolve_dataset(args: argparse.Namespace) -> None:
    """``--dataset folder:PATH`` with --input-size/--val-split -> its canonical name (folder:/abs/PATH?size=N&val=F)."""
    dataset = getattr(args, "dataset", None)
    size, val = getattr(args, "input_size", None), getattr(args, "val_split", None)
    if isinstance(dataset, str) and dataset.startswith("folder:"):
        from .data.folders import folder_dataset

        args.dataset = folder_dataset(dataset, size, val)
    elif size is not None or val is not None:
        from .errors import UserError

        raise UserError("--input-size and --val-split apply to --dataset folder:PATH (your own ImageFolder tree); "
                        f"{dataset or 'this dataset'} has a fixed size and split")


def add_dist_options(p: argparse.ArgumentParser) -> None:
    """--dist-timeout: under torchrun, how long a rank waits for a peer before it stops (one line, exit 2)."""
    p.add_argument("--dist-timeout", type=positive_float, metavar="S", help="under torchrun: seconds a rank waits for a peer "
                   "that stopped answering before the run stops (default 300)")


def apply_dist_options(args: argparse.Namespace) -> None:
    import os

    if getattr(args, "dist_timeout", None):
        os.environ["DCANAS_DIST_TIMEOUT_S"] = str(args.dist_timeout)
