"""Evaluation preprocessing from a timm data config, and turning a set of examples into ``(inputs, labels)`` batches.

Pruning data is preprocessed like training data *without augmentation* (px-spec), i.e. timm's eval transform:
resize (shorter side to ``input_size / crop_pct``), centre crop to ``input_size``, to tensor, normalise with the
model's mean/std. Grayscale (and palette/RGBA) images are converted to RGB first.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from ..errors import InvalidArgumentError
from .datasets import ImageDataset

DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


class ToRGB:
    """PIL image → RGB PIL image (a picklable transform, so it works with DataLoader workers)."""

    def __call__(self, img):
        return img if img.mode == "RGB" else img.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def eval_transform(data_config: Mapping) -> Callable:
    """timm's eval transform (``create_transform(is_training=False)``) for a resolved data config, with
    grayscale→RGB first. ``data_config`` needs ``input_size``, ``mean``, ``std``; ``interpolation``
    (default bicubic), ``crop_pct`` (default 0.875) and ``crop_mode`` (default center) are optional."""
    from timm.data import create_transform
    from torchvision import transforms as T

    missing = [k for k in ("input_size", "mean", "std") if k not in data_config]
    if missing:
        raise InvalidArgumentError(f"data_config lacks {', '.join(missing)}; use the LoadedModel's data_config or "
                                   "timm.data.resolve_data_config(model=model)")
    kw = {k: data_config[k] for k in DATA_CONFIG_KEYS if data_config.get(k) is not None}
    kw.setdefault("interpolation", "bicubic")
    kw.setdefault("crop_pct", 0.875)
    tf = create_transform(**kw, is_training=False)
    return T.Compose([ToRGB(), *tf.transforms])


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def make_batches(dataset: ImageDataset, indices: Sequence[int], transform: Callable, batch_size: int,
                 num_workers: int | None = None, progress: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Decode and preprocess ``dataset[indices]`` into ``[(float N×3×H×W, long N), ...]`` in ``indices`` order.

    The last batch may be smaller. Decoding + transforms run in a thread pool (PIL and torch release the GIL),
    and Hub datasets fetch all rows with one Arrow gather, so a 1,000-image split is not decode-bound.
    ``indices`` is typically ``PruningSplit.indices`` (class-interleaved).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}; e.g. --batch-size 100")
    indices = [int(i) for i in indices]
    if not indices:
        return []
    labels = torch.as_tensor([int(dataset.labels[i]) for i in indices], dtype=torch.long)
    workers = num_workers or _workers()
    from tqdm.auto import tqdm

    images = dataset.images(indices)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        tensors = list(tqdm(pool.map(transform, images), total=len(images), desc="preprocess", unit="img",
                            disable=not progress or len(images) < 256, leave=False))
    x = torch.stack(tensors).float()
    if x.ndim != 4 or x.shape[1] != 3:
        raise InvalidArgumentError(f"transform must give 3×H×W tensors, got {tuple(x.shape[1:])}")
    return [(x[i:i + batch_size].contiguous(), labels[i:i + batch_size].clone())
            for i in range(0, len(indices), batch_size)]
