"""Ticket health: can the masked network still carry a signal from its input to every output?

A mask can be sparse in a way no training can fix: a layer with no weight left cuts every path through it (unless
a shortcut bypasses it), and a classifier output with no kept path from the input is a constant, so its class can
never be predicted. :func:`ticket_health` finds both, once, for any mask and the model it belongs to.

**Connectivity check** (structural, exact for Conv/Linear/BatchNorm networks). One forward and one backward pass
of a *path-indicator network* on an input of ones (batch 1, float32: every value is a small count, exact):
- every Conv/Linear weight is replaced by its 0/1 mask value (layers that are not pruning targets: all ones) and
  its bias by 0 (a bias is not a path from the input); the output of every Conv/Linear is then binarised,
  y -> 1[y > 0], so values stay small integers however deep the network is;
- normalisation layers (BatchNorm, LayerNorm, GroupNorm, InstanceNorm) are positive scalings: identity; so are
  activations (ReLU-family, GELU, SiLU, ...) and dropout; gates that are positive everywhere (sigmoid, softmax,
  hard-sigmoid) become ``u + 1`` (always open, gradient passes); max pooling becomes average pooling (a unit is
  reached when any unit of its window is, and the gradient reaches every unit of the window);
- other parameters are taken at their absolute value (e.g. ViT position embeddings count as sources).
The forward pass says which output units (classes) are reached from the input, and which input channels of each
Conv/Linear are reached; the backward pass (the binarisation's gradient is 1[gradient > 0]) says which output
channels of each Conv/Linear reach some output. A kept weight is **on a path** when its input channel is reached
and its output channel reaches an output (channel level: spatial positions are merged).

**Definitions** (all in :class:`TicketHealth`):
- dead outputs: model outputs (classes, dim 1 of the output) that no kept path from the input reaches;
- empty layers: pruning targets with no kept weight (``Mask.collapsed_layers()`` gives the same list);
- nearly empty layers: targets that keep some weights but either fewer than ``NEARLY_EMPTY_UNITS`` (2) output units
  with a kept weight (when the layer has at least 2), or a density below ``NEARLY_EMPTY_SHARE`` (5 %) of the
  mask's overall density, i.e. less than a twentieth of an even share;
- cut-off layers: targets that keep weights but none of them on a path (all wasted).
A ticket is *healthy* when it has no dead output and no empty layer.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from ..errors import InvalidArgumentError
from .mask import Mask
from .targets import WEIGHTED_TYPES

NEARLY_EMPTY_UNITS = 2
NEARLY_EMPTY_SHARE = 0.05


# -- the path-indicator network -----------------------------------------------------------------------------------

class _Reach(torch.autograd.Function):
    """y -> 1[y > 0]; backward g -> 1[g > 0] (straight through, binarised: "reaches an output")."""

    @staticmethod
    def forward(ctx, y):
        return (y > 0).to(y.dtype)

    @staticmethod
    def backward(ctx, g):
        return (g > 0).to(g.dtype)


_CONVS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
_NORMS = {F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm, F.local_response_norm}
_DROPOUT = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout}
_POSITIVE_GATES = {torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid, F.hardsigmoid, F.softmax, torch.softmax,
                   torch.Tensor.softmax}
_IDENTITY = {F.relu, torch.relu, torch.Tensor.relu, torch.relu_, torch.Tensor.relu_, F.relu_, F.leaky_relu,
             F.leaky_relu_, F.relu6, F.hardtanh, F.hardtanh_, F.gelu, F.silu, F.mish, F.hardswish, F.elu, F.selu,
             F.celu, F.softplus, torch.tanh, torch.Tensor.tanh, F.tanh} | _DROPOUT
_MAX_POOLS = {F.max_pool1d: F.avg_pool1d, F.max_pool2d: F.avg_pool2d, F.max_pool3d: F.avg_pool3d}
_ADAPTIVE_MAX_POOLS = {F.adaptive_max_pool1d: F.adaptive_avg_pool1d, F.adaptive_max_pool2d: F.adaptive_avg_pool2d,
                       F.adaptive_max_pool3d: F.adaptive_avg_pool3d}


def _arg(args, kwargs, i, name, default):
    return args[i] if len(args) > i else kwargs.get(name, default)


def _all_ones(v) -> bool:
    return all(int(d) == 1 for d in (v if isinstance(v, (tuple, list)) else (v,)))


def _channels(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Bool per channel along ``dim``: any position > 0."""
    return (t.detach() > 0).movedim(dim, 0).reshape(t.shape[dim], -1).any(dim=1)


@dataclass
class _LayerTrace:
    kind: str                          # "conv" or "linear"
    groups: int
    reached_in: torch.Tensor           # bool per input channel
    reached_out: torch.Tensor | None = None      # bool per output channel: reached from the input
    outputs: list = field(default_factory=list)  # binarised outputs (for the backward pass)
    reaches_out: torch.Tensor | None = None      # bool per output channel: reaches an output


class _PathIndicator(TorchFunctionMode):
    def __init__(self, names: dict[int, str], keep_outputs: bool):
        super().__init__()
        self.names, self.keep_outputs = names, keep_outputs
        self.traces: dict[str, _LayerTrace] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _CONVS or func is F.linear:
            y = _Reach.apply(func(*args, **kwargs))
            if self.keep_outputs and not y.requires_grad and torch.is_grad_enabled():
                # fed by constants only (e.g. a Fourier positional encoding's conv on a fixed grid): its output
                # becomes a leaf of the backward pass, so whether it reaches an output is still measured
                y = y.detach().requires_grad_(True)
            w = _arg(args, kwargs, 1, "weight", None)
            name = self.names.get(id(w))
            if name is not None:
                x = _arg(args, kwargs, 0, "input", None)
                conv = func in _CONVS
                dim = 1 if conv and x.dim() == _CONVS[func] + 2 else (0 if conv else -1)
                reached = _channels(x, dim % x.dim())
                ydim = 1 if conv and y.dim() == _CONVS[func] + 2 else (0 if conv else -1)
                out = _channels(y, ydim % y.dim())
                tr = self.traces.get(name)
                if tr is None:
                    groups = int(_arg(args, kwargs, 6, "groups", 1)) if conv else 1
                    tr = self.traces[name] = _LayerTrace("conv" if conv else "linear", groups, reached, out)
                else:
                    tr.reached_in = tr.reached_in | reached
                    tr.reached_out = tr.reached_out | out
                if self.keep_outputs:
                    tr.outputs.append((y, ydim))
            return y
        if func in _NORMS:
            return _arg(args, kwargs, 0, "input", None)
        if func in _IDENTITY:
            return args[0] if args else kwargs["input"]
        if func in _POSITIVE_GATES:
            return (args[0] if args else kwargs["input"]) + 1
        if func in _MAX_POOLS and _all_ones(_arg(args, kwargs, 4, "dilation", 1)):
            x = _arg(args, kwargs, 0, "input", None)
            k = _arg(args, kwargs, 1, "kernel_size", None)
            stride = _arg(args, kwargs, 2, "stride", None) or k
            pad = _arg(args, kwargs, 3, "padding", 0)
            ceil = bool(_arg(args, kwargs, 5, "ceil_mode", False))
            out = _MAX_POOLS[func](x, k, stride, pad, ceil_mode=ceil)
            return (out, None) if _arg(args, kwargs, 6, "return_indices", False) else out
        if func in _ADAPTIVE_MAX_POOLS:
            out = _ADAPTIVE_MAX_POOLS[func](_arg(args, kwargs, 0, "input", None),
                                            _arg(args, kwargs, 1, "output_size", None))
            return (out, None) if _arg(args, kwargs, 2, "return_indices", False) else out
        return func(*args, **kwargs)


def _first_tensor(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        out = out.get("out", next(iter(out.values())))
        return _first_tensor(out)
    if isinstance(out, (tuple, list)) and out:
        return _first_tensor(out[0])
    raise InvalidArgumentError(f"cannot check paths of a model whose output is {type(out).__name__}")


@dataclass
class Connectivity:
    """Raw result of the path-indicator pass (see the module docstring)."""

    outputs_reached: torch.Tensor                 # bool per model output (dim 1 of the output)
    traces: dict[str, _LayerTrace]                # per pruning target that the forward pass used

    def input_reached(self, name: str, shape: Sequence[int]) -> torch.Tensor | None:
        """Bool tensor of a weight's shape: its input channel is reached from the model input (None: unused)."""
        tr = self.traces.get(name)
        if tr is None:
            return None
        if tr.kind == "linear":
            return tr.reached_in.reshape(1, -1).expand(*shape)
        out_ch, in_per_group = shape[0], shape[1]
        per_group_out = out_ch // tr.groups
        group = torch.arange(out_ch) // per_group_out
        idx = group[:, None] * in_per_group + torch.arange(in_per_group)[None, :]
        ok = tr.reached_in[idx]
        return ok.reshape(out_ch, in_per_group, *([1] * (len(shape) - 2))).expand(*shape)

    def output_reaches(self, name: str, shape: Sequence[int]) -> torch.Tensor | None:
        """Bool tensor of a weight's shape: its output channel reaches some model output (the one given to
        :func:`connectivity` as ``output``, if any; None: unused)."""
        tr = self.traces.get(name)
        if tr is None or tr.reaches_out is None:
            return None
        return tr.reaches_out.reshape(-1, *([1] * (len(shape) - 1))).expand(*shape)

    def output_reached(self, name: str, shape: Sequence[int]) -> torch.Tensor | None:
        """Bool tensor of a weight's shape: its output channel is reached from the model input (None: unused)."""
        tr = self.traces.get(name)
        if tr is None or tr.reached_out is None:
            return None
        return tr.reached_out.reshape(-1, *([1] * (len(shape) - 1))).expand(*shape)

    def on_path(self, name: str, kept: torch.Tensor) -> torch.Tensor | None:
        a, b = self.input_reached(name, kept.shape), self.output_reaches(name, kept.shape)
        if a is None or b is None:
            return None
        return kept & a & b


@torch.no_grad()
def _overrides(model: nn.Module, mask: Mask, dtype: torch.dtype, device) -> tuple[dict, dict[int, str]]:
    """Overrides of every floating parameter/buffer (see the module docstring) and id(weight) -> target name."""
    over: dict[str, torch.Tensor] = {}
    weighted = set()
    for mod_name, mod in model.named_modules():
        if isinstance(mod, WEIGHTED_TYPES) and mod.weight is not None:
            wname = f"{mod_name}.weight" if mod_name else "weight"
            weighted.add(wname)
            over[wname] = (mask[wname].to(device=device, dtype=dtype) if wname in mask
                           else torch.ones(mod.weight.shape, device=device, dtype=dtype))
            if getattr(mod, "bias", None) is not None:
                bname = f"{mod_name}.bias" if mod_name else "bias"
                weighted.add(bname)
                over[bname] = torch.zeros(mod.bias.shape, device=device, dtype=dtype)
    for n, p in list(model.named_parameters()) + list(model.named_buffers()):
        if n not in weighted and p.is_floating_point():
            over[n] = p.detach().abs().to(device=device, dtype=dtype)
        elif n not in weighted:  # e.g. BatchNorm's num_batches_tracked, which a train-mode forward increments
            over[n] = p.detach().clone()
    names = {id(over[k]): k for k in mask if k in over}
    return over, names


def connectivity(model: nn.Module, mask: Mask, input_shape: Sequence[int], backward: bool = True,
                 output: int | None = None) -> Connectivity:
    """Run the path-indicator network of ``model`` under ``mask`` (see the module docstring); ``backward=False``
    skips the backward pass (outputs and channels reached only; ``output_reaches`` is then None); ``output``: the
    backward pass starts from that one model output (class) only, so ``output_reaches`` means "reaches it". The
    model's parameters, buffers and mode are not touched."""
    p = next(model.parameters())
    over, names = _overrides(model, mask, torch.float32, p.device)
    x = torch.ones((1, *input_shape), device=p.device, dtype=torch.float32, requires_grad=backward)
    mode = _PathIndicator(names, keep_outputs=backward)
    with torch.set_grad_enabled(backward):
        with mode:
            out = _first_tensor(functional_call(model, over, (x,), strict=False))
        per_output = out.detach().movedim(1, 0).reshape(out.shape[1], -1) if out.dim() > 1 else out.detach()[:, None]
        reached = (per_output > 0).any(dim=1).cpu()
        ys = [(name, y, d) for name, tr in mode.traces.items() for y, d in tr.outputs]
        seed = out.sum() if output is None else out.movedim(1, 0)[output].sum()
        grads = torch.autograd.grad(seed, [y for _, y, _ in ys], allow_unused=True) if ys else []
    for (name, y, d), g in zip(ys, grads):
        tr = mode.traces[name]
        ch = _channels(g, d % g.dim()).cpu() if g is not None else torch.zeros(y.shape[d], dtype=torch.bool)
        tr.reaches_out = ch if tr.reaches_out is None else tr.reaches_out | ch
    for tr in mode.traces.values():
        tr.reached_in = tr.reached_in.cpu()
        tr.reached_out = tr.reached_out.cpu() if tr.reached_out is not None else None
        tr.outputs = []
    return Connectivity(reached, mode.traces)


# -- the report ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerHealth:
    name: str
    kept: int
    total: int
    alive_outputs: int       # output units with at least one kept weight
    outputs: int
    on_path: int | None      # kept weights on a complete input -> output path (None: the forward never used it)

    def to_dict(self) -> dict:
        return {"name": self.name, "kept": self.kept, "total": self.total, "alive_outputs": self.alive_outputs,
                "outputs": self.outputs, "on_path": self.on_path}


@dataclass(frozen=True)
class TicketHealth:
    outputs: int
    dead_outputs: tuple[int, ...]
    empty_layers: tuple[str, ...]
    nearly_empty_layers: tuple[str, ...]
    cut_off_layers: tuple[str, ...]
    layers: tuple[LayerHealth, ...] = ()

    @property
    def healthy(self) -> bool:
        return not self.dead_outputs and not self.empty_layers

    @property
    def kept_on_path(self) -> int:
        return sum(r.on_path if r.on_path is not None else r.kept for r in self.layers)

    def summary(self) -> str:
        """One line, e.g. ``health: 10/10 outputs reachable, 0 empty, 1 nearly empty, 0 cut-off layers``."""
        alive = self.outputs - len(self.dead_outputs)
        text = (f"{alive}/{self.outputs} outputs reachable, {len(self.empty_layers)} empty, "
                f"{len(self.nearly_empty_layers)} nearly empty, {len(self.cut_off_layers)} cut-off layer(s)")
        if self.dead_outputs:
            text += f"; dead outputs: {', '.join(map(str, self.dead_outputs))}"
        return text

    def to_dict(self) -> dict:
        return {"healthy": self.healthy, "outputs": self.outputs,
                "dead_outputs": list(self.dead_outputs), "num_dead_outputs": len(self.dead_outputs),
                "empty_layers": list(self.empty_layers), "nearly_empty_layers": list(self.nearly_empty_layers),
                "cut_off_layers": list(self.cut_off_layers), "kept_on_path": self.kept_on_path,
                "definitions": {"nearly_empty_units": NEARLY_EMPTY_UNITS, "nearly_empty_share": NEARLY_EMPTY_SHARE},
                "layers": [r.to_dict() for r in self.layers]}

    @classmethod
    def from_dict(cls, d: dict) -> TicketHealth:
        return cls(int(d.get("outputs", 0)), tuple(d.get("dead_outputs") or ()), tuple(d.get("empty_layers") or ()),
                   tuple(d.get("nearly_empty_layers") or ()), tuple(d.get("cut_off_layers") or ()),
                   tuple(LayerHealth(**r) for r in d.get("layers") or ()))


def ticket_health(model: nn.Module, mask: Mask, input_shape: Sequence[int] | None = None,
                  conn: Connectivity | None = None) -> TicketHealth:
    """Dead outputs, empty / nearly empty / cut-off layers of ``mask`` on ``model`` (module docstring).
    ``input_shape`` (one sample, e.g. (3, 32, 32)) defaults to the model's timm ``pretrained_cfg['input_size']``."""
    mask = mask if isinstance(mask, Mask) else Mask(mask)
    mask.validate(model)
    if conn is None:
        conn = connectivity(model, mask, _resolve_input_shape(model, input_shape))
    density = mask.density()
    layers, empty, nearly, cut = [], [], [], []
    for r in mask.report():
        path = conn.on_path(r.name, mask[r.name])
        on = int(path.sum()) if path is not None else None
        layers.append(LayerHealth(r.name, r.kept, r.total, r.alive_outputs, r.outputs, on))
        if r.kept == 0:
            empty.append(r.name)
            continue
        if r.alive_outputs < min(NEARLY_EMPTY_UNITS, r.outputs) or r.density < NEARLY_EMPTY_SHARE * density:
            nearly.append(r.name)
        if on == 0:
            cut.append(r.name)
    dead = tuple(int(i) for i in torch.nonzero(~conn.outputs_reached).reshape(-1))
    return TicketHealth(int(conn.outputs_reached.numel()), dead, tuple(empty), tuple(nearly), tuple(cut),
                        tuple(layers))


def _resolve_input_shape(model: nn.Module, input_shape) -> tuple[int, ...]:
    if input_shape is not None:
        return tuple(int(s) for s in input_shape)
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if size:
        return tuple(int(s) for s in size)
    raise InvalidArgumentError("ticket health needs the model's input shape, e.g. input_shape=(3, 224, 224)")
