"""Empirical Fixed-Weight NTK of a (pruned) network and its eigenspectrum.

For inputs x_1..x_N and logits f_c, the empirical NTK is Θ = J Jᵀ with J the Jacobian of the N·C selected outputs
(rows ordered sample-major: row n·C + c) with respect to the trainable parameters. For a pruned network the
*Fixed-Weight* NTK (PX paper, Sec. 3) differentiates f(x; θ ⊙ m): pruned weights are held at zero, so their
Jacobian columns vanish and are simply left out. BatchNorm runs in eval mode (running statistics) and dropout is
off, so every sample is independent and Θ does not depend on how samples are grouped.

Cost: J is materialized with ``torch.func`` (``vmap`` over samples of ``jacrev``), float32, only the kept columns:
``N·C·P_kept·4`` bytes (e.g. ResNet-20 dense, P = 272 k, N = 20, C = 10: 218 MB), plus one chunk of per-sample
Jacobians (sized to ``chunk_bytes``). Θ (N·C square) is accumulated in float64 and diagonalized with ``eigvalsh``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from ..errors import InvalidArgumentError, UnsupportedModelError
from ..masking import Mask

DEFAULT_MAX_OUTPUTS = 10
DEFAULT_CHUNK_BYTES = 256 * 2**20


@dataclass
class NTKSpectrum:
    """Eigenvalues (descending, float64) of the empirical NTK, with the numbers the report quotes."""

    eigenvalues: np.ndarray
    samples: int
    outputs: list[int]
    parameters: int
    seconds: float
    jacobian_bytes: int
    extra: dict = field(default_factory=dict)

    @property
    def trace(self) -> float:
        return float(self.eigenvalues.sum())

    @property
    def top(self) -> float:
        return float(self.eigenvalues[0])

    @property
    def condition_number(self) -> float:
        """λ_max / λ_min over the strictly positive eigenvalues (relative cut 1e-12 of λ_max)."""
        pos = self.eigenvalues[self.eigenvalues > self.top * 1e-12]
        return float(pos[0] / pos[-1]) if pos.size else math.inf

    def to_dict(self, with_eigenvalues: bool = True) -> dict:
        out = {"trace": self.trace, "top_eigenvalue": self.top, "condition_number": self.condition_number,
               "samples": self.samples, "outputs": list(self.outputs), "parameters": self.parameters,
               "jacobian_mb": round(self.jacobian_bytes / 2**20, 2), "seconds": round(self.seconds, 3)}
        if with_eigenvalues:
            out["eigenvalues"] = [float(v) for v in self.eigenvalues]
        out.update(self.extra)
        return out


def compare_spectra(pruned: NTKSpectrum, dense: NTKSpectrum) -> dict:
    """How far a pruned spectrum is from the dense one: ratios of trace and top eigenvalue (1 = identical) and
    the mean |log10 λ_pruned,i − log10 λ_dense,i| over the sorted eigenvalues both have above 1e-12·λ_max."""
    if pruned.eigenvalues.shape != dense.eigenvalues.shape:
        raise InvalidArgumentError("spectra of different sizes; compute both on the same inputs and outputs")
    cut = 1e-12 * max(pruned.top, dense.top, 0.0)
    both = (pruned.eigenvalues > cut) & (dense.eigenvalues > cut)
    if both.any():
        dist = float(np.mean(np.abs(np.log10(pruned.eigenvalues[both]) - np.log10(dense.eigenvalues[both]))))
    else:
        dist = math.inf
    return {"trace_ratio": pruned.trace / dense.trace if dense.trace else math.nan,
            "top_eigenvalue_ratio": pruned.top / dense.top if dense.top else math.nan,
            "mean_abs_log10_eigenvalue_gap": dist}


def pick_outputs(num_outputs: int, max_outputs: int | None = DEFAULT_MAX_OUTPUTS) -> list[int]:
    """All outputs when there are at most ``max_outputs``, else ``max_outputs`` evenly spaced indices (fixed,
    so a pruned and a dense model are compared on the same logits)."""
    if max_outputs is None or num_outputs <= max_outputs:
        return list(range(num_outputs))
    if max_outputs < 1:
        raise InvalidArgumentError(f"max_outputs must be >= 1, got {max_outputs}")
    return sorted({int(round(i * (num_outputs - 1) / max(max_outputs - 1, 1))) for i in range(max_outputs)})


def _logits(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise UnsupportedModelError(
        f"the model returns {type(out).__name__}, not a logits tensor; pass a classifier (e.g. timm model) for the NTK"
    )


def empirical_ntk(model: nn.Module, inputs: torch.Tensor, mask: Mask | None = None,
                  outputs: Sequence[int] | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES
                  ) -> tuple[torch.Tensor, dict]:
    """Θ = J Jᵀ (float64, (N·len(outputs))²) of ``model`` at its weights ⊙ ``mask``, on ``inputs`` (N×...).

    ``outputs``: logit indices to differentiate (default: all). The model's weights, mode and gradients are left
    as they were. Returns (Θ, info) with info = {"parameters": kept trainable entries, "jacobian_bytes": ...}.
    """
    if inputs.dim() < 2 or inputs.shape[0] < 1:
        raise InvalidArgumentError("inputs must be a batch (N x ...) with N >= 1")
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())
    if mask is not None:
        mask.validate(model)
    keep = {k: mask[k].to(p.device) for k, p in params.items() if mask is not None and k in mask}
    # kept column indices per parameter (None = all)
    cols = {k: (torch.nonzero(keep[k].reshape(-1)).reshape(-1) if k in keep else None) for k in params}
    n_cols = sum(p.numel() if cols[k] is None else cols[k].numel() for k, p in params.items())
    device = inputs.device

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probe = _logits(model(inputs[:1]))
        if probe.dim() != 2:
            raise UnsupportedModelError(f"the model's logits have shape {tuple(probe.shape)}; the NTK needs N x C")
        outs = list(range(probe.shape[1])) if outputs is None else [int(o) for o in outputs]
        if not outs or min(outs) < 0 or max(outs) >= probe.shape[1]:
            raise InvalidArgumentError(f"outputs must index the model's {probe.shape[1]} logits, got {outs}")
        out_idx = torch.tensor(outs, device=probe.device)

        def f(p: dict, x: torch.Tensor) -> torch.Tensor:
            if keep:
                p = {k: (v * keep[k] if k in keep else v) for k, v in p.items()}
            return _logits(functional_call(model, (p, buffers), (x.unsqueeze(0),))).squeeze(0).index_select(0, out_idx)

        per_sample = vmap(jacrev(f), in_dims=(None, 0))
        n, c = inputs.shape[0], len(outs)
        bytes_per_sample = c * sum(p.numel() for p in params.values()) * 4
        chunk = max(1, min(n, chunk_bytes // max(bytes_per_sample, 1)))
        jac = torch.empty(n * c, n_cols, dtype=torch.float32, device=device)
        for start in range(0, n, chunk):
            x = inputs[start:start + chunk]
            blocks = per_sample(params, x)  # name -> (n_chunk, C, *shape)
            col = 0
            for k in params:
                b = blocks[k].reshape(x.shape[0] * c, -1)
                if cols[k] is not None:
                    b = b.index_select(1, cols[k])
                jac[start * c:(start + x.shape[0]) * c, col:col + b.shape[1]] = b
                col += b.shape[1]
            del blocks
    finally:
        model.train(was_training)
    theta = torch.zeros(n * c, n * c, dtype=torch.float64, device=device)
    step = 1 << 16
    for s in range(0, n_cols, step):
        jb = jac[:, s:s + step].double()
        theta += jb @ jb.T
    return theta, {"parameters": n_cols, "jacobian_bytes": jac.numel() * jac.element_size(), "outputs": outs}


def ntk_spectrum(model: nn.Module, inputs: torch.Tensor, mask: Mask | None = None,
                 outputs: Sequence[int] | None = None, max_outputs: int | None = DEFAULT_MAX_OUTPUTS,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> NTKSpectrum:
    """Eigenvalues of the empirical Fixed-Weight NTK (see :func:`empirical_ntk`), descending. When ``outputs``
    is not given, all logits are used up to ``max_outputs`` (then evenly spaced ones)."""
    t0 = time.perf_counter()
    if outputs is None:
        with torch.no_grad():
            was = model.training
            model.eval()
            try:
                num = _logits(model(inputs[:1])).shape[-1]
            finally:
                model.train(was)
        outputs = pick_outputs(num, max_outputs)
    theta, info = empirical_ntk(model, inputs, mask=mask, outputs=outputs, chunk_bytes=chunk_bytes)
    eig = torch.linalg.eigvalsh(theta).flip(0).cpu().numpy()
    return NTKSpectrum(eigenvalues=eig, samples=int(inputs.shape[0]), outputs=list(info["outputs"]),
                       parameters=int(info["parameters"]), seconds=time.perf_counter() - t0,
                       jacobian_bytes=int(info["jacobian_bytes"]))
