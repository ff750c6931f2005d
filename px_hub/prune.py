"""The pruning loop: score -> (reduce across processes) -> global threshold -> mask, for R rounds on an
exponential schedule; plus one-round ``score``. Importance (``px_hub.methods``) is kept apart from this pruner
(schedule, scope, masking), as Torch-Pruning does."""
from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .errors import DataError, InvalidArgumentError, LayerCollapseError, require_sparsity
from .masking import Mask, PruneTargets, sparsity_schedule, ticket_health
from .masking.guard import guard_round
from .masking.targets import as_targets, classifier_module
from .methods import ScoringContext, get_method
from .records import library_versions
from .spec import DEFAULT_METHOD


@dataclass
class PruneResult:
    mask: Mask
    record: dict                         # JSON-able: how the mask was made (px_hub.pipeline: px_config.json)
    history: list[dict] = field(default_factory=list)  # per round: sparsity target, kept, seconds
    spec: Any = None                     # the resolved px_hub.PruneSpec (px_hub.pipeline.run)
    timings: dict = field(default_factory=dict)  # seconds per stage (px_hub.pipeline.run)
    prepared: Any = None                 # px_hub.pipeline.Prepared: model, data config, split, batches

    def report(self):
        """Per-layer kept/total/density and alive outputs (:meth:`Mask.report`)."""
        return self.mask.report()


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Eval mode and no parameter gradients for the duration of scoring; the caller's modes are restored."""
    modes = {m: m.training for m in model.modules()}
    req = {p: p.requires_grad for p in model.parameters()}
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        yield model
    finally:
        for m, t in modes.items():
            m.train(t)
        for p, r in req.items():
            p.requires_grad_(r)


def _prepare_batches(batches, model: nn.Module, batch_ids: Sequence[int] | None):
    if batches is None:
        batches = []
    items = list(batches)
    p = next(model.parameters())
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"pruning batch {i} is not an (inputs, labels) pair; pass an iterable of (x, y) tensors")
        x, y = item[0], item[1]
        x = torch.as_tensor(x).to(p.device)
        if x.is_floating_point():
            x = x.to(p.dtype)
        out.append((x, torch.as_tensor(y).to(p.device).long()))
    if batch_ids is None:
        rank, world = distributed.rank_world()
        batch_ids = [i * world + rank for i in range(len(out))]
    if len(batch_ids) != len(out):
        raise InvalidArgumentError("batch_ids must give one global index per batch")
    return out, list(batch_ids)


def _context(model, params, mask, batches, batch_ids, input_shape, seed, rnd, options) -> ScoringContext:
    dev = next(model.parameters()).device
    return ScoringContext(
        model=model, targets=params, mask={k: mask[k].to(dev) for k in params}, batches=batches,
        batch_ids=batch_ids, input_shape=input_shape, seed=seed, round=rnd, options=options,
        reduce_sum=distributed.all_reduce_sum, gather_by_id=distributed.gather_by_id,
    )


def _setup(model, batches, method, method_options, batch_ids, input_shape):
    """What score() and prune() both need: the method, its options, this process's batches and the input shape."""
    info = get_method(method)
    options = info.resolve_options(method_options)
    bs, ids = _prepare_batches(batches, model, batch_ids)
    if info.needs_data and not bs and distributed.rank_world()[1] == 1:
        raise DataError(f"method {info.name} needs pruning data: pass at least one (inputs, labels) batch")
    return info, options, bs, ids, _input_shape(bs, input_shape)


def _input_shape(batches, input_shape):
    if input_shape is not None:
        return tuple(input_shape)
    if batches:
        return tuple(batches[0][0].shape[1:])
    raise DataError("cannot infer the input shape: pass pruning batches or input_shape=(C, H, W)")


def _round_scores(info, ctx: ScoringContext) -> dict[str, torch.Tensor]:
    scores = info.fn(ctx)
    out = {}
    for n, s in scores.items():
        s = s.detach().float()
        m = ctx.mask[n]
        # pruned weights stay pruned: they score 0 (non-negative methods, as the official code) or -inf (signed)
        out[n] = torch.where(m, s, torch.full_like(s, float("-inf") if info.signed else 0.0))
    return out


def score(model: nn.Module, batches: Iterable | None, method: str = DEFAULT_METHOD,
          mask: Mask | None = None, targets: PruneTargets | Iterable[str] | None = None, seed: int = 0,
          input_shape: Sequence[int] | None = None, method_options: dict | None = None) -> dict[str, torch.Tensor]:
    """One round of ``method`` on ``model`` (masked by ``mask``): parameter name -> score tensor (CPU, float32).
    Never changes the model's weights, BatchNorm statistics or train/eval mode."""
    info, options, bs, ids, shape = _setup(model, batches, method, method_options, None, input_shape)
    with _eval_mode(model):
        params = as_targets(targets).select(model)
        m = mask if mask is not None else Mask.ones(params)
        ctx = _context(model, params, m, bs, ids, shape, seed, 0, options)
        return {k: v.cpu() for k, v in _round_scores(info, ctx).items()}


def prune(model: nn.Module, batches: Iterable | None, method: str = DEFAULT_METHOD,
          sparsity: float = 0.982, rounds: int | None = None, scope: str = "global", seed: int = 0,
          schedule: str = "exponential", targets: PruneTargets | Iterable[str] | None = None,
          fail_on_collapse: bool = False, progress: bool = True, **kwargs) -> Mask:
    """Prune ``model`` to ``sparsity`` (fraction of prunable weights REMOVED) with ``method``; returns the Mask.
    ``batches``: iterable of (inputs, labels), the class-balanced pruning split (this process's share under
    torch.distributed). The model itself is not modified: apply the mask with ``mask.apply_(model)``.
    ``guard=True`` (default): no round may leave a layer empty or an output class without a path from the input
    (see ``px_hub.masking.guard``); ``guard=False`` gives the raw method."""
    return prune_with_record(model, batches, method, sparsity, rounds, scope, seed, schedule, targets,
                             fail_on_collapse, progress, **kwargs).mask


def prune_with_record(model: nn.Module, batches: Iterable | None, method: str = DEFAULT_METHOD,
                      sparsity: float = 0.982, rounds: int | None = None, scope: str = "global", seed: int = 0,
                      schedule: str = "exponential", targets: PruneTargets | Iterable[str] | None = None,
                      fail_on_collapse: bool = False, progress: bool = True, *,
                      batch_ids: Sequence[int] | None = None, input_shape: Sequence[int] | None = None,
                      initial_mask: Mask | None = None, method_options: dict | None = None,
                      initial_round: int = 0, initial_history: Sequence[dict] | None = None,
                      on_round: Callable[[int, Mask, list[dict]], None] | None = None,
                      guard: bool = True) -> PruneResult:
    """:func:`prune`, returning the mask with a JSON-able record of how it was made and the per-round history.
    Resuming: ``initial_mask`` is the mask after ``initial_round`` completed rounds (``initial_history`` their
    history); the loop continues at round ``initial_round`` and ends with the mask an uninterrupted run makes.
    ``on_round(rounds_done, mask, history)`` is called after every round (e.g. to write a checkpoint).
    ``guard``: see :func:`prune` and :mod:`px_hub.masking.guard`."""
    s = require_sparsity(sparsity)
    if scope not in ("global", "local"):
        raise InvalidArgumentError(f"scope must be 'global' or 'local', got {scope!r}")
    tg = as_targets(targets)
    info, options, bs, ids, shape = _setup(model, batches, method, method_options, batch_ids, input_shape)
    r_total = info.default_rounds if rounds is None else int(rounds)
    if r_total < 1:
        raise InvalidArgumentError(f"rounds must be >= 1, got {rounds}")
    rank, world = distributed.rank_world()
    warns = _zero_gamma_warnings(model)
    for w in warns:
        if rank == 0:
            warnings.warn(w, stacklevel=2)
    history: list[dict] = list(initial_history or [])
    if not 0 <= initial_round < r_total or (initial_round and initial_mask is None):
        raise InvalidArgumentError(f"initial_round must be in [0, {r_total}) and come with initial_mask")
    notes: dict = {}
    guarded: list[dict] = [{"round": h["round"], **h["guard"]} for h in history if "guard" in h]
    t0 = time.perf_counter()
    with _eval_mode(model):
        params = tg.select(model)
        head = classifier_module(model)
        head_weight = f"{head[0]}.weight" if head and head[0] else ("weight" if head else None)
        mask = initial_mask if initial_mask is not None else Mask.ones(params)
        mask.validate(model)
        plan = sparsity_schedule(s, r_total, schedule)
        bar = tqdm(plan[initial_round:], desc=f"{info.name} rounds", unit="round", initial=initial_round,
                   total=r_total, disable=not progress or rank != 0, leave=False)
        for r, s_r in enumerate(bar, start=initial_round):
            tr = time.perf_counter()
            ctx = _context(model, params, mask, bs, ids, shape, seed, r, options)
            scores = _round_scores(info, ctx)
            notes = ctx.notes
            prev, mask = mask, Mask.from_scores(scores, s_r, scope)
            change = None
            if guard:
                mask, change = guard_round(model, prev, mask, {k: v.cpu() for k, v in scores.items()}, shape,
                                           head_weight, scope)
                if change is not None:
                    guarded.append({"round": r, **change})
            if mask.kept() == 0:
                raise LayerCollapseError(
                    f"{info.name} emptied the whole mask at round {r + 1} of {r_total} (its scores on the remaining "
                    "weights tie at the threshold, e.g. all zero); "
                    "use fewer rounds, a lower sparsity or another method")
            history.append({"round": r, "sparsity": s_r, "kept": mask.kept(),
                            "seconds": round(time.perf_counter() - tr, 4),
                            **({"guard": change} if change is not None else {})})
            bar.set_postfix(density=f"{mask.density():.4f}")
            if on_round is not None:
                on_round(r + 1, mask, history)
        health = ticket_health(model, mask, shape)
    seconds = time.perf_counter() - t0
    collapsed = mask.check_collapse(fail=fail_on_collapse)
    record = {
        "method": info.name,
        "method_options": options,
        "sparsity": s,
        "density": 1.0 - s,
        "rounds": r_total,
        "schedule": schedule,
        "scope": scope,
        "seed": seed,
        "targets": tg.to_dict(),
        "kept": mask.kept(),
        "total": mask.total(),
        "achieved_sparsity": mask.sparsity(),
        "per_layer": [{"name": rw.name, "shape": list(rw.shape), "kept": rw.kept, "total": rw.total,
                       "density": rw.density, "alive_outputs": rw.alive_outputs, "outputs": rw.outputs}
                      for rw in mask.report()],
        "collapsed_layers": collapsed,
        "health": health.to_dict(),
        "guard": {"enabled": bool(guard), "rounds_changed": len(guarded),
                  "restored": sum(g["restored"] for g in guarded), "removed": sum(g["removed"] for g in guarded),
                  "changes": guarded},
        "warnings": warns,
        "method_notes": notes,  # what the method reported in its last round (PX: gate-scored layers)
        "num_batches": len(bs) if world == 1 else None,
        "processes": world,
        # CPU kernels sum in a thread-count-dependent order and iterative methods amplify rounding: a mask is
        # reproducible for the same device, process layout and threads per process (see README).
        "torch_threads": torch.get_num_threads(),
        "device": str(next(model.parameters()).device),
        "seconds": round(seconds, 3),
        "mask_sha256": mask.sha256(),
        "versions": library_versions(),
    }
    return PruneResult(mask, record, history)


def _zero_gamma_warnings(model: nn.Module) -> list[str]:
    """BatchNorm layers whose scale is all zero (timm's ``zero_init_last`` random init) block every path through
    them: NTK-based scores of the layers feeding them are exactly zero and iterative methods remove those layers."""
    from .masking.targets import BATCHNORM_TYPES

    zero = [n for n, m in model.named_modules()
            if isinstance(m, BATCHNORM_TYPES) and m.affine and m.weight is not None and not torch.any(m.weight != 0)]
    if not zero:
        return []
    return [f"{len(zero)} BatchNorm layer(s) have all-zero scale (e.g. {zero[0]}; timm's zero_init_last random init): "
            "paths through them carry nothing, so data/NTK-based scores of the layers before them are zero and those "
            "layers get pruned away. Prune pretrained weights, or create the model with zero_init_last=False."]
