"""Write, update and load ticket folders (see :mod:`px_hub.hub.format` for the layout)."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import (IntegrityError, InvalidArgumentError, MaskMismatchError, OutputExistsError, UnknownNameError,
                      UnsupportedModelError)
from ..masking import Mask
from ..records import library_versions
from ..records import to_jsonable as _plain
from . import format as fmt

# -- writing ----------------------------------------------------------------------------------------------------

def save_ticket(
    out_dir: str | os.PathLike,
    model: nn.Module,
    mask: Mapping[str, torch.Tensor],
    px_config: dict,
    *,
    data_config: dict | None = None,
    source: dict | None = None,
    eval_results: list[dict] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a complete ticket folder atomically (built in a hidden sibling folder, then renamed into place).

    ``model`` is left untouched: the mask is applied to a copy of its weights (exact zeros). ``px_config`` is
    ``prune_with_record(...).record`` plus ``data``/``model`` entries; ``data_config`` is the preprocessing (timm
    keys) recorded in ``config.json``; ``source`` (``LoadedModel.info``) fills ``px_config["model"]`` if absent.
    """
    out = Path(out_dir)
    _check_output(out, overwrite)
    mask = mask if isinstance(mask, Mask) else Mask(mask)
    mask.validate(model)
    tensors = fmt.masked_state_dict(model, mask)
    digest = fmt.weights_sha256(tensors)

    cfg = _plain(dict(px_config or {}))
    if source and "model" not in cfg:
        cfg["model"] = _plain(dict(source))
    cfg.setdefault("versions", library_versions())
    _stamp(cfg, mask, digest)

    def build(tmp: Path) -> None:
        _write_model_config(model, tmp / fmt.CONFIG_FILE, data_config, cfg.get("model") or {})
        _write_weights(tmp, tensors, mask, digest)
        fmt.write_json(tmp / fmt.PX_CONFIG_FILE, cfg)
        if eval_results:
            fmt.write_json(tmp / fmt.RESULTS_FILE, {"eval_results": _check_eval_results(eval_results)})
        from .card import render_card

        render_card(tmp, name=out.name)

    _build_atomically(out, build, replace=out.exists())
    return out


def update_ticket(
    folder: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    eval_results: list[dict] | None = None,
    extra_files: dict[str, str | os.PathLike] | None = None,
    training: dict | None = None,
) -> Path:
    """Update a ticket after fine-tuning: new weights (the mask is re-verified: every pruned weight must still be
    exactly zero), eval results (replacing earlier ones for the same dataset/split/metric), a training summary,
    extra files (``{name in the repo: local path}``: curve plot, recipe, metrics), then re-render the card.
    The folder is rebuilt in a sibling and swapped in, so a failure leaves the old ticket as it was."""
    folder = fmt.require_ticket_folder(folder)
    mask, meta = _load_mask(folder)
    new_tensors = None
    if model is not None:
        mask.validate(model)
        sd = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
        bad = fmt.count_nonzero_pruned(sd, mask)
        if bad:
            name, n = next(iter(bad.items()))
            raise MaskMismatchError(
                f"the trained weights have {sum(bad.values())} nonzero value(s) at pruned positions ({name}: {n}); "
                "train with mask.enforce(model) (and call .after_step() after each optimizer step)"
            )
        new_tensors = fmt.masked_state_dict(model, mask)  # canonical +0.0 at pruned positions
    for name, src in (extra_files or {}).items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise InvalidArgumentError(f"extra file name {name!r} must be a relative path inside the ticket")
        if not Path(src).is_file():
            raise InvalidArgumentError(f"extra file {src} does not exist; pass an existing file for {name!r}")
        if name in _RESERVED:
            raise InvalidArgumentError(f"extra file name {name!r} is reserved by the ticket format; pick another")
    checked_results = _check_eval_results(eval_results) if eval_results else None

    def build(tmp: Path) -> None:
        for item in folder.iterdir():
            if item.name.startswith("."):
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        cfg = fmt.read_json(tmp / fmt.PX_CONFIG_FILE) if (tmp / fmt.PX_CONFIG_FILE).exists() else {}
        if new_tensors is not None:
            digest = fmt.weights_sha256(new_tensors)
            _write_weights(tmp, new_tensors, mask, digest, mask_metadata=meta)
            _stamp(cfg, mask, digest)
            fmt.write_json(tmp / fmt.PX_CONFIG_FILE, cfg)
        if checked_results is not None or training is not None:
            path = tmp / fmt.RESULTS_FILE
            results = fmt.read_json(path) if path.exists() else {}
            if checked_results is not None:
                results["eval_results"] = _merge_results(results.get("eval_results") or [], checked_results)
            if training is not None:
                results["training"] = _plain(dict(training))
            fmt.write_json(path, results)
        for name, src in (extra_files or {}).items():
            dst = tmp / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        from .card import render_card

        render_card(tmp, repo_id=_card_repo_id(tmp), name=folder.name)

    _build_atomically(folder, build, replace=True)
    return folder


_RESERVED = {fmt.WEIGHTS_FILE, fmt.CONFIG_FILE, fmt.MASK_FILE, fmt.COMPACT_FILE, fmt.PX_CONFIG_FILE,
             fmt.RESULTS_FILE, fmt.CARD_FILE, fmt.DENSITY_PLOT_FILE}


# -- reading ----------------------------------------------------------------------------------------------------

def load_ticket(folder: str | os.PathLike) -> tuple[nn.Module, Mask, dict]:
    """Load a ticket folder as ``(model in eval mode, mask, px_config)`` after verifying it: the mask's own
    checksum, that it fits the architecture in ``config.json``, that the weights (``model.safetensors``, or the
    compact copy expanded with the mask) hash to the mask's ``weights_sha256``, and that every pruned weight is
    exactly zero."""
    folder = fmt.require_ticket_folder(folder)
    tensors, mask = read_verified_weights(folder)
    model = build_model(folder)
    mask.validate(model)
    _load_state(model, tensors)
    px_config = fmt.read_json(folder / fmt.PX_CONFIG_FILE) if (folder / fmt.PX_CONFIG_FILE).exists() else {}
    return model.eval(), mask, px_config


def read_verified_weights(folder: Path) -> tuple[dict[str, torch.Tensor], Mask]:
    """The dense state dict of a ticket (from ``model.safetensors``, else the compact copy) and its mask, with
    the hash and the exact-zero property verified. Raises IntegrityError naming the bad file."""
    mask, meta = _load_mask(folder)
    expected = meta.get("weights_sha256")
    if not expected:
        raise IntegrityError(f"{folder / fmt.MASK_FILE} records no weights_sha256; re-save the ticket with px-hub")
    dense_path, compact_path = folder / fmt.WEIGHTS_FILE, folder / fmt.COMPACT_FILE
    if dense_path.is_file():
        tensors, _ = fmt.load_weights(dense_path)
        source = dense_path
    else:
        tensors, _ = fmt.expand_compact(compact_path, mask)
        source = compact_path
    if fmt.weights_sha256(tensors) != expected:
        raise IntegrityError(
            f"{source} does not match the weights_sha256 recorded in {fmt.MASK_FILE} (corrupt or altered weights); "
            "download the ticket again"
        )
    missing = [k for k in mask if k not in tensors]
    if missing:
        raise IntegrityError(f"{source} lacks masked tensor {missing[0]!r}; download the ticket again")
    bad = fmt.count_nonzero_pruned(tensors, mask)
    if bad:
        name, n = next(iter(bad.items()))
        raise IntegrityError(f"{source}: {n} pruned weight(s) of {name} are not zero; download the ticket again")
    return tensors, mask


def build_model(folder: Path) -> nn.Module:
    """An untrained model of the ticket's architecture, built from its ``config.json`` (timm layout)."""
    import timm

    cfg = fmt.read_json(folder / fmt.CONFIG_FILE)
    arch = cfg.get("architecture")
    if not arch:
        raise IntegrityError(f"{folder / fmt.CONFIG_FILE} names no architecture; download the ticket again")
    if cfg.get("px_hub_loader"):
        from ..backbones import load_backbone

        return load_backbone(cfg["px_hub_loader"], num_classes=cfg.get("num_classes"), pretrained=False).model
    if not timm.is_model(arch):
        raise UnknownNameError(
            f"the ticket's architecture {arch!r} is not a timm model here; upgrade timm (`pip install -U timm`)"
        )
    try:
        return timm.create_model(f"local-dir:{folder.resolve()}", pretrained=False)
    except (TypeError, ValueError, RuntimeError) as e:
        raise IntegrityError(f"cannot build {arch!r} from {folder / fmt.CONFIG_FILE} ({e})") from None


def _load_state(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    from ..backbones._common import load_exact

    load_exact(model, tensors, "the ticket's weights", error=MaskMismatchError,
               fix="the ticket's config.json does not match its weights; download or re-save the ticket")


def _card_repo_id(folder: Path) -> str | None:
    """The repo id a pushed ticket's card already names (kept when the card is re-rendered)."""
    cfg = fmt.read_json(folder / fmt.PX_CONFIG_FILE) if (folder / fmt.PX_CONFIG_FILE).exists() else {}
    return (cfg.get("ticket") or {}).get("repo_id")


def _load_mask(folder: Path) -> tuple[Mask, dict[str, str]]:
    path = folder / fmt.MASK_FILE
    return Mask.load_with_metadata(path)


# -- helpers ----------------------------------------------------------------------------------------------------

def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder; pick another output path")


def _build_atomically(out: Path, build, replace: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    tmp = out.parent / f".{out.name}.partial-{token}"
    tmp.mkdir()
    try:
        build(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if replace and out.exists():
        old = out.parent / f".{out.name}.old-{token}"
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _write_weights(folder: Path, tensors: dict, mask: Mask, digest: str, mask_metadata: dict | None = None) -> None:
    fmt.save_weights(tensors, folder / fmt.WEIGHTS_FILE)
    meta = {k: v for k, v in (mask_metadata or {}).items() if k not in ("format", "version", "layers", "sha256")}
    meta["weights_sha256"] = digest
    mask.save(folder / fmt.MASK_FILE, metadata=meta)
    fmt.save_compact(tensors, mask, folder / fmt.COMPACT_FILE, digest)


def _stamp(cfg: dict, mask: Mask, digest: str) -> None:
    """Facts the ticket itself guarantees (computed from the mask, not copied from the record)."""
    cfg["layer_density"] = {k: round(v, 6) for k, v in mask.layer_density().items()}
    cfg["achieved"] = {"sparsity": round(mask.sparsity(), 6), "density": round(mask.density(), 6),
                       "kept": mask.kept(), "total": mask.total(), "collapsed_layers": mask.collapsed_layers()}
    cfg["ticket"] = {"format": fmt.TICKET_FORMAT, "version": fmt.TICKET_FORMAT_VERSION,
                     "weights_sha256": digest, "mask_sha256": mask.sha256(),
                     "files": {"weights": fmt.WEIGHTS_FILE, "compact": fmt.COMPACT_FILE, "mask": fmt.MASK_FILE}}


def _write_model_config(model: nn.Module, path: Path, data_config: dict | None, source: dict) -> None:
    if getattr(model, "pretrained_cfg", None) is None:
        if source.get("library") == "open_clip" and source.get("architecture"):
            # open_clip image classifier (visual tower + new head): no stock loader exists for the visual tower
            # alone, so the config names the px-hub loader that rebuilds it (load_backbone("open_clip:ARCH")).
            dc = {k: list(v) if isinstance(v, tuple) else v for k, v in (data_config or {}).items()}
            fmt.write_json(path, {"architecture": source["architecture"], "library": "open_clip",
                                  "px_hub_loader": f"open_clip:{source['architecture']}",
                                  "num_classes": int(getattr(model, "num_classes", 0)) or None,
                                  "num_features": getattr(model, "num_features", None),
                                  "pretrained_cfg": {**dc, "license": source.get("license")}})
            return
        raise UnsupportedModelError(
            f"{type(model).__name__} is not a timm model (no pretrained_cfg); save tickets of models loaded with "
            "px_hub.backbones.load_backbone or timm.create_model"
        )
    from timm.models._hub import save_config_for_hf

    dc = {k: v for k, v in (data_config or {}).items()
          if k in ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")}
    model_config = {}
    license_ = source.get("license")
    if license_:
        model_config["pretrained_cfg"] = {"license": license_}
    save_config_for_hf(model, str(path), model_config=model_config, data_config=dc or None)


def _check_eval_results(items: list[dict]) -> list[dict]:
    out = []
    for i, r in enumerate(items):
        if not isinstance(r, Mapping):
            raise InvalidArgumentError(f"eval_results[{i}] must be a dict, got {type(r).__name__}")
        need = [k for k in ("dataset", "metric", "value") if r.get(k) is None]
        if need:
            raise InvalidArgumentError(
                f"eval_results[{i}] lacks {', '.join(need)}; give task, dataset, split, metric, name and value"
            )
        try:
            value = float(r["value"])
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"eval_results[{i}]['value'] must be a number, got {r['value']!r}") from None
        item = {"task": r.get("task") or "image-classification", "dataset": str(r["dataset"]),
                "dataset_name": str(r.get("dataset_name") or r["dataset"]), "split": r.get("split"),
                "metric": str(r["metric"]), "name": r.get("name"), "value": value}
        item.update({k: _plain(v) for k, v in r.items() if k not in item})
        out.append(item)
    return out


def _merge_results(old: list[dict], new: list[dict]) -> list[dict]:
    key = lambda r: (r.get("task"), r.get("dataset"), r.get("split"), r.get("metric"), r.get("name"))  # noqa: E731
    replaced = {key(r) for r in new}
    return [r for r in old if key(r) not in replaced] + new
