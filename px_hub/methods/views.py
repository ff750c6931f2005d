"""The auxiliary views of PX, built without copying the network and without monkey-patching.

Mechanism: ``torch.overrides.TorchFunctionMode``. While a mode is active, every ``torch`` / ``torch.nn.functional``
call made by the model's forward, whether from a module (``nn.ReLU`` calls ``F.relu``; ``nn.ReLU6`` calls
``F.hardtanh``) or written functionally in the model's code (``F.relu(x)``, ``x.relu_()``), is handed to the
mode first. So one mechanism covers module and functional activations, ``inplace=True``, and any model's own
code, with nothing patched globally and nothing left behind when the ``with`` block exits (unlike replacing
``F.relu``, which the official code does and which breaks under threads and for ``nn.ReLU6``). Forward hooks
could not see functional activations; ``torch.fx`` would fail on models with data-dependent control flow.

- :class:`GateRecorder` (view A): records the gate of every ReLU-family activation, in call order.
- :class:`GateReplayer` (view J): replaces each activation by ``u * g`` with A's gate at the same call;
  optionally makes BatchNorm normalise with batch statistics (never touching the running buffers).
- :class:`Linearizer` (view K): replaces each activation by the identity; optionally batch statistics.
The weights of J and K are replaced by ``torch.func.functional_call`` (see ``ScoringContext.call``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import UnsupportedModelError

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
