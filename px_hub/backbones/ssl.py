"""Self-supervised ResNet-50 checkpoints (official files) onto timm ``resnet50``.

* ``moco:PATH_OR_OWNER/REPO/FILE`` — MoCo v2 (``moco_v2_800ep_pretrain.pth.tar``): ``{"state_dict": {...}}`` with
  keys ``module.encoder_q.<torchvision name>``; the key encoder, queue and MLP head (``fc.*``) are dropped.
* ``dino:PATH_OR_OWNER/REPO/FILE`` — DINO ResNet-50 (``dino_resnet50_pretrain.pth``): plain torchvision keys,
  possibly under ``module.`` / ``backbone.`` prefixes; full training checkpoints (``{"teacher": ...}``) use the
  teacher, as DINO's evaluation does.

torchvision's ResNet-50 key layout equals timm's ``resnet50`` except the classifier (``fc`` in both), so after
prefix stripping every backbone tensor must match by name and shape (else an error names the first offenders).
The classifier is new (``num_classes``, default 1000): trunc-normal std 0.02 / zeros, seeded.
Files are read with ``torch.load(weights_only=True)`` or safetensors.
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import IntegrityError
from ._common import HEAD_INIT, init_head_, load_exact, read_checkpoint, resolve_file, seeded, timm_data_config
from .registry import LoadedModel, register_loader

LICENSES = {"moco": "cc-by-nc-4.0 (MoCo, Meta)", "dino": "apache-2.0 (DINO, Meta)"}


def _unwrap(ckpt: dict[str, Any], kind: str) -> dict[str, torch.Tensor]:
    for key in (("teacher", "state_dict", "model") if kind == "dino" else ("state_dict", "model")):
        if key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
            break
    return {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}


def remap_ssl_resnet50(state: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """Strip the wrapper prefixes and drop the projection/classifier heads (``fc``/``head``)."""
    out: dict[str, torch.Tensor] = {}
    if kind == "moco":
        if not any(k.startswith(("module.encoder_q.", "encoder_q.")) for k in state):
            raise IntegrityError("moco: no 'module.encoder_q.' keys in the checkpoint; is this a MoCo v1/v2 file? "
                                 f"(first key: {next(iter(state), 'none')})")
        for k, v in state.items():
            for p in ("module.encoder_q.", "encoder_q."):
                if k.startswith(p):
                    out[k[len(p):]] = v
    else:
        prefixes = ("module.backbone.", "backbone.", "module.")
        for k, v in state.items():
            for p in prefixes:
                if k.startswith(p):
                    k = k[len(p):]
                    break
            out[k] = v
    return {k: v for k, v in out.items() if not k.startswith(("fc.", "head."))}


def _load_ssl(kind: str, spec: str, num_classes: int | None, pretrained: bool, seed: int) -> LoadedModel:
    import timm

    n = num_classes or 1000
    with seeded(seed):
        model = timm.create_model("resnet50", pretrained=False, num_classes=n)
    where: dict[str, Any] = {"source": kind, "id": spec, "revision": None}
    if pretrained:
        path, where = resolve_file(spec, f"{kind}:{spec}")
        state = remap_ssl_resnet50(_unwrap(read_checkpoint(path), kind), kind)
        load_exact(model, state, f"{kind}:{spec}", allow_missing=("fc.",))
    init_head_(model.get_classifier(), seed)
    info = {"source": where["source"], "id": where["id"], "revision": where.get("revision"), "library": "timm",
            "architecture": "resnet50", "pretrained": bool(pretrained), "pretraining": kind,
            "license": LICENSES[kind], "num_classes": n, "head_replaced": True,
            "head_init": f"new fc: {HEAD_INIT}", "head_seed": seed}
    return LoadedModel(model, timm_data_config(model) | {"crop_pct": 0.875, "interpolation": "bilinear"}, info)


@register_loader("moco")
def load_moco(spec: str, num_classes: int | None = None, pretrained: bool = True, seed: int = 0) -> LoadedModel:
    return _load_ssl("moco", spec, num_classes, pretrained, seed)


@register_loader("dino")
def load_dino(spec: str, num_classes: int | None = None, pretrained: bool = True, seed: int = 0) -> LoadedModel:
    return _load_ssl("dino", spec, num_classes, pretrained, seed)
