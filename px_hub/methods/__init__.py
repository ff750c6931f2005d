"""Scoring methods: one registry; importing this package registers the built-in methods."""
from . import baselines, px, px2024  # noqa: F401  (register)
from .context import ScoringContext
from .registry import MethodInfo, available_methods, get_method, list_methods, method_label, register_method

__all__ = ["ScoringContext", "MethodInfo", "available_methods", "get_method", "list_methods", "method_label",
           "register_method"]
