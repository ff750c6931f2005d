"""The one road from a :class:`~px_hub.spec.PruneSpec` to a mask:

    load backbone -> load dataset -> class-balanced split -> batches (this process's share under accelerate)
    -> prune (rounds checkpointed, resumable) -> PruneResult (mask, record = px_config.json, per-round history,
    timings)

``run(spec)`` does all of it; ``prepare(spec)`` stops after the batches (``compare`` prunes one prepared split
with several methods; ``report`` takes its NTK sample from it). Callers that already hold the model or the
dataset (fine-tuning, benchmarks at a custom init) pass them in and the rest of the road is the same.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import IntegrityError, InvalidArgumentError
from .spec import PruneSpec

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "px-hub-prune-checkpoint"
CHECKPOINT_VERSION = "1"


@dataclass
class Prepared:
    """A spec's inputs, ready to prune: the model (on ``device``), its preprocessing, the split and its batches
    (``batches``: all of them in global order; ``mine``/``ids``: this process's share and their global indices)."""

    spec: PruneSpec
    model: Any
    data_config: dict
    source: dict
    dataset: Any
    split: Any
    batches: list
    mine: list
    ids: list[int]
    timings: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        return tuple(self.batches[0][0].shape[1:]) if self.batches else None


def prepare(spec: PruneSpec, *, model=None, data_config: dict | None = None, source: dict | None = None,
            dataset=None, transform=None, device=None, max_examples: int | None = None,
            progress: bool = False) -> Prepared:
    """Load what ``spec`` names (or use the given ``model``/``dataset``), draw the class-balanced split and cut
    it into batches; under ``torch.distributed`` each process keeps whole batches round-robin. ``max_examples``
    keeps only the split's first examples (e.g. an NTK sample)."""
    from .data import PruningSplit, eval_transform, load_image_dataset, make_batches
    from .distributed import shard

    spec.data.validate()
    t = {}
    t0 = time.perf_counter()
    d = spec.data
    if dataset is None:
        dataset = load_image_dataset(d.dataset, split=d.split, image_column=d.image_column,
                                     label_column=d.label_column)
    t["load_data"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if model is None:
        from .backbones import load_backbone

        m = spec.model
        loaded = load_backbone(m.name, num_classes=m.num_classes or dataset.num_classes, pretrained=m.pretrained,
                               seed=m.head_seed)
        model, data_config, source = loaded.model, dict(loaded.data_config), dict(loaded.info)
    elif data_config is None:
        from timm.data import resolve_data_config

        data_config = dict(resolve_data_config({}, model=model))
    data_config = dict(data_config or {})
    if d.input_size is not None:
        data_config["input_size"] = (3, d.input_size, d.input_size)
    t["load_model"] = time.perf_counter() - t0
    if device is not None:
        model = model.to(device)
    t0 = time.perf_counter()
    split = PruningSplit.create(dataset, k=d.examples_per_class, seed=d.seed, order=d.order)
    batches = make_batches(dataset, split.indices[:max_examples], transform or eval_transform(data_config),
                           d.batch_size, progress=progress)
    mine, ids = shard(batches)
    t["preprocess"] = time.perf_counter() - t0
    log.debug("prepared %s: %d images in %d batch(es) (%d on this process); seconds: %s", d.dataset,
              split.num_samples, len(batches), len(mine), ", ".join(f"{k} {v:.2f}" for k, v in t.items()))
    return Prepared(spec, model, data_config, dict(source or {}), dataset, split, batches, mine, ids,
                    {k: round(v, 3) for k, v in t.items()})


def run(spec: PruneSpec, *, prepared: Prepared | None = None, checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: float = 30.0, progress: bool = False, fail_on_collapse: bool = False,
        **prepare_kwargs):
    """Prune as ``spec`` says; returns :class:`px_hub.prune.PruneResult` with ``record`` ready to be the ticket's
    ``px_config.json`` (``spec``, ``spec_hash``, ``data``, ``model`` and the pruning record), ``timings`` and
    ``prepared``. With ``checkpoint_dir`` the rounds are checkpointed there (rank 0 writes, at most every
    ``checkpoint_every`` seconds; 0: after every round) and a run of the same spec continues from the newest
    checkpoint. ``prepare_kwargs`` go to :func:`prepare` (a given model, data config or dataset)."""
    from .prune import prune_with_record

    spec = spec.validate().resolved()
    prep = prepared if prepared is not None else prepare(spec, progress=progress, **prepare_kwargs)
    if prep.spec.data != spec.data:
        raise InvalidArgumentError("the prepared batches were made for other data than this spec's; prepare(spec) "
                                   "again or change only the method options")
    ckpt = RoundCheckpoint(checkpoint_dir, spec, every_seconds=checkpoint_every) if checkpoint_dir else None
    start = ckpt.load() if ckpt is not None else None
    kwargs = {}
    if "guard" in inspect.signature(prune_with_record).parameters:
        kwargs["guard"] = spec.guard
    if start is not None:
        rnd, mask, history = start
        kwargs.update(initial_round=rnd, initial_mask=mask, initial_history=history)
        log.info("resuming from %s: %d of %d rounds done", ckpt.path, rnd, spec.rounds)
    t0 = time.perf_counter()
    result = prune_with_record(
        prep.model, prep.mine, method=spec.method, sparsity=spec.sparsity, rounds=spec.rounds, scope=spec.scope,
        seed=spec.seed, schedule=spec.schedule, targets=spec.targets.to_targets(), fail_on_collapse=fail_on_collapse,
        progress=progress, batch_ids=prep.ids, input_shape=prep.input_shape, method_options=spec.options,
        on_round=ckpt.save if ckpt is not None else None, **kwargs)
    timings = dict(prep.timings, prune=round(time.perf_counter() - t0, 3))
    log.debug("pruned with %s (spec %s) in %.2f s", spec.method, spec.hash(), timings["prune"])
    record = {"spec": spec.to_dict(), "spec_hash": spec.hash(), **result.record,
              "num_batches": len(prep.batches), "data": prep.split.to_record(),
              "timings": timings}
    if start is not None:
        record["resumed_at_round"] = start[0]
    if prep.source:
        record["model"] = {**prep.source, "pretrained": spec.model.pretrained, "head_seed": spec.model.head_seed}
    return dataclasses.replace(result, record=record, spec=spec, timings=timings, prepared=prep)


def resume_dir_for(out: str | os.PathLike) -> Path:
    """Where ``px-hub prune --out OUT`` keeps its round checkpoints: a hidden sibling of OUT (OUT itself is only
    written, atomically, when the ticket is complete)."""
    out = Path(out)
    return out.parent / f".{out.name}.resume"


class RoundCheckpoint:
    """Mask + completed rounds + history of one spec, in one safetensors file named by the spec hash (the mask's
    packed bits; the rest in its metadata, checksummed by :meth:`Mask.save`). Written atomically by rank 0 only,
    at most every ``every_seconds`` (0: after every round); never after the last round (the ticket follows)."""

    def __init__(self, directory: str | os.PathLike, spec: PruneSpec, every_seconds: float = 30.0):
        self.spec = spec.resolved()
        self.directory = Path(directory)
        self.path = self.directory / f"prune-{self.spec.hash()}.safetensors"
        self.every_seconds = float(every_seconds)
        self._last = time.monotonic()

    def _environment(self) -> dict:
        import torch

        from .distributed import rank_world

        return {"torch_threads": torch.get_num_threads(), "processes": rank_world()[1]}

    def load(self):
        """``(rounds done, mask, history)`` from a checkpoint of this spec, or None. A corrupt checkpoint, one of
        another spec, or one made with other threads/processes (its mask would differ from an uninterrupted run's)
        is ignored with a warning."""
        from .masking import Mask

        if not self.path.is_file():
            return None
        try:
            mask, meta = Mask.load_with_metadata(self.path)
            if meta.get("checkpoint") != CHECKPOINT_FORMAT or meta.get("spec_hash") != self.spec.hash():
                raise IntegrityError("not a checkpoint of this spec")
            if meta.get("state_sha256") != _state_digest(meta):
                raise IntegrityError("its round/history fail their checksum")
            rnd = int(meta["round"])
            history = json.loads(meta["history"])
            env = json.loads(meta["environment"])
            if not 0 < rnd < int(self.spec.rounds) or len(history) != rnd:
                raise IntegrityError("inconsistent round count")
        except (IntegrityError, KeyError, ValueError, OSError) as e:
            warnings.warn(f"ignoring pruning checkpoint {self.path} ({e}); starting from round 0", stacklevel=2)
            return None
        if env != self._environment():
            warnings.warn(f"ignoring pruning checkpoint {self.path}: it was made with {env}, this run has "
                          f"{self._environment()} and the mask would differ from an uninterrupted run's; "
                          "starting from round 0", stacklevel=2)
            return None
        return rnd, mask, history

    def save(self, rounds_done: int, mask, history: list[dict], force: bool = False) -> None:
        from .distributed import rank_world

        if rank_world()[0] != 0 or rounds_done >= int(self.spec.rounds):
            return
        if not force and time.monotonic() - self._last < self.every_seconds:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = {"checkpoint": CHECKPOINT_FORMAT, "checkpoint_version": CHECKPOINT_VERSION,
                "spec_hash": self.spec.hash(), "spec": self.spec.canonical(), "round": str(rounds_done),
                "history": json.dumps(history), "environment": json.dumps(self._environment())}
        meta["state_sha256"] = _state_digest({**meta, "sha256": mask.sha256()})
        mask.save(self.path, metadata=meta)
        self._last = time.monotonic()

    def remove(self) -> None:
        """Delete this spec's checkpoint (and the folder when nothing else is left in it)."""
        self.path.unlink(missing_ok=True)
        try:
            self.directory.rmdir()
        except OSError:
            pass


def _state_digest(meta: dict) -> str:
    import hashlib

    keys = ("spec_hash", "round", "history", "environment", "sha256")
    return hashlib.sha256(json.dumps([meta.get(k) for k in keys]).encode()).hexdigest()
