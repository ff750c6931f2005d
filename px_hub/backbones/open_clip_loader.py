"""CLIP image towers from open_clip as classification backbones (image tower + a new Linear head).

* ``open_clip:RN50/openai`` — architecture/pretrained tag, as ``open_clip.create_model(ARCH, pretrained=TAG)``;
* ``open_clip:hf-hub:timm/resnet50_clip.openai`` — an open_clip repo on the Hub;
* ``open_clip:RN50=PATH`` — a local state dict in the OpenAI/open_clip layout (``visual.*`` keys; text-tower keys
  are ignored; a ``state_dict`` wrapper and ``module.`` prefixes are accepted), read with safetensors or
  ``torch.load(weights_only=True)`` (TorchScript archives such as OpenAI's ``RN50.pt`` are refused: convert them).

Preprocessing is CLIP's: 224 px (the tower's image size), bicubic, resize shortest side + centre crop
(crop_pct 1.0), OpenAI mean/std. The head sits on the tower's output embedding (attention-pool output for the
ResNets): ``Linear(embed_dim, num_classes)``, trunc-normal std 0.02 / zeros, seeded.
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import UnknownNameError, WeightsUnavailableError
from ..hub.layouts import ClipImageClassifier, clip_embed_dim
from ._common import (
    HEAD_INIT,
    OFFLINE_FIX,
    cached_hub_file,
    hub_offline,
    init_head_,
    load_exact,
    read_checkpoint,
    resolve_file,
    seeded,
)
from .registry import LoadedModel, register_loader

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _parse(spec: str) -> tuple[str, str | None, str | None]:
    """→ (architecture or hf-hub:REPO, pretrained tag, local path)."""
    if spec.startswith("hf-hub:"):
        return spec, None, None
    arch, sep, path = spec.partition("=")
    if sep:
        return arch, None, path
    arch, _, tag = spec.partition("/")
    return arch, tag or None, None


def _check_cached(arch: str, tag: str | None) -> dict[str, Any]:
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    files = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_config.json"]
    if arch.startswith("hf-hub:"):
        repo = arch[len("hf-hub:"):]
        hit = cached_hub_file(repo, files[:2])
        if hit is None and hub_offline():
            raise WeightsUnavailableError(f"no cached open_clip weights for {arch} "
                                          f"and HF_HUB_OFFLINE=1; {OFFLINE_FIX}")
        return {"source": "hf-hub", "id": repo, "revision": hit[1] if hit else None}
    cfg = get_pretrained_cfg(arch, tag) if tag else {}
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise UnknownNameError(f"open_clip has no pretrained tag {tag!r} for {arch}; available: "
                               f"{', '.join(tags) or 'none'} (open_clip:{arch}/TAG)")
    repo = (cfg.get("hf_hub") or "").strip("/")
    hit = cached_hub_file(repo, files[:2]) if repo else None
    if hit is None and hub_offline():
        raise WeightsUnavailableError(f"no cached weights for open_clip:{arch}/{tag} and HF_HUB_OFFLINE=1; "
                                      f"{OFFLINE_FIX} (open_clip:{arch}=PATH)")
    return {"source": "hf-hub" if repo else "url", "id": repo or cfg.get("url"),
            "revision": hit[1] if hit else None}


def _visual_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    out = {}
    for k, v in state.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if k.startswith("visual.") and isinstance(v, torch.Tensor):
            out[k[len("visual."):]] = v
    return out


@register_loader("open_clip")
def load_open_clip(spec: str, num_classes: int | None = None, pretrained: bool = True, seed: int = 0
                   ) -> LoadedModel:
    import open_clip

    arch, tag, path = _parse(spec)
    if not arch.startswith("hf-hub:") and arch not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(arch, open_clip.list_models(), n=5, cutoff=0.5)
        raise UnknownNameError(f"unknown open_clip model {arch!r}; did you mean {', '.join(close) or 'RN50'}?")
    where: dict[str, Any] = {"source": "open_clip", "id": spec, "revision": None}
    load_tag = None
    if pretrained and path is None:
        if tag is None and not arch.startswith("hf-hub:"):
            raise UnknownNameError(f"open_clip:{arch} needs a pretrained tag or file: open_clip:{arch}/TAG "
                                   f"({', '.join(open_clip.list_pretrained_tags_by_model(arch))}) or "
                                   f"open_clip:{arch}=PATH, or pass --no-pretrained")
        where = _check_cached(arch, tag)
        load_tag = tag
    try:
        with seeded(seed):
            clip = open_clip.create_model(arch, pretrained=load_tag, weights_only=True)
    except (OSError, RuntimeError) as e:
        if pretrained:
            raise WeightsUnavailableError(
                f"cannot load open_clip:{spec} ({type(e).__name__}); {OFFLINE_FIX}") from None
        raise
    visual = clip.visual
    if pretrained and path is not None:
        local, where = resolve_file(path, f"open_clip:{spec}")
        state = _visual_state(read_checkpoint(local))
        if not state:
            raise WeightsUnavailableError(f"{local} has no 'visual.*' keys; give a CLIP checkpoint in the "
                                          "OpenAI/open_clip state-dict layout")
        load_exact(visual, state, f"open_clip:{spec}")
    embed_dim = clip_embed_dim(clip)
    n = num_classes or 1000
    model = ClipImageClassifier(visual, embed_dim, n)
    init_head_(model.head, seed)
    del clip
    pcfg = getattr(visual, "preprocess_cfg", {}) or {}
    size = visual.image_size if isinstance(visual.image_size, (tuple, list)) else (visual.image_size,) * 2
    data_config = {"input_size": (3, int(size[0]), int(size[1])),
                   "interpolation": pcfg.get("interpolation", "bicubic"),
                   "mean": tuple(pcfg.get("mean", OPENAI_MEAN)), "std": tuple(pcfg.get("std", OPENAI_STD)),
                   "crop_pct": 1.0, "crop_mode": "center"}
    info = {"source": where["source"], "id": where["id"], "revision": where.get("revision"), "library": "open_clip",
            "architecture": arch, "pretrained_tag": tag, "pretrained": bool(pretrained),
            "license": "mit (OpenAI CLIP)" if tag == "openai" else None, "num_classes": n, "head_replaced": True,
            "head_init": f"new Linear({embed_dim}, {n}) on the image embedding: {HEAD_INIT}", "head_seed": seed}
    return LoadedModel(model, data_config, info)
