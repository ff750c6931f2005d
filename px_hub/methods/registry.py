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
    label: str = ""  # display name (model cards, `px-hub methods`); defaults to the name

    @property
    def display_name(self) -> str:
        return self.label or self.name

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
                    description: str = "", options: dict | None = None, label: str = ""):
    """Decorator: ``@register_method("px", needs_data=True, default_rounds=100, label="PX", description=...)``.
    ``description`` (default: the first line of the docstring) is the one line ``px-hub methods`` shows."""

    def deco(fn):
        if name in _REGISTRY:
            raise InvalidArgumentError(f"scoring method {name!r} is already registered; pick another name")
        _REGISTRY[name] = MethodInfo(name, fn, needs_data, default_rounds, signed, paper,
                                     description or (fn.__doc__ or "").strip().split("\n")[0], dict(options or {}),
                                     label)
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


def list_methods() -> list[MethodInfo]:
    """Every registered method, in registration order (name, label, one-line description, defaults)."""
    return list(_REGISTRY.values())


def method_label(name: str | None) -> str:
    """The display label of a method (unknown names come back as themselves, in backticks)."""
    if not name:
        return "an unrecorded method"
    return _REGISTRY[name].display_name if name in _REGISTRY else f"`{name}`"
