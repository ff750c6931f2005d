"""Local weights: a px-hub ticket folder, or a safetensors/torch weights file in timm's layout.

* ``local:TICKET_DIR`` / ``TICKET_DIR`` — a folder with ``config.json`` + ``model.safetensors`` (or the compact
  copy) + ``mask.safetensors``: loaded and verified with ``px_hub.Ticket.from_pretrained`` (weights hash, exact
  zeros, sealed record); the mask is returned as ``LoadedModel.mask``.
* ``local:ARCH=PATH`` — weights for timm architecture ``ARCH`` (``.safetensors``, or a torch file read with
  ``weights_only=True``); the checkpoint's own classifier size is kept unless ``num_classes`` differs.
* ``local:PATH.safetensors`` / ``PATH.safetensors`` with a timm ``config.json`` next to it (``architecture`` key).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InvalidArgumentError, UnknownNameError, WeightsUnavailableError
from ._common import load_exact, read_checkpoint, replace_timm_head, seeded, timm_data_config
from .registry import LoadedModel, register_loader

TICKET_FILES = ("config.json", "mask.safetensors")


def is_ticket_folder(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in TICKET_FILES) and (
        (path / "model.safetensors").is_file() or (path / "model.compact.safetensors").is_file())


def _from_ticket(folder: Path, num_classes: int | None, seed: int) -> LoadedModel:
    from ..hub import Ticket, layouts  # backbones -> hub only: px_hub.hub never imports px_hub.backbones

    ticket = Ticket.from_pretrained(folder)
    model, mask, px_config = ticket.model, ticket.mask, ticket.px_config
    n = layouts.num_classes_of(model)
    if num_classes is not None and num_classes != n:
        raise InvalidArgumentError(f"ticket {folder} has a {n}-class head and its mask covers it; "
                                   "load it without num_classes (fine-tuning replaces heads itself)")
    cfg = json.loads((folder / "config.json").read_text())
    license_ = cfg.get("license") or ((px_config.get("model") or {}).get("license"))
    info = {"source": "ticket", "id": str(folder.resolve()), "revision": None,
            "library": layouts.library_of_config(cfg), "architecture": layouts.architecture_of_config(cfg),
            "pretrained": True, "license": license_, "num_classes": n, "head_replaced": False,
            "mask_sha256": mask.sha256(), "mask_density": mask.density(),
            "ticket": {k: px_config.get(k) for k in ("method", "sparsity", "rounds", "seed") if k in px_config}}
    return LoadedModel(model, ticket.data_config, info, mask=mask)


def _from_weights(arch: str, path: Path, num_classes: int | None, seed: int) -> LoadedModel:
    import timm

    if not timm.is_model(arch):
        raise UnknownNameError(f"unknown timm architecture {arch!r} for {path}; give local:ARCH=PATH with a timm "
                               "model name (timm.list_models)")
    state = read_checkpoint(str(path))
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    with seeded(seed):
        model = timm.create_model(arch, pretrained=False)
    head_key = f"{model.pretrained_cfg.get('classifier', 'fc')}.weight"
    if head_key in state and state[head_key].ndim == 2 and state[head_key].shape[0] != model.num_classes:
        model.reset_classifier(int(state[head_key].shape[0]))  # the checkpoint's own head size
    load_exact(model, state, str(path))
    head = replace_timm_head(model, num_classes, seed)
    info = {"source": "file", "id": str(path.resolve()), "revision": None, "library": "timm", "architecture": arch,
            "pretrained": True, "license": None, **head}
    return LoadedModel(model, timm_data_config(model), info)


@register_loader("local")
def load_local(spec: str, num_classes: int | None = None, pretrained: bool = True, seed: int = 0) -> LoadedModel:
    arch, sep, path_s = spec.partition("=")
    if not sep:
        arch, path_s = None, spec
    path = Path(os.path.expanduser(path_s))
    if not path.exists():
        raise WeightsUnavailableError(f"local weights {path} not found; give local:ARCH=PATH.safetensors or a "
                                      "ticket folder")
    if not pretrained:
        raise InvalidArgumentError("a local checkpoint is its weights; drop --no-pretrained or give a timm name")
    if path.is_dir():
        if arch is None and is_ticket_folder(path):
            return _from_ticket(path, num_classes, seed)
        raise WeightsUnavailableError(f"{path} is not a px-hub ticket (needs config.json, model.safetensors, "
                                      "mask.safetensors); give local:ARCH=FILE for a weights file, or "
                                      f"transformers:{path} for a transformers save_pretrained folder")
    if arch is None:
        cfg_file = path.parent / "config.json"
        if not cfg_file.is_file():
            raise InvalidArgumentError(f"{path}: no architecture; use local:ARCH={path} or put a timm config.json "
                                       "(with 'architecture') next to it")
        arch = json.loads(cfg_file.read_text()).get("architecture")
        if not arch:
            raise InvalidArgumentError(f"{cfg_file} has no 'architecture'; use local:ARCH={path}")
    return _from_weights(arch, path, num_classes, seed)
