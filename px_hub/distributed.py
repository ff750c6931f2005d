"""Cross-process reductions used while scoring. Works with any initialised ``torch.distributed`` process group
(``accelerate launch``, ``torchrun``; gloo on CPU, NCCL on GPUs); a no-op in a single process."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


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
                raise RuntimeError(f"batch ids {sorted(dup)[:3]} were scored by more than one process")
            merged.update(p)
        device = next(iter(items.values())).device if items else torch.device("cpu")
        return [merged[k].to(device) for k in sorted(merged)]
    return [items[k] for k in sorted(items)]


def shard(seq: list, rank: int | None = None, world: int | None = None) -> tuple[list, list[int]]:
    """Round-robin whole items (batches) over processes: rank r takes items r, r + W, ...; returns the items and
    their global indices."""
    r, w = rank_world() if rank is None or world is None else (rank, world)
    ids = list(range(r, len(seq), w))
    return [seq[i] for i in ids], ids
