"""The analysis of one ticket: per-layer density and width, NTK spectrum of the ticket vs the dense network,
collapse warnings; written as PNG figures plus one JSON summary (``analysis.json``)."""
from __future__ import annotations

import json
import os
import pathlib
import re
from collections.abc import Iterable

import torch
from torch import nn

from ..errors import DataError, InvalidArgumentError
from ..masking import Mask, ticket_health
from ..records import to_jsonable
from . import plots
from .layers import collapse_warnings, layer_rows
from .ntk import DEFAULT_MAX_OUTPUTS, NTKSpectrum, compare_spectra, ntk_spectrum

ANALYSIS_FORMAT = "px-hub-analysis"
ANALYSIS_VERSION = 1
SUMMARY_FILE = "analysis.json"
FIGURES = {"layer_density": "layer_density.png", "alive_outputs": "alive_outputs.png",
           "ntk_spectrum": "ntk_spectrum.png"}
DEFAULT_NTK_SAMPLES = 20


def take_inputs(batches: Iterable, n: int) -> torch.Tensor:
    """The first ``n`` inputs of an iterable of ``(inputs, labels)`` batches (the NTK's sample)."""
    if n < 1:
        raise InvalidArgumentError(f"the NTK needs at least 1 sample, got {n}")
    got, count = [], 0
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        got.append(x[: n - count])
        count += got[-1].shape[0]
        if count >= n:
            break
    if not got:
        raise DataError("no pruning data to compute the NTK on; pass --data with a labelled image dataset")
    return torch.cat(got)


def analyze(model: nn.Module, mask: Mask, inputs: torch.Tensor | None = None, dense_model: nn.Module | None = None,
            max_outputs: int | None = DEFAULT_MAX_OUTPUTS, input_shape=None) -> dict:
    """Everything the report shows, as a JSON-able dict (plus ``"_spectra"``: label -> NTKSpectrum, for plots).

    ``model`` is evaluated at its weights ⊙ ``mask``; ``dense_model`` (same architecture, unpruned weights) gives
    the reference spectrum. Without ``inputs`` the NTK part is skipped. ``health`` is
    :func:`px_hub.masking.ticket_health` at ``input_shape`` (default: the inputs', else the model's timm config;
    None when neither is known)."""
    mask.validate(model)
    if input_shape is None and inputs is not None:
        input_shape = tuple(inputs.shape[1:])
    cfg = getattr(model, "pretrained_cfg", None) or {}
    known = input_shape is not None or bool(cfg.get("input_size"))
    health = ticket_health(model, mask, input_shape).to_dict() if known else None
    rows = layer_rows(mask, model)
    warnings = collapse_warnings(mask, model)
    out: dict = {"format": ANALYSIS_FORMAT, "version": ANALYSIS_VERSION,
                 "sparsity": mask.sparsity(), "density": mask.density(), "kept": mask.kept(), "total": mask.total(),
                 "alive_outputs": sum(r["alive_outputs"] for r in rows), "outputs": sum(r["outputs"] for r in rows),
                 "layers": rows, "collapsed_layers": [r["parameter"] for r in rows if r["collapsed"]],
                 "warnings": warnings, "health": health}
    spectra: dict[str, NTKSpectrum] = {}
    if inputs is not None:
        pruned = ntk_spectrum(model, inputs, mask=mask, max_outputs=max_outputs)
        spectra["ticket"] = pruned
        ntk = {"ticket": pruned.to_dict(), "bn_mode": "eval",
               "definition": "empirical Fixed-Weight NTK: Theta = J J^T, J = d f(x; theta*m)/d(kept trainable "
                             "parameters), rows = samples x outputs"}
        if dense_model is not None:
            dense = ntk_spectrum(dense_model, inputs, mask=None, outputs=pruned.outputs)
            spectra["dense"] = dense
            ntk["dense"] = dense.to_dict()
            ntk["ticket_vs_dense"] = compare_spectra(pruned, dense)
        out["ntk"] = ntk
    out["_spectra"] = spectra
    return out


def write_report(summary: dict, out_dir: str | os.PathLike, title: str = "") -> dict[str, str]:
    """Write the figures and ``analysis.json`` of an :func:`analyze` summary into ``out_dir``; returns
    {figure key: path} (the JSON under key ``"summary"``)."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"{title}: " if title else ""
    paths = {
        "layer_density": plots.plot_layer_density(
            {"ticket": summary["layers"]}, out / FIGURES["layer_density"],
            f"{prefix}per-layer density (overall {100 * summary['density']:.2f}% kept)"),
        "alive_outputs": plots.plot_alive_outputs(
            {"ticket": summary["layers"]}, out / FIGURES["alive_outputs"],
            f"{prefix}remaining output units per layer"),
    }
    spectra = summary.get("_spectra") or {}
    if spectra:
        order = dict(sorted(spectra.items(), key=lambda kv: kv[0] != "dense"))  # dense first, drawn as reference
        paths["ntk_spectrum"] = plots.plot_spectra(order, out / FIGURES["ntk_spectrum"], f"{prefix}NTK eigenspectrum"
                                                   f" ({next(iter(order.values())).samples} samples x "
                                                   f"{len(next(iter(order.values())).outputs)} outputs, BN eval)")
    data = {k: v for k, v in summary.items() if not k.startswith("_")}
    data["figures"] = {k: os.path.basename(v) for k, v in paths.items()}
    path = out / SUMMARY_FILE
    path.write_text(json.dumps(to_jsonable(data), indent=2) + "\n")
    paths["summary"] = str(path)
    return paths


# -- tickets ------------------------------------------------------------------------------------------------------
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+(@[\w./-]+)?")
TICKET_FILES = ("alive_outputs", "ntk_spectrum")  # the card already shows density.png (written by px_hub.hub)


def resolve_ticket(ticket: str | os.PathLike) -> tuple[pathlib.Path, bool]:
    """A local ticket folder as is, else a Hub repo id (``USER/REPO[@REV]``) pulled with px_hub.hub.pull_ticket.
    Returns (folder, is_local)."""
    path = pathlib.Path(ticket)
    if path.is_dir():
        return path, True
    text = str(ticket)
    if path.exists() or not _REPO_ID.fullmatch(text):
        raise InvalidArgumentError(f"{text} is neither a ticket folder nor a Hub repo id; pass a folder written by "
                                   "`px-hub prune` or USER/REPO[@REVISION]")
    from ..hub import pull_ticket

    return pathlib.Path(pull_ticket(text)), False


def pruning_inputs(px_config: dict, model: nn.Module, data_config: dict, data: str | None, samples: int,
                   split: str = "train", k: int | None = None, seed: int | None = None) -> tuple[torch.Tensor, dict]:
    """The NTK's sample: the first ``samples`` examples of the ticket's class-balanced pruning split (the split its
    spec records, rebuilt through :func:`px_hub.pipeline.prepare`), or of ``data`` when given.
    Returns (inputs, record) with the split's digest and whether it matches the ticket's record."""
    import dataclasses

    from .. import pipeline
    from ..spec import DataSpec, PruneSpec

    spec = PruneSpec.from_px_config(px_config) or PruneSpec(data=DataSpec(dataset=""))
    if data is None or data == spec.data.dataset:
        if not spec.data.dataset:
            raise DataError("the ticket records no pruning dataset; pass --data (e.g. --data digits)")
        d = dataclasses.replace(spec.data, examples_per_class=k or spec.data.examples_per_class or 10,
                                seed=seed if seed is not None else spec.data.seed)
    else:
        d = DataSpec(dataset=data, split=split, examples_per_class=k or 10, seed=seed or 0)
    d = dataclasses.replace(d, batch_size=max(1, samples), input_size=None)
    prep = pipeline.prepare(dataclasses.replace(spec, data=d), model=model, data_config=data_config,
                            max_examples=samples)
    ps = prep.split
    n = len(prep.batches[0][0]) if prep.batches else 0
    info = {"dataset": ps.dataset, "split": d.split, "k": d.examples_per_class, "seed": d.seed, "order": d.order,
            "pruning_split_digest": ps.digest, "ntk_sample_ids": [ps.sample_ids[i] for i in range(n)]}
    rec = px_config.get("data") or {}
    if rec.get("digest"):
        info["matches_ticket_pruning_split"] = rec["digest"] == ps.digest
    return prep.batches[0][0], info


def dense_reference(model: nn.Module, mask: Mask, px_config: dict) -> tuple[nn.Module | None, str]:
    """The dense network the ticket was pruned from, rebuilt from ``px_config['model']`` with
    ``px_hub.backbones.load_backbone``; accepted only if its kept weights equal the ticket's (i.e. the ticket is
    not fine-tuned and the source is reproducible). Returns (model or None, a note saying which)."""
    src = dict(px_config.get("model") or {})
    name = src.get("spec") or src.get("id")
    if not name:
        return None, "dense reference unavailable: the ticket records no source model"
    try:
        from ..backbones import load_backbone

        num_classes = _num_classes(model)
        loaded = load_backbone(name, num_classes=num_classes, pretrained=bool(src.get("pretrained", True)),
                               seed=int(src.get("init_seed") or 0))
    except Exception as e:  # noqa: BLE001 - any failure only drops the optional dense comparison
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, f"dense reference unavailable: cannot load {name} ({why})"
    dense = loaded.model.eval()
    ticket_params = dict(model.named_parameters())
    dense_params = dict(dense.named_parameters())
    for k, m in mask.items():
        if k not in dense_params or dense_params[k].shape != ticket_params[k].shape:
            return None, f"dense reference unavailable: {name} does not match the ticket's architecture"
        if not torch.equal(dense_params[k].detach()[m], ticket_params[k].detach()[m]):
            return None, (f"dense reference unavailable: the kept weights of {k} differ from {name}'s "
                          "(fine-tuned ticket, or a source that is not reproducible)")
    return dense, f"dense reference: {name}, kept weights verified equal to the ticket's"


def _num_classes(model: nn.Module) -> int | None:
    n = getattr(model, "num_classes", None)
    return int(n) if isinstance(n, int) else None


def report_ticket(ticket: str | os.PathLike, out_dir: str | os.PathLike | None = None, data: str | None = None,
                  samples: int = DEFAULT_NTK_SAMPLES, max_outputs: int | None = DEFAULT_MAX_OUTPUTS,
                  dense: bool = True, update_card: bool = True) -> dict:
    """``px-hub report``: analyze a ticket folder or Hub ticket, write figures + ``analysis.json`` to ``out_dir``
    (default: ``<folder>-report`` next to a local folder) and, for a local folder, add the figures and the JSON to
    the ticket and re-render its card (``px_hub.hub.update_ticket``). Returns the JSON summary."""
    import timm

    from ..hub import load_ticket, update_ticket

    folder, local = resolve_ticket(ticket)
    model, mask, px_config = load_ticket(folder)
    data_config = timm.data.resolve_data_config({}, model=model)
    inputs, data_info = (pruning_inputs(px_config, model, data_config, data, samples) if samples else (None, {}))
    dense_model, note = (dense_reference(model, mask, px_config) if dense and samples
                         else (None, "dense reference skipped"))
    summary = analyze(model, mask, inputs, dense_model=dense_model, max_outputs=max_outputs,
                      input_shape=data_config.get("input_size"))
    summary["ticket"] = {"path": str(folder), "source": str(ticket), "method": px_config.get("method"),
                         "mask_sha256": mask.sha256()}
    summary["ntk_data"] = data_info
    summary["dense_reference"] = note
    out = pathlib.Path(out_dir) if out_dir else folder.with_name(folder.name + "-report")
    name = (px_config.get("model") or {}).get("id") or folder.name
    paths = write_report(summary, out, title=str(name))
    summary = json.loads(pathlib.Path(paths["summary"]).read_text())
    summary["written"] = paths
    if update_card and local:
        extra = {FIGURES[k]: paths[k] for k in TICKET_FILES if k in paths}
        extra[SUMMARY_FILE] = paths["summary"]
        update_ticket(folder, extra_files=extra)
        summary["card_updated"] = True
    else:
        summary["card_updated"] = False
    return summary
