"""Torch datasets for the training loop: a labelled :class:`px_hub.data.ImageDataset` with a per-example seeded
transform (classification), and Pascal VOC-style segmentation data (a local VOC folder or a Hub dataset)."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data import ImageDataset, load_image_dataset
from ..errors import DataError

VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]
IGNORE_INDEX = 255


def _seed_for(seed: int, epoch: int, index: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + int(index) * 104_729 + 12_345) % (2**63 - 1)


class TrainSet(torch.utils.data.Dataset):
    """``(transform(image), label)`` of an ImageDataset (or of a :class:`SegmentationData`: ``(image, label map)``);
    the torch RNG is seeded from ``(seed, epoch, index)`` around each transform. Set ``.epoch`` every epoch."""

    def __init__(self, data, transform: Callable, seed: int = 0, indices: Sequence[int] | None = None):
        self.data, self.transform, self.seed, self.epoch = data, transform, int(seed), 0
        self.indices = list(range(len(data))) if indices is None else [int(i) for i in indices]
        self.segmentation = isinstance(data, SegmentationData)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = self.indices[i]
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only (the transforms draw on the CPU): torch.manual_seed would also queue a lazy
            # seed for every accelerator backend, formatting a stack trace each time (~0.5 ms per example)
            torch.default_generator.manual_seed(_seed_for(self.seed, self.epoch, j))
            if self.segmentation:
                return self.transform(self.data.image(j), self.data.label_map(j))
            return self.transform(self.data.image(j)), int(self.data.labels[j])


def subset_indices(n: int, limit: int | None, seed: int) -> list[int] | None:
    """The first ``limit`` rows of a seeded permutation (sorted), or None for all rows."""
    if limit is None or limit >= n:
        return None
    return sorted(int(i) for i in np.random.default_rng(seed).permutation(n)[:limit])


# -- segmentation -----------------------------------------------------------------------------------------------
class SegmentationData(ImageDataset):
    """Images with per-pixel label maps (``label_map(i)``: uint8 H×W, 255 = ignore; ``segmentation_classes``:
    every pixel class, background first). As an ImageDataset its classes are the *foreground* classes and each
    image's label is its most frequent foreground class (the first one when it has none), so
    :class:`px_hub.data.PruningSplit` draws a class-balanced pruning split from segmentation data and SNIP/GraSP
    get an image-level target for the pruning probe."""

    segmentation_classes: list[str]

    def _init_classes(self, name: str, split: str, class_names: Sequence[str], n: int) -> None:
        self.segmentation_classes = [str(c) for c in class_names]
        labels = [max(0, dominant_class(self._load_label_map(i), len(class_names)) - 1) for i in range(n)]
        ImageDataset.__init__(self, name, split, self.segmentation_classes[1:], labels)

    def label_map(self, i: int) -> np.ndarray:
        return self._load_label_map(self._check_index(i))

    def _load_label_map(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


def dominant_class(label_map: np.ndarray, num_classes: int) -> int:
    counts = np.bincount(label_map[label_map != IGNORE_INDEX].reshape(-1).astype(np.int64), minlength=num_classes)
    counts = counts[:num_classes]
    return int(counts[1:].argmax() + 1) if counts[1:].sum() else 0


class VOCFolder(SegmentationData):
    """A local Pascal VOC 2012 layout: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNGs whose
    indices are the class ids, 255 on object borders), ``ImageSets/Segmentation/<split>.txt``."""

    def __init__(self, root: str | os.PathLike, split: str = "train", class_names: Sequence[str] = VOC_CLASSES):
        root = Path(root)
        listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise DataError(f"{listing} not found; pass the VOC2012 folder (with JPEGImages/, SegmentationClass/ and "
                            "ImageSets/Segmentation/{train,val}.txt), e.g. voc:/data/VOCdevkit/VOC2012")
        self.ids = [s.strip() for s in listing.read_text().split() if s.strip()]
        if not self.ids:
            raise DataError(f"{listing} lists no images")
        self.root = root
        missing = [i for i in self.ids if not (root / "SegmentationClass" / f"{i}.png").is_file()]
        if missing:
            raise DataError(f"{len(missing)} label map(s) missing under {root / 'SegmentationClass'} "
                            f"(e.g. {missing[0]}.png)")
        self._init_classes(f"voc:{root}", split, class_names, len(self.ids))

    def _load(self, i: int) -> Image.Image:
        return Image.open(self.root / "JPEGImages" / f"{self.ids[i]}.jpg")

    def _load_label_map(self, i: int) -> np.ndarray:
        with Image.open(self.root / "SegmentationClass" / f"{self.ids[i]}.png") as im:
            if im.mode not in ("P", "L"):
                raise DataError(f"label map {self.ids[i]}.png is {im.mode}; "
                                "VOC labels are palette (P) PNGs of class ids")
            return np.asarray(im, dtype=np.uint8).copy()


class HubSegmentation(SegmentationData):
    """A Hub segmentation dataset with an image column and a label-map column (``mask``/``label``/...)."""

    IMAGE_COLUMNS = ("image", "img", "pixel_values")
    LABEL_COLUMNS = ("mask", "label", "annotation", "segmentation", "semantic_segmentation")

    def __init__(self, spec: str, split: str, image_column: str | None = None, label_column: str | None = None,
                 class_names: Sequence[str] = VOC_CLASSES):
        import datasets

        try:
            ds = datasets.load_dataset(spec, split=split)
        except Exception as e:  # datasets raises many types (offline, missing split, ...)
            raise DataError(f"cannot load segmentation dataset {spec!r} split {split!r} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); "
                            "use a local folder: voc:/path/VOC2012") from None
        cols = list(ds.column_names)
        self.image_column = image_column or next((c for c in self.IMAGE_COLUMNS if c in cols), None)
        self.label_column = label_column or next((c for c in self.LABEL_COLUMNS if c in cols), None)
        if self.image_column is None or self.label_column is None:
            raise DataError(f"dataset {spec!r} has columns {cols}; pass data.image_column and data.label_column")
        self.ds = ds
        self._init_classes(spec, split, class_names, len(ds))

    def _load(self, i: int) -> Image.Image:
        return self.ds[int(i)][self.image_column]

    def _load_label_map(self, i: int) -> np.ndarray:
        v = self.ds[int(i)][self.label_column]
        return np.asarray(v, dtype=np.uint8).copy()


def load_segmentation_data(spec: str, split: str, image_column: str | None = None,
                           label_column: str | None = None) -> SegmentationData:
    if spec.startswith("voc:"):
        return VOCFolder(spec[len("voc:"):], split)
    if Path(spec).is_dir():
        return VOCFolder(spec, split)
    return HubSegmentation(spec, split, image_column, label_column)


def load_classification_data(spec: str, split: str, image_column: str | None = None,
                             label_column: str | None = None) -> ImageDataset:
    return load_image_dataset(spec, split, image_column=image_column, label_column=label_column)
