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

Option ``k_batch``: ``"one"`` (default for ``px``) is the batch-1 K above; ``"full"`` (default for
``px_official``) evaluates K on a batch of ones as large as each data batch and R = Σ z1 ⊙ z2, the official
code's arithmetic, which reproduces its float32 rounding and hence its 100-round masks bit for bit. The two are
equal in exact arithmetic; they differ only by rounding, which 100 rounds of iterative PX amplify.
"""
from __future__ import annotations

import torch

from ..errors import DataError, InvalidArgumentError
from ..masking.targets import param_name, weight_params
from .context import ScoringContext, accumulate_grads, channels_last
from .registry import register_method
from .views import GATE_MODES, GateRecorder, GateReplayer, Linearizer

# A and J are rerun in float64 when Z1's condition number times the model's machine epsilon exceeds this (float32:
# condition > ~84). Measured: f32-vs-f64 score error ~ 2-4x condition x eps; condition 1-300 on timm families at
# random init, 3.5e5 on efficientnet_b0 (whose scores then disagreed by 0.16 of a layer's maximum).
Z1_CANCELLATION_LIMIT = 1e-5
# Option ``precision`` (A and J; k_batch="one"): "auto" = the rule above; "float64" = always. The rule sees the
# cancellation in Z1's final sum, not rounding that builds up through depth (convmixer_768_32: condition 10, float32
# scores 2.0e-4 of a layer's maximum from float64) or a gate at its step (mobilenetv2_050: 2.5e-4; a 1e-6 relative
# input perturbation moves even float64 scores that much); "float64" brings both to ~1.2e-6, at the cost of float64
# forwards for A and J.
PRECISIONS = ("auto", "float64")


def _view_params(ctx: ScoringContext):
    """Parameter overrides for A, J and K, plus the K leaves whose gradients give the scores."""
    head = ctx.head_name()
    modules = dict(ctx.model.named_modules())
    a, j, k, leaves = {}, {}, {}, {}
    for name, attr, battr in weight_params(ctx.model):
        weight = getattr(modules[name], attr)
        wname = param_name(name, attr)
        w = ctx.masked(wname) if wname in ctx.targets else weight
        a[wname] = w
        is_head = name == head
        if is_head:
            j[wname] = w
            psi = w.detach().clone()
        else:
            j[wname] = (ctx.float_mask(wname, w.dtype) if wname in ctx.targets
                        else torch.ones_like(weight))
            psi = w.detach().pow(2)
        if wname in ctx.targets:
            psi.requires_grad_(True)
            leaves[wname] = psi
        k[wname] = psi
        if battr is not None and not is_head:
            bias = getattr(modules[name], battr)
            bname = param_name(name, battr)
            j[bname] = torch.ones_like(bias)
            k[bname] = bias.detach().pow(2)
    return a, j, k, leaves


def _px_scores(ctx: ScoringContext, k_batch_stats: bool) -> dict[str, torch.Tensor]:
    k_batch = ctx.options.get("k_batch", "one")
    gate = ctx.options.get("gate", "ratio")
    if gate not in GATE_MODES:
        raise InvalidArgumentError(f"PX option gate must be one of {', '.join(GATE_MODES)}, got {gate!r}")
    aj_precision = ctx.options.get("precision", "auto")
    if aj_precision not in PRECISIONS or (aj_precision != "auto" and k_batch != "one"):
        raise InvalidArgumentError(f"PX option precision must be one of {', '.join(PRECISIONS)} (float64 with "
                                   f"k_batch='one' only), got {aj_precision!r} with k_batch={k_batch!r}")
    ctx.require_live_head("PX")
    a_params, j_params, k_params, leaves = _view_params(ctx)
    names = list(leaves)
    if k_batch == "one":
        # channels_last: oneDNN's fast convolution layout on CPU (~1.8x here), also good for cuDNN. It changes the
        # rounding, which is why the official-arithmetic path below keeps the default layout.
        precision = str(ctx.dtype).replace("torch.", "")
        if aj_precision == "float64" and ctx.dtype != torch.float64:
            z1_total, cond = _z1_sums(ctx, *_as_float64(ctx, a_params, j_params), gate)
            precision = "float64"
        else:
            z1_total, cond = _z1_sums(ctx, _channels_last(a_params), _channels_last(j_params), gate)
            if ctx.dtype != torch.float64 and cond * torch.finfo(ctx.dtype).eps > Z1_CANCELLATION_LIMIT:
                # Z1 is a small difference of large numbers (e.g. SiLU gates ~1/2 after batch-centred BatchNorm at
                # a random init): rounding in A and J would dominate the scores, so this round's A and J run in
                # float64
                z1_total, _ = _z1_sums(ctx, *_as_float64(ctx, a_params, j_params), gate)
                precision = "float64"
        ones = torch.ones((1, *ctx.input_shape), device=ctx.device, dtype=ctx.dtype)

        def k_grads(straight_through: bool):
            lin = Linearizer(batch_stats=k_batch_stats, model=ctx.model, straight_through=straight_through)
            with lin:
                z2 = ctx.call(k_params, lin.mark(ones.clone()))
            r = (z1_total.to(z2.dtype) * z2[0]).sum()
            return dict(zip(names, torch.autograd.grad(r, [leaves[n] for n in names], allow_unused=True))), lin

        grads, lin = k_grads(False)
        grads_st = k_grads(True)[0] if lin.gates_seen else None
    elif k_batch == "full":
        # The official code's arithmetic: K on a batch of ones as large as each data batch, R = Σ z1 ⊙ z2 per
        # batch. Costs a full forward+backward of K per batch, but reproduces the official float32 rounding
        # (which iterative PX amplifies: see README, "PX is chaotic in float rounding").
        acc = {n: torch.zeros_like(v, dtype=torch.float64) for n, v in leaves.items()}
        acc_st = None
        for x, _y in ctx.batches:
            z1 = _path_activations(ctx, a_params, j_params, x, gate)
            for straight_through in (False, True):
                lin = Linearizer(batch_stats=k_batch_stats, model=ctx.model, straight_through=straight_through)
                with lin:
                    z2 = ctx.call(k_params, lin.mark(torch.ones_like(x)))
                r = (z1 * z2).sum()
                if straight_through:
                    acc_st = acc_st or {n: torch.zeros_like(v, dtype=torch.float64) for n, v in leaves.items()}
                target = acc_st if straight_through else acc
                accumulate_grads(target, r, leaves)
                if not lin.gates_seen:
                    break
        grads = {n: ctx.reduce_sum(acc[n]).to(leaves[n].dtype) for n in names}
        grads_st = {n: ctx.reduce_sum(acc_st[n]).to(leaves[n].dtype) for n in names} if acc_st else None
    else:
        raise InvalidArgumentError(f"PX option k_batch must be 'one' or 'full', got {k_batch!r}")
    out, gate_scored = {}, {}
    for n in names:
        w = ctx.masked(n).detach()
        g = grads.get(n)
        g = torch.zeros_like(w) if g is None else g
        if grads_st is not None and grads_st.get(n) is not None:
            # parameters (elements) with no path through the open gates take the straight-through score
            only_gate = (g == 0) & (grads_st[n] != 0) & ctx.mask[n]
            gate_scored[n] = float(only_gate.sum()) / max(1, int(ctx.mask[n].sum()))
            g = torch.where(only_gate, grads_st[n], g)
        out[n] = g.abs() * w.pow(2)
    if k_batch == "one":
        ctx.notes["px"] = {"z1_condition": float(f"{cond:.3g}"), "z1_precision": precision}
    ctx.notes["px"] = {**ctx.notes.get("px", {}), "gate": gate, "gates_in_network": grads_st is not None,
                       "gate_scored": {n: round(f, 6) for n, f in gate_scored.items() if f > 0}}
    return out


def _z1_sums(ctx: ScoringContext, a_params, j_params, gate: str) -> tuple[torch.Tensor, float]:
    """Z1 = Σ over every process's batches of z1 (float64, summed in global batch order) and its condition number
    Σ|z1| / |Σ z1| (summed over outputs): how many times larger the terms are than their sum."""
    per_batch: dict[int, torch.Tensor] = {}
    for bid, (x, _y) in zip(ctx.batch_ids, ctx.batches):
        x = x.to(next(iter(j_params.values())).dtype)
        x = x if x.dtype == torch.float64 else channels_last(x)
        z1 = _path_activations(ctx, a_params, j_params, x, gate)
        per_batch[bid] = torch.stack([z1.sum(dim=0, dtype=torch.float64), z1.abs().sum(dim=0, dtype=torch.float64)])
    parts = ctx.gather_by_id(per_batch)
    if not parts:
        raise DataError("PX needs at least one pruning batch; pass (inputs, labels) batches")
    total = parts[0].clone()
    for p in parts[1:]:
        total += p
    signed, magnitude = float(total[0].abs().sum()), float(total[1].sum())
    cond = magnitude / signed if signed > 0 else (float("inf") if magnitude > 0 else 1.0)
    return total[0], cond


def _as_float64(ctx: ScoringContext, a_params, j_params):
    """A's and J's overrides in float64, with every other floating parameter and buffer of the model too."""
    rest = {n: t.detach().double() for n, t in [*ctx.model.named_parameters(), *ctx.model.named_buffers()]
            if t.is_floating_point()}
    return ({**rest, **{n: t.detach().double() for n, t in a_params.items()}},
            {**rest, **{n: t.detach().double() for n, t in j_params.items()}})


def _channels_last(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: channels_last(v) for k, v in params.items()}


@torch.no_grad()
def _path_activations(ctx: ScoringContext, a_params, j_params, x: torch.Tensor, gate: str = "ratio") -> torch.Tensor:
    """z1 = J(x²) with A's gates (A: the real masked network on x, eval mode). No gradient flows through J."""
    rec = GateRecorder(model=ctx.model, gate=gate)
    with rec:
        rec.check_output(ctx.call(a_params, rec.mark(x.view_as(x))))
    rep = GateReplayer(rec.gates, batch_stats=True, model=ctx.model)
    with rep:
        z1 = ctx.call(j_params, rep.mark(x.pow(2)))
    rep.finish()
    return z1


@register_method("px", label="PX (Path eXclusion, CVPR 2024)",
                 needs_data=True, default_rounds=100,
                 options={"k_batch": "one", "gate": "ratio", "precision": "auto"},
                 paper="Iurada et al., Finding Lottery Tickets in Vision Models via Data-driven Spectral Foresight "
                       "Pruning, CVPR 2024",
                 description="PX: path kernel (K, BatchNorm in eval mode: well-posed) x path activations (J)")
def px(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """PX with K's BatchNorm in eval mode (running statistics): px-spec.md's well-posed PX."""
    return _px_scores(ctx, k_batch_stats=False)


@register_method("px_official", label="PX as in the official code (batch-statistics variant)",
                 needs_data=True, default_rounds=100,
                 options={"k_batch": "full", "gate": "ratio", "precision": "auto"},
                 paper="Iurada et al., CVPR 2024 (official code, commit ed6c40e)",
                 description="PX as the official code computes it (K with batch statistics: float32-noise dominated)")
def px_official(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """PX exactly as the official code: K's BatchNorm normalises the all-ones batch with its own statistics,
    which makes ∂R/∂ψ zero in exact arithmetic (see px-spec.md); kept to reproduce published pipelines."""
    return _px_scores(ctx, k_batch_stats=True)
