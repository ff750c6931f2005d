"""A frozen copy of px-hub's PX before the generalized path views (commit 9c48a2a, px_hub/methods/views.py and
px.py), registered as ``px_legacy_test`` so tests can check that the generalized ``px`` gives bit-identical scores
on ReLU-family networks. Test-only; not part of the package."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from px_hub.errors import InvalidArgumentError, UnsupportedModelError
from px_hub.masking.targets import weighted_modules
from px_hub.methods.context import ScoringContext
from px_hub.methods.registry import _REGISTRY, register_method

# func -> (kind, positional index of inplace flag or None, default lo, default hi)
_RELU = {F.relu, torch.relu, torch.Tensor.relu}
_RELU_ = {torch.relu_, torch.Tensor.relu_, F.relu_}
_LEAKY = {F.leaky_relu}
_LEAKY_ = {F.leaky_relu_}
_RELU6 = {F.relu6}
_HARDTANH = {F.hardtanh}
_HARDTANH_ = {F.hardtanh_}
_ACTIVATIONS = _RELU | _RELU_ | _LEAKY | _LEAKY_ | _RELU6 | _HARDTANH | _HARDTANH_

# Nonlinearities PX has no path view for (the gate decomposition needs piecewise-linear, zero-at-zero units).
_UNSUPPORTED = {
    F.gelu: "GELU", F.silu: "SiLU", F.mish: "Mish", F.hardswish: "HardSwish", F.hardsigmoid: "HardSigmoid",
    F.elu: "ELU", F.selu: "SELU", F.celu: "CELU", F.softplus: "Softplus", torch.sigmoid: "Sigmoid",
    torch.Tensor.sigmoid: "Sigmoid", F.sigmoid: "Sigmoid", torch.tanh: "Tanh", torch.Tensor.tanh: "Tanh",
    F.tanh: "Tanh", F.softmax: "Softmax", torch.softmax: "Softmax", torch.Tensor.softmax: "Softmax",
}
_BATCH_NORM = F.batch_norm


def _arg(args, kwargs, i, name, default):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _parse_activation(func, args, kwargs):
    """-> (input, inplace, lo, hi): the gate is 1[lo < u < hi]."""
    u = args[0] if args else kwargs["input"]
    inf = float("inf")
    if func in _RELU:
        return u, bool(_arg(args, kwargs, 1, "inplace", False)), 0.0, inf
    if func in _RELU_:
        return u, True, 0.0, inf
    if func in _LEAKY:  # the official code gates LeakyReLU like ReLU: 1[u > 0]
        return u, bool(_arg(args, kwargs, 2, "inplace", False)), 0.0, inf
    if func in _LEAKY_:
        return u, True, 0.0, inf
    if func in _RELU6:
        return u, bool(_arg(args, kwargs, 1, "inplace", False)), 0.0, 6.0
    if func in _HARDTANH or func in _HARDTANH_:
        lo = float(_arg(args, kwargs, 1, "min_val", -1.0))
        hi = float(_arg(args, kwargs, 2, "max_val", 1.0))
        inplace = True if func in _HARDTANH_ else bool(_arg(args, kwargs, 3, "inplace", False))
        if lo != 0.0:
            raise UnsupportedModelError(
                f"PX needs ReLU-family activations (gate at 0); this model uses hardtanh({lo}, {hi})")
        return u, inplace, lo, hi
    raise AssertionError(func)


def _gate(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    g = u > lo
    if hi != float("inf"):
        g &= u < hi
    return g


def _batch_stats_batch_norm(args, kwargs):
    """F.batch_norm normalising with the batch's own statistics, never reading or updating running buffers."""
    names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
    bound = {n: _arg(args, kwargs, i, n, d) for i, (n, d) in
             enumerate(zip(names, (None, None, None, None, None, False, 0.1, 1e-5)))}
    return _BATCH_NORM(bound["input"], None, None, bound["weight"], bound["bias"], True, bound["momentum"],
                       bound["eps"])


class _ViewMode(TorchFunctionMode):
    batch_stats = False
    view = "?"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _ACTIVATIONS:
            return self.activation(func, args, kwargs)
        if func is _BATCH_NORM and self.batch_stats:
            return _batch_stats_batch_norm(args, kwargs)
        if func in _UNSUPPORTED:
            raise UnsupportedModelError(
                f"PX has no path view for {_UNSUPPORTED[func]} activations (it needs ReLU, ReLU6 or LeakyReLU); "
                "use a ReLU-family backbone or a data-free method such as --method synflow")
        return func(*args, **kwargs)

    def activation(self, func, args, kwargs):
        raise NotImplementedError


class GateRecorder(_ViewMode):
    """View A: the real network; records 1[lo < u < hi] at each activation."""

    view = "A"

    def __init__(self):
        super().__init__()
        self.gates: list[torch.Tensor] = []

    def activation(self, func, args, kwargs):
        u, _inplace, lo, hi = _parse_activation(func, args, kwargs)
        self.gates.append(_gate(u, lo, hi))  # before the call: an in-place activation overwrites u
        return func(*args, **kwargs)


class GateReplayer(_ViewMode):
    """View J: activation u -> u * g with A's gate at the same call (in call order)."""

    view = "J"

    def __init__(self, gates: list[torch.Tensor], batch_stats: bool = True):
        super().__init__()
        self.gates, self.i, self.batch_stats = gates, 0, batch_stats

    def activation(self, func, args, kwargs):
        u, inplace, _lo, _hi = _parse_activation(func, args, kwargs)
        if self.i >= len(self.gates) or self.gates[self.i].shape != u.shape:
            raise UnsupportedModelError(
                "PX could not replay activation gates: the network ran a different sequence of activations in its "
                "path-activation view than on real data (data-dependent control flow?)")
        g = self.gates[self.i].to(u.dtype)
        self.gates[self.i] = None  # free as we go
        self.i += 1
        return u.mul_(g) if inplace else u * g

    def finish(self) -> None:
        if self.i != len(self.gates):
            raise UnsupportedModelError(
                f"PX replayed {self.i} of {len(self.gates)} activation gates: the views diverged")


class Linearizer(_ViewMode):
    """View K: every activation becomes the identity (a linear network)."""

    view = "K"

    def __init__(self, batch_stats: bool = False):
        super().__init__()
        self.batch_stats = batch_stats

    def activation(self, func, args, kwargs):
        u, _inplace, _lo, _hi = _parse_activation(func, args, kwargs)
        return u


class BatchStats(_ViewMode):
    """Train-mode BatchNorm (batch statistics) without touching running buffers; activations unchanged.
    Used by the train-mode baselines (SNIP, GraSP) so that scoring never changes the caller's statistics."""

    batch_stats = True

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _BATCH_NORM:
            return _batch_stats_batch_norm(args, kwargs)
        return func(*args, **kwargs)


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
            j[wname] = (ctx.float_mask(wname, w.dtype) if wname in ctx.targets
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


def _px_scores(ctx: ScoringContext, k_batch_stats: bool) -> dict[str, torch.Tensor]:
    k_batch = ctx.options.get("k_batch", "one")
    a_params, j_params, k_params, leaves = _view_params(ctx)
    names = list(leaves)
    if k_batch == "one":
        # channels_last: oneDNN's fast convolution layout on CPU (~1.8x here), also good for cuDNN. It changes the
        # rounding, which is why the official-arithmetic path below keeps the default layout.
        a_params, j_params = _channels_last(a_params), _channels_last(j_params)
        per_batch: dict[int, torch.Tensor] = {}
        for bid, (x, _y) in zip(ctx.batch_ids, ctx.batches):
            x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
            per_batch[bid] = _path_activations(ctx, a_params, j_params, x).sum(dim=0, dtype=torch.float64)
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
        grads = dict(zip(names, torch.autograd.grad(r, [leaves[n] for n in names], allow_unused=True)))
    elif k_batch == "full":
        # The official code's arithmetic: K on a batch of ones as large as each data batch, R = Σ z1 ⊙ z2 per
        # batch. Costs a full forward+backward of K per batch, but reproduces the official float32 rounding
        # (which iterative PX amplifies: see README, "PX is chaotic in float rounding").
        acc = {n: torch.zeros_like(v, dtype=torch.float64) for n, v in leaves.items()}
        for x, _y in ctx.batches:
            z1 = _path_activations(ctx, a_params, j_params, x)
            with Linearizer(batch_stats=k_batch_stats):
                z2 = ctx.call(k_params, torch.ones_like(x))
            r = (z1 * z2).sum()
            for n, g in zip(names, torch.autograd.grad(r, [leaves[n] for n in names], allow_unused=True)):
                if g is not None:
                    acc[n] += g
        grads = {n: ctx.reduce_sum(acc[n]).to(leaves[n].dtype) for n in names}
    else:
        raise InvalidArgumentError(f"PX option k_batch must be 'one' or 'full', got {k_batch!r}")
    out = {}
    for n in names:
        w = ctx.masked(n).detach()
        g = grads.get(n)
        out[n] = torch.zeros_like(w) if g is None else g.abs() * w.pow(2)
    return out


def _channels_last(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in params.items()}


@torch.no_grad()
def _path_activations(ctx: ScoringContext, a_params, j_params, x: torch.Tensor) -> torch.Tensor:
    """z1 = J(x²) with A's gates (A: the real masked network on x, eval mode). No gradient flows through J."""
    rec = GateRecorder()
    with rec:
        ctx.call(a_params, x)
    rep = GateReplayer(rec.gates, batch_stats=True)
    with rep:
        z1 = ctx.call(j_params, x.pow(2))
    rep.finish()
    return z1




if "px_legacy_test" not in _REGISTRY:
    @register_method("px_legacy_test", needs_data=True, default_rounds=100, options={"k_batch": "one"})
    def _px_legacy(ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return _px_scores(ctx, k_batch_stats=False)
