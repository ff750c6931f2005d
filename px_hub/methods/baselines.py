"""Baseline scoring methods, as the official PX code computes them (px-spec.md, "Baselines")."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..masking.targets import BATCHNORM_TYPES, WEIGHTED_TYPES
from .context import ScoringContext, accumulate_grads, call_with
from .registry import register_method
from .views import BatchStats


@register_method("random", label="random pruning",
                 needs_data=False, default_rounds=1, signed=True,
                 description="Random scores ~ N(0, 1) (seeded)")
def random_scores(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    g = ctx.generator()
    return {n: torch.randn(p.shape, generator=g, dtype=torch.float32).to(ctx.device) for n, p in ctx.targets.items()}


@register_method("magnitude", label="magnitude pruning",
                 needs_data=False, default_rounds=1, description="|θ|")
def magnitude(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    return {n: ctx.masked(n).detach().abs() for n in ctx.targets}


def _leaves(ctx: ScoringContext, transform=lambda t: t):
    """Leaf tensors (one per target, requiring grad) and a function giving the masked overrides built from them
    (rebuilt for every forward, so each forward has its own graph)."""
    leaves = {n: transform(p.detach()).clone().requires_grad_(True) for n, p in ctx.targets.items()}
    return leaves, lambda: {n: ctx.masked(n, v) for n, v in leaves.items()}


@register_method("snip", label="SNIP",
                 needs_data=True, default_rounds=1, paper="Lee et al., SNIP, ICLR 2019",
                 description="|∂L/∂m| = |∇θL ⊙ θ| (train-mode BatchNorm), normalised to sum 1")
def snip(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    leaves, params = _leaves(ctx)
    grads = {n: torch.zeros_like(v, dtype=torch.float64) for n, v in leaves.items()}
    names = list(leaves)
    for x, y in ctx.batches:
        with BatchStats():
            loss = F.cross_entropy(ctx.call(params(), x), y)
        accumulate_grads(grads, loss, leaves)
    scores = {}
    for n in names:
        g = ctx.reduce_sum(grads[n]).to(leaves[n].dtype)
        scores[n] = (g * leaves[n].detach() * ctx.mask[n]).abs()
    norm = sum(s.sum(dtype=torch.float64) for s in scores.values())
    return {n: s / norm.to(s.dtype) for n, s in scores.items()}


@register_method("grasp", label="GraSP",
                 needs_data=True, default_rounds=1, signed=True, paper="Wang et al., GraSP, ICLR 2020",
                 description="Hg ⊙ θ with temperature 200 (train-mode BatchNorm), keep the largest")
def grasp(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    temp, eps = 200.0, 1e-10
    leaves, params = _leaves(ctx)
    names = list(leaves)
    first = {n: torch.zeros_like(v, dtype=torch.float64) for n, v in leaves.items()}
    for x, y in ctx.batches:
        with BatchStats():
            loss = F.cross_entropy(ctx.call(params(), x) / temp, y)
        accumulate_grads(first, loss, leaves)
    stopped = {n: ctx.reduce_sum(first[n]).to(leaves[n].dtype) for n in names}
    hg = {n: torch.zeros_like(v, dtype=torch.float64) for n, v in leaves.items()}
    for x, y in ctx.batches:
        with BatchStats():
            loss = F.cross_entropy(ctx.call(params(), x) / temp, y)
        grads = torch.autograd.grad(loss, [leaves[n] for n in names], create_graph=True, allow_unused=True)
        z = sum((stopped[n] * g).sum() for n, g in zip(names, grads) if g is not None)
        for n, h in zip(names, torch.autograd.grad(z, [leaves[n] for n in names], allow_unused=True)):
            if h is not None:
                hg[n] += h
    scores = {n: ctx.reduce_sum(hg[n]).to(leaves[n].dtype) * leaves[n].detach() * ctx.mask[n] for n in names}
    norm = sum(s.sum(dtype=torch.float64) for s in scores.values()).abs() + eps
    return {n: s / norm.to(s.dtype) for n, s in scores.items()}


def _all_tensors(model: nn.Module, fn) -> dict[str, torch.Tensor]:
    out = {n: fn(p.detach()) for n, p in model.named_parameters()}
    out.update({n: fn(b) if b.is_floating_point() else b for n, b in model.named_buffers()})
    return out


@register_method("synflow", label="SynFlow",
                 needs_data=False, default_rounds=100, paper="Tanaka et al., SynFlow, NeurIPS 2020",
                 description="|θ ⊙ ∂R/∂θ| on |θ|, input ones, R = Σ outputs (eval mode)")
def synflow(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    tensors = _all_tensors(ctx.model, torch.abs)
    leaves, masked = _leaves(ctx, torch.abs)
    tensors.update(masked())
    r = ctx.call(tensors, torch.ones((1, *ctx.input_shape), device=ctx.device, dtype=ctx.dtype)).sum()
    names = list(leaves)
    grads = torch.autograd.grad(r, [leaves[n] for n in names], allow_unused=True)
    return {n: torch.zeros_like(leaves[n]) if g is None else (g * leaves[n].detach()).abs()
            for n, g in zip(names, grads)}


@register_method("synflow_l2", label="SynFlow (L2)",
                 needs_data=False, default_rounds=100, paper="PX paper ablation (SynFlow-L2)",
                 description="|∂R/∂ψ ⊙ θ| on ψ = θ² (all parameters and buffers squared), input ones")
def synflow_l2(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    tensors = _all_tensors(ctx.model, lambda t: t.pow(2))
    leaves, masked = _leaves(ctx, lambda t: t.pow(2))
    tensors.update(masked())
    r = ctx.call(tensors, torch.ones((1, *ctx.input_shape), device=ctx.device, dtype=ctx.dtype)).sum()
    names = list(leaves)
    grads = torch.autograd.grad(r, [leaves[n] for n in names], allow_unused=True)
    return {n: torch.zeros_like(leaves[n]) if g is None else (g * ctx.targets[n].detach()).abs()
            for n, g in zip(names, grads)}


@register_method("ntk_sap", label="NTK-SAP",
                 needs_data=False, default_rounds=100, paper="Wang et al., NTK-SAP, ICLR 2023",
                 description="|∂/∂m Σ‖f(x;θ⊙m) − f(x;(θ+εξ)⊙m)‖²| at a fresh random init and random inputs",
                 options={"epsilon": 0.01, "resamples": 1})
def ntk_sap(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """NTK-SAP on a private copy (it re-initialises weights; the caller's model is never touched)."""
    epsilon, resamples = float(ctx.options["epsilon"]), int(ctx.options["resamples"])
    g = ctx.generator()
    names = list(ctx.targets)
    mvars = {n: ctx.mask[n].to(ctx.dtype).clone().requires_grad_(True) for n in names}
    batch = ctx.batches[0][0].shape[0] if ctx.batches else 1
    work = copy.deepcopy(ctx.model)
    totals = {n: torch.zeros_like(m) for n, m in mvars.items()}
    for _ in range(resamples):
        init = {}
        with torch.no_grad():
            for name, mod in work.named_modules():
                if isinstance(mod, WEIGHTED_TYPES) and mod.weight is not None:
                    w = torch.empty(mod.weight.shape, dtype=torch.float32)
                    fan_in = w[0].numel()
                    w.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=g)  # kaiming_normal_, fan_in, relu gain
                    init[f"{name}.weight" if name else "weight"] = w.to(ctx.device, ctx.dtype)
                elif isinstance(mod, BATCHNORM_TYPES) and mod.affine:
                    mod.weight.fill_(1.0)
                    mod.bias.zero_()
            x = torch.randn((batch, *ctx.input_shape), generator=g, dtype=torch.float32).to(ctx.device, ctx.dtype)
            noise = {n: epsilon * torch.randn(init[n].shape, generator=g,
                                              dtype=torch.float32).to(ctx.device, ctx.dtype)
                     for n in names}
            # BN statistics reset and estimated on this input (momentum 1) by the masked, unperturbed network
            base = {n: init[n] * ctx.mask[n].to(ctx.dtype) if n in ctx.mask else init[n] for n in init}
            for mod in work.modules():
                if isinstance(mod, BATCHNORM_TYPES) and mod.track_running_stats:
                    mod.reset_running_stats()
                    mod.momentum = 1.0
            work.train()
            call_with(work, base, x)
            work.eval()
        p1 = dict(init)
        p2 = dict(init)
        for n in names:
            p1[n] = init[n] * mvars[n]
            p2[n] = (init[n] + noise[n]) * mvars[n]
        j = (torch.linalg.vector_norm(call_with(work, p1, x) - call_with(work, p2, x), dim=-1) ** 2).sum()
        for n, gm in zip(names, torch.autograd.grad(j, [mvars[n] for n in names], allow_unused=True)):
            if gm is not None:
                totals[n] += gm
    return {n: (totals[n] * ctx.mask[n]).abs().detach() for n in names}
