"""The one mask object of px-hub: a bool tensor per prunable parameter, keyed by parameter name."""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from .._fs import save_safetensors
from ..errors import IntegrityError, InvalidArgumentError, LayerCollapseError, MaskMismatchError

MASK_FORMAT = "px-hub-mask"
MASK_FORMAT_VERSION = "1"
INDEX_ENCODING_BELOW = 1.0 / 32  # layers sparser than this store kept indices instead of packed bits


@dataclass(frozen=True)
class LayerReport:
    name: str
    shape: tuple[int, ...]
    kept: int
    total: int
    alive_outputs: int
    outputs: int

    @property
    def density(self) -> float:
        return self.kept / self.total if self.total else 0.0

    @property
    def collapsed(self) -> bool:
        return self.kept == 0 or self.alive_outputs == 0


class Mask(Mapping[str, torch.Tensor]):
    """``Mapping[str, BoolTensor]``; True = kept. Immutable by convention (methods return new masks)."""

    def __init__(self, masks: Mapping[str, torch.Tensor]):
        self._m: dict[str, torch.Tensor] = {}
        for k, v in masks.items():
            t = torch.as_tensor(v).detach().to("cpu")
            self._m[k] = t if t.dtype == torch.bool else t != 0

    # -- mapping ------------------------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> torch.Tensor:
        return self._m[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._m)

    def __len__(self) -> int:
        return len(self._m)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping) or set(self) != set(other):
            return False
        return all(torch.equal(self[k], torch.as_tensor(other[k]).bool()) for k in self)

    def __repr__(self) -> str:
        return f"Mask({len(self)} layers, density={self.density():.5f}, kept={self.kept()}/{self.total()})"

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def ones(cls, params: Mapping[str, torch.Tensor]) -> Mask:
        return cls({k: torch.ones(p.shape, dtype=torch.bool) for k, p in params.items()})

    @classmethod
    def from_scores(cls, scores: Mapping[str, torch.Tensor], sparsity: float, scope: str = "global") -> Mask:
        """Keep the highest scores: k = floor(sparsity * N) weights are removed; t = k-th smallest score;
        kept = score > t (ties at t are pruned). ``scope='local'`` applies the rule per layer."""
        if scope == "global":
            flat = torch.cat([s.detach().reshape(-1).to("cpu") for s in scores.values()])
            t = _threshold(flat, sparsity)
            return cls({k: (s.detach().to("cpu") > t) if t is not None else torch.ones_like(s, dtype=torch.bool,
                                                                                          device="cpu")
                        for k, s in scores.items()})
        if scope == "local":
            out = {}
            for k, s in scores.items():
                s = s.detach().to("cpu")
                t = _threshold(s.reshape(-1), sparsity)
                out[k] = s > t if t is not None else torch.ones_like(s, dtype=torch.bool)
            return cls(out)
        raise InvalidArgumentError(f"scope must be 'global' or 'local', got {scope!r}")

    # -- statistics ---------------------------------------------------------------------------------------------
    def kept(self) -> int:
        return int(sum(int(m.sum()) for m in self._m.values()))

    def total(self) -> int:
        return int(sum(m.numel() for m in self._m.values()))

    def density(self) -> float:
        t = self.total()
        return self.kept() / t if t else 0.0

    def sparsity(self) -> float:
        return 1.0 - self.density()

    def layer_density(self) -> dict[str, float]:
        return {k: int(m.sum()) / m.numel() for k, m in self._m.items()}

    def report(self) -> list[LayerReport]:
        rows = []
        for k, m in self._m.items():
            outputs = m.shape[0] if m.dim() else 1
            alive = int(m.reshape(outputs, -1).any(dim=1).sum()) if m.dim() else int(m)
            rows.append(LayerReport(k, tuple(m.shape), int(m.sum()), m.numel(), alive, outputs))
        return rows

    def collapsed_layers(self) -> list[str]:
        """Layers with no weight left (then no output unit has a weight either): the mask-only part of ticket
        health, ``TicketHealth.empty_layers``; dead classes need the model (``px_hub.masking.ticket_health``)."""
        return [r.name for r in self.report() if r.collapsed]

    def check_collapse(self, fail: bool = False) -> list[str]:
        bad = self.collapsed_layers()
        if bad and fail:
            raise LayerCollapseError(
                f"layer collapse: {len(bad)} layer(s) lost every weight or output unit ({', '.join(bad[:4])}"
                f"{', ...' if len(bad) > 4 else ''}); lower the sparsity or use more rounds"
            )
        return bad

    def sha256(self) -> str:
        h = hashlib.sha256()
        for k in sorted(self._m):
            m = self._m[k]
            h.update(k.encode() + b"\0" + json.dumps(list(m.shape)).encode() + b"\0")
            h.update(np.packbits(m.numpy().reshape(-1)).tobytes())
        return h.hexdigest()

    # -- models -------------------------------------------------------------------------------------------------
    def validate(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for k, m in self._m.items():
            if k not in params:
                near = [n for n in params if n.endswith(k.split(".")[-1])][:3]
                raise MaskMismatchError(
                    f"mask does not fit the model: it has layer {k!r} which the model lacks"
                    f"{' (model has e.g. ' + ', '.join(near) + ')' if near else ''}; "
                    "load the architecture the mask was made for"
                )
            if tuple(params[k].shape) != tuple(m.shape):
                raise MaskMismatchError(
                    f"mask does not fit the model: {k} is {tuple(m.shape)} in the mask but {tuple(params[k].shape)} "
                    "in the model; load the architecture (and num_classes) the mask was made for"
                )

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> nn.Module:
        """Zero the pruned weights of ``model`` in place (exact zeros)."""
        self.validate(model)
        params = dict(model.named_parameters())
        for k, m in self._m.items():
            p = params[k]
            p.mul_(m.to(device=p.device, dtype=p.dtype))
        return model

    def enforce(self, model: nn.Module) -> MaskEnforcer:
        """Keep pruned weights at exactly zero during training: zero their gradients as they accumulate (so
        momentum and weight decay never move them) and re-zero the weights after each optimizer step
        (``enforcer.after_step()``). Returns a handle; ``handle.remove()`` detaches the hooks."""
        return MaskEnforcer(self, model)

    def for_model(self, model: nn.Module) -> dict[str, torch.Tensor]:
        params = dict(model.named_parameters())
        return {k: m.to(params[k].device) for k, m in self._m.items()}

    def __and__(self, other: Mask) -> Mask:
        return Mask({k: self[k] & other[k] for k in self})

    # -- files --------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
        """Compact safetensors: packed bits per layer, or kept indices where a layer is sparser than 1/32. Identical
        masks and metadata give identical bytes (the header's keys are sorted)."""
        tensors, layers = {}, {}
        for k, m in self._m.items():
            flat = m.reshape(-1)
            if flat.numel() and flat.float().mean().item() < INDEX_ENCODING_BELOW:
                idx = torch.nonzero(flat).reshape(-1)
                tensors[f"{k}::indices"] = idx.to(torch.int32 if flat.numel() < 2**31 else torch.int64)
                enc = "indices"
            else:
                tensors[f"{k}::bits"] = torch.from_numpy(np.packbits(flat.numpy()))
                enc = "bits"
            layers[k] = {"shape": list(m.shape), "encoding": enc}
        meta = {"format": MASK_FORMAT, "version": MASK_FORMAT_VERSION, "layers": json.dumps(layers),
                "sha256": self.sha256()}
        meta.update({str(a): str(b) for a, b in (metadata or {}).items()})
        save_safetensors(tensors, path, metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Mask:
        return cls.load_with_metadata(path)[0]

    @classmethod
    def load_with_metadata(cls, path: str | os.PathLike) -> tuple[Mask, dict[str, str]]:
        from safetensors import safe_open

        try:
            with safe_open(os.fspath(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
            tensors = load_file(os.fspath(path))
        except Exception as e:  # safetensors raises several types for corrupt files
            raise IntegrityError(f"mask file {os.fspath(path)} is corrupt or not safetensors ({e}); "
                                 "download it again") from None
        if meta.get("format") != MASK_FORMAT:
            # plain layout: one uint8/bool tensor per layer (e.g. the reference fixtures)
            return cls(tensors), meta
        out = {}
        try:
            layers = json.loads(meta["layers"])
            for k, info in layers.items():
                shape = tuple(info["shape"])
                n = math.prod(shape)
                if info["encoding"] == "bits":
                    bits = np.unpackbits(tensors[f"{k}::bits"].numpy(), count=n).astype(bool)
                    flat = torch.from_numpy(bits)
                else:
                    flat = torch.zeros(n, dtype=torch.bool)
                    flat[tensors[f"{k}::indices"].long()] = True
                out[k] = flat.reshape(shape)
        except (KeyError, ValueError, IndexError, RuntimeError) as e:
            raise IntegrityError(f"mask file {os.fspath(path)} is corrupt ({e}); download it again") from None
        mask = cls(out)
        if "sha256" in meta and mask.sha256() != meta["sha256"]:
            raise IntegrityError(f"mask file {os.fspath(path)} fails its checksum; download it again")
        return mask, meta


class MaskEnforcer:
    def __init__(self, mask: Mask, model: nn.Module):
        mask.validate(model)
        self.mask, self.model = mask, model
        self._handles = []
        params = dict(model.named_parameters())
        for k, m in mask.items():
            p = params[k]
            keep = m.to(device=p.device)

            def hook(param, keep=keep):
                if param.grad is not None:
                    param.grad.mul_(keep.to(device=param.grad.device, dtype=param.grad.dtype))

            self._handles.append(p.register_post_accumulate_grad_hook(hook))
        mask.apply_(model)

    def after_step(self) -> None:
        self.mask.apply_(self.model)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def _threshold(flat: torch.Tensor, sparsity: float) -> torch.Tensor | None:
    k = int(sparsity * flat.numel())
    if k < 1:
        return None
    return torch.kthvalue(flat, k).values
