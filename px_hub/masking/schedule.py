"""Sparsity schedules: the fraction of prunable weights removed after each round."""
from __future__ import annotations

from ..errors import InvalidArgumentError

SCHEDULES = ("exponential", "linear")


def sparsity_schedule(sparsity: float, rounds: int, schedule: str = "exponential") -> list[float]:
    """Sparsity after round r (0-based) of ``rounds``. Exponential (the paper's): density d_r = d ** ((r + 1) / R),
    i.e. s_r = 1 - d_r; linear: s_r = s * (r + 1) / R. The last entry is ``sparsity`` itself, exactly, so the
    final mask keeps N - floor(s * N) weights (fewer only by ties at the threshold)."""
    if rounds < 1:
        raise InvalidArgumentError(f"rounds must be >= 1, got {rounds}")
    d = 1.0 - sparsity
    if schedule == "exponential":
        out = [1.0 - d ** ((r + 1) / rounds) for r in range(rounds)]
    elif schedule == "linear":
        out = [sparsity * (r + 1) / rounds for r in range(rounds)]
    else:
        raise InvalidArgumentError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    out[-1] = sparsity
    return out
