"""Configuration of an evaluation network (shared by nets, cost, search and export)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class NetConfig:
    """Evaluation-network size. ``layers`` is the DARTS cell count or NB201's N (cells per stage)."""

    C: int
    layers: int
    num_classes: int
    in_channels: int = 3
    input_size: int = 32
    auxiliary: bool = False
    stem: str = "cifar"  # "cifar" (one 3x3 conv) or "imagenet" (three stride-2 convs, DARTS' ImageNet net)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "NetConfig":
        return cls(**data)


# Paper defaults: DARTS CIFAR C=36 L=20, DARTS ImageNet C=48 L=14, NB201 C=16 N=5.
DEFAULT_SIZE = {("darts", "cifar"): (36, 20), ("darts", "imagenet"): (48, 14), ("nb201", "cifar"): (16, 5), ("nb201", "imagenet"): (16, 5)}


LARGE_INPUT = 64  # above this side a DARTS network gets the ImageNet stem


def stem_for(space: str, input_size: int) -> str:
    """The stem rule: up to 64 px the CIFAR stem (one 3x3 convolution at full resolution; TinyImageNet's 64 px
    too, as the paper's Appendix D); larger inputs DARTS' ImageNet stem (three stride-2 3x3 convolutions, 1/8
    of the side: 224 px -> 28). NB201 keeps its own stem (its networks are defined at 32 px and below)."""
    return "imagenet" if space == "darts" and input_size > LARGE_INPUT else "cifar"


def default_config(space: str, *, in_channels: int, input_size: int, num_classes: int,
                   C: int | None = None, layers: int | None = None, auxiliary: bool = False) -> NetConfig:
    """The papers' evaluation size for ``space`` on a dataset of that shape (the stem: :func:`stem_for`)."""
    stem = stem_for(space, input_size)
    dC, dL = DEFAULT_SIZE[(space, stem)]
    return NetConfig(C=C or dC, layers=layers or dL, num_classes=num_classes, in_channels=in_channels,
                     input_size=input_size, auxiliary=auxiliary, stem=stem)
