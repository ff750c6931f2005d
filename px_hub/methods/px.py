"""PX, Path eXclusion (Iurada et al., CVPR 2024), exactly as px-spec.md defines it.

One round: R = Σ_c Z1[c] · z2[c], where
  Z1 = Σ over pruning samples of z1 = J(x²) (weights = mask, biases 1, head real, BN batch statistics, activations
       replaced by A's gates recorded on the real masked network in eval mode on x), and
  z2 = K(1) at batch size 1 (weights ψ = (θ⊙m)², biases squared, head ψ = θ⊙m, activations = identity; BN in eval
       mode for ``px``, batch statistics for ``px_official``).
Score s_i = |∂R/∂ψ_i| · (θ_i m_i)². K sees no data, so z2 is the same row for every sample and batch size: one
forward+backward of K at batch 1 per round is exact (the spec's "useful facts").

Across processes, each rank computes Z1 of its own whole batches, *per batch*; the per-batch vectors are
gathered and summed in global batch order (float64), so any process count gives bit-identical scores.
"""
from __future__ import annotations

import torch

from ..masking.targets import weighted_modules
from .context import ScoringContext
from .registry import register_method
from .views import GateRecorder, GateReplayer, Linearizer


def _view_params(ctx: ScoringContext):
    """Parameter overrides for A, J and K, plus the K leaves whose gradients give the scores."""
    head = ctx.head_name()
    a, j, k, leaves = {}, {}, {}, {}
    for name, mod in weighted_modules(ctx.model):
        wname = f"{name}.weight" if name else "weight"
        w = ctx.masked(wname) if wname in ctx.targets else mod.weight
        a[wname] = w
        is_head = name == head
        if is_head:
            j[wname] = w
            psi = w.detach().clone()
        else:
            j[wname] = (ctx.mask[wname].to(w.dtype) if wname in ctx.targets
                        else torch.ones_like(mod.weight))
            psi = w.detach().pow(2)
        if wname in ctx.targets:
            psi.requires_grad_(True)
            leaves[wname] = psi
        k[wname] = psi
        if getattr(mod, "bias", None) is not None:
            bname = f"{name}.bias" if name else "bias"
            if not is_head:
                j[bname] = torch.ones_like(mod.bias)
                k[bname] = mod.bias.detach().pow(2)
    return a, j, k, leaves


def _px_scores(ctx: ScoringContext, k_batch_stats: bool, exact: bool = False) -> dict[str, torch.Tensor]:
    a_params, j_params, k_params, leaves = _view_params(ctx)
    if exact:
        return _px_scores_official_arithmetic(ctx, k_batch_stats, a_params, j_params, k_params, leaves)
    per_batch: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for bid, (x, _y) in zip(ctx.batch_ids, ctx.batches):
            rec = GateRecorder()
            with rec:
                ctx.call(a_params, x)
            rep = GateReplayer(rec.gates, batch_stats=True)
            with rep:
                z1 = ctx.call(j_params, x.pow(2))
            rep.finish()
            per_batch[bid] = z1.sum(dim=0, dtype=torch.float64)
    parts = ctx.gather_by_id(per_batch)
    if not parts:
        raise RuntimeError("PX needs at least one pruning batch")
    z1_total = parts[0].clone()
    for p in parts[1:]:
        z1_total += p
    ones = torch.ones((1, *ctx.input_shape), device=ctx.device, dtype=ctx.dtype)
    with Linearizer(batch_stats=k_batch_stats):
        z2 = ctx.call(k_params, ones)
    r = (z1_total.to(z2.dtype) * z2[0]).sum()
    names = list(leaves)
    grads = torch.autograd.grad(r, [leaves[n] for n in names], allow_unused=True)
    out = {}
    for n, g in zip(names, grads):
        w = ctx.masked(n).detach()
        out[n] = torch.zeros_like(w) if g is None else g.abs() * w.pow(2)
    return out


def _px_scores_official_arithmetic(ctx, k_batch_stats, a_params, j_params, k_params, leaves):
    grads = {n: torch.zeros_like(v) for n, v in leaves.items()}
    names = list(leaves)
    for x, _y in ctx.batches:
        with torch.no_grad():
            rec = GateRecorder()
            with rec:
                ctx.call(a_params, x)
            rep = GateReplayer(rec.gates, batch_stats=True)
            with rep:
                z1 = ctx.call(j_params, x.pow(2))
        with Linearizer(batch_stats=k_batch_stats):
            z2 = ctx.call(k_params, torch.ones_like(x))
        r = (z1 * z2).sum()
        for n, g in zip(names, torch.autograd.grad(r, [leaves[n] for n in names], allow_unused=True)):
            if g is not None:
                grads[n] += g
    return {n: grads[n].abs() * ctx.masked(n).detach().pow(2) for n in names}


@register_method("px", needs_data=True, default_rounds=100,
                 paper="Iurada et al., Finding Lottery Tickets in Vision Models via Data-driven Spectral Foresight "
                       "Pruning, CVPR 2024",
                 description="PX: path kernel (K, BatchNorm in eval mode: well-posed) x path activations (J)")
def px(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """PX with K's BatchNorm in eval mode (running statistics): px-hub's default, well-posed."""
    return _px_scores(ctx, k_batch_stats=False)


@register_method("px_official", needs_data=True, default_rounds=100,
                 paper="Iurada et al., CVPR 2024 (official code, commit ed6c40e)",
                 description="PX as the official code computes it (K with batch statistics: float32-noise dominated)")
def px_official(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """PX exactly as the official code: K's BatchNorm normalises the all-ones batch with its own statistics,
    which makes ∂R/∂ψ zero in exact arithmetic (see px-spec.md); kept to reproduce published pipelines."""
    return _px_scores(ctx, k_batch_stats=True)
