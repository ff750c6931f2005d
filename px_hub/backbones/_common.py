"""Helpers shared by the loaders: Hub file resolution (offline-aware), checkpoint reading, head replacement."""
from __future__ import annotations

import contextlib
import os
import re
from typing import Any

import torch
from torch import nn

from .._weights import load_exact, timm_data_config  # noqa: F401  (used by the loaders)
from ..errors import IntegrityError, InvalidArgumentError, WeightsUnavailableError

HEAD_INIT = "trunc_normal(std=0.02) weight, zeros bias"
OFFLINE_FIX = "pass --no-pretrained (pretrained=False), run once online to cache the weights, or pass a local file"


def hub_offline() -> bool:
    import huggingface_hub.constants as c

    return bool(c.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def cached_hub_file(repo_id: str, filenames: tuple[str, ...] | list[str], revision: str | None = None
                    ) -> tuple[str, str | None] | None:
    """The first of ``filenames`` present in the local Hub cache: ``(path, commit)``; else None."""
    from huggingface_hub import try_to_load_from_cache

    for fn in filenames:
        p = try_to_load_from_cache(repo_id, fn, revision=revision)
        if isinstance(p, str) and os.path.isfile(p):
            return p, commit_of_cached_path(p)
    return None


def commit_of_cached_path(path: str) -> str | None:
    m = re.search(r"[\\/]snapshots[\\/]([0-9a-f]{40})[\\/]", path)
    return m.group(1) if m else None


def resolve_file(path_or_repo_file: str, what: str) -> tuple[str, dict[str, Any]]:
    """A local file path, or ``OWNER/REPO/FILE[@REV]`` on the Hub (cache first; offline → clear error)."""
    p = os.path.expanduser(path_or_repo_file)
    if os.path.isfile(p):
        return p, {"source": "file", "id": os.path.abspath(p), "revision": None}
    spec, _, revision = path_or_repo_file.partition("@")
    parts = spec.split("/")
    if len(parts) < 3 or p.startswith((os.sep, ".")) or not all(parts[:2]):
        raise WeightsUnavailableError(f"{what}: {path_or_repo_file!r} is neither an existing file nor OWNER/REPO/FILE "
                                      "on the Hub; check the path")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    hit = cached_hub_file(repo_id, [filename], revision or None)
    if hit is None:
        if hub_offline():
            raise WeightsUnavailableError(f"{what}: {filename} of {repo_id} is not cached and HF_HUB_OFFLINE=1; "
                                          "run once online or pass a local file path")
        from huggingface_hub import hf_hub_download

        try:
            local = hf_hub_download(repo_id, filename, revision=revision or None)
        except Exception as e:  # noqa: BLE001 - one line for the CLI
            raise WeightsUnavailableError(f"{what}: cannot download {filename} from {repo_id} "
                                          f"({type(e).__name__}); check the repo/file name "
                                          "or pass a local file") from None
        hit = (local, commit_of_cached_path(local))
    return hit[0], {"source": "hf-hub", "id": f"{repo_id}/{filename}", "revision": hit[1] or revision or None}


def read_checkpoint(path: str) -> dict[str, Any]:
    """safetensors, or a torch file read with ``weights_only=True`` (never arbitrary pickles)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as e:  # noqa: BLE001
            raise IntegrityError(f"{path}: not a readable safetensors file ({type(e).__name__})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise IntegrityError(f"{path}: cannot be read with torch.load(weights_only=True) ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:160]}); convert it to safetensors") from None


@contextlib.contextmanager
def seeded(seed: int):
    """Random init inside the block is drawn from ``seed`` without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def init_head_(head: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = torch.empty_like(head.weight)
        nn.init.trunc_normal_(w, std=0.02, a=-0.04, b=0.04, generator=gen)
        head.weight.copy_(w)
        if head.bias is not None:
            head.bias.zero_()


def replace_timm_head(model: nn.Module, num_classes: int | None, seed: int) -> dict[str, Any]:
    """``reset_classifier(num_classes)`` + seeded init when ``num_classes`` differs from the model's."""
    current = getattr(model, "num_classes", None)
    if num_classes is None or num_classes == current:
        return {"head_replaced": False, "num_classes": current}
    model.reset_classifier(num_classes)
    head = model.get_classifier()
    if not isinstance(head, nn.Linear):
        raise InvalidArgumentError(f"cannot re-initialise classifier of type {type(head).__name__}")
    init_head_(head, seed)
    return {"head_replaced": True, "num_classes": num_classes,
            "head_init": f"timm reset_classifier + {HEAD_INIT}", "head_seed": seed}
