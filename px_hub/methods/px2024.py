"""PX as the official code first published it (iurada/px-ntk-pruning, commit 82ce2bf, April 2024), most likely
the code behind the paper's numbers. Defined in ``px-reference/README.md``, "PX as first published (px2024)".

One round, per pruning batch x (every BatchNorm normalises with the batch's own statistics in both views; the
model's running buffers are never read nor updated):
  z1 = J(x): the network's own logits with weights θ ⊙ m (the release's J replays A's gates on A's own weights,
       so J *is* the real network; its attempt to set J's weights to the mask has no effect). No gradient.
  z2 = K(x): every Conv/Linear weight, the classifier's included, is the leaf ψ = (θ ⊙ m)²; Conv/Linear biases
       squared; BatchNorm γ, β unchanged; activations the identity; gradient through K's batch statistics.
  R  = Σ_batches Σ_{n,c} z1[n,c] · z2[n,c].
Score s_i = |∂R/∂ψ_i · ψ_i · θ_i · θ_i²| = |θ_i|⁵ · |∂R/∂ψ_i| (no normalisation; the release's product, in its
order). Because J and K both depend on how samples are grouped into batches, the per-batch gradients are summed
(float64) and then summed across processes, as ``px``'s ``k_batch="full"`` path does.

Cost per batch: one train-mode forward (J) and one forward+backward (K) at the batch size. Option ``arithmetic``:
``"fast"`` (default) runs both views in channels_last, oneDNN's fast convolution layout (a round costs ~1.3x a
``px`` round on the fixture, against ~2.2x in the default layout); ``"official"`` keeps the default memory layout,
the release's arithmetic, which the 100-round fixture mask needs. Rounding matters here. On the fixture's round 1
the fast path is within 8.6e-4 of each layer's maximum score (the official path 2.0e-4, float64 6.0e-4: K's
gradient passes through batch statistics, which cancel). 100 rounds amplify rounding: with only J in channels_last
the final mask kept 591 weights in stage 1, against 1,108 in the official layout and 998-1,342 for the release's
own rounding-only variants; the fast path's tickets are therefore other rounding variants, not the fixture's.
"""
from __future__ import annotations

import torch

from ..errors import InvalidArgumentError
from ..masking.targets import param_name, weight_params
from .context import ScoringContext, accumulate_grads, channels_last
from .registry import register_method
from .views import BatchStats, Linearizer


def _k_params(ctx: ScoringContext) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """K's overrides (ψ = (θ ⊙ m)² for every Conv/Linear weight, b² for their biases) and the target leaves."""
    k, leaves = {}, {}
    modules = dict(ctx.model.named_modules())
    for name, attr, battr in weight_params(ctx.model):  # Conv/Linear, and attention's packed input projection
        wname = param_name(name, attr)
        w = ctx.masked(wname) if wname in ctx.targets else getattr(modules[name], attr)
        psi = w.detach().pow(2)
        if wname in ctx.targets:
            psi.requires_grad_(True)
            leaves[wname] = psi
        k[wname] = psi
        if battr is not None:
            k[param_name(name, battr)] = getattr(modules[name], battr).detach().pow(2)
    return k, leaves


def _j_params(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    return {n: ctx.masked(n).detach() for n in ctx.targets}


ARITHMETIC = ("fast", "official")


@register_method("px_2024", label="PX as first published (official code, April 2024)",
                 needs_data=True, default_rounds=100, options={"arithmetic": "fast"},
                 paper="Iurada et al., CVPR 2024 (first official release, commit 82ce2bf)",
                 description="PX as first published: z1 = the network's own logits, K on x, batch statistics, |θ|⁵")
def px_2024(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """PX as the first public release computes it (batch statistics in every view; score |θ|⁵ · |∂R/∂ψ|)."""
    arithmetic = ctx.options.get("arithmetic", "fast")
    if arithmetic not in ARITHMETIC:
        raise InvalidArgumentError(f"px_2024 option arithmetic must be one of {', '.join(ARITHMETIC)}, "
                                   f"got {arithmetic!r}")
    fast = arithmetic == "fast"
    ctx.require_live_head("px_2024")
    j_params = _j_params(ctx)
    k_params, leaves = _k_params(ctx)
    if fast:
        j_params = {n: channels_last(v) for n, v in j_params.items()}
        leaves = {n: channels_last(v.detach()).requires_grad_(True) for n, v in leaves.items()}
        k_params = {n: leaves[n] if n in leaves else channels_last(v) for n, v in k_params.items()}
    names = list(leaves)
    acc = {n: torch.zeros(v.shape, dtype=torch.float64, device=v.device) for n, v in leaves.items()}
    for x, _y in ctx.batches:
        x = channels_last(x) if fast else x
        with torch.no_grad(), BatchStats():
            z1 = ctx.call(j_params, x)
        with Linearizer(batch_stats=True, model=ctx.model) as lin:  # the input is the path K linearises
            z2 = ctx.call(k_params, lin.mark(x.view_as(x)))
        r = (z1 * z2).sum()
        accumulate_grads(acc, r, leaves)
    out = {}
    for n in names:
        g = ctx.reduce_sum(acc[n]).to(leaves[n].dtype)
        w = j_params[n]
        out[n] = (g * leaves[n].detach() * w * w.pow(2)).abs().contiguous()
    return out
