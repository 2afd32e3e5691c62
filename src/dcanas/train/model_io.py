"""The trained-model file ``model.pt``: weights plus everything needed to rebuild and feed the
network (genotype, network config, normalization, class names), loadable with
``torch.load(weights_only=True)`` and without the search code."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from ..errors import UserError
from ..files import torch_load, torch_save

FORMAT = "dcanas-model/1"


def build_baseline(arch: str, in_channels: int, num_classes: int, width: float = 1.0) -> nn.Module:
    """torchvision's MobileNetV2 / ResNet-18 adapted to small inputs (stride-1 stem, any input channels)."""
    import torchvision

    if arch == "mobilenet_v2":
        m = torchvision.models.mobilenet_v2(num_classes=num_classes, width_mult=width)
        first = m.features[0][0]
        m.features[0][0] = nn.Conv2d(in_channels, first.out_channels, 3, 1, 1, bias=False)
        return m
    if arch == "resnet18":
        m = torchvision.models.resnet18(num_classes=num_classes)
        m.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        m.maxpool = nn.Identity()
        return m
    raise UserError(f"unknown baseline architecture {arch!r}; valid: mobilenet_v2, resnet18")


def build_from_meta(meta: dict[str, Any]) -> nn.Module:
    """The network a model file describes (weights not loaded)."""
    if meta["arch"] == "dcanas":
        from ..nets.build import build_network
        from ..nets.config import NetConfig
        from ..nets.genotype import genotype_from_json

        return build_network(genotype_from_json(meta["genotype"]), NetConfig.from_json(meta["net_config"]))
    return build_baseline(meta["arch"], meta["input_shape"][0], len(meta["classes"]), meta.get("width", 1.0))


def save_model(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}  # the file does not depend on the training layout
    return torch_save(path, {"format": FORMAT, **meta, "state_dict": state})


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """(network in eval mode with its weights, metadata); a bad file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} not found; train one with `dcanas train ... --out DIR` (it writes DIR/model.pt)")
    try:
        blob = torch_load(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input error
        # torch's own message advises weights_only=False (arbitrary code execution): never pass it on.
        raise UserError(f"{path} is not a dcanas model file (torch.load(weights_only=True) cannot read it: "
                        f"{type(exc).__name__}); give the model.pt written by `dcanas train`") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise UserError(f"{path} is not a dcanas model file (format {blob.get('format') if isinstance(blob, dict) else None!r}, expected {FORMAT})")
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    model = build_from_meta(meta)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise UserError(f"{path}: the weights do not match its genotype/network config ({str(exc).splitlines()[0]})") from None
    return model.eval(), meta


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model
