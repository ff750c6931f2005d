"""Sharing whole batches between processes for distributed scoring.

PX's J view normalises with each batch's statistics, so a distributed run must form exactly the batches a single
process would and give each rank whole batches: rank ``r`` of ``w`` takes batches ``r, r + w, r + 2w, …``
(round-robin, :func:`px_hub.distributed.shard`). These are the global batch ids :func:`px_hub.prune` assumes by
default (``i * world + rank`` for the rank's i-th batch), so the per-batch totals it gathers are summed in the
single-process order and every rank thresholds the same numbers.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from ..distributed import rank_world, shard
from ..errors import DataError, InvalidArgumentError

T = TypeVar("T")


def shard_batches(batches: Sequence[T], rank: int | None = None, world: int | None = None) -> list[T]:
    """This rank's share of ``batches``, round-robin by whole batch. ``rank``/``world`` default to the
    torch.distributed process group (one process: all batches)."""
    if rank is None or world is None:
        r, w = rank_world()
        rank = r if rank is None else rank
        world = w if world is None else world
    if world < 1 or not 0 <= rank < world:
        raise InvalidArgumentError(f"need 0 <= rank < world, got rank={rank}, world={world}")
    batches = list(batches)
    if len(batches) < world:
        raise DataError(f"{len(batches)} batches cannot be shared by {world} processes (each needs at least one "
                        "whole batch); use a smaller --batch-size or fewer processes")
    return shard(batches, rank, world)[0]
