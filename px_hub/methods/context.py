"""What a scoring method gets: the model, its prunable weights and current mask, this process's pruning
batches, and the cross-process reductions."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from ..errors import UnsupportedModelError
from ..masking.targets import classifier_module


def logits_of(out) -> torch.Tensor:
    """The logits of a forward's output: a tensor, or ``.logits`` / ``["logits"]`` of a transformers
    ``ModelOutput`` or a dict."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, Mapping):
        logits = out.get("logits")
    if isinstance(logits, torch.Tensor):
        return logits
    raise UnsupportedModelError(
        f"the model's forward returned {type(out).__name__}, not logits; scoring needs a tensor or an output with "
        "a .logits tensor (e.g. a transformers ModelOutput); wrap the model so that it returns the class logits")


def call_with(model: nn.Module, overrides: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` with some parameters/buffers replaced (``torch.func.functional_call``); the model's own
    tensors are untouched. Returns the logits (see :func:`logits_of`)."""
    return logits_of(functional_call(model, overrides, (x,), strict=False))


def channels_last(t: torch.Tensor) -> torch.Tensor:
    """oneDNN's / cuDNN's fast convolution layout for 4-D tensors (others unchanged); changes rounding, not values."""
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def accumulate_grads(acc: dict[str, torch.Tensor], out: torch.Tensor, leaves: dict[str, torch.Tensor]) -> None:
    """``acc[n] += ∂out/∂leaves[n]`` for every name of ``acc`` (float64 accumulators; unused leaves add nothing)."""
    names = list(acc)
    for n, g in zip(names, torch.autograd.grad(out, [leaves[n] for n in names], allow_unused=True)):
        if g is not None:
            acc[n] += g


@dataclass
class ScoringContext:
    model: nn.Module                       # in eval mode for the duration of scoring; never modified
    targets: dict[str, nn.Parameter]       # prunable parameters (name -> parameter of ``model``)
    mask: dict[str, torch.Tensor]          # current mask per target (bool, on the model's device)
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]]  # this process's whole batches (on device, model dtype)
    batch_ids: Sequence[int]               # global index of each batch (same split in any process count)
    input_shape: tuple[int, ...]           # one sample's shape, e.g. (3, 32, 32)
    seed: int = 0
    round: int = 0
    options: dict = field(default_factory=dict)  # the method's resolved options
    reduce_sum: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda t: t)
    gather_by_id: Callable[[dict[int, torch.Tensor]], list[torch.Tensor]] = field(
        default=lambda d: [d[k] for k in sorted(d)])

    @property
    def device(self) -> torch.device:
        return next(iter(self.targets.values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.targets.values())).dtype

    def generator(self, salt: int = 0) -> torch.Generator:
        g = torch.Generator(device="cpu")
        g.manual_seed((self.seed * 1_000_003 + self.round * 7919 + salt) % (2**63))
        return g

    notes: dict = field(default_factory=dict)  # what a method reports about this round (kept in the record)
    _float_masks: dict = field(default_factory=dict, repr=False)

    def float_mask(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """The mask of a target as 0/1 values of ``dtype`` (converted once per round, then reused by every view)."""
        key = (name, dtype)
        if key not in self._float_masks:
            self._float_masks[key] = self.mask[name].to(dtype)
        return self._float_masks[key]

    def masked(self, name: str, value: torch.Tensor | None = None) -> torch.Tensor:
        """``value ⊙ m`` for a target (default value: the parameter itself)."""
        v = self.targets[name] if value is None else value
        return v * self.float_mask(name, v.dtype)

    def call(self, overrides: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return call_with(self.model, overrides, x)

    def head_name(self) -> str | None:
        head = classifier_module(self.model)
        return head[0] if head else None

    def require_live_head(self, method: str) -> None:
        """PX's paths end in the classifier: an all-zero classifier weight (timm zero-initializes some heads, e.g.
        MLP-Mixer's, at random init) makes every path, hence every score, exactly zero. Refuse with the fix."""
        name = self.head_name()
        w = getattr(self.model.get_submodule(name), "weight", None) if name else None
        if isinstance(w, torch.Tensor) and w.numel() and not bool(w.detach().any()):
            raise UnsupportedModelError(
                f"{method} cannot score this model: its classifier {name}.weight is all zeros (a zero-initialized "
                "head, as timm gives MLP-Mixer at random init), so every path and every score is 0; load trained "
                "weights, initialize the head (e.g. torch.nn.init.trunc_normal_(head.weight, std=0.02)), or use "
                "a data-free method such as --method synflow")
