"""Write, update and load ticket folders (see :mod:`px_hub.hub.format` for the layout)."""
from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .._fs import build_atomically, check_output, output_lock
from .._weights import load_exact, timm_data_config
from ..data.transforms import DATA_CONFIG_KEYS
from ..errors import IntegrityError, InvalidArgumentError, MaskMismatchError, UnknownNameError, UnsupportedModelError
from ..masking import Mask
from ..records import library_versions
from ..records import to_jsonable as _plain
from . import format as fmt
from . import layouts

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
    check_output(out, overwrite)
    mask = mask if isinstance(mask, Mask) else Mask(mask)
    mask.validate(model)
    tensors = fmt.masked_state_dict(model, mask)
    digest = fmt.weights_sha256(tensors)
    layout_meta = layouts.weights_metadata(model)  # transformers layout: file key names (see layouts)

    cfg = _plain(dict(px_config or {}))
    if source and "model" not in cfg:
        cfg["model"] = _plain(dict(source))
    cfg.setdefault("versions", library_versions())
    _stamp(cfg, mask, digest)
    seal = {fmt.CONFIG_SEAL_KEY: fmt.config_seal(cfg)}
    try:  # the record must fit the mask before anything is written (the same check every reader makes)
        fmt.check_px_config(cfg, mask, {"weights_sha256": digest, **seal})
    except IntegrityError as e:
        raise InvalidArgumentError(f"the record given for {out} does not fit its mask: {e}") from None

    def build(tmp: Path) -> None:
        _write_model_config(model, tmp / fmt.CONFIG_FILE, data_config, cfg.get("model") or {})
        _write_weights(tmp, tensors, mask, digest, mask_metadata={**(layout_meta or {}), **seal})
        fmt.write_json(tmp / fmt.PX_CONFIG_FILE, cfg)
        if eval_results:
            fmt.write_json(tmp / fmt.RESULTS_FILE, {"eval_results": _check_eval_results(eval_results)})
        from .card import render_card

        render_card(tmp, name=out.name)

    with output_lock(out):
        check_output(out, overwrite)  # again, now that no other px-hub process can be writing it
        build_atomically(out, build, replace=overwrite)
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
    _, mask, _ = verify_ticket(folder)  # never build on a ticket whose files disagree
    _, meta = _load_mask(folder)
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

    build_atomically(folder, build, replace=True)
    return folder


_RESERVED = {fmt.WEIGHTS_FILE, fmt.CONFIG_FILE, fmt.MASK_FILE, fmt.COMPACT_FILE, fmt.PX_CONFIG_FILE,
             fmt.RESULTS_FILE, fmt.CARD_FILE, fmt.DENSITY_PLOT_FILE, layouts.PROCESSOR_FILE}


# -- reading ----------------------------------------------------------------------------------------------------

def load_ticket(folder: str | os.PathLike) -> tuple[nn.Module, Mask, dict]:
    """Load a ticket folder as ``(model in eval mode, mask, px_config)`` after verifying it
    (:func:`verify_ticket`) and that the mask fits the architecture in ``config.json``.
    :class:`px_hub.Ticket` (``Ticket.from_pretrained``) gives the same with the spec and preprocessing."""
    return read_ticket(fmt.require_ticket_folder(folder))


def read_ticket(folder: Path, *, where: str | None = None, remedy: str | None = None
                ) -> tuple[nn.Module, Mask, dict]:
    """:func:`load_ticket` of an existing ticket folder; ``where``/``remedy`` word the errors (a pull names the
    repo and revision instead of the cache folder)."""
    tensors, mask, px_config = verify_ticket(folder, where=where, remedy=remedy or LOCAL_REMEDY)
    model = build_model(folder)
    mask.validate(model)
    _load_state(model, tensors)
    return model.eval(), mask, px_config


def data_config_of(folder: Path, model: nn.Module) -> dict:
    """The preprocessing of a loaded ticket (timm keys): the transformers image processor, the open_clip tower's
    recorded config, or timm's resolution from the model."""
    cfg = fmt.read_json(folder / fmt.CONFIG_FILE)
    if layouts.is_transformers_config(cfg):
        return layouts.data_config_from_processor(layouts.read_processor(folder), model.config)
    if cfg.get("px_hub_loader"):
        pcfg = cfg.get("pretrained_cfg") if isinstance(cfg.get("pretrained_cfg"), dict) else {}
        return {k: tuple(v) if isinstance(v, list) else v for k, v in pcfg.items() if k in DATA_CONFIG_KEYS}
    return timm_data_config(model)


LOCAL_REMEDY = "the ticket was damaged or altered; download or re-create it"


def verify_ticket(folder: str | os.PathLike, *, where: str | None = None, remedy: str = LOCAL_REMEDY,
                  every_file: bool = False) -> tuple[dict[str, torch.Tensor], Mask, dict]:
    """Check a ticket folder against itself and return ``(dense tensors, mask, px_config)``:

    * the mask's own checksum; the weights (``model.safetensors``, else the compact copy expanded with the mask)
      hash to the mask's ``weights_sha256``; every pruned weight is exactly zero;
    * ``px_config.json`` parses, matches the seal in the mask file, and every figure it states equals the mask's
      (:func:`format.check_px_config`); ``config.json`` names an architecture;
    * with ``every_file`` (before a push) also the compact copy when the dense file is there too (it must
      rebuild the same weights) and ``results.json``.

    Any disagreement is an IntegrityError of one line: ``WHERE: FILE problem; REMEDY`` (``where`` defaults to the
    folder; a pull passes the repo and revision instead of its temporary folder)."""
    folder = Path(folder)
    where = where or str(folder)

    def fail(name: str, problem: str):
        raise IntegrityError(f"{where}: {name} {problem}; {remedy}")

    def guarded(name: str, fn):
        try:
            return fn()
        except IntegrityError as e:
            fail(name, _problem(e, folder / name))
        except FileNotFoundError:
            fail(name, "is missing")

    mask, meta = guarded(fmt.MASK_FILE, lambda: _load_mask(folder))
    expected = meta.get("weights_sha256")
    if not expected:
        fail(fmt.MASK_FILE, "records no weights_sha256 (not written by px-hub)")
    dense_path = folder / fmt.WEIGHTS_FILE
    sources = [fmt.WEIGHTS_FILE] if dense_path.is_file() else []
    if not sources or (every_file and (folder / fmt.COMPACT_FILE).is_file()):
        sources.append(fmt.COMPACT_FILE)
    tensors = None
    for name in sources:
        if name == fmt.WEIGHTS_FILE:
            got = guarded(name, lambda: layouts.from_file_names(fmt.load_weights(dense_path)[0], meta))
        else:
            got = guarded(name, lambda: fmt.expand_compact(folder / fmt.COMPACT_FILE, mask)[0])
        if fmt.weights_sha256(got) != expected:
            fail(name, f"does not match the weights_sha256 recorded in {fmt.MASK_FILE} (corrupt or altered weights)")
        missing = [k for k in mask if k not in got]
        if missing:
            fail(name, f"lacks masked tensor {missing[0]!r}")
        bad = fmt.count_nonzero_pruned(got, mask)
        if bad:
            k, n = next(iter(bad.items()))
            fail(name, f"has {n} pruned weight(s) of {k} that are not zero")
        tensors = tensors if tensors is not None else got
    config = guarded(fmt.CONFIG_FILE, lambda: fmt.read_json(folder / fmt.CONFIG_FILE))
    if not layouts.architecture_of_config(config):
        fail(fmt.CONFIG_FILE, "names no architecture")
    px_config = {}
    if (folder / fmt.PX_CONFIG_FILE).exists() or meta.get(fmt.CONFIG_SEAL_KEY):
        px_config = guarded(fmt.PX_CONFIG_FILE, lambda: fmt.read_json(folder / fmt.PX_CONFIG_FILE))
        try:
            fmt.check_px_config(px_config, mask, meta)
        except IntegrityError as e:
            fail(fmt.PX_CONFIG_FILE, str(e).removeprefix(fmt.PX_CONFIG_FILE).strip())
    if every_file and (folder / fmt.RESULTS_FILE).exists():
        guarded(fmt.RESULTS_FILE, lambda: fmt.read_json(folder / fmt.RESULTS_FILE))
    return tensors, mask, px_config


def read_verified_weights(folder: Path) -> tuple[dict[str, torch.Tensor], Mask]:
    """The dense state dict of a ticket and its mask, verified (:func:`verify_ticket`)."""
    tensors, mask, _ = verify_ticket(folder)
    return tensors, mask


def _problem(e: Exception, path: Path) -> str:
    """An error message about ``path`` without the path itself nor its remedy (the caller names both)."""
    text = str(e)
    for prefix in (f"mask file {path}", str(path)):
        text = text.replace(prefix, "")
    text = text.strip().lstrip(":").strip()
    head, sep, tail = text.rpartition("; ")
    if sep and tail.startswith(("download", "pull", "re-save")):
        text = head
    return text


def build_model(folder: Path) -> nn.Module:
    """An untrained model of the ticket's architecture, built from its ``config.json`` (timm or transformers
    layout)."""
    import timm

    cfg = fmt.read_json(folder / fmt.CONFIG_FILE)
    if layouts.is_transformers_config(cfg):
        return layouts.build_transformers_model(folder)
    arch = cfg.get("architecture")
    if not arch:
        raise IntegrityError(f"{folder / fmt.CONFIG_FILE} names no architecture; download the ticket again")
    if cfg.get("px_hub_loader"):  # an open_clip image tower + head (see layouts)
        return layouts.build_open_clip_model(cfg)
    if not timm.is_model(arch):
        raise UnknownNameError(
            f"the ticket's architecture {arch!r} is not a timm model here; upgrade timm (`pip install -U timm`)"
        )
    try:
        return timm.create_model(f"local-dir:{folder.resolve()}", pretrained=False)
    except (TypeError, ValueError, RuntimeError) as e:
        raise IntegrityError(f"cannot build {arch!r} from {folder / fmt.CONFIG_FILE} ({e})") from None


def _load_state(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
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

def _write_weights(folder: Path, tensors: dict, mask: Mask, digest: str, mask_metadata: dict | None = None) -> None:
    meta = {k: v for k, v in (mask_metadata or {}).items() if k not in ("format", "version", "layers", "sha256")}
    fmt.save_weights(layouts.to_file_names(tensors, meta), folder / fmt.WEIGHTS_FILE)
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
    if layouts.is_transformers_model(model):
        layouts.write_transformers_config(model, path.parent, data_config)
        return
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
