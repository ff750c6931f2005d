"""Which parameters are prunable, and which module is the classifier head. Decided by module *type and role*,
never by parameter name (the official PX code's name rule misclassifies timm layers; see px-spec)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import InvalidArgumentError

WEIGHTED_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
BATCHNORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


def weighted_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv/Linear module with a weight, in registration (network) order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHTED_TYPES) and m.weight is not None]


def weight_params(model: nn.Module) -> list[tuple[str, str, str | None]]:
    """Every prunable weight as (module name, weight attribute, bias attribute or None), in network order:
    Conv/Linear ``weight``/``bias``, and ``nn.MultiheadAttention``'s input projection (``in_proj_weight``, or
    ``q/k/v_proj_weight`` when key/value dimensions differ), which is a matrix multiply like a Linear's."""
    out = []
    for n, m in model.named_modules():
        if isinstance(m, WEIGHTED_TYPES) and m.weight is not None:
            out.append((n, "weight", "bias" if getattr(m, "bias", None) is not None else None))
        elif isinstance(m, nn.MultiheadAttention):
            if m.in_proj_weight is not None:
                out.append((n, "in_proj_weight", "in_proj_bias" if m.in_proj_bias is not None else None))
            else:
                out += [(n, f"{c}_proj_weight", None) for c in "qkv"]
    return out


def param_name(module_name: str, attr: str) -> str:
    return f"{module_name}.{attr}" if module_name else attr


def classifier_module(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The classifier head: timm's ``get_classifier()`` where it is a Linear/Conv; for transformers models the
    ``classifier`` module (a Linear, or the last Linear inside it, e.g. ResNet's ``Sequential(Flatten, Linear)``);
    else the last Linear."""
    head = None
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        try:
            head = getter()
        except Exception:  # some wrappers raise when there is no head
            head = None
    if not isinstance(head, WEIGHTED_TYPES) and _is_transformers_model(model):
        inner = getattr(model, "classifier", None)
        linears = [m for m in inner.modules() if isinstance(m, nn.Linear)] if isinstance(inner, nn.Module) else []
        head = linears[-1] if linears else None
    if isinstance(head, WEIGHTED_TYPES):
        for n, m in model.named_modules():
            if m is head:
                return n, m
    last = None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = (n, m)
    return last


def _is_transformers_model(model: nn.Module) -> bool:
    import sys

    tf = sys.modules.get("transformers")  # a PreTrainedModel exists only if transformers was imported
    return tf is not None and isinstance(model, tf.PreTrainedModel)


@dataclass(frozen=True)
class PruneTargets:
    """Options that pick the prunable weights. Default: every Conv/Linear weight."""

    exclude_first: bool = False
    exclude_classifier: bool = False
    exclude: tuple[str, ...] = field(default_factory=tuple)  # module or parameter names (prefix match)

    def select(self, model: nn.Module) -> dict[str, torch.nn.Parameter]:
        mods = weighted_modules(model)
        if not mods:
            raise InvalidArgumentError("the model has no Conv/Linear layers to prune")
        skip: set[str] = set()
        if self.exclude_first:
            skip.add(mods[0][0])
        if self.exclude_classifier:
            head = classifier_module(model)
            if head is not None:
                skip.add(head[0])
        wps = weight_params(model)
        unknown = [e for e in self.exclude
                   if not any(_matches(n, e) or _matches(param_name(n, a), e) for n, a, _b in wps)]
        if unknown:
            raise InvalidArgumentError(
                f"--exclude {unknown[0]!r} names no Conv/Linear layer of this model; "
                f"layers are e.g. {', '.join(n for n, _ in mods[:3])}"
            )
        out: dict[str, torch.nn.Parameter] = {}
        modules = dict(model.named_modules())
        for n, attr, _bias in wps:
            pname = param_name(n, attr)
            if n in skip or any(_matches(n, e) or _matches(pname, e) for e in self.exclude):
                continue
            out[pname] = getattr(modules[n], attr)
        return out

    def to_dict(self) -> dict:
        return {"exclude_first": self.exclude_first, "exclude_classifier": self.exclude_classifier,
                "exclude": list(self.exclude)}


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or name.startswith(pattern + ".")


def as_targets(targets: PruneTargets | Iterable[str] | None) -> PruneTargets:
    if targets is None:
        return PruneTargets()
    if isinstance(targets, PruneTargets):
        return targets
    return PruneTargets(exclude=tuple(targets))
