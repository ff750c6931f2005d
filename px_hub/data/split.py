"""The class-balanced pruning split: ``k`` examples per class, deterministic for a seed, recorded by id + digest.

Selection: with ``seed`` an int, the rows are permuted with ``numpy.random.default_rng(seed).permutation(n)``
(PCG64: the same on every platform and numpy version) and the first ``k`` rows of each class in that order are
taken; with ``seed=None`` the first ``k`` rows of each class in dataset order (what the official PX code does).

Order of ``indices`` (= the order in which :func:`px_hub.data.make_batches` yields them): class-interleaved —
the 1st chosen example of class 0, of class 1, …, of class C-1, then the 2nd of each class, … With a batch size
that is a multiple of the number of classes every batch is class-balanced, which matters for PX's J view (it
normalises with each batch's statistics). ``order="class"`` gives class-major order instead (all of class 0,
then class 1, …: the order of the reference fixture).

``digest`` = sha256 of the JSON list of sample ids (``json.dumps(ids, separators=(",", ":"))``), in ``indices``
order, so two runs used the same pruning data in the same order iff their digests agree.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError, InvalidArgumentError
from .datasets import ImageDataset

SPLIT_ORDERS = ("interleaved", "class")


def ids_digest(sample_ids) -> str:
    return hashlib.sha256(json.dumps(list(sample_ids), separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class PruningSplit:
    dataset: str
    revision: str | None
    split: str
    k: int
    seed: int | None
    num_classes: int
    indices: list[int]
    sample_ids: list
    labels: list[int]
    order: str = "interleaved"
    class_names: list[str] = field(default_factory=list, repr=False)

    @property
    def digest(self) -> str:
        return ids_digest(self.sample_ids)

    @property
    def num_samples(self) -> int:
        return len(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    @classmethod
    def create(cls, dataset: ImageDataset, k: int = 10, seed: int | None = 0, order: str = "interleaved"
               ) -> PruningSplit:
        """Take ``k`` examples of every class of ``dataset`` (see the module docstring for the exact rule)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidArgumentError(f"k (examples per class) must be a positive integer, got {k!r}; e.g. --k 10")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise InvalidArgumentError(f"seed must be a non-negative integer or None, got {seed!r}")
        if order not in SPLIT_ORDERS:
            raise InvalidArgumentError(f"order must be one of {', '.join(SPLIT_ORDERS)}, got {order!r}")
        k = int(k)
        labels = np.asarray(dataset.labels, dtype=np.int64)
        n, num_classes = len(labels), dataset.num_classes
        counts = np.bincount(labels, minlength=num_classes)
        if counts.min() < k:  # name the smallest class (the one that decides how large k can be)
            c = int(counts.argmin())
            short = int((counts < k).sum())
            raise DataError(
                f"class {dataset.class_names[c]!r} (id {c}) of {dataset.name} split {dataset.split!r} has only "
                f"{int(counts[c])} examples, fewer than k={k} ({short} class(es) short); lower --k to at most "
                f"{int(counts.min())} or use a larger split"
            )
        perm = np.arange(n) if seed is None else np.random.default_rng(int(seed)).permutation(n)
        perm_labels = labels[perm]
        chosen = [perm[perm_labels == c][:k] for c in range(num_classes)]
        table = np.stack(chosen)  # C × k
        flat = table.T.reshape(-1) if order == "interleaved" else table.reshape(-1)
        indices = [int(i) for i in flat]
        return cls(dataset=dataset.name, revision=dataset.revision, split=dataset.split, k=k,
                   seed=None if seed is None else int(seed), num_classes=num_classes, indices=indices,
                   sample_ids=[dataset.sample_id(i) for i in indices], labels=[int(labels[i]) for i in indices],
                   order=order, class_names=list(dataset.class_names))

    def to_record(self) -> dict:
        """JSON-able description (goes into the ticket's px_config.json ``data`` entry)."""
        return {"dataset": self.dataset, "revision": self.revision, "split": self.split, "k": self.k,
                "seed": self.seed, "order": self.order, "num_classes": self.num_classes,
                "num_samples": self.num_samples, "sample_ids": list(self.sample_ids), "digest": self.digest}
