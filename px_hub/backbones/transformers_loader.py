"""transformers image classifiers: ``AutoModelForImageClassification`` from a Hub repo or a local folder.

* ``transformers:OWNER/NAME[@REV]`` — a Hub repo (cache first; with ``HF_HUB_OFFLINE=1`` only a cached one);
* ``transformers:FOLDER`` / ``FOLDER`` — a ``save_pretrained`` folder (``config.json`` with ``model_type`` or
  ``architectures``);
* ``OWNER/NAME`` without a prefix — routed here when its cached (or, online, downloaded) ``config.json`` is a
  transformers config (see :func:`px_hub.backbones.registry.load_backbone`).

``num_classes`` different from the checkpoint's replaces the classifier Linear (trunc-normal std 0.02 / zeros,
seeded) and sets ``config.num_labels``, so the ticket's ``config.json`` builds the same head in stock transformers.
Preprocessing comes from the repo's ``preprocessor_config.json`` (mean/std/size/crop, in timm's keys); without one,
ImageNet mean/std at the config's ``image_size`` (224 px if it has none). Weights are safetensors, or ``.bin`` files
that transformers reads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import UnknownNameError, UnsupportedModelError, WeightsUnavailableError
from ..hub.layouts import PROCESSOR_FILE, data_config_from_processor, is_transformers_config
from ..masking.targets import classifier_module
from ._common import HEAD_INIT, OFFLINE_FIX, cached_hub_file, hub_offline, init_head_, seeded
from .registry import LoadedModel, register_loader

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?$")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def is_transformers_folder(path: Path) -> bool:
    cfg = path / "config.json"
    if not (path.is_dir() and cfg.is_file()):
        return False
    try:
        return is_transformers_config(json.loads(cfg.read_text()))
    except (ValueError, AttributeError):
        return False


def _hub_json(repo_id: str, filename: str, revision: str | None) -> dict | None:
    """A JSON file of a Hub repo: from the cache, else (online) downloaded; None when the repo lacks it."""
    hit = cached_hub_file(repo_id, [filename], revision)
    path = hit[0] if hit else None
    if path is None and not hub_offline():
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            path = hf_hub_download(repo_id, filename, revision=revision)
        except EntryNotFoundError:
            return None
    if path is None:
        return None
    data = json.loads(Path(path).read_text())
    return data if isinstance(data, dict) else None


def hub_config(repo_id: str, revision: str | None = None) -> dict | None:
    """``config.json`` of a Hub repo (cache first; online: download); None when it cannot be had."""
    try:
        return _hub_json(repo_id, "config.json", revision)
    except Exception:  # noqa: BLE001 - unreachable Hub, missing repo: the caller gives the one-line answer
        return None


def _replace_head(model: nn.Module, num_classes: int | None, seed: int) -> dict[str, Any]:
    current = model.config.num_labels
    if num_classes is None or num_classes == current:
        return {"head_replaced": False, "num_classes": current}
    found = classifier_module(model)
    if found is None or not isinstance(found[1], nn.Linear):
        raise UnsupportedModelError(f"{type(model).__name__} has no Linear classifier px-hub can replace; load it "
                                    "without num_classes")
    name, old = found
    head = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    init_head_(head, seed)
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], head)
    model.config.num_labels = num_classes  # also resets id2label/label2id
    if hasattr(model, "num_labels"):
        model.num_labels = num_classes
    return {"head_replaced": True, "num_classes": num_classes, "head_init": f"new {name}: {HEAD_INIT}",
            "head_seed": seed}


@register_loader("transformers")
def load_transformers(spec: str, num_classes: int | None = None, pretrained: bool = True, seed: int = 0
                      ) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForImageClassification
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    path = Path(os.path.expanduser(spec))
    if path.exists():
        if not is_transformers_folder(path):
            raise WeightsUnavailableError(f"{path} is not a transformers save_pretrained folder (needs config.json "
                                          "with model_type); give a folder written by model.save_pretrained")
        ref, revision = str(path), None
        where: dict[str, Any] = {"source": "folder", "id": str(path.resolve()), "revision": None}
        proc = json.loads((path / PROCESSOR_FILE).read_text()) if (path / PROCESSOR_FILE).is_file() else None
    else:
        if not REPO_ID.match(spec):
            raise UnknownNameError(f"transformers:{spec} is neither an existing folder nor a Hub repo id; use "
                                   "transformers:OWNER/NAME[@REVISION] or transformers:FOLDER")
        ref, _, rev = spec.partition("@")
        revision = rev or None
        if hub_offline():
            if cached_hub_file(ref, ["config.json"], revision) is None:
                raise WeightsUnavailableError(f"transformers:{spec} is not in the local Hub cache and "
                                              f"HF_HUB_OFFLINE=1; run once online or give a save_pretrained folder")
            if pretrained and cached_hub_file(ref, list(WEIGHT_FILES), revision) is None:
                raise WeightsUnavailableError(f"no cached weights for transformers:{spec} and HF_HUB_OFFLINE=1; "
                                              f"{OFFLINE_FIX}")
        hit = cached_hub_file(ref, ["config.json"], revision)
        where = {"source": "hf-hub", "id": ref, "revision": (hit[1] if hit else None) or revision}
        try:
            proc = _hub_json(ref, PROCESSOR_FILE, revision)
        except Exception:  # noqa: BLE001 - no processor file: ImageNet defaults
            proc = None
    try:
        config = AutoConfig.from_pretrained(ref, revision=revision)
    except (OSError, ValueError) as e:
        raise WeightsUnavailableError(f"cannot read the config of transformers:{spec} ({type(e).__name__}: "
                                      f"{str(e).splitlines()[0][:120]}); check the repo id / folder") from None
    if config.model_type not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        raise UnsupportedModelError(f"transformers:{spec} is a {config.model_type!r} model, which has no "
                                    "AutoModelForImageClassification class; give an image-classification model")
    try:
        with seeded(seed):
            model = (AutoModelForImageClassification.from_pretrained(ref, revision=revision) if pretrained
                     else AutoModelForImageClassification.from_config(config))
    except OSError as e:
        raise WeightsUnavailableError(f"cannot load the weights of transformers:{spec} ({type(e).__name__}); "
                                      f"{OFFLINE_FIX}") from None
    head = _replace_head(model, num_classes, seed)
    archs = config.architectures or []
    info = {"source": where["source"], "id": where["id"], "revision": where.get("revision"),
            "library": "transformers", "architecture": archs[0] if archs else type(model).__name__,
            "model_type": config.model_type, "pretrained": bool(pretrained), "license": None, **head}
    if not pretrained:
        info["init_seed"] = seed
    return LoadedModel(model, data_config_from_processor(proc, config), info)

