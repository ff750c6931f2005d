"""px_hub.data: offline datasets, imagefolder, datasets-backed sets, the pruning split, preprocessing, sharding."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from px_hub.data import (
    ANIMAL_MNIST_CLASSES,
    PruningSplit,
    dataset_from_hf,
    eval_transform,
    ids_digest,
    load_image_dataset,
    load_numpy_pickle,
    make_batches,
)
from px_hub.distributed import shard
from px_hub.errors import DataError, InvalidArgumentError, PxHubError

IMAGENET_CFG = {"input_size": (3, 32, 32), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                "interpolation": "bicubic", "crop_pct": 1.0}


@pytest.fixture(scope="module")
def digits():
    return load_image_dataset("digits", "train")


def test_digits_split_sizes_and_content(digits):
    from sklearn.datasets import load_digits

    test = load_image_dataset("digits", "test")
    assert (len(digits), len(test)) == (1437, 360)
    assert digits.class_names == [str(i) for i in range(10)]
    # stratified: every class has 80 % of its examples (±1) in train
    full = np.bincount(load_digits().target)
    assert np.all(np.abs(np.bincount(digits.labels) - 0.8 * full) <= 1)
    # rows keep the original order: train ∪ test is the whole set, pixel-exact
    d = load_digits()
    img = digits.image(0)
    assert img.mode == "RGB" and img.size == (8, 8)
    first_train = int(np.sort(np.setdiff1d(np.arange(1797), _test_rows()))[0])
    expected = np.rint(d.images[first_train] * 255 / 16).astype(np.uint8)
    assert np.array_equal(np.asarray(img)[..., 0], expected) and np.array_equal(np.asarray(img)[..., 2], expected)
    assert digits.labels[0] == d.target[first_train]
    assert digits.sample_id(5) == 5 and digits.sample_id(np.int64(7)) == 7


def _test_rows():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    return train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)[1]


def test_animal_mnist_offline_and_restricted_unpickler(tmp_path):
    ds = load_image_dataset("animal-mnist", "test")
    assert len(ds) == 2000 and ds.class_names == ANIMAL_MNIST_CLASSES
    assert np.array_equal(np.bincount(ds.labels), np.full(10, 200))
    assert ds.image(0).size == (28, 28) and ds.image(0).mode == "RGB"
    assert len(load_image_dataset("animal-mnist", "train")) == 8000

    import gzip
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        pickle.dump(Evil(), f)
    with pytest.raises(DataError, match="refusing to unpickle builtins.print"):
        load_numpy_pickle(bad)
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps(np.arange(6, dtype=np.int16).reshape(2, 3)))
    assert np.array_equal(load_numpy_pickle(good), np.arange(6).reshape(2, 3))


def test_errors_are_one_line_and_typed(digits):
    with pytest.raises(DataError, match="no split 'val'; available splits: train, test"):
        load_image_dataset("digits", "val")
    counts = np.bincount(digits.labels)
    smallest = int(counts.argmin())
    with pytest.raises(DataError, match=rf"class '{smallest}' \(id {smallest}\) of digits split 'train' has only "
                                        rf"{counts.min()} examples, fewer than k=147 .*at most {counts.min()}"):
        PruningSplit.create(digits, k=147)
    with pytest.raises(InvalidArgumentError):
        PruningSplit.create(digits, k=0)
    with pytest.raises(PxHubError, match="HF_HUB_OFFLINE=1") as e:  # conftest sets offline mode
        load_image_dataset("uoft-cs/cifar100", "train")
    assert "\n" not in str(e.value)


def test_pruning_split_deterministic_and_recorded(digits):
    a = PruningSplit.create(digits, k=10, seed=0)
    b = PruningSplit.create(digits, k=10, seed=0)
    c = PruningSplit.create(digits, k=10, seed=1)
    assert a.indices == b.indices and a.digest == b.digest and a.digest != c.digest
    assert len(a) == 100 and a.labels == [i % 10 for i in range(100)]  # class-interleaved
    assert all(digits.labels[i] == lab for i, lab in zip(a.indices, a.labels))
    assert len(set(a.indices)) == 100
    # the rule, independently: first k of each class after the seeded permutation
    perm = np.random.default_rng(0).permutation(len(digits))
    for cls in range(10):
        assert ([i for i in a.indices if digits.labels[i] == cls]
                == [int(i) for i in perm[digits.labels[perm] == cls][:10]])
    # seed=None: the first k of each class in dataset order (official code)
    n = PruningSplit.create(digits, k=3, seed=None, order="class")
    expected = [int(i) for cls in range(10) for i in np.flatnonzero(digits.labels == cls)[:3]]
    assert n.indices == expected and n.labels == sorted(n.labels)
    rec = json.loads(json.dumps(a.to_record()))
    assert rec["dataset"] == "digits" and rec["split"] == "train" and rec["k"] == 10 and rec["seed"] == 0
    assert rec["num_classes"] == 10 and rec["num_samples"] == 100 and rec["sample_ids"] == a.indices
    assert rec["digest"] == ids_digest(a.indices) == a.digest and len(rec["digest"]) == 64
    # the digest pins the exact value (regression guard for the split rule)
    assert a.digest == "7f0f1a25c61ae8325889c1887a59823b936f469fa7aa82574220e9df679be801"


def test_eval_transform_and_batches(digits):
    tf = eval_transform(IMAGENET_CFG)
    split = PruningSplit.create(digits, k=2, seed=0)
    batches = make_batches(digits, split.indices, tf, batch_size=8)
    assert [len(y) for _, y in batches] == [8, 8, 4]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.dtype == torch.float32 and x.shape == (20, 3, 32, 32) and y.dtype == torch.long
    assert y.tolist() == split.labels
    # grayscale → identical channels before normalisation; value check on a black corner pixel
    raw = x * torch.tensor(IMAGENET_CFG["std"]).view(1, 3, 1, 1) + torch.tensor(IMAGENET_CFG["mean"]).view(1, 3, 1, 1)
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-5) and torch.allclose(raw[:, 1], raw[:, 2], atol=1e-5)
    assert torch.allclose(raw[:, :, 0, 0], torch.zeros(20, 3), atol=2e-3)
    # one image through the same transform equals its batch row
    assert torch.equal(tf(digits.image(split.indices[3])), batches[0][0][3])
    with pytest.raises(InvalidArgumentError, match="data_config lacks mean"):
        eval_transform({"input_size": (3, 8, 8), "std": (1, 1, 1)})
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        make_batches(digits, split.indices, tf, batch_size=0)


def _write_png(path: pathlib.Path, value: int, mode: str = "L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (5, 4), value if mode == "L" else (value, 0, 0)).save(path)


def test_imagefolder(tmp_path):
    for cls, n in (("cat", 3), ("dog", 2)):
        for i in range(n):
            _write_png(tmp_path / "flat" / cls / f"{i}.png", 10 * i + (100 if cls == "dog" else 0))
    (tmp_path / "flat" / "dog" / "notes.txt").write_text("not an image")
    ds = load_image_dataset(f"imagefolder:{tmp_path / 'flat'}")
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 0, 1, 1]
    assert ds.image(4).getpixel((0, 0)) == (110, 110, 110)
    with pytest.raises(DataError, match="available splits: train"):
        load_image_dataset(f"imagefolder:{tmp_path / 'flat'}", "test")
    _write_png(tmp_path / "split" / "train" / "a" / "0.png", 1, "RGB")
    _write_png(tmp_path / "split" / "test" / "a" / "0.png", 2, "RGB")
    _write_png(tmp_path / "split" / "test" / "b" / "0.png", 3, "RGB")
    t = load_image_dataset(f"imagefolder:{tmp_path / 'split'}", "test")
    assert t.class_names == ["a", "b"] and t.image(1).getpixel((0, 0)) == (3, 0, 0)
    with pytest.raises(DataError, match="no split 'validation'; available splits: test, train"):
        load_image_dataset(f"imagefolder:{tmp_path / 'split'}", "validation")
    with pytest.raises(DataError, match="folder not found"):
        load_image_dataset(f"imagefolder:{tmp_path / 'nope'}")


def _hf_dataset(label_feature=None, labels=None, image_name="img", label_name="fine_label"):
    import datasets

    imgs = [Image.fromarray(np.full((6, 6, 3), 20 * i, np.uint8)) for i in range(12)]
    labels = labels if labels is not None else [i % 3 for i in range(12)]
    feats = {image_name: datasets.Image(), "coarse": datasets.Value("int64")}
    if label_name:
        feats[label_name] = label_feature or datasets.ClassLabel(names=["a", "b", "c"])
    data = {image_name: imgs, "coarse": [0] * 12}
    if label_name:
        data[label_name] = labels
    return datasets.Dataset.from_dict(data, features=datasets.Features(feats))


def test_datasets_backed_detection_and_errors(tmp_path):
    import datasets

    ds = dataset_from_hf(_hf_dataset(), name="toy", split="train")
    assert ds.image_column == "img" and ds.label_column == "fine_label" and ds.class_names == ["a", "b", "c"]
    assert [im.getpixel((0, 0)) for im in ds.images([5, 1])] == [(100, 100, 100), (20, 20, 20)]
    assert ds.image(2).getpixel((0, 0)) == (40, 40, 40)
    explicit = dataset_from_hf(_hf_dataset(), name="toy", split="train", label_column="coarse")
    assert explicit.labels.tolist() == [0] * 12 and explicit.class_names == ["0"]
    with pytest.raises(DataError, match="no column 'lbl'; columns: img, coarse, fine_label"):
        dataset_from_hf(_hf_dataset(), name="toy", split="train", label_column="lbl")
    with pytest.raises(DataError, match="holds strings and no class list"):
        dataset_from_hf(_hf_dataset(datasets.Value("string"), list("abcabcabcabc"), label_name="label"),
                        name="toy", split="train")
    with pytest.raises(DataError, match=r"has no labels \(columns: img, x\)"):
        dataset_from_hf(_hf_dataset(label_name=None).remove_columns("coarse").add_column("x", [1.0] * 12),
                        name="toy", split="train")
    with pytest.raises(DataError, match="unlabelled rows"):
        dataset_from_hf(_hf_dataset(labels=[-1] * 12), name="toy", split="test")

    # the load_dataset path, on a local parquet folder (no Hub needed)
    (tmp_path / "data").mkdir()
    _hf_dataset().to_parquet(str(tmp_path / "data" / "train-00000.parquet"))
    loaded = load_image_dataset(str(tmp_path), "train")
    assert len(loaded) == 12 and loaded.class_names == ["a", "b", "c"] and loaded.labels[:4].tolist() == [0, 1, 2, 0]
    with pytest.raises(DataError, match="no split 'validation'; available splits: train"):
        load_image_dataset(str(tmp_path), "validation")
    split = PruningSplit.create(loaded, k=4, seed=0)
    xb = make_batches(loaded, split.indices, eval_transform(IMAGENET_CFG), batch_size=6)
    assert [tuple(x.shape) for x, _ in xb] == [(6, 3, 32, 32), (6, 3, 32, 32)]


def test_shard_batches():
    batches = [(torch.full((2,), i), torch.tensor([i])) for i in range(5)]
    assert [int(b[1]) for b in shard(batches, 0, 2)[0]] == [0, 2, 4]
    assert [int(b[1]) for b in shard(batches, 1, 2)[0]] == [1, 3]
    assert len(shard(batches)[0]) == 5  # not distributed: everything
    with pytest.raises(DataError, match="cannot be shared by 8 processes"):
        shard(batches, 0, 8)
    with pytest.raises(InvalidArgumentError):
        shard(batches, 2, 2)
