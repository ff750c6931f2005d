"""Labelled image datasets behind one small view, :class:`ImageDataset`.

``load_image_dataset(spec, split)`` accepts

* ``digits`` — scikit-learn's 1,797 8×8 handwritten digits (10 classes), offline;
* ``animal-mnist`` — the 10,000 28×28 Animal-MNIST images (10 classes) inside the ``animal-mnist`` wheel, offline;
* ``imagefolder:PATH`` — one sub-folder per class (``PATH/<class>/*.png``), or split folders
  (``PATH/train/<class>/…``, ``PATH/test/<class>/…``);
* a Hugging Face Hub dataset id, optionally pinned: ``cifar10``, ``uoft-cs/cifar100@<revision>``,
  ``zh-plus/tiny-imagenet``, ``imagenet-1k`` … (through :func:`datasets.load_dataset`).

The two built-in sets have no official split; px-hub fixes one: a stratified 80/20 split
(``sklearn.model_selection.train_test_split(test_size=0.2, stratify=labels, random_state=0)``), whose rows are
kept in the original order of the set. ``digits`` → 1,437 train / 360 test, ``animal-mnist`` → 8,000 / 2,000.

``sample_id(i)`` is the row index of example ``i`` in its split (stable for a given dataset revision).
"""
from __future__ import annotations

import gzip
import os
import pathlib
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError, UnknownNameError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
IMAGE_COLUMN_NAMES = ("image", "img", "images", "pixel_values", "picture", "photo")
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "class", "target", "category")
BUILTIN_SPLIT_SEED = 0
BUILTIN_TEST_FRACTION = 0.2


class ImageDataset:
    """A read-only view of one split of a labelled image dataset.

    Attributes: ``name`` (the spec it was loaded from), ``revision`` (``str | None``), ``split``,
    ``class_names`` (index → name), ``labels`` (``np.ndarray`` of int64, one per example).
    Subclasses implement :meth:`_load` (one example as a PIL image); :meth:`images` may be overridden to decode
    many examples at once.
    """

    def __init__(self, name: str, split: str, class_names: Sequence[str], labels: Sequence[int] | np.ndarray,
                 revision: str | None = None, info: dict[str, Any] | None = None):
        self.name = name
        self.split = split
        self.revision = revision
        self.class_names = [str(c) for c in class_names]
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.info = dict(info or {})
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DataError(
                f"dataset {name!r} split {split!r} has labels outside 0..{len(self.class_names) - 1} "
                f"(found {int(self.labels.min())}..{int(self.labels.max())}); pass the right label_column"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return (f"{type(self).__name__}({self.name}{rev}, split={self.split!r}, examples={len(self)}, "
                f"classes={self.num_classes})")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _check_index(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} examples")
        return i

    def image(self, i: int) -> Image.Image:
        """Example ``i`` as an RGB PIL image."""
        return _to_rgb(self._load(self._check_index(i)))

    def images(self, indices: Sequence[int]) -> list[Image.Image]:
        """Several examples as RGB PIL images, in the order given."""
        return [self.image(i) for i in indices]

    def label(self, i: int) -> int:
        return int(self.labels[self._check_index(i)])

    def sample_id(self, i: int) -> int:
        """A stable id of example ``i``: its row index in the split."""
        return self._check_index(i)

    def _load(self, i: int) -> Image.Image:  # pragma: no cover - abstract
        raise NotImplementedError


def _to_rgb(img: Image.Image) -> Image.Image:
    if not isinstance(img, Image.Image):
        img = Image.fromarray(np.asarray(img))
    return img if img.mode == "RGB" else img.convert("RGB")


class ArrayImageDataset(ImageDataset):
    """Images held in memory as a uint8 array ``N×H×W`` (grayscale) or ``N×H×W×3``."""

    def __init__(self, name: str, split: str, array: np.ndarray, labels, class_names, revision=None, info=None):
        super().__init__(name, split, class_names, labels, revision, info)
        if array.dtype != np.uint8 or array.ndim not in (3, 4) or len(array) != len(self.labels):
            raise DataError(f"{name}: expected a uint8 N×H×W[×3] array with one label per image")
        self._array = array

    def _load(self, i: int) -> Image.Image:
        return Image.fromarray(self._array[i])


class FileImageDataset(ImageDataset):
    """Images stored as files (``imagefolder:``)."""

    def __init__(self, name: str, split: str, paths: Sequence[str], labels, class_names, revision=None, info=None):
        super().__init__(name, split, class_names, labels, revision, info)
        self.paths = [str(p) for p in paths]

    def _load(self, i: int) -> Image.Image:
        try:
            with Image.open(self.paths[i]) as im:
                im.load()
                return im.copy() if im.mode == "RGB" else im.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # PIL's errors for bad files
            reason = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"{self.paths[i]} is not a readable image ({reason}); remove or replace the "
                            "file") from None


class HubImageDataset(ImageDataset):
    """One split of a :class:`datasets.Dataset` with an image column and an integer label column."""

    def __init__(self, name: str, split: str, hf_dataset, image_column: str, label_column: str, labels,
                 class_names, revision=None, info=None):
        super().__init__(name, split, class_names, labels, revision, info)
        self.hf_dataset = hf_dataset
        self.image_column = image_column
        self.label_column = label_column

    def _load(self, i: int) -> Image.Image:
        return _decode_hf_image(self.hf_dataset[i][self.image_column])

    def images(self, indices: Sequence[int]) -> list[Image.Image]:
        idx = [self._check_index(i) for i in indices]
        if not idx:
            return []
        # one Arrow gather for the whole set of rows, instead of one row lookup per image
        column = self.hf_dataset.select(idx).select_columns([self.image_column])[self.image_column]
        return [_to_rgb(_decode_hf_image(v)) for v in column]


def _decode_hf_image(value) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        import io

        return Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") else Image.open(value["path"])
    return Image.fromarray(np.asarray(value))


# ---------------------------------------------------------------------------------------------------------------
# the front door
# ---------------------------------------------------------------------------------------------------------------
_BUILTIN: dict[str, Callable[[str], ImageDataset]] = {}


def register_builtin_dataset(name: str):
    """Register an offline dataset under ``name``: ``fn(split) -> ImageDataset``."""

    def deco(fn):
        _BUILTIN[name] = fn
        return fn

    return deco


def available_builtin_datasets() -> list[str]:
    return sorted(_BUILTIN)


def load_image_dataset(spec: str, split: str = "train", image_column: str | None = None,
                       label_column: str | None = None) -> ImageDataset:
    """Load one split of a labelled image dataset (see the module docstring for the accepted ``spec`` forms)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UnknownNameError(f"dataset spec must be a non-empty string, got {spec!r}; e.g. 'digits' or 'cifar10'")
    spec = spec.strip()
    if spec in _BUILTIN:
        if image_column or label_column:
            raise DataError(f"built-in dataset {spec!r} has fixed columns; drop image_column/label_column")
        return _BUILTIN[spec](split)
    if spec.startswith("imagefolder:"):
        return _load_imagefolder(spec, split)
    return _load_hub_dataset(spec, split, image_column, label_column)


# ---------------------------------------------------------------------------------------------------------------
# built-in offline sets
# ---------------------------------------------------------------------------------------------------------------
def _builtin_split(name: str, split: str, labels: np.ndarray) -> np.ndarray:
    """Rows of ``split`` ('train' | 'test') of a built-in set: fixed stratified 80/20 split, seed 0, sorted."""
    if split not in ("train", "test"):
        raise DataError(f"dataset {name!r} has no split {split!r}; available splits: train, test")
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(labels)), test_size=BUILTIN_TEST_FRACTION,
                                   stratify=labels, random_state=BUILTIN_SPLIT_SEED)
    return np.sort(train if split == "train" else test)


@register_builtin_dataset("digits")
def _digits(split: str) -> ImageDataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    rows = _builtin_split("digits", split, d.target)
    # pixel values are 0..16 → 0..255 grayscale
    images = np.rint(d.images[rows] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    info = {"source": "sklearn.datasets.load_digits", "license": "CC BY 4.0 (UCI optdigits)",
            "split_rule": "stratified 80/20, random_state=0, rows in original order"}
    return ArrayImageDataset("digits", split, images, d.target[rows], [str(i) for i in range(10)], info=info)


# The package lists the classes alphabetically but does not document the index order; looking at the first images
# of every label confirms alphabetical order (label 0 = bear ... 9 = zebra).
ANIMAL_MNIST_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else (no arbitrary code from a data file)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise DataError(f"refusing to unpickle {module}.{name} from a data file (only numpy arrays allowed)")
        if module.startswith("numpy.core") or module.startswith("numpy._core"):
            try:
                from numpy._core import multiarray  # numpy >= 2
            except ImportError:  # pragma: no cover - numpy 1.x
                from numpy.core import multiarray

            return getattr(multiarray, name)
        return super().find_class(module, name)


def load_numpy_pickle(path: str | os.PathLike) -> np.ndarray:
    """Read a (gzip) pickle that holds one numpy array, with an unpickler that allows only numpy arrays."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        out = _NumpyOnlyUnpickler(f).load()
    if not isinstance(out, np.ndarray):
        raise DataError(f"{path}: expected a pickled numpy array, got {type(out).__name__}")
    return out


def _animal_mnist_files() -> tuple[pathlib.Path, pathlib.Path]:
    import importlib.util

    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset 'animal-mnist' needs the animal-mnist package: pip install --no-deps animal-mnist")
    root = pathlib.Path(list(spec.submodule_search_locations)[0]) / "data" / "Animal_MNIST"
    files = root / "animal_data_version_3.gz", root / "animal_label_version_3.gz"
    for f in files:
        if not f.is_file():
            raise DataError(f"animal-mnist data file missing: {f}; reinstall with pip install --no-deps animal-mnist")
    return files


@register_builtin_dataset("animal-mnist")
def _animal_mnist(split: str) -> ImageDataset:
    data_file, label_file = _animal_mnist_files()
    images, labels = load_numpy_pickle(data_file), load_numpy_pickle(label_file)
    rows = _builtin_split("animal-mnist", split, labels)
    info = {"source": f"animal-mnist wheel ({data_file.name})",
            "split_rule": "stratified 80/20, random_state=0, rows in original order",
            "class_names_note": "alphabetical; checked by eye on the images of each label"}
    return ArrayImageDataset("animal-mnist", split, np.ascontiguousarray(images[rows]).astype(np.uint8),
                             labels[rows], ANIMAL_MNIST_CLASSES, info=info)


# ---------------------------------------------------------------------------------------------------------------
# imagefolder:PATH
# ---------------------------------------------------------------------------------------------------------------
def _class_dirs(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _has_images(d: pathlib.Path) -> bool:
    return any(f.suffix.lower() in IMAGE_EXTENSIONS for f in d.iterdir() if f.is_file())


def _load_imagefolder(spec: str, split: str) -> ImageDataset:
    root = pathlib.Path(os.path.expanduser(spec[len("imagefolder:"):]))
    if not root.is_dir():
        raise DataError(f"{spec}: folder not found; give imagefolder:PATH with one sub-folder per class")
    subdirs = _class_dirs(root)
    # split folders (PATH/train/<class>/...) when the sub-folders hold class folders rather than images
    split_dirs = {d.name: d for d in subdirs if not _has_images(d) and any(_has_images(c) for c in _class_dirs(d))}
    if split_dirs:
        if split not in split_dirs:
            raise DataError(f"{spec} has no split {split!r}; available splits: {', '.join(sorted(split_dirs))}")
        base = split_dirs[split]
    else:
        if split != "train":
            raise DataError(f"{spec} has no split {split!r}; available splits: train "
                            "(make PATH/train and PATH/test folders for more)")
        base = root
    classes = [d for d in _class_dirs(base) if _has_images(d)]
    if not classes:
        raise DataError(f"{spec}: no class sub-folders with images ({', '.join(IMAGE_EXTENSIONS)}) in {base}")
    if len(classes) < 2:
        raise DataError(f"{spec}: only one class ({classes[0].name}) in {base}; a classifier needs at least 2 classes "
                        "(one sub-folder per class)")
    paths, labels = [], []
    for c, d in enumerate(classes):
        files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        paths += files
        labels += [c] * len(files)
    return FileImageDataset(spec, split, paths, labels, [d.name for d in classes],
                            info={"source": str(base.resolve())})


# ---------------------------------------------------------------------------------------------------------------
# Hub datasets
# ---------------------------------------------------------------------------------------------------------------
def _offline() -> bool:
    return any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _load_hub_dataset(spec: str, split: str, image_column: str | None, label_column: str | None) -> ImageDataset:
    import datasets

    repo_id, _, revision = spec.partition("@")
    revision = revision or None
    try:
        ds = datasets.load_dataset(repo_id, split=split, revision=revision)
    except ValueError as e:
        msg = str(e)
        if "split" in msg.lower() and ("unknown" in msg.lower() or "should be one of" in msg.lower()):
            avail = msg.split("Should be one of", 1)[-1].strip(" .") if "Should be one of" in msg else "?"
            avail = avail.strip("[]").replace("'", "")
            raise DataError(f"dataset {spec!r} has no split {split!r}; available splits: {avail}") from None
        raise DataError(f"dataset {spec!r}: {msg.splitlines()[0] if msg else type(e).__name__}") from None
    except (FileNotFoundError, ConnectionError, OSError) as e:
        if _offline():
            raise DataError(
                f"dataset {spec!r} is not in the local cache and HF_HUB_OFFLINE=1: run once online to cache it "
                "(or unset HF_HUB_OFFLINE), or use a built-in set ('digits', 'animal-mnist') or imagefolder:PATH"
            ) from None
        name = type(e).__name__
        if "DatasetNotFound" in name or "RepositoryNotFound" in name or isinstance(e, FileNotFoundError):
            raise UnknownNameError(
                f"unknown dataset {repo_id!r} (not on the Hub or gated); check the id on huggingface.co/datasets, "
                f"or use one of: {', '.join(available_builtin_datasets())}, imagefolder:PATH"
            ) from None
        raise DataError(f"dataset {spec!r} could not be loaded ({name}: {str(e).splitlines()[0]})") from None
    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):  # pragma: no cover - split given
        raise DataError(f"dataset {spec!r}: pass a split ({', '.join(ds)})")
    return dataset_from_hf(ds, name=spec, split=split, revision=revision,
                           image_column=image_column, label_column=label_column)


def dataset_from_hf(ds, name: str, split: str, revision: str | None = None, image_column: str | None = None,
                    label_column: str | None = None) -> HubImageDataset:
    """Wrap an in-memory or cached :class:`datasets.Dataset` (columns detected as in :func:`load_image_dataset`)."""
    import datasets

    features = ds.features
    columns = list(features)
    cols = ", ".join(columns)
    if image_column is None:
        image_column = next((c for c in columns if isinstance(features[c], datasets.Image)), None) or next(
            (c for c in IMAGE_COLUMN_NAMES if c in columns), None)
        if image_column is None:
            raise DataError(f"dataset {name!r}: no image column found (columns: {cols}); pass image_column=")
    elif image_column not in columns:
        raise DataError(f"dataset {name!r} has no column {image_column!r}; columns: {cols}")
    if label_column is None:
        label_column = next((c for c in columns if isinstance(features[c], datasets.ClassLabel)), None) or next(
            (c for c in LABEL_COLUMN_NAMES if c in columns), None)
        if label_column is None:
            raise DataError(f"dataset {name!r} has no labels (columns: {cols}); pass label_column= or use a "
                            "labelled dataset")
    elif label_column not in columns:
        raise DataError(f"dataset {name!r} has no column {label_column!r}; columns: {cols}")

    feat = features[label_column]
    raw = ds.data.column(label_column).to_numpy(zero_copy_only=False) if hasattr(ds, "data") else np.asarray(
        ds[label_column])
    if isinstance(feat, datasets.ClassLabel):
        class_names = list(feat.names)
        labels = np.asarray(raw, dtype=np.int64)
    elif isinstance(feat, datasets.Value) and feat.dtype.startswith(("int", "uint")):
        labels = np.asarray(raw, dtype=np.int64)
        class_names = [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]
    elif isinstance(feat, datasets.Value) and feat.dtype in ("string", "large_string"):
        raise DataError(f"dataset {name!r}: label column {label_column!r} holds strings and no class list; "
                        f"cast it first (ds.class_encode_column({label_column!r})) or use imagefolder:PATH")
    else:
        raise DataError(f"dataset {name!r}: label column {label_column!r} is {feat!r}, not class labels; "
                        "pass label_column= naming an integer/ClassLabel column")
    if len(labels) and labels.min() < 0:
        raise DataError(f"dataset {name!r} split {split!r} has unlabelled rows (label -1, e.g. a test split); "
                        "use a labelled split such as 'train'")
    if isinstance(features[image_column], datasets.Image):
        ds = ds.cast_column(image_column, datasets.Image(decode=True))
    return HubImageDataset(name, split, ds, image_column, label_column, labels, class_names, revision,
                           info={"source": "datasets", "image_column": image_column, "label_column": label_column,
                                 "fingerprint": getattr(ds, "_fingerprint", None)})
