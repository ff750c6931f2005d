"""The ticket folder format: file names, the weights hash, and the compact weights encoding.

A ticket is a folder that is also a Hub repo::

    model.safetensors          dense weights in timm's layout, exact zeros where the mask prunes
    config.json                timm's config (architecture, num_classes, pretrained_cfg, ...)
    mask.safetensors           px_hub.Mask (packed bits / kept indices), metadata["weights_sha256"]
    model.compact.safetensors  kept values of every masked tensor + every unmasked tensor dense
    px_config.json             how the mask was made (method, sparsity, data, source, versions, densities)
    results.json               fine-tuning results and training summary (only after fine-tuning)
    density.png                per-layer density plot shown in the card
    README.md                  the model card

``weights_sha256`` is defined over the *dense* state dict (name, dtype, shape and bytes of every tensor in
sorted name order), so the compact copy, once expanded with the mask, verifies against the same digest.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from .._fs import save_safetensors
from ..errors import IntegrityError, InvalidArgumentError
from ..masking import Mask
from ..records import to_jsonable

TICKET_FORMAT = "px-hub-ticket"
TICKET_FORMAT_VERSION = 1
COMPACT_FORMAT = "px-hub-compact"
COMPACT_FORMAT_VERSION = "1"

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
MASK_FILE = "mask.safetensors"
COMPACT_FILE = "model.compact.safetensors"
PX_CONFIG_FILE = "px_config.json"
RESULTS_FILE = "results.json"
DENSITY_PLOT_FILE = "density.png"
CARD_FILE = "README.md"


def weights_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the dense tensors: for each name in sorted order, name, dtype, shape and raw bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}\0{str(t.dtype).removeprefix('torch.')}\0{json.dumps(list(t.shape))}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def masked_state_dict(model: torch.nn.Module, mask: Mask) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``model.state_dict()`` with pruned weights set to exact +0.0 (never -0.0, so the
    bytes - hence the hash - do not depend on the sign of a pruned weight). Tied tensors are copied apart."""
    mask.validate(model)
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if name in mask:
            t = torch.where(mask[name], t, torch.zeros((), dtype=t.dtype))
        out[name] = t.clone().contiguous()
    return out


def count_nonzero_pruned(tensors: Mapping[str, torch.Tensor], mask: Mask) -> dict[str, int]:
    """Number of nonzero values at pruned positions, per masked tensor that has any."""
    bad = {}
    for name, m in mask.items():
        if name in tensors:
            n = int((tensors[name].reshape(m.shape)[~m] != 0).sum())
            if n:
                bad[name] = n
    return bad


def save_weights(tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str] | None = None) -> None:
    save_safetensors(tensors, path, metadata={"format": "pt", **dict(metadata or {})})


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file; any corruption becomes an IntegrityError that names the file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return load_file(str(path)), meta
    except FileNotFoundError:
        raise
    except Exception as e:  # safetensors raises several types on corrupt headers / truncated data
        raise IntegrityError(f"{path} is corrupt or not safetensors ({type(e).__name__}); download it again") from None


def save_compact(tensors: Mapping[str, torch.Tensor], mask: Mask, path: Path, digest: str) -> None:
    """Write only the kept values of each masked tensor (row-major order of the mask's True entries) and every
    other tensor dense. Expanding needs ``mask.safetensors``; the header records both hashes."""
    out, sparse = {}, {}
    for name, t in tensors.items():
        if name in mask:
            out[name] = t.reshape(mask[name].shape)[mask[name]].contiguous()
            sparse[name] = list(mask[name].shape)
        else:
            out[name] = t
    meta = {"format": COMPACT_FORMAT, "version": COMPACT_FORMAT_VERSION, "sparse": json.dumps(sparse),
            "weights_sha256": digest, "mask_sha256": mask.sha256()}
    save_safetensors(out, path, metadata=meta)


def expand_compact(path: Path, mask: Mask) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rebuild the dense state dict from a compact file and its mask (exact zeros at pruned positions)."""
    values, meta = load_weights(path)
    if meta.get("format") != COMPACT_FORMAT:
        raise IntegrityError(f"{path} is not a px-hub compact weights file; download the ticket again")
    if meta.get("mask_sha256") != mask.sha256():
        raise IntegrityError(f"{path} was written for a different mask than {MASK_FILE}; download the ticket again")
    try:
        sparse = json.loads(meta["sparse"])
    except (KeyError, ValueError):
        raise IntegrityError(f"{path} has a corrupt header; download the ticket again") from None
    dense = {}
    for name, t in values.items():
        if name not in sparse:
            dense[name] = t
            continue
        m = mask.get(name)
        if m is None or list(m.shape) != sparse[name] or t.numel() != int(m.sum()):
            raise IntegrityError(f"{path}: {name} does not match {MASK_FILE}; download the ticket again")
        full = torch.zeros(m.shape, dtype=t.dtype)
        full[m] = t
        dense[name] = full
    return dense, meta


# -- what px_config.json claims, checked against the mask ----------------------------------------------------------

CONFIG_SEAL_KEY = "px_config_sha256"          # in mask.safetensors' metadata
UNSEALED_KEYS = ("ticket", "achieved", "layer_density")  # re-stamped from the mask by px-hub (push, fine-tuning)


def config_seal(cfg: Mapping) -> str:
    """sha256 of px_config.json's record (everything but the keys px-hub re-stamps from the mask), canonical JSON.
    Stored in mask.safetensors when the ticket is written, so an edit of how the mask was made (method, target
    sparsity, data, source model, ...) no longer matches the mask file."""
    body = {k: v for k, v in cfg.items() if k not in UNSEALED_KEYS}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     default=to_jsonable).encode()).hexdigest()


def check_px_config(cfg: Mapping, mask: Mask, mask_meta: Mapping[str, str]) -> None:
    """Every figure px_config.json states (kept, total, sparsity, density, per-layer counts and densities,
    collapsed layers, hashes) must equal what the mask gives, the method's target sparsity must allow the kept
    count, and the record must match the seal in mask.safetensors. Raises IntegrityError naming px_config.json
    and the first disagreement (the caller says which ticket and what helps)."""
    def bad(what: str) -> None:
        raise IntegrityError(f"{PX_CONFIG_FILE} {what}")

    seal = mask_meta.get(CONFIG_SEAL_KEY)
    if not seal:
        bad(f"is not sealed by {MASK_FILE} (no {CONFIG_SEAL_KEY}: written by an older px-hub or re-saved by hand)")
    if config_seal(cfg) != seal:
        bad(f"was edited after the ticket was written (its record no longer matches the seal in {MASK_FILE})")
    kept, total = mask.kept(), mask.total()
    ticket = cfg.get("ticket") if isinstance(cfg.get("ticket"), Mapping) else {}
    facts = {
        ("ticket", "format"): TICKET_FORMAT,
        ("ticket", "mask_sha256"): mask.sha256(),
        ("ticket", "weights_sha256"): mask_meta.get("weights_sha256"),
        ("achieved", "kept"): kept, ("achieved", "total"): total,
        ("achieved", "sparsity"): round(mask.sparsity(), 6), ("achieved", "density"): round(mask.density(), 6),
        ("achieved", "collapsed_layers"): mask.collapsed_layers(),
        ("layer_density",): {k: round(v, 6) for k, v in mask.layer_density().items()},
    }
    if not ticket:
        bad("has no ticket section (format, hashes)")
    for path, expected in facts.items():
        node = cfg
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if node != expected:
            bad(f"states {'.'.join(path)} = {_short(node)} but {MASK_FILE} gives {_short(expected)}")
    record = {"kept": kept, "total": total, "mask_sha256": mask.sha256(), "achieved_sparsity": mask.sparsity(),
              "collapsed_layers": mask.collapsed_layers()}
    for key, expected in record.items():  # the prune record's own figures, where present
        if key in cfg and cfg[key] != expected:
            bad(f"states {key} = {_short(cfg[key])} but {MASK_FILE} gives {_short(expected)}")
    if "per_layer" in cfg:
        rows = cfg["per_layer"] if isinstance(cfg["per_layer"], list) else []
        truth = [{"name": r.name, "shape": list(r.shape), "kept": r.kept, "total": r.total, "density": r.density,
                  "alive_outputs": r.alive_outputs, "outputs": r.outputs} for r in mask.report()]
        if [r.get("name") if isinstance(r, Mapping) else None for r in rows] != [t["name"] for t in truth]:
            bad(f"per_layer does not list the layers of {MASK_FILE}")
        for row, t in zip(rows, truth):
            for key, expected in t.items():
                if key in row and row[key] != expected:
                    bad(f"states per_layer {t['name']} {key} = {_short(row[key])} but {MASK_FILE} gives "
                        f"{_short(expected)}")
    target = cfg.get("sparsity")
    if target is not None:
        try:
            s = float(target)
        except (TypeError, ValueError):
            s = -1.0
        if not 0.0 < s < 1.0:
            bad(f"states target sparsity {target!r}, not a number in (0, 1)")
        if cfg.get("density") is not None and abs(float(cfg["density"]) - (1.0 - s)) > 1e-9:
            bad(f"states density {cfg['density']} with target sparsity {s}")
        layers = [m.numel() for m in mask.values()] if cfg.get("scope") == "local" else [total]
        # Mask.from_scores removes at least int(s * n); 1 % of the weights of slack for masks made by hand
        allowed = sum(n - int(s * n) for n in layers) + math.ceil(0.01 * total)
        if kept > allowed:
            bad(f"states target sparsity {s} but {MASK_FILE} keeps {kept} of {total} weights (far more than "
                "that sparsity allows)")


def _short(x) -> str:
    text = json.dumps(x, default=to_jsonable) if not isinstance(x, str) else x
    return text if len(text) <= 60 else text[:57] + "..."


def read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise
    except ValueError as e:
        raise IntegrityError(f"{path} is not valid JSON ({e}); download the ticket again") from None
    if not isinstance(data, dict):
        raise IntegrityError(f"{path} must hold a JSON object; download the ticket again")
    return data


def write_json(path: Path, data: Mapping) -> None:
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=to_jsonable) + "\n")
    os.replace(tmp, path)


def require_ticket_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidArgumentError(f"{folder} is not a folder; pass a ticket folder written by `px-hub prune`")
    missing = [f for f in (CONFIG_FILE, MASK_FILE) if not (folder / f).is_file()]
    if not (folder / WEIGHTS_FILE).is_file() and not (folder / COMPACT_FILE).is_file():
        missing.append(f"{WEIGHTS_FILE} or {COMPACT_FILE}")
    if missing:
        raise InvalidArgumentError(
            f"{folder} is not a px-hub ticket (missing {', '.join(missing)}); pass a folder written by `px-hub prune`"
        )
    return folder
