"""One registry of scoring methods. A method is a function ``fn(ctx: ScoringContext) -> dict[str, Tensor]``
(one score tensor per prunable parameter, higher = keep) registered with :func:`register_method`."""
from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..errors import InvalidArgumentError, UnknownNameError


@dataclass(frozen=True)
class MethodInfo:
    name: str
    fn: Callable[..., dict[str, torch.Tensor]]
    needs_data: bool
    default_rounds: int
    signed: bool = False  # scores may be negative (pruned weights are then scored -inf, never revived)
    paper: str = ""
    description: str = ""
    options: dict = field(default_factory=dict)  # method options and their defaults

    def resolve_options(self, given: dict | None) -> dict:
        given = dict(given or {})
        unknown = set(given) - set(self.options)
        if unknown:
            known = ", ".join(self.options) or "none"
            raise InvalidArgumentError(
                f"method {self.name} has no option {sorted(unknown)[0]!r} (its options: {known})")
        return {**self.options, **given}

    @property
    def iterative(self) -> bool:
        return self.default_rounds > 1


_REGISTRY: dict[str, MethodInfo] = {}


def register_method(name: str, *, needs_data: bool, default_rounds: int, signed: bool = False, paper: str = "",
                    description: str = "", options: dict | None = None):
    """Decorator: ``@register_method("px", needs_data=True, default_rounds=100)``."""

    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"scoring method {name!r} is already registered")
        _REGISTRY[name] = MethodInfo(name, fn, needs_data, default_rounds, signed, paper,
                                     description or (fn.__doc__ or "").strip().split("\n")[0], dict(options or {}))
        return fn

    return deco


def get_method(name: str) -> MethodInfo:
    key = name.strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=2)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise UnknownNameError(f"unknown pruning method {name!r}; {hint}available: {', '.join(available_methods())}")
    return _REGISTRY[key]


def available_methods() -> list[str]:
    return list(_REGISTRY)
