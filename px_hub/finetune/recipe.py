"""Declarative fine-tuning recipes: a tree of dataclasses (open_lth style) loaded from YAML, validated, overridable
from the command line (``train.epochs=2``), hashed, and saved next to the results.

    recipe = load_recipe("cifar10_resnet20", overrides=["train.epochs=2", "optim.lr=0.05"])
    recipe.hash()        # 12 hex digits of the canonical JSON; the default run folder is runs/<name>-<hash>
    recipe.save(path)    # the resolved recipe, with its hash, as YAML

The shipped recipes (``recipes/*.yaml``) are the rows of the paper's Table 3 plus small offline ones.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import InvalidArgumentError, UnknownNameError

TASKS = ("classification", "segmentation")
AUGMENT_POLICIES = ("none", "cifar", "tinyimagenet", "imagenet", "voc")
OPTIMIZERS = ("sgd", "adamw")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")


@dataclass
class DataHP:
    """What to train and evaluate on. ``dataset`` is a :func:`px_hub.data.load_image_dataset` spec for
    classification (``cifar10``, ``animal-mnist``, ``imagefolder:/path``, a Hub dataset id), and for segmentation
    a local VOC folder (``voc:/path/VOCdevkit/VOC2012``) or a Hub dataset id with image/mask columns."""

    dataset: str
    train_split: str = "train"
    val_split: str = "test"
    train_subset: int | None = None  # first N examples of a seeded permutation (studies, smoke runs)
    val_subset: int | None = None
    image_column: str | None = None
    label_column: str | None = None
    num_workers: int = 0


@dataclass
class ModelHP:
    """The network: a :func:`px_hub.backbones.load_backbone` name (``cifar_resnet20``, ``timm/resnet50.a1_in1k``,
    ...) or, for segmentation, the DeepLabV3+ backbone. A ticket (``--ticket``) or mask (``--mask``) given at run
    time takes precedence over ``name``."""

    name: str
    num_classes: int | None = None
    pretrained: bool = False
    output_stride: int = 16  # segmentation only


@dataclass
class PruneHP:
    """Optional pruning before training (used when the run starts from a dense backbone without a mask)."""

    method: str | None = None
    sparsity: float = 0.982
    rounds: int | None = None
    per_class: int = 10  # pruning split: k examples per class (paper: 10)
    batch_size: int = 64
    seed: int = 0


@dataclass
class OptimHP:
    """``sgd`` (momentum, nesterov) or ``adamw`` (betas (0.9, 0.999), decoupled ``weight_decay``; momentum and
    nesterov are SGD's only). Both follow the step decay of ``milestones``/``gamma``."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 1e-4
    milestones: list[int] = field(default_factory=list)  # epochs at which lr is multiplied by gamma
    gamma: float = 0.1
    head_lr_mult: float = 1.0  # segmentation: ASPP/decoder lr = lr * head_lr_mult (official code: 10)


@dataclass
class TrainHP:
    epochs: int = 1
    batch_size: int = 128  # global batch (split over processes)
    eval_batch_size: int | None = None
    grad_accum_steps: int = 1
    mixed_precision: str = "auto"  # auto: bf16/fp16 on GPUs that support it, fp32 on CPU
    seed: int = 0
    checkpoint_every: int = 0  # optimizer steps between mid-epoch checkpoints (0: only at epoch ends)
    keep_checkpoints: int = 1
    max_steps_per_epoch: int | None = None  # cap (smoke runs)


@dataclass
class AugmentHP:
    policy: str = "none"
    input_size: int = 32
    crop_padding: int = 4  # cifar
    scale: tuple[float, float] = (0.08, 1.0)  # random resized crop (tinyimagenet/imagenet) or random scale (voc)
    hflip: bool = True
    grayscale_p: float = 0.0
    color_jitter: float = 0.0
    crop_pct: float | None = None  # eval: resize to input_size / crop_pct then center crop (None: data config)


@dataclass
class Recipe:
    name: str
    task: str
    data: DataHP
    model: ModelHP
    optim: OptimHP = field(default_factory=OptimHP)
    train: TrainHP = field(default_factory=TrainHP)
    augment: AugmentHP = field(default_factory=AugmentHP)
    prune: PruneHP = field(default_factory=PruneHP)
    description: str = ""

    # -- canonical form -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))

    def hash(self) -> str:
        """12 hex digits of the canonical JSON of everything but ``description``."""
        d = self.to_dict()
        d.pop("description", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]

    def save(self, path: str | os.PathLike) -> None:
        d = self.to_dict()
        d["hash"] = self.hash()
        Path(path).write_text(yaml.safe_dump(d, sort_keys=False))

    def with_overrides(self, overrides: list[str] | dict | None) -> Recipe:
        d = self.to_dict()
        for key, value in _parse_overrides(overrides).items():
            node = d
            parts = key.split(".")
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise InvalidArgumentError(f"unknown recipe key {key!r}; keys look like train.epochs, optim.lr "
                                               "(sections: "
                                               f"{', '.join(k for k, v in d.items() if isinstance(v, dict))})")
                node = node[p]
            if parts[-1] not in node:
                raise InvalidArgumentError(f"unknown recipe key {key!r}; valid keys here: {', '.join(node)}")
            node[parts[-1]] = value
        return recipe_from_dict(d)

    def validate(self) -> Recipe:
        def bad(msg):
            raise InvalidArgumentError(f"recipe {self.name!r}: {msg}")

        if self.task not in TASKS:
            bad(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.augment.policy not in AUGMENT_POLICIES:
            bad(f"augment.policy must be one of {', '.join(AUGMENT_POLICIES)}, got {self.augment.policy!r}")
        if self.optim.name not in OPTIMIZERS:
            bad(f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {self.optim.name!r}")
        if self.train.mixed_precision not in MIXED_PRECISION:
            bad(f"train.mixed_precision must be one of {', '.join(MIXED_PRECISION)}")
        for key, v in (("optim.lr", self.optim.lr), ("train.epochs", self.train.epochs),
                       ("train.batch_size", self.train.batch_size),
                       ("train.grad_accum_steps", self.train.grad_accum_steps),
                       ("augment.input_size", self.augment.input_size)):
            if v <= 0:
                bad(f"{key} must be > 0, got {v}")
        for key, v in (("optim.momentum", self.optim.momentum), ("optim.weight_decay", self.optim.weight_decay),
                       ("train.checkpoint_every", self.train.checkpoint_every)):
            if v < 0:
                bad(f"{key} must be >= 0, got {v}")
        for key, v, lo, hi, closed in (  # (lo, hi) open unless closed says which ends are included
                ("optim.lr", self.optim.lr, 0.0, math.inf, ""),
                ("optim.momentum", self.optim.momentum, 0.0, 1.0, "lo"),
                ("optim.weight_decay", self.optim.weight_decay, 0.0, math.inf, "lo"),
                ("optim.gamma", self.optim.gamma, 0.0, 1.0, "hi"),
                ("optim.head_lr_mult", self.optim.head_lr_mult, 0.0, math.inf, ""),
                ("augment.grayscale_p", self.augment.grayscale_p, 0.0, 1.0, "lohi"),
                ("augment.color_jitter", self.augment.color_jitter, 0.0, math.inf, "lo"),
                ("augment.crop_pct", self.augment.crop_pct, 0.0, 1.0, "hi")):
            if v is None and key == "augment.crop_pct":
                continue
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and \
                (lo <= v if "lo" in closed else lo < v) and (v <= hi if "hi" in closed else v < hi)
            if not ok:
                lb, rb = "[" if "lo" in closed else "(", "]" if "hi" in closed else ")"
                bad(f"{key} must be a finite number in {lb}{lo:g}, {hi:g}{rb}, got {v!r}")
        if list(self.optim.milestones) != sorted(set(self.optim.milestones)):
            bad(f"optim.milestones must be increasing epochs, got {self.optim.milestones}")
        if self.optim.nesterov and self.optim.momentum == 0:
            bad("optim.nesterov needs optim.momentum > 0")
        if self.optim.nesterov and self.optim.name != "sgd":
            bad("optim.nesterov is an SGD option; set optim.nesterov=false for optim.name=adamw")
        lo, hi = self.augment.scale
        if not 0 < lo <= hi:
            bad(f"augment.scale must be (min, max) with 0 < min <= max, got {self.augment.scale}")
        if self.prune.method is not None and not 0 < self.prune.sparsity < 1:
            bad(f"prune.sparsity must be in (0, 1), got {self.prune.sparsity}")
        if self.task == "segmentation" and self.augment.policy not in ("voc", "none"):
            bad("segmentation recipes use augment.policy voc (or none)")
        if self.train.keep_checkpoints < 1:
            bad("train.keep_checkpoints must be >= 1")
        return self


# -- loading ----------------------------------------------------------------------------------------------------
def recipes_dir() -> Path:
    """Folder of the shipped recipes (``recipes/`` in a checkout, ``px_hub/recipes`` when installed)."""
    from importlib import resources

    return Path(str(resources.files("px_hub.recipes")))


def available_recipes() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def load_recipe(name_or_path: str | os.PathLike, overrides: list[str] | dict | None = None) -> Recipe:
    """A shipped recipe by name (``cifar10_resnet20``) or a YAML file, with ``key=value`` overrides applied."""
    p = Path(name_or_path)
    if not p.suffix and not p.exists():
        p = recipes_dir() / f"{name_or_path}.yaml"
    if not p.is_file():
        raise UnknownNameError(f"no recipe {os.fspath(name_or_path)!r}; "
                               f"shipped recipes: {', '.join(available_recipes())} "
                               "(or pass a path to a YAML file)")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise InvalidArgumentError(f"recipe {os.fspath(p)} is not valid YAML ({str(e).splitlines()[0]}); "
                                   "fix the file") from None
    if not isinstance(d, dict):
        raise InvalidArgumentError(f"recipe {os.fspath(p)} must be a YAML mapping with name, task, data, model, ...")
    d.pop("hash", None)  # a saved (resolved) recipe carries its hash; it is recomputed
    d.setdefault("name", p.stem)
    return recipe_from_dict(d).with_overrides(overrides)


def recipe_from_dict(d: dict) -> Recipe:
    return _build(Recipe, d, "").validate()


def _build(cls, d, prefix: str):
    if not isinstance(d, dict):
        raise InvalidArgumentError(f"recipe section {prefix or 'root'} must be a mapping, got {d!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise InvalidArgumentError(f"unknown recipe key {prefix}{sorted(unknown)[0]!r}; valid keys: "
                                   f"{', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.name not in d:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise InvalidArgumentError(f"recipe is missing {key!r}")
            continue
        kwargs[f.name] = _coerce(hints[f.name], d[f.name], key)
    return cls(**kwargs)


def _coerce(tp, v, key: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, v, key + ".")
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], v, key)
    if origin in (list, tuple):
        if not isinstance(v, (list, tuple)):
            raise InvalidArgumentError(f"recipe key {key!r} must be a list, got {v!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(v) != len(args):
                raise InvalidArgumentError(f"recipe key {key!r} must have {len(args)} values, got {v!r}")
            return tuple(_coerce(a, x, key) for a, x in zip(args, v))
        out = [_coerce(args[0], x, key) for x in v] if args else list(v)
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(v, bool):
            return v
        raise InvalidArgumentError(f"recipe key {key!r} must be true or false, got {v!r}")
    if tp is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise InvalidArgumentError(f"recipe key {key!r} must be an integer, got {v!r}")
    if tp is float:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(v)
            except ValueError:
                pass
        raise InvalidArgumentError(f"recipe key {key!r} must be a number, got {v!r}")
    if tp is str:
        if isinstance(v, str):
            return v
        raise InvalidArgumentError(f"recipe key {key!r} must be a string, got {v!r}")
    return v


def _parse_overrides(overrides) -> dict:
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    out = {}
    for item in overrides:
        if "=" not in item:
            raise InvalidArgumentError(f"override {item!r} must look like key=value, e.g. train.epochs=2")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError:
            out[k.strip()] = v
    return out


def _to_plain(x):
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x
