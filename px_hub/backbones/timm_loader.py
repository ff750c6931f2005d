"""timm models: ``resnet18``, ``resnet50.a1_in1k``, ``timm/resnet50.a1_in1k``, ``hf-hub:timm/resnet50.a1_in1k``,
``timm:NAME``, and px-hub's registered ``cifar_resnet20`` etc.

Pretrained weights come from the Hub cache (or a download when online). With ``HF_HUB_OFFLINE=1`` and nothing
cached, the loader fails before building the model (well under a second) with a :class:`WeightsUnavailableError`.
"""
from __future__ import annotations

import difflib
import os
from typing import Any

from ..errors import UnknownNameError, WeightsUnavailableError
from ._common import OFFLINE_FIX, cached_hub_file, hub_offline, replace_timm_head, seeded, timm_data_config
from .registry import LoadedModel, register_loader

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _suggest(arch: str) -> str:
    import timm

    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    return f"did you mean {', '.join(close)}?" if close else "see timm.list_models('PATTERN*')"


def _torch_hub_cached(url: str) -> str | None:
    import torch.hub

    p = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url.split("?")[0]))
    return p if os.path.isfile(p) else None


def _check_weights(name: str, hub_repo: str | None) -> dict[str, Any]:
    """Where the pretrained weights of ``name`` will come from; raise early when they cannot be had."""
    from timm.models import get_pretrained_cfg

    if hub_repo is not None:
        hit = cached_hub_file(hub_repo, list(WEIGHT_FILES))
        if hit is None and hub_offline():
            raise WeightsUnavailableError(f"no cached weights for hf-hub:{hub_repo} "
                                          f"and HF_HUB_OFFLINE=1; {OFFLINE_FIX}")
        return {"source": "hf-hub", "id": hub_repo, "revision": hit[1] if hit else None}
    cfg = get_pretrained_cfg(name, allow_unregistered=True)  # no tag → the architecture's default tag
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise WeightsUnavailableError(f"timm model {name!r} has no pretrained weights; pass --no-pretrained "
                                      "(pretrained=False) or a local weights file (local:ARCH=PATH)")
    if cfg.hf_hub_id:
        hit = cached_hub_file(cfg.hf_hub_id, list(WEIGHT_FILES))
        if hit is None and hub_offline():
            alt = " (offline weights: builtin:efficientnet_lite0)" if name.startswith("efficientnet_lite0") else ""
            raise WeightsUnavailableError(f"no cached weights for timm model {name!r} ({cfg.hf_hub_id}) and "
                                          f"HF_HUB_OFFLINE=1; {OFFLINE_FIX}{alt}")
        return {"source": "hf-hub", "id": cfg.hf_hub_id, "revision": hit[1] if hit else None,
                "license": cfg.license}
    if cfg.url and not _torch_hub_cached(cfg.url) and hub_offline():
        raise WeightsUnavailableError(f"no cached weights for timm model {name!r} ({cfg.url}) "
                                      f"and offline; {OFFLINE_FIX}")
    return {"source": "url", "id": cfg.url or cfg.file, "revision": None, "license": cfg.license}


@register_loader("timm")
@register_loader("hf-hub")
def load_timm(name: str, num_classes: int | None = None, pretrained: bool = True, seed: int = 0) -> LoadedModel:
    import timm

    hub_repo = None
    if name.startswith("hf-hub:"):
        hub_repo = name[len("hf-hub:"):]
    elif name.startswith("timm/"):
        hub_repo = name
    if hub_repo is not None:
        if cached_hub_file(hub_repo, ["config.json"]) is None and hub_offline():
            raise WeightsUnavailableError(f"hf-hub:{hub_repo} is not in the local Hub cache and HF_HUB_OFFLINE=1; "
                                          "run once online, or use a plain timm name with --no-pretrained")
        create_name = f"hf-hub:{hub_repo}"
    else:
        arch = name.split(".", 1)[0]
        if not timm.is_model(arch):
            raise UnknownNameError(f"unknown timm model {name!r}; {_suggest(arch)}")
        create_name = name
    where: dict[str, Any] = _check_weights(name, hub_repo) if pretrained else {"source": "timm", "id": name,
                                                                               "revision": None}
    try:
        with seeded(seed):
            model = timm.create_model(create_name, pretrained=pretrained)
    except (OSError, RuntimeError, ValueError) as e:
        if pretrained and ("offline" in str(e).lower() or "connect" in str(e).lower()
                           or "LocalEntryNotFound" in type(e).__name__ or isinstance(e, OSError)):
            raise WeightsUnavailableError(f"cannot load pretrained weights of {name!r} ({type(e).__name__}); "
                                          f"{OFFLINE_FIX}") from None
        raise
    pcfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    head = replace_timm_head(model, num_classes, seed)
    info = {"source": where["source"], "id": where["id"], "revision": where.get("revision"), "library": "timm",
            "architecture": pcfg.get("architecture") or name.split(".", 1)[0], "pretrained": bool(pretrained),
            "pretrained_tag": pcfg.get("tag"), "license": where.get("license") or pcfg.get("license"), **head}
    if not pretrained:
        info["init_seed"] = seed
    return LoadedModel(model, timm_data_config(model), info)
