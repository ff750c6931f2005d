"""Prune one model on one pruning split with several methods and put the tickets side by side: per-layer density
and width, NTK trace / top eigenvalue relative to the dense network, pruning time (and accuracy after fine-tuning
when a recipe is given)."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import pathlib
from collections.abc import Callable, Sequence

from torch import nn

from ..errors import InvalidArgumentError
from ..records import to_jsonable
from . import plots
from .layers import collapse_warnings, layer_rows
from .ntk import DEFAULT_MAX_OUTPUTS, NTKSpectrum, compare_spectra, ntk_spectrum
from .report import take_inputs

COMPARE_FILE = "compare.json"
TABLE_FILE = "compare.md"
COMPARE_FIGURES = {"layer_density": "compare_layer_density.png", "alive_outputs": "compare_alive_outputs.png",
                   "ntk_spectrum": "compare_ntk_spectrum.png"}


def compare_methods(prepared, methods: Sequence[str], *, rounds: int | None = None, ntk_samples: int = 20,
                    max_outputs: int | None = DEFAULT_MAX_OUTPUTS, progress: bool = True,
                    finetune: Callable[[str, nn.Module, object], dict] | None = None) -> dict:
    """Prune a copy of ``prepared.model`` (a :class:`px_hub.pipeline.Prepared`) with each of ``methods`` on the
    same split and batches, through :func:`px_hub.pipeline.run` with ``prepared.spec``'s sparsity, seed, targets
    and schedule. ``rounds=None`` uses each method's own default (PX/SynFlow 100, SNIP 1, ...).
    ``finetune(method, pruned_model, mask) -> {"metric": value, ...}`` adds accuracy columns.
    Returns a JSON-able dict plus ``"_spectra"`` (for the plots) and ``"_masks"`` (method -> Mask); the prepared
    model is not modified."""
    from .. import pipeline
    from ..methods import get_method

    methods = [m.strip() for m in methods if m.strip()]
    if not methods:
        raise InvalidArgumentError("no methods to compare; e.g. --methods px,synflow,snip")
    if len(set(methods)) != len(methods):
        raise InvalidArgumentError(f"--methods lists a method twice: {','.join(methods)}")
    for m in methods:
        get_method(m)  # unknown names fail before any work
    model, base = prepared.model, prepared.spec
    inputs = take_inputs(prepared.batches, ntk_samples) if ntk_samples else None
    dense = ntk_spectrum(model, inputs, max_outputs=max_outputs) if inputs is not None else None
    spectra: dict[str, NTKSpectrum] = {"dense": dense} if dense is not None else {}
    masks = {}
    out: dict = {"sparsity": float(base.sparsity), "seed": base.seed, "rounds": rounds, "methods": {},
                 "ntk": {"dense": dense.to_dict() if dense else None, "bn_mode": "eval"}}
    for name in methods:
        spec = dataclasses.replace(base, method=name, rounds=rounds, method_options=())
        work = copy.deepcopy(model)
        res = pipeline.run(spec, prepared=dataclasses.replace(prepared, model=work, spec=spec), progress=progress)
        res.mask.apply_(work)
        entry = {"record": {k: v for k, v in res.record.items()
                            if k not in ("per_layer", "versions", "data", "health")},
                 "pruning_seconds": res.record["seconds"], "rounds": res.record["rounds"],
                 "kept": res.mask.kept(), "total": res.mask.total(), "sparsity": res.mask.sparsity(),
                 "layers": layer_rows(res.mask, work), "warnings": collapse_warnings(res.mask, work),
                 "health": res.record["health"]}
        entry["alive_outputs"] = sum(r["alive_outputs"] for r in entry["layers"])
        entry["outputs"] = sum(r["outputs"] for r in entry["layers"])
        if dense is not None:
            sp = ntk_spectrum(work, inputs, mask=res.mask, outputs=dense.outputs)
            spectra[name] = sp
            entry["ntk"] = sp.to_dict()
            entry["ntk_vs_dense"] = compare_spectra(sp, dense)
        if finetune is not None:
            entry["finetune"] = finetune(name, work, res.mask)
        out["methods"][name] = entry
        masks[name] = res.mask
    out["_spectra"] = spectra
    out["_masks"] = masks
    return out


def comparison_table(summary: dict) -> str:
    """Markdown: one row per method (overall numbers), then per-layer density / alive outputs per method."""
    methods = summary["methods"]
    metrics = sorted({k for e in methods.values() for k in (e.get("finetune") or {})
                      if isinstance((e.get("finetune") or {}).get(k), (int, float))})
    head = ["method", "rounds", "sparsity", "dead classes", "empty layers", "nearly empty", "guard restored",
            "alive outputs", "NTK trace / dense", "NTK λmax / dense", "pruning s"] + metrics
    lines = [f"Sparsity {summary['sparsity']}, seed {summary['seed']}. Dead classes: outputs no kept path reaches; "
             "empty / nearly empty layers and the guard: see px_hub.masking.health and .guard.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in methods.items():
        cmp = e.get("ntk_vs_dense") or {}
        h = e.get("health") or {}
        guard = (e.get("record") or {}).get("guard") or {}
        cells = [name, str(e["rounds"]), f"{e['sparsity']:.4f}",
                 f"{len(h.get('dead_outputs', []))}/{h.get('outputs', '-')}" if h else "-",
                 str(sum(r["collapsed"] for r in e["layers"])), str(len(h.get("nearly_empty_layers", []))),
                 str(guard.get("restored", 0)) if guard.get("enabled") else "off",
                 f"{e['alive_outputs']}/{e['outputs']}",
                 _fmt(cmp.get("trace_ratio")), _fmt(cmp.get("top_eigenvalue_ratio")),
                 f"{e['pruning_seconds']:.2f}"] + [_fmt(e["finetune"].get(m)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    names = list(methods)
    first = methods[names[0]]["layers"]
    lines += ["", "Per layer: density % (alive outputs / outputs).", "",
              "| layer | shape | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for i, r in enumerate(first):
        cells = [r["layer"], "x".join(map(str, r["shape"]))]
        for n in names:
            q = methods[n]["layers"][i]
            cells.append(f"{100 * q['density']:.2f} ({q['alive_outputs']}/{q['outputs']})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def write_comparison(summary: dict, out_dir: str | os.PathLike, title: str = "") -> dict[str, str]:
    """Write ``compare.json``, ``compare.md`` and the overlaid figures; returns {key: path}."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"{title}: " if title else ""
    layers = {n: e["layers"] for n, e in summary["methods"].items()}
    paths = {
        "layer_density": plots.plot_layer_density(
            layers, out / COMPARE_FIGURES["layer_density"],
            f"{prefix}per-layer density at sparsity {summary['sparsity']}"),
        "alive_outputs": plots.plot_alive_outputs(
            layers, out / COMPARE_FIGURES["alive_outputs"],
            f"{prefix}remaining output units per layer at sparsity {summary['sparsity']}"),
    }
    spectra = summary.get("_spectra") or {}
    if spectra:
        sp = spectra["dense"]
        paths["ntk_spectrum"] = plots.plot_spectra(
            spectra, out / COMPARE_FIGURES["ntk_spectrum"],
            f"{prefix}NTK eigenspectrum ({sp.samples} samples x {len(sp.outputs)} outputs, BN eval)")
    (out / TABLE_FILE).write_text(comparison_table(summary))
    paths["table"] = str(out / TABLE_FILE)
    data = {k: v for k, v in summary.items() if not k.startswith("_")}
    data["figures"] = {k: os.path.basename(v) for k, v in paths.items() if k != "table"}
    (out / COMPARE_FILE).write_text(json.dumps(to_jsonable(data), indent=2) + "\n")
    paths["summary"] = str(out / COMPARE_FILE)
    return paths


def run_compare(model: str, data: str, sparsity: float, methods: Sequence[str], *, k: int = 10, seed: int = 0,
                rounds: int | None = None, batch_size: int = 100, pretrained: bool = True, ntk_samples: int = 20,
                max_outputs: int | None = DEFAULT_MAX_OUTPUTS, out_dir: str | os.PathLike | None = None,
                finetune: str | None = None, finetune_overrides: Sequence[str] | None = None,
                progress: bool = True) -> dict:
    """``px-hub compare``: load ``model`` with ``num_classes`` of ``data``, build the class-balanced pruning split
    (k per class, ``seed``) through :func:`px_hub.pipeline.prepare`, prune with each method and write the
    comparison into ``out_dir``. With ``finetune`` (a recipe name or YAML path, plus ``key=value`` overrides) each
    ticket is also trained and its metrics added."""
    from .. import pipeline
    from ..methods import get_method
    from ..spec import DEFAULT_METHOD, DataSpec, ModelSpec, PruneSpec

    spec = PruneSpec(model=ModelSpec(name=model, pretrained=pretrained, head_seed=seed),
                     data=DataSpec(dataset=data, examples_per_class=k, seed=seed, batch_size=batch_size),
                     method=next((m.strip() for m in methods if m.strip()), DEFAULT_METHOD), sparsity=sparsity,
                     rounds=rounds, seed=seed)
    spec.validate()
    for m in methods:
        if m.strip():
            get_method(m)  # every name fails before any loading
    ft = _finetune_callback(finetune, finetune_overrides, out_dir, progress) if finetune else None
    prepared = pipeline.prepare(spec, progress=progress)
    summary = compare_methods(prepared, methods, rounds=rounds, ntk_samples=ntk_samples, max_outputs=max_outputs,
                              progress=progress, finetune=ft)
    summary["model"] = {"name": model, "pretrained": pretrained, "info": to_jsonable(prepared.source)}
    summary["data"] = prepared.split.to_record()
    summary["data"].pop("sample_ids", None)
    if out_dir is not None:
        summary["written"] = write_comparison(summary, out_dir, title=model)
    return summary


_FINETUNE_BOOKKEEPING = {"epoch", "step", "lr", "seconds"}


def _finetune_callback(recipe: str, overrides: Sequence[str] | None, out_dir, progress: bool):
    """Fine-tune each ticket with :func:`px_hub.finetune.finetune` (the recipe's data, optimizer and schedule;
    the ticket's mask enforced); returns its final metrics."""
    from ..finetune import finetune, load_recipe

    rec = load_recipe(recipe, list(overrides or []))  # bad names/overrides fail before any pruning
    base = pathlib.Path(out_dir or "compare") / "finetune"

    def run(method: str, model: nn.Module, mask) -> dict:
        result = finetune(rec, output_dir=base / method, model=model, mask=mask, resume=False, overwrite=True,
                          progress=progress)
        return {k: float(v) for k, v in result.metrics.items()
                if isinstance(v, (int, float)) and k not in _FINETUNE_BOOKKEEPING}

    return run
