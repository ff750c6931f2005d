"""The two ticket layouts: timm's (the default) and transformers' (for a ``PreTrainedModel``).

Both layouts share px-hub's files (``mask.safetensors``, ``model.compact.safetensors``, ``px_config.json``, the
card) and the definition of ``weights_sha256``: it covers the model's own ``state_dict`` names, which are also the
names of the mask and of the compact copy. They differ in ``config.json`` and in the key names of
``model.safetensors``:

* timm: ``config.json`` is timm's (``architecture``, ``pretrained_cfg``); the weights file uses state-dict names.
* transformers: ``config.json`` is the model's ``PretrainedConfig`` and ``preprocessor_config.json`` the image
  processor of its model type (mean/std/size from px-hub's ``data_config``); ``model.safetensors`` holds the keys
  exactly as ``model.save_pretrained`` writes them. transformers 5 renames some modules in memory (ViT's
  ``encoder.layer.N.attention.attention.query`` is ``layers.N.attention.q_proj``) and maps the names back when it
  saves, so the ticket records that one-to-one map in the mask's metadata (``file_keys``: state-dict name → file
  name, only the names that differ). Stock ``AutoModelForImageClassification.from_pretrained(ticket)`` then loads
  the file with the zeros in place; px-hub renames the file's tensors back before hashing them. A model whose
  saved format merges or splits tensors (not a one-to-one renaming) is refused.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import IntegrityError, UnsupportedModelError

TIMM, TRANSFORMERS = "timm", "transformers"
PROCESSOR_FILE = "preprocessor_config.json"
FILE_KEYS_META = "file_keys"  # mask.safetensors metadata: JSON {state-dict name: name in model.safetensors}
LAYOUT_META = "layout"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


# -- which layout -----------------------------------------------------------------------------------------------

def is_transformers_model(model: nn.Module) -> bool:
    tf = sys.modules.get("transformers")  # a PreTrainedModel exists only if transformers was imported
    return tf is not None and isinstance(model, tf.PreTrainedModel)


def is_transformers_config(config: dict) -> bool:
    """A transformers ``config.json`` (``model_type``/``architectures``), as opposed to timm's (``architecture``)."""
    return bool(config.get("model_type") or config.get("architectures")) and not config.get("architecture")


def layout_of_model(model: nn.Module) -> str:
    return TRANSFORMERS if is_transformers_model(model) else TIMM


def library_of_config(config: dict) -> str:
    return TRANSFORMERS if is_transformers_config(config) else (config.get("library") or TIMM)


def architecture_of_config(config: dict) -> str | None:
    if is_transformers_config(config):
        archs = config.get("architectures") or []
        return archs[0] if archs else config.get("model_type")
    return config.get("architecture")


def num_classes_of_config(config: dict) -> int | None:
    if is_transformers_config(config):
        return len(config.get("id2label") or {}) or config.get("num_labels")
    return config.get("num_classes")


def num_classes_of(model: nn.Module) -> int | None:
    n = getattr(model, "num_classes", None)
    if n is None and is_transformers_model(model):
        n = model.config.num_labels
    return n


# -- weights file key names -------------------------------------------------------------------------------------

def weights_metadata(model: nn.Module) -> dict[str, str]:
    """Mask metadata that records the layout (and, for transformers, the state-dict → file key renaming)."""
    if not is_transformers_model(model):
        return {}
    renamed = {k: v for k, v in file_key_map(model).items() if k != v}
    return {LAYOUT_META: TRANSFORMERS, FILE_KEYS_META: json.dumps(renamed, sort_keys=True)}


def file_key_map(model: nn.Module) -> dict[str, str]:
    """state-dict name → the name ``model.save_pretrained`` writes, found by running transformers' own reverse
    conversion on the model's tensors and matching them by identity."""
    from transformers.core_model_loading import revert_weight_conversion

    sd = model.state_dict()
    by_id = {id(t): k for k, t in sd.items()}
    out = revert_weight_conversion(model, dict(sd))
    mapping = {by_id.get(id(t)): k for k, t in out.items()}
    if len(out) != len(sd) or None in mapping or len(mapping) != len(sd):
        raise UnsupportedModelError(
            f"{type(model).__name__} saves its weights with a conversion that merges or splits tensors; px-hub can "
            "write tickets only for models whose saved names map one-to-one onto their state dict"
        )
    return mapping


def _file_keys(meta: dict[str, str]) -> dict[str, str]:
    raw = meta.get(FILE_KEYS_META)
    if not raw:
        return {}
    try:
        keys = json.loads(raw)
    except ValueError:
        raise IntegrityError(f"the mask's '{FILE_KEYS_META}' metadata is corrupt; download the ticket again") from None
    if not isinstance(keys, dict):
        raise IntegrityError(f"the mask's '{FILE_KEYS_META}' metadata is corrupt; download the ticket again")
    return keys


def to_file_names(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> dict[str, torch.Tensor]:
    """State-dict names → ``model.safetensors`` names (identity for the timm layout)."""
    keys = _file_keys(meta)
    return {keys.get(k, k): v for k, v in tensors.items()} if keys else dict(tensors)


def from_file_names(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> dict[str, torch.Tensor]:
    """``model.safetensors`` names → state-dict names (inverse of :func:`to_file_names`)."""
    keys = _file_keys(meta)
    if not keys:
        return tensors
    back = {v: k for k, v in keys.items()}
    return {back.get(k, k): v for k, v in tensors.items()}


# -- config files -----------------------------------------------------------------------------------------------

def write_transformers_config(model: nn.Module, folder: Path, data_config: dict | None) -> None:
    """``config.json`` as ``model.save_pretrained`` writes it, and ``preprocessor_config.json`` (the image processor
    of the model type, set from ``data_config``) when transformers has one for this model type."""
    import copy

    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]  # as save_pretrained records it
    config.to_json_file(str(folder / "config.json"))
    proc = image_processor_for(model.config.model_type, data_config or {})
    if proc is not None:
        proc.save_pretrained(str(folder))


def image_processor_for(model_type: str, data_config: dict) -> Any | None:
    """The model type's image processor with px-hub's preprocessing (timm keys) in its own terms."""
    import transformers
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type)
    if isinstance(names, dict):
        names = names.get("torchvision") or names.get("pil")
    elif isinstance(names, (tuple, list)):
        names = next((n for n in names if n), None)
    cls = getattr(transformers, names, None) if names else None
    if cls is None:
        return None
    proc = cls()
    if not data_config:
        return proc
    _, h, w = (tuple(data_config.get("input_size") or (3, 224, 224)) + (224, 224))[:3]
    crop_pct = float(data_config.get("crop_pct") or 1.0)
    kw: dict[str, Any] = {}
    if data_config.get("mean") is not None:
        kw["image_mean"] = [float(x) for x in data_config["mean"]]
    if data_config.get("std") is not None:
        kw["image_std"] = [float(x) for x in data_config["std"]]
    resample = {v: k for k, v in _RESAMPLE.items()}.get(str(data_config.get("interpolation")))
    if resample is not None:
        kw["resample"] = resample
    if getattr(proc, "crop_size", None):
        kw.update(size={"shortest_edge": int(round(min(h, w) / crop_pct))}, crop_size={"height": h, "width": w},
                  do_center_crop=True)
    elif hasattr(proc, "crop_pct"):
        kw.update(size={"shortest_edge": h}, crop_pct=crop_pct)
    else:
        kw["size"] = {"height": h, "width": w}
    return cls(**kw)


def data_config_from_processor(proc: dict | None, config: Any = None) -> dict[str, Any]:
    """timm-style ``data_config`` (input_size, interpolation, mean, std, crop_pct, crop_mode) from an image
    processor's ``preprocessor_config.json``. Without one: the model type's default image processor at the
    config's ``image_size`` (ImageNet mean/std, bicubic, crop 0.875 when transformers has none for the type)."""
    image_size = getattr(config, "image_size", None) if config is not None else None
    if isinstance(image_size, (list, tuple)):
        image_size = image_size[0]
    if not proc and config is not None:
        default_proc = image_processor_for(config.model_type, {})
        if default_proc is not None:
            dc = data_config_from_processor(json.loads(default_proc.to_json_string()))
            if image_size:
                dc["input_size"] = (3, int(image_size), int(image_size))
            return dc
    proc = proc or {}
    default = int(image_size or 224)
    size = proc.get("size")
    crop = proc.get("crop_size") if proc.get("do_center_crop", True) else None
    if isinstance(size, int):
        size = {"shortest_edge": size}
    size = size or {}
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    if crop:
        h, w = int(crop["height"]), int(crop["width"])
        short = size.get("shortest_edge")
        crop_pct = min(h, w) / float(short) if short else 1.0
    elif "height" in size:
        h, w, crop_pct = int(size["height"]), int(size["width"]), 1.0
    elif "shortest_edge" in size:
        h = w = int(size["shortest_edge"])
        crop_pct = float(proc.get("crop_pct") or 1.0) if h < 384 else 1.0  # ConvNeXt's rule
    else:
        h = w = default
        crop_pct = 1.0 if proc else 0.875
    resample = proc.get("resample", 2 if proc else 3)
    return {"input_size": (3, h, w), "interpolation": _RESAMPLE.get(int(resample), "bilinear"),
            "mean": tuple(float(x) for x in proc.get("image_mean") or IMAGENET_MEAN),
            "std": tuple(float(x) for x in proc.get("image_std") or IMAGENET_STD),
            "crop_pct": round(crop_pct, 6), "crop_mode": "center"}


def read_processor(folder: Path) -> dict | None:
    path = Path(folder) / PROCESSOR_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        raise IntegrityError(f"{path} is not valid JSON; download the ticket again") from None
    return data if isinstance(data, dict) else None


def build_transformers_model(folder: Path) -> nn.Module:
    """An untrained model of the architecture in a transformers ``config.json`` (image-classification head)."""
    from transformers import AutoConfig, AutoModelForImageClassification

    try:
        config = AutoConfig.from_pretrained(str(folder))
        return AutoModelForImageClassification.from_config(config)
    except (ValueError, KeyError, OSError) as e:
        raise IntegrityError(f"cannot build a transformers image classifier from {Path(folder) / 'config.json'} "
                             f"({str(e).splitlines()[0][:160]}); upgrade transformers (`pip install -U "
                             "transformers`) or download the ticket again") from None


# -- open_clip image towers (built by px-hub itself: no stock loader exists for the visual tower alone) ---------------

class ClipImageClassifier(nn.Module):
    """``head(visual(x))``; exposes timm's ``num_classes`` / ``get_classifier`` / ``reset_classifier``."""

    def __init__(self, visual: nn.Module, embed_dim: int, num_classes: int):
        super().__init__()
        self.visual = visual
        self.num_features = embed_dim
        self.num_classes = num_classes
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.visual(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes)


def clip_embed_dim(clip: nn.Module) -> int:
    """The output width of an open_clip model's image tower (the input of the classifier head)."""
    return int(getattr(clip.visual, "output_dim", 0) or clip.text_projection.shape[1])


def build_open_clip_model(config: dict) -> nn.Module:
    """An untrained ``ClipImageClassifier`` for a ticket whose ``config.json`` names ``px_hub_loader:
    open_clip:ARCH`` (the architecture only; the ticket's weights are loaded afterwards)."""
    import open_clip

    loader = str(config.get("px_hub_loader") or "")
    arch = loader.removeprefix("open_clip:")
    if not loader.startswith("open_clip:") or arch not in open_clip.list_models():
        raise IntegrityError(f"config.json names an unknown px-hub loader {loader!r}; upgrade px-hub and open_clip")
    clip = open_clip.create_model(arch, pretrained=None)
    return ClipImageClassifier(clip.visual, clip_embed_dim(clip), int(config.get("num_classes") or 1000))
