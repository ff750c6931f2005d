"""The auxiliary views of PX, built without copying the network and without monkey-patching.

Mechanism: ``torch.overrides.TorchFunctionMode``. While a mode is active, every ``torch`` / ``torch.nn.functional``
/ ``Tensor`` call made by the model's forward, whether from a module (``nn.ReLU`` calls ``F.relu``) or written in
the model's code (``F.relu(x)``, ``x.relu_()``, ``q @ k.transpose(-2, -1)``), is handed to the mode first. So one
mechanism covers module and functional forms, ``inplace=True`` and any model's own code, with nothing patched
globally and nothing left behind when the ``with`` block exits. Forward hooks could not see functional calls;
``torch.fx`` would fail on models with data-dependent control flow.

Each view follows every tensor of its forward with a tag (see docs/px-generalized.md): PATH (depends linearly,
along paths, on the view's input), LOGIT (a product of two path tensors, e.g. q·kᵀ; may only feed a gate) and GATE
(output of a gate nonlinearity: sigmoid, hard-sigmoid, softmax, attention probabilities). Every call that receives
a tagged tensor is classified; an operation on a path that no rule covers raises :class:`UnsupportedModelError`
naming the operation and the module. Views:

- :class:`GateRecorder` (view A): the real network; records each gate, in call order.
- :class:`GateReplayer` (view J): each activation u -> u * g, each gate -> A's gate at the same call; BatchNorm
  with batch statistics, feature normalizations as a detached positive scaling of J's own values.
- :class:`Linearizer` (view K): activations -> identity, gates held open (sigmoid 1, attention probabilities with
  zero query-key logits), feature normalizations as in J; optionally relative straight-through gates (the rule
  that scores parameters that only shape gates).
The weights of J and K are replaced by ``torch.func.functional_call`` (see ``ScoringContext.call``).
"""
from __future__ import annotations

import itertools
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import UnsupportedModelError

PATH, LOGIT, GATE = 1, 2, 3
_KIND_NAMES = {PATH: "path", LOGIT: "logit (product of two path tensors)", GATE: "gate"}
GATE_MODES = ("ratio", "derivative")

# ReLU family: the spec's indicator gates (unchanged, so ReLU networks score bit-identically to the original PX).
_RELU = {"relu", "relu_", "leaky_relu", "leaky_relu_", "relu6", "hardtanh", "hardtanh_"}
# Smooth (or piecewise) zero-at-zero activations: name -> (out-of-place function, argument names after the input).
_SMOOTH = {
    "gelu": (F.gelu, ("approximate",)), "silu": (F.silu, ("inplace",)), "mish": (F.mish, ("inplace",)),
    "hardswish": (F.hardswish, ("inplace",)), "elu": (F.elu, ("alpha", "inplace")),
    "celu": (F.celu, ("alpha", "inplace")), "selu": (F.selu, ("inplace",)), "tanh": (torch.tanh, ()),
    "softsign": (F.softsign, ()), "prelu": (F.prelu, ("weight",)),
}
_GATE_FNS = {"sigmoid", "sigmoid_", "hardsigmoid", "softmax"}
_NORMS = {"layer_norm", "group_norm", "rms_norm", "instance_norm", "normalize"}
# Linear (or per-view "own values") operations: a path stays a path, a logit a logit.
_STRUCT = {
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute", "transpose", "transpose_", "t",
    "contiguous", "clone", "expand", "expand_as", "repeat", "tile", "unsqueeze", "squeeze", "unsqueeze_",
    "squeeze_", "__getitem__", "narrow", "select", "index_select", "gather", "take_along_dim", "roll", "flip",
    "cat", "concat", "concatenate", "stack", "hstack", "vstack", "split", "chunk", "unbind", "tensor_split",
    "split_with_sizes", "movedim", "moveaxis", "swapaxes", "swapdims", "pad", "to", "float", "double", "half",
    "bfloat16", "type", "type_as", "mean", "sum", "cumsum", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "max_pool1d", "max_pool2d", "max_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "interpolate", "upsample",
    "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "dropout", "dropout1d", "dropout2d", "dropout3d",
    "alpha_dropout", "feature_alpha_dropout", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
    "conv_transpose2d", "conv_transpose3d", "linear", "add", "add_", "__add__", "__radd__", "__iadd__", "sub",
    "sub_", "__sub__", "__rsub__", "__isub__", "neg", "negative", "__neg__", "unfold", "fold", "masked_fill",
    "masked_fill_", "copy_", "detach", "__get__", "where", "as_strided", "diagonal",
}
# Products: a path times a constant or a gate is a path; a path times a path is a logit.
_PRODUCTS = {"mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply", "matmul", "__matmul__", "__rmatmul__",
             "bmm", "mm", "einsum", "outer"}
_DIVS = {"div", "div_", "__truediv__", "__itruediv__", "true_divide", "divide"}
_WEIGHTED = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
_MASKS = {"where": 0, "masked_fill": 1, "masked_fill_": 1}  # argument that must not carry a path


def _arg(args, kwargs, i, name, default):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _bind(args, kwargs, names, defaults):
    return {n: _arg(args, kwargs, i, n, d) for i, (n, d) in enumerate(zip(names, defaults))}


def _relu_bounds(name, args, kwargs):
    """-> (inplace, lo, hi): the spec's gate is 1[lo < u < hi]."""
    inf = float("inf")
    if name == "relu":
        return bool(_arg(args, kwargs, 1, "inplace", False)), 0.0, inf
    if name in ("relu_", "leaky_relu_"):
        return True, 0.0, inf
    if name == "leaky_relu":  # the official code gates LeakyReLU like ReLU: 1[u > 0]
        return bool(_arg(args, kwargs, 2, "inplace", False)), 0.0, inf
    if name == "relu6":
        return bool(_arg(args, kwargs, 1, "inplace", False)), 0.0, 6.0
    lo = float(_arg(args, kwargs, 1, "min_val", -1.0))
    hi = float(_arg(args, kwargs, 2, "max_val", 1.0))
    inplace = True if name == "hardtanh_" else bool(_arg(args, kwargs, 3, "inplace", False))
    if lo != 0.0:
        raise UnsupportedModelError(
            f"PX needs a zero-at-zero activation; this model uses hardtanh({lo}, {hi}), which adds a constant to "
            "its paths; use --method synflow (data-free) for this model")
    return inplace, lo, hi


def _relu_gate(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    g = u > lo
    if hi != float("inf"):
        g &= u < hi
    return g


def _dense_no_unit_dims(u: torch.Tensor) -> bool:
    """u fills its storage span without gaps or overlaps, in some dimension order, and no dimension has size 1
    (such a dimension's stride is arbitrary)."""
    if u.dim() == 0 or min(u.shape) < 2:
        return False
    span = 1
    for d in sorted(range(u.dim()), key=u.stride):
        if u.stride(d) != span:
            return False
        span *= u.size(d)
    return True


def _smooth(name, args, kwargs):
    """-> (u, inplace, phi): phi(t) is the activation, out of place, with the call's other arguments."""
    base = name[:-1] if name.endswith("_") and name[:-1] in _SMOOTH else name
    fn, names = _SMOOTH[base]
    u = args[0] if args else kwargs["input"]
    bound = {n: _arg(args, kwargs, i + 1, n, None) for i, n in enumerate(names)}
    inplace = base != name or bool(bound.pop("inplace", False))
    bound.pop("inplace", None)
    extra = {k: v for k, v in bound.items() if v is not None}
    return u, inplace, (lambda t: fn(t, **extra))


def smooth_gate(phi, u: torch.Tensor, mode: str) -> torch.Tensor:
    """The gate g of an activation phi at u: phi(u)/u (``ratio``: u*g = phi(u), an exact path decomposition) or
    phi'(u) (``derivative``). The ratio at u = 0 is its limit phi'(0)."""
    u = u.detach()
    if mode == "ratio":
        g = phi(u) / u
        zero = u == 0
        if bool(zero.any()):
            g = torch.where(zero, _derivative(phi, torch.zeros_like(u)), g)
        return g
    return _derivative(phi, u)


def _derivative(phi, u):
    with torch.enable_grad():
        t = u.detach().clone().requires_grad_(True)
        y = phi(t)
        return torch.autograd.grad(y, t, torch.ones_like(y))[0].detach()


def _batch_stats_batch_norm(args, kwargs):
    """F.batch_norm normalising with the batch's own statistics, never reading or updating running buffers."""
    b = _bind(args, kwargs, ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
              (None, None, None, None, None, False, 0.1, 1e-5))
    return F.batch_norm(b["input"], None, None, b["weight"], b["bias"], True, b["momentum"], b["eps"])


def _scaled(u: torch.Tensor) -> torch.Tensor:
    """u divided by one detached positive scalar: the RMS of all its values (zero stays zero)."""
    rms = u.detach().pow(2).mean().sqrt()
    return u * (1.0 / rms) if float(rms) > 0 else u * 0.0


def feature_norm(name, args, kwargs):
    """A feature normalization in J and K: gamma * u / rms + beta, with rms one detached scalar over the whole
    tensor (batch, tokens or positions, features): no centering, and the relative magnitudes of samples, tokens
    and positions kept (docs/px-generalized.md)."""
    u = args[0] if args else kwargs["input"]
    if name in ("layer_norm", "rms_norm"):
        b = _bind(args, kwargs, ("input", "normalized_shape", "weight", "bias" if name == "layer_norm" else "eps"),
                  (None, None, None, None))
        y = _scaled(u)
        w, bias = b["weight"], b["bias"] if name == "layer_norm" else None
        if w is not None:
            y = y * w
        return y + bias if bias is not None else y
    if name == "normalize":  # F.normalize(input, p, dim, eps): no affine part
        return _scaled(u)
    if name == "group_norm":
        b = _bind(args, kwargs, ("input", "num_groups", "weight", "bias", "eps"), (None, None, None, None, 1e-5))
    else:  # instance_norm
        b = _bind(args, kwargs, ("input", "running_mean", "running_var", "weight", "bias", "use_input_stats"),
                  (None, None, None, None, None, True))
        if not b["use_input_stats"]:  # running statistics: a fixed per-channel affine map, like BatchNorm eval
            return F.instance_norm(*args, **kwargs)
    y = _scaled(u)
    shape = (1, u.shape[1]) + (1,) * (u.dim() - 2)
    if b["weight"] is not None:
        y = y * b["weight"].reshape(shape)
    return y + b["bias"].reshape(shape) if b["bias"] is not None else y


def _attn_probs(q, k, attn_mask=None, is_causal=False, scale=None, logits=None):
    """softmax(q kᵀ·scale + mask) as F.scaled_dot_product_attention computes it (``logits``: use these instead of
    q kᵀ·scale, e.g. zeros for K's open gate)."""
    if logits is None:
        s = scale if scale is not None else q.size(-1) ** -0.5
        logits = (q @ k.transpose(-2, -1)) * s
    if is_causal:
        L, S = logits.shape[-2:]
        keep = torch.ones(L, S, dtype=torch.bool, device=logits.device).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask
    return logits.softmax(-1)


def _gqa(k, q):
    if k.dim() >= 3 and q.dim() >= 3 and k.size(-3) != q.size(-3):
        return k.repeat_interleave(q.size(-3) // k.size(-3), dim=-3)
    return k


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            if isinstance(o, torch.Tensor):
                yield o


_serial = itertools.count(1)


class _Refusal(RuntimeError):
    """Raised inside a view; turned into UnsupportedModelError when the view exits. (UnsupportedModelError is a
    TypeError, and a TypeError raised inside a Tensor operator such as ``x ** 2`` is swallowed by torch and
    re-raised as "unsupported operand type(s)", which would hide the reason.)"""


class _ViewMode(TorchFunctionMode):
    """Tag propagation and the rules shared by the three views; subclasses say what activations, gates and
    normalizations do."""

    view = "?"
    batch_stats = False   # BatchNorm with batch statistics
    own_norms = False     # feature normalizations as a detached positive scaling of the view's own values

    def __init__(self, model: nn.Module | None = None):
        super().__init__()
        self.serial = next(_serial)
        self.model = model
        self.gates_seen = 0

    def __exit__(self, exc_type, exc_val, exc_tb):
        out = super().__exit__(exc_type, exc_val, exc_tb)
        if exc_type is _Refusal:
            raise UnsupportedModelError(str(exc_val)) from None
        return out

    # -- tags -------------------------------------------------------------------------------------------------
    def mark(self, t: torch.Tensor, kind: int = PATH) -> torch.Tensor:
        t._pxk = (self.serial, kind)
        return t

    def kind(self, t) -> int:
        k = getattr(t, "_pxk", None)
        return k[1] if k is not None and k[0] == self.serial else 0

    def _tag(self, out, kind):
        for t in _tensors(out):
            t._pxk = (self.serial, kind)
        return out

    def _input_kinds(self, args, kwargs):
        kinds = set()
        for a in itertools.chain(args, kwargs.values()):
            for t in _tensors(a):
                k = self.kind(t)
                if k:
                    kinds.add(k)
        return kinds

    # -- dispatch ---------------------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kinds = self._input_kinds(args, kwargs)
        if not kinds:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        path = PATH in kinds
        if name in _RELU or name in _SMOOTH or (name[:-1] in _SMOOTH and name.endswith("_")):
            if not path:
                return self._tag(func(*args, **kwargs), max(kinds))
            return self._tag(self.activation(name, func, args, kwargs), PATH)
        if name == "batch_norm" and path:
            out = _batch_stats_batch_norm(args, kwargs) if self.batch_stats else func(*args, **kwargs)
            return self._tag(out, PATH)
        if name in _NORMS and path:
            if self.own_norms:
                return self._tag(feature_norm(name, args, kwargs), PATH)
            return self._tag(func(*args, **kwargs), PATH)
        if name in _GATE_FNS and (path or LOGIT in kinds):
            self.gates_seen += 1
            return self._tag(self.gate(name, func, args, kwargs), GATE)
        if name == "scaled_dot_product_attention":
            return self._sdpa(func, args, kwargs)
        if name == "multi_head_attention_forward":
            return self._mha(args, kwargs)
        if name == "__setitem__":
            func(*args, **kwargs)
            self._tag(args[0], self._combine(name, kinds))
            return None
        if name in _PRODUCTS or name in _DIVS or name in ("baddbmm", "addmm", "addbmm"):
            return self._product(name, func, args, kwargs)
        if GATE in kinds and name in _WEIGHTED:
            self.refuse(name, "a gate used as the input of a weighted layer")
        if name in _MASKS and self.kind(_arg(args, kwargs, _MASKS[name], "mask", None)):
            self.refuse(name, "a data-dependent selection mask on a path")
        if path and name not in _STRUCT:
            out = func(*args, **kwargs)
            if not any(True for _ in _tensors(out)):
                return out  # shape / dtype queries and the like
            self.refuse(name)
        kind = self._combine(name, kinds)
        out = func(*args, **kwargs)
        if kind == LOGIT:
            self._free(func, args, kwargs, out)
        return self._tag(out, kind)

    def _combine(self, name, kinds):
        if len(kinds) > 1:
            self.refuse(name, f"an operation that mixes a {' and a '.join(_KIND_NAMES[k] for k in sorted(kinds))}")
        return next(iter(kinds))

    def _product(self, name, func, args, kwargs):
        if name in ("baddbmm", "addmm", "addbmm"):  # input + product
            factors = [_arg(args, kwargs, 1, "batch1" if name != "addmm" else "mat1", None),
                       _arg(args, kwargs, 2, "batch2" if name != "addmm" else "mat2", None)]
            added = self.kind(_arg(args, kwargs, 0, "input", None))
        elif name == "einsum":
            ops = args[1:] if len(args) > 1 else kwargs.get("operands", ())
            factors = list(ops[0]) if len(ops) == 1 and isinstance(ops[0], (list, tuple)) else list(ops)
            added = 0
        else:
            factors = [_arg(args, kwargs, 0, "input", None), _arg(args, kwargs, 1, "other", None)]
            added = 0
        fk = [self.kind(f) if isinstance(f, torch.Tensor) else 0 for f in factors]
        if name in _DIVS and fk[1]:
            self.refuse(name, f"a division by a {_KIND_NAMES[fk[1]]}")
        n_path = fk.count(PATH)
        if n_path >= 2:
            kind = LOGIT
        elif n_path == 1:
            if LOGIT in fk:
                self.refuse(name, "a logit (product of two path tensors) used as a path: bilinear or linear "
                                  "attention has no path view")
            kind = PATH
        else:
            kind = max(fk)
        if added and kind and added != kind:
            self.refuse(name, "an operation that adds a product to a tensor of another kind")
        kind = kind or added
        out = func(*args, **kwargs)
        if kind == LOGIT:
            if n_path >= 2:
                self._set_free(out, None)
            else:
                self._free(func, args, kwargs, out)
        return self._tag(out, kind)

    # -- logits' data-free part (used by K only) ---------------------------------------------------------------
    def _free(self, func, args, kwargs, out):
        pass

    def _set_free(self, out, value):
        pass

    def check_output(self, out: torch.Tensor) -> torch.Tensor:
        """The logits must be a path (a product of paths, a gate or a constant has no path view)."""
        k = self.kind(out)
        if k != PATH:
            what = _KIND_NAMES.get(k, "constant (independent of the input)")
            raise UnsupportedModelError(
                f"PX cannot score this model: its logits are a {what}, not a sum over input-output paths "
                "(docs/px-generalized.md); use a data-free method such as --method synflow")
        return out

    # -- errors -----------------------------------------------------------------------------------------------
    def refuse(self, op, what=None):
        where = self._module_name()
        what = what or "an operation with no path view"
        raise _Refusal(
            f"PX cannot score this model: {what}: `{op}` on a path in {where} (view {self.view}); PX handles "
            "Conv/Linear, ReLU-family and smooth zero-at-zero activations, normalizations, squeeze-excite and "
            "softmax attention (docs/px-generalized.md); use a data-free method such as --method synflow")

    def _module_name(self) -> str:
        names = {id(m): n for n, m in self.model.named_modules()} if self.model is not None else {}
        f = sys._getframe(1)
        while f is not None:
            obj = f.f_locals.get("self")
            if isinstance(obj, nn.Module) and (not names or id(obj) in names):
                n = names.get(id(obj), "")
                return f"module {n or '<root>'} ({type(obj).__name__})" if names else type(obj).__name__
            f = f.f_back
        return "the model's forward"

    # -- view-specific ----------------------------------------------------------------------------------------
    def activation(self, name, func, args, kwargs):
        raise NotImplementedError

    def gate(self, name, func, args, kwargs):
        raise NotImplementedError

    def attention(self, q, k, v, attn_mask, is_causal, scale, call):
        raise NotImplementedError

    # -- attention --------------------------------------------------------------------------------------------
    def _sdpa(self, func, args, kwargs):
        b = _bind(args, kwargs, ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale"),
                  (None, None, None, None, 0.0, False, None))
        q, k, v = b["query"], b["key"], b["value"]
        if b["attn_mask"] is not None and self.kind(b["attn_mask"]):
            self.refuse("scaled_dot_product_attention", "a data-dependent attention mask")
        kq, kk, kv = self.kind(q), self.kind(k), self.kind(v)
        if not (kq or kk):  # data-free attention probabilities: linear in v
            return self._tag(func(*args, **kwargs), self._combine("scaled_dot_product_attention", {kv}))
        if kv != PATH:
            self.refuse("scaled_dot_product_attention", "attention whose values are not a path")
        if float(b["dropout_p"] or 0.0) != 0.0:
            self.refuse("scaled_dot_product_attention", "attention dropout active while scoring")
        if kwargs.get("enable_gqa"):
            k, v = _gqa(k, q), _gqa(v, q)
        self.gates_seen += 1
        out = self.attention(q, k, v, b["attn_mask"], bool(b["is_causal"]), b["scale"],
                             lambda: func(*args, **kwargs))
        return self._tag(out, PATH)

    def _mha(self, args, kwargs):
        """F.multi_head_attention_forward through its projections and scaled_dot_product_attention, with this
        mode active, so every inner operation is handled by the rules above."""
        names = ("query", "key", "value", "embed_dim_to_check", "num_heads", "in_proj_weight", "in_proj_bias",
                 "bias_k", "bias_v", "add_zero_attn", "dropout_p", "out_proj_weight", "out_proj_bias", "training",
                 "key_padding_mask", "need_weights", "attn_mask", "use_separate_proj_weight", "q_proj_weight",
                 "k_proj_weight", "v_proj_weight", "static_k", "static_v", "average_attn_weights", "is_causal")
        b = _bind(args, kwargs, names, (None,) * 13 + (True, None, True, None, False, None, None, None, None, None,
                                                        True, False))
        unsupported = [n for n in ("bias_k", "bias_v", "key_padding_mask", "static_k", "static_v")
                       if b[n] is not None] + (["add_zero_attn"] if b["add_zero_attn"] else [])
        if b["training"] and b["dropout_p"]:
            unsupported.append("dropout")
        if unsupported:
            self.refuse("multi_head_attention_forward", f"attention with {', '.join(unsupported)}")
        query, key, value = b["query"], b["key"], b["value"]
        unbatched = query.dim() == 2
        with self:
            if unbatched:
                query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            tgt_len, bsz, e = query.shape
            heads = b["num_heads"]
            if b["use_separate_proj_weight"]:
                ws = (b["q_proj_weight"], b["k_proj_weight"], b["v_proj_weight"])
            else:
                ws = b["in_proj_weight"].chunk(3)
            bs = b["in_proj_bias"].chunk(3) if b["in_proj_bias"] is not None else (None, None, None)
            q, k, v = (F.linear(t, w, bb) for t, w, bb in zip((query, key, value), ws, bs))

            def heads_first(t):
                return t.reshape(t.shape[0], bsz, heads, e // heads).permute(1, 2, 0, 3)

            q, k, v = heads_first(q), heads_first(k), heads_first(v)
            mask = b["attn_mask"]
            if mask is not None:
                if mask.dim() == 3:
                    mask = mask.reshape(bsz, heads, tgt_len, -1)
                if mask.dtype == torch.bool:  # nn.MultiheadAttention: True = not allowed
                    mask = ~mask
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=bool(b["is_causal"]))
            out = out.permute(2, 0, 1, 3).reshape(tgt_len, bsz, e)
            out = F.linear(out, b["out_proj_weight"], b["out_proj_bias"])
            if unbatched:
                out = out.squeeze(1)
        return out, None


class GateRecorder(_ViewMode):
    """View A: the real network; records the gate of every activation and every gate nonlinearity, in call
    order: 1[lo < u < hi] for the ReLU family, phi(u)/u or phi'(u) (``gate``) for smooth activations, the output
    of sigmoid / hard-sigmoid / softmax, and the attention probabilities of scaled_dot_product_attention."""

    view = "A"

    def __init__(self, model: nn.Module | None = None, gate: str = "ratio"):
        super().__init__(model)
        if gate not in GATE_MODES:
            raise ValueError(gate)
        self.gate_mode = gate
        self.gates: list[torch.Tensor] = []

    def activation(self, name, func, args, kwargs):
        if name in _RELU:
            u = args[0] if args else kwargs["input"]
            _inplace, lo, hi = _relu_bounds(name, args, kwargs)
            self.gates.append(_relu_gate(u, lo, hi))  # before the call: an in-place activation overwrites u
        else:
            u, _inplace, phi = _smooth(name, args, kwargs)
            self.gates.append(smooth_gate(phi, u, self.gate_mode))
        return func(*args, **kwargs)

    def gate(self, name, func, args, kwargs):
        out = func(*args, **kwargs)
        self.gates.append(out.detach().clone() if name == "sigmoid_" else out)
        return out

    def attention(self, q, k, v, attn_mask, is_causal, scale, call):
        self.gates.append(_attn_probs(q, k, attn_mask, is_causal, scale))
        return call()


class GateReplayer(_ViewMode):
    """View J: activation u -> u * g and gate -> g with A's gate at the same call (in call order)."""

    view = "J"
    own_norms = True

    def __init__(self, gates: list[torch.Tensor], batch_stats: bool = True, model: nn.Module | None = None):
        super().__init__(model)
        self.gates, self.i, self.batch_stats = gates, 0, batch_stats

    def _next(self, shape) -> torch.Tensor:
        if self.i >= len(self.gates) or (shape is not None and self.gates[self.i].shape != shape):
            raise UnsupportedModelError(
                "PX could not replay activation gates: the network ran a different sequence of activations in its "
                "path-activation view than on real data (data-dependent control flow?)")
        g = self.gates[self.i]
        self.gates[self.i] = None  # free as we go
        self.i += 1
        return g

    def activation(self, name, func, args, kwargs):
        if name in _RELU:
            u = args[0] if args else kwargs["input"]
            inplace, _lo, _hi = _relu_bounds(name, args, kwargs)
        else:
            u, inplace, _phi = _smooth(name, args, kwargs)
        g = self._next(u.shape)
        if g.dtype != torch.bool:
            g = g.to(u.dtype)
            return u.mul_(g) if inplace else u * g
        # A ReLU gate (bool). Cast its bytes as uint8: the same 0/1 values and strides, ~6x faster on CPU than a
        # bool cast. That cast is a new tensor, so u * g can be written into it when it has the strides u * g
        # would get (dense, no size-1 dimension): the same values, one activation-sized allocation less.
        g = g.view(torch.uint8).to(u.dtype)
        if inplace:
            return u.mul_(g)
        if (u.is_floating_point() and g.stride() == u.stride() and _dense_no_unit_dims(u)
                and not (u.requires_grad and torch.is_grad_enabled())):
            return torch.mul(u, g, out=g)
        return u * g

    def gate(self, name, func, args, kwargs):
        u = args[0] if args else kwargs["input"]
        g = self._next(u.shape).to(u.dtype)
        return u.copy_(g) if name == "sigmoid_" else g

    def attention(self, q, k, v, attn_mask, is_causal, scale, call):
        return self._next(None).to(v.dtype) @ v

    def finish(self) -> None:
        if self.i != len(self.gates):
            raise UnsupportedModelError(
                f"PX replayed {self.i} of {len(self.gates)} activation gates: the views diverged")


class Linearizer(_ViewMode):
    """View K: every activation becomes the identity; gates are held open: sigmoid / hard-sigmoid 1, softmax and
    attention the probabilities with every query-key logit zero (softmax of the data-free part: bias + mask).
    ``straight_through``: each gate g0 becomes g0 (1 + (u - sg(u)) / sg(rms u)) (same value, unit relative
    slope), the rule that scores parameters that only shape gates (docs/px-generalized.md)."""

    view = "K"
    own_norms = True

    def __init__(self, batch_stats: bool = False, model: nn.Module | None = None, straight_through: bool = False):
        super().__init__(model)
        self.batch_stats = batch_stats
        self.straight_through = straight_through

    def activation(self, name, func, args, kwargs):
        if name in _RELU:
            _relu_bounds(name, args, kwargs)  # refuses hardtanh with a nonzero lower bound
            return args[0] if args else kwargs["input"]
        u, _inplace, _phi = _smooth(name, args, kwargs)
        return u

    def _free(self, func, args, kwargs, out):
        def sub(a):
            if isinstance(a, torch.Tensor) and self.kind(a) == LOGIT:
                return a._pxf
            if isinstance(a, (list, tuple)) and any(isinstance(t, torch.Tensor) and self.kind(t) == LOGIT
                                                    for t in a):
                return type(a)(sub(t) for t in a)
            return a

        with torch.no_grad():
            free = func(*[sub(a) for a in args], **{k: sub(v) for k, v in kwargs.items()})
        for o, fr in zip(_tensors(out), _tensors(free)):
            o._pxf = fr

    def _set_free(self, out, value):
        for o in _tensors(out):
            o._pxf = torch.zeros_like(o) if value is None else value

    def gate(self, name, func, args, kwargs):
        u = args[0] if args else kwargs["input"]
        if name == "softmax":
            base = u._pxf if self.kind(u) == LOGIT else torch.zeros_like(u)
            g0 = func(base, *args[1:], **kwargs).detach()
        elif self.kind(u) == LOGIT:
            g0 = (torch.sigmoid(u._pxf) if name.startswith("sigmoid") else F.hardsigmoid(u._pxf)).detach()
        else:
            g0 = torch.ones_like(u)
        return _straight_through(g0, u) if self.straight_through else g0

    def attention(self, q, k, v, attn_mask, is_causal, scale, call):
        zeros = torch.zeros(q.shape[:-1] + k.shape[-2:-1], dtype=q.dtype, device=q.device)
        p = _attn_probs(q, k, attn_mask, is_causal, scale, logits=zeros).detach()
        if self.straight_through:
            p = _straight_through(p, (q @ k.transpose(-2, -1)) * (scale if scale is not None else q.size(-1) ** -0.5))
        return p @ v


def _straight_through(g0: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """g0 * (1 + (u - sg(u)) / sg(rms(u))): the value of g0, and the gate's relative change equal to its input's
    relative change (unit slope in relative terms, so the term has the units of a path score at any depth and
    gates in series do not compound K's scale)."""
    d = u.detach()
    rms = d.pow(2).mean().sqrt()
    if not bool(torch.isfinite(rms)) or float(rms) == 0.0:
        return g0
    return g0 + g0 * (u - d) / rms


class BatchStats(TorchFunctionMode):
    """Train-mode BatchNorm (batch statistics) without touching running buffers; activations unchanged.
    Used by the train-mode baselines (SNIP, GraSP) so that scoring never changes the caller's statistics."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            return _batch_stats_batch_norm(args, kwargs)
        return func(*args, **kwargs)
