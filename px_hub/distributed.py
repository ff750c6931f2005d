"""Cross-process reductions used while scoring. Works with any initialised ``torch.distributed`` process group
(``accelerate launch``, ``torchrun``; gloo on CPU, NCCL on GPUs); a no-op in a single process."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .errors import DataError, InvalidArgumentError


def cpu_requested() -> bool:
    """``ACCELERATE_USE_CPU`` (set by ``accelerate launch --cpu``, ``accelerate.debug_launcher``, or by hand).
    accelerate (1.15) honours it only when passed explicitly: ``PartialState()``/``Accelerator()`` would otherwise
    report one process per launched process on CPU although torch.distributed spans them all."""
    return os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "true", "yes")


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return rank_world()[0] == 0


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum across processes in float64 (identical bits on every rank)."""
    out = t.to(torch.float64).clone()
    if rank_world()[1] > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def gather_by_id(items: dict[int, torch.Tensor]) -> list[torch.Tensor]:
    """All ranks' ``{global batch id: tensor}`` merged and returned in id order, so a sum over the result is the
    same, bit for bit, whatever the number of processes."""
    if rank_world()[1] > 1:
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, {k: v.detach().cpu() for k, v in items.items()})
        merged: dict[int, torch.Tensor] = {}
        for p in parts:
            dup = merged.keys() & p.keys()
            if dup:
                raise InvalidArgumentError(f"batch ids {sorted(dup)[:3]} were scored by more than one process; "
                                           "give each process distinct batch_ids")
            merged.update(p)
        device = next(iter(items.values())).device if items else torch.device("cpu")
        return [merged[k].to(device) for k in sorted(merged)]
    return [items[k] for k in sorted(items)]


def shard(seq, rank: int | None = None, world: int | None = None) -> tuple[list, list[int]]:
    """This process's share of ``seq`` (pruning batches), round-robin by whole item: rank ``r`` of ``w`` takes
    items ``r, r + w, r + 2w, ...``; returns the items and their global indices. ``rank``/``world`` default to the
    torch.distributed process group (one process: everything).

    PX's J view normalises with each batch's statistics, so a distributed run must form exactly the batches a single
    process would and give each rank whole batches. The indices are the global batch ids :func:`px_hub.prune`
    assumes by default (``i * world + rank`` for the rank's i-th batch), so the per-batch totals it gathers are
    summed in the single-process order and every rank thresholds the same numbers."""
    r, w = rank_world()
    rank = r if rank is None else rank
    world = w if world is None else world
    if world < 1 or not 0 <= rank < world:
        raise InvalidArgumentError(f"need 0 <= rank < world, got rank={rank}, world={world}")
    seq = list(seq)
    if len(seq) < world:
        raise DataError(f"{len(seq)} batches cannot be shared by {world} processes (each needs at least one whole "
                        "batch); use a smaller --batch-size or fewer processes")
    ids = list(range(rank, len(seq), world))
    return [seq[i] for i in ids], ids
