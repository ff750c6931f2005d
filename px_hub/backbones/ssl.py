"""Self-supervised checkpoints (official files) onto timm architectures: ResNet-50 and ViTs.

* ``moco:PATH_OR_OWNER/REPO/FILE`` — MoCo v2/v3 ResNet-50: ``{"state_dict": {...}}`` with keys
  ``module.encoder_q.<torchvision name>`` (v2) or ``module.base_encoder.<name>`` (v3); the key/momentum encoder,
  queue, predictor and MLP head (``fc.*``) are dropped.
* ``dino:PATH_OR_OWNER/REPO/FILE`` — DINO ResNet-50 (``dino_resnet50_pretrain.pth``): plain torchvision keys,
  possibly under ``module.`` / ``backbone.`` prefixes; full training checkpoints (``{"teacher": ...}``) use the
  teacher, as DINO's evaluation does.
* ``dino:ARCH=PATH_OR_OWNER/REPO/FILE`` / ``moco:ARCH=...`` — the same for a timm ViT ``ARCH``: DINO ViT-S/16
  (``dino_deitsmall16_pretrain.pth`` → ``vit_small_patch16_224``), ViT-B/16 (``vit_base_patch16_224``), DINOv2
  (``dinov2_vits14_pretrain.pth`` → ``vit_small_patch14_dinov2``; its ``mask_token`` is dropped), MoCo v3
  (``vit-s-300ep.pth.tar`` → ``vit_small_patch16_224``, built with MoCo v3's 12 heads; ``vit_base_patch16_224``).
  The official ViT keys (``cls_token``, ``pos_embed``, ``patch_embed.proj.weight``, ``blocks.N.attn.qkv.weight``,
  ``blocks.N.ls1.gamma``, ``norm.weight``, ...) are timm's own names, so after prefix stripping every tensor must
  match by name and shape (else an error names the first offenders); ``head.*`` (projection heads) is dropped.

The classifier is new (``num_classes``, default 1000): trunc-normal std 0.02 / zeros, seeded. Preprocessing is
the papers' evaluation: ImageNet mean/std, resize to 1/0.875 then centre crop (bilinear for ResNet-50, bicubic
for ViTs). Files are read with ``torch.load(weights_only=True)`` or safetensors.
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import IntegrityError, UnknownNameError, UnsupportedModelError
from ._common import HEAD_INIT, init_head_, load_exact, read_checkpoint, resolve_file, seeded, timm_data_config
from .registry import LoadedModel, register_loader

LICENSES = {"moco": "cc-by-nc-4.0 (MoCo, Meta)", "dino": "apache-2.0 (DINO, Meta)",
            "dinov2": "apache-2.0 (DINOv2, Meta)"}
PREFIXES = {"moco": ("module.encoder_q.", "encoder_q.", "module.base_encoder.", "base_encoder."),
            "dino": ("module.backbone.", "backbone.", "module.")}
# architecture arguments of the official checkpoints that differ from timm's defaults for the same name
ARCH_ARGS = {("moco", "vit_small_patch16_224"): {"num_heads": 12}}  # MoCo v3 ViT-S: 12 heads (timm/DINO: 6)
DROPPED_VIT_KEYS = ("mask_token",)  # DINOv2's masked-image-modelling token: unused at inference


def _unwrap(ckpt: dict[str, Any], kind: str) -> dict[str, torch.Tensor]:
    for key in (("teacher", "state_dict", "model") if kind == "dino" else ("state_dict", "model")):
        if key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
            break
    return {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}


def _strip(state: dict[str, torch.Tensor], kind: str, head: str) -> dict[str, torch.Tensor]:
    """Strip the wrapper prefixes of ``kind`` and drop the projection/classifier heads (``head``/``fc``/``head.``)."""
    out: dict[str, torch.Tensor] = {}
    if kind == "moco":
        if not any(k.startswith(PREFIXES["moco"]) for k in state):
            raise IntegrityError("moco: no 'module.encoder_q.' (v1/v2) or 'module.base_encoder.' (v3) keys in the "
                                 f"checkpoint; is this a MoCo file? (first key: {next(iter(state), 'none')})")
        for k, v in state.items():
            for p in PREFIXES["moco"]:
                if k.startswith(p):
                    out[k[len(p):]] = v
                    break
    else:
        for k, v in state.items():
            for p in PREFIXES["dino"]:
                if k.startswith(p):
                    k = k[len(p):]
                    break
            out[k] = v
    return {k: v for k, v in out.items() if not k.startswith((f"{head}.", "head."))}


def remap_ssl_resnet50(state: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """Strip the wrapper prefixes and drop the projection/classifier heads (``fc``/``head``)."""
    return _strip(state, kind, "fc")


def remap_ssl_vit(state: dict[str, torch.Tensor], kind: str, model: torch.nn.Module | None = None
                  ) -> dict[str, torch.Tensor]:
    """Official DINO / DINOv2 / MoCo v3 ViT keys → timm ``VisionTransformer`` names (prefixes stripped, heads and
    DINOv2's ``mask_token`` dropped unless ``model`` has them)."""
    own = set(model.state_dict()) if model is not None else set()
    out = _strip(state, kind, "head")
    return {k: v for k, v in out.items() if k not in DROPPED_VIT_KEYS or k in own}


def _parse(spec: str) -> tuple[str, str]:
    """``ARCH=FILE`` → (ARCH, FILE) when ARCH is a timm model; else (``resnet50``, spec)."""
    import timm

    arch, sep, path = spec.partition("=")
    if sep and timm.is_model(arch):
        return arch, path
    if sep and "/" not in arch and not arch.endswith((".pth", ".pt", ".tar", ".safetensors")):
        raise UnknownNameError(f"unknown timm architecture {arch!r} in {spec!r}; e.g. vit_small_patch16_224=FILE")
    return "resnet50", spec


def _is_vit(model: torch.nn.Module) -> bool:
    from timm.models.vision_transformer import VisionTransformer

    return isinstance(model, VisionTransformer)


def _load_ssl(kind: str, spec: str, num_classes: int | None, pretrained: bool, seed: int) -> LoadedModel:
    import timm
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    arch, file_spec = _parse(spec)
    n = num_classes or 1000
    arch_args = ARCH_ARGS.get((kind, arch), {})
    with seeded(seed):
        model = timm.create_model(arch, pretrained=False, num_classes=n, **arch_args)
    vit = _is_vit(model)
    if arch != "resnet50" and not vit:
        raise UnsupportedModelError(f"{kind}: {arch!r} is neither resnet50 nor a timm VisionTransformer; "
                                    "give one of those architectures")
    head = model.pretrained_cfg.get("classifier", "head" if vit else "fc")
    where: dict[str, Any] = {"source": kind, "id": spec, "revision": None}
    if pretrained:
        path, where = resolve_file(file_spec, f"{kind}:{spec}")
        raw = _unwrap(read_checkpoint(path), kind)
        state = remap_ssl_vit(raw, kind, model) if vit else remap_ssl_resnet50(raw, kind)
        load_exact(model, state, f"{kind}:{spec}", allow_missing=(f"{head}.",))
    init_head_(model.get_classifier(), seed)
    pretraining = "dinov2" if kind == "dino" and "dinov2" in arch else kind
    info = {"source": where["source"], "id": where["id"], "revision": where.get("revision"), "library": "timm",
            "architecture": arch, "pretrained": bool(pretrained), "pretraining": pretraining,
            "license": LICENSES[pretraining], "num_classes": n, "head_replaced": True,
            "head_init": f"new {head}: {HEAD_INIT}", "head_seed": seed}
    if arch_args:
        info["model_args"] = dict(arch_args)
    data_config = timm_data_config(model) | {"crop_pct": 0.875, "interpolation": "bicubic" if vit else "bilinear",
                                             "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD}
    return LoadedModel(model, data_config, info)


@register_loader("moco")
def load_moco(spec: str, num_classes: int | None = None, pretrained: bool = True, seed: int = 0) -> LoadedModel:
    return _load_ssl("moco", spec, num_classes, pretrained, seed)


@register_loader("dino")
def load_dino(spec: str, num_classes: int | None = None, pretrained: bool = True, seed: int = 0) -> LoadedModel:
    return _load_ssl("dino", spec, num_classes, pretrained, seed)
