"""Loading a state dict into a model exactly, and a timm model's preprocessing: used by the backbone loaders
and by ticket loading (px_hub.hub), which must not depend on each other's packages."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .errors import IntegrityError


def load_exact(model: nn.Module, state: dict[str, torch.Tensor], what: str, allow_missing: tuple[str, ...] = (),
               error: type[Exception] = IntegrityError,
               fix: str = "check that the file matches the spec's architecture") -> None:
    """``load_state_dict`` that names the first missing/unexpected/mis-shaped keys (only ``allow_missing`` may be
    absent); raises ``error`` with ``fix`` as the remedy."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(allow_missing)]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
              if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (first: {shapes[0]})")
        raise error(f"{what}: keys do not fit {type(model).__name__}: {'; '.join(parts)}; {fix}")
    model.load_state_dict({k: v for k, v in state.items()}, strict=False)


def timm_data_config(model: nn.Module) -> dict[str, Any]:
    from timm.data import resolve_data_config

    from .data.transforms import DATA_CONFIG_KEYS

    cfg = resolve_data_config({}, model=model)
    return {k: cfg[k] for k in DATA_CONFIG_KEYS if k in cfg}
