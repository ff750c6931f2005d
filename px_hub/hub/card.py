"""The ticket's model card: metadata through huggingface_hub's ``ModelCardData``/``EvalResult`` (model-index),
text from the Jinja template in ``px_hub.model_cards``, plus the per-layer density plot."""
from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..errors import IntegrityError
from ..masking import Mask
from ..spec import PruneSpec
from . import format as fmt
from . import layouts

CARD_TAGS = ["pruning", "lottery-ticket", "px", "px-hub", "sparse", "timm"]
REPO_ID_PLACEHOLDER = "USER/REPO"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def render_card(folder: str | os.PathLike, repo_id: str | None = None, name: str | None = None) -> ModelCard:
    """Render ``README.md`` and ``density.png`` of a ticket folder from its files (px_config.json, results.json,
    config.json, mask). ``repo_id`` goes into the usage snippet (``USER/REPO`` until the ticket is pushed); ``name``
    (default: the repo name, else the folder name) names the model in model-index."""
    folder = Path(folder)
    px = fmt.read_json(folder / fmt.PX_CONFIG_FILE) if (folder / fmt.PX_CONFIG_FILE).exists() else {}
    results = fmt.read_json(folder / fmt.RESULTS_FILE) if (folder / fmt.RESULTS_FILE).exists() else {}
    config = fmt.read_json(folder / fmt.CONFIG_FILE)
    mask, mask_meta = Mask.load_with_metadata(folder / fmt.MASK_FILE)
    if px or mask_meta.get(fmt.CONFIG_SEAL_KEY):  # the card states only figures checked against the mask
        try:
            fmt.check_px_config(px, mask, mask_meta)
        except IntegrityError as e:
            raise IntegrityError(f"{folder}: {e}; the ticket was altered, so no card is written") from None
    plot_density(mask, folder / fmt.DENSITY_PLOT_FILE)

    repo_id = repo_id or REPO_ID_PLACEHOLDER
    model_info = _dict(px.get("model"))
    data = _dict(px.get("data"))
    eval_results = list(results.get("eval_results") or [])
    source_id = _first(model_info, "id", "source", "model_id", "name")
    license_ = _first(model_info, "license") or _dict(config.get("pretrained_cfg")).get("license")
    library = layouts.library_of_config(config)
    arch = layouts.architecture_of_config(config)

    card_data = ModelCardData(
        model_name=(name or (repo_id.split("/")[-1] if repo_id != REPO_ID_PLACEHOLDER else folder.name))
        if eval_results else None,  # only model-index uses it
        library_name=library,
        pipeline_tag="image-classification",
        tags=([t for t in CARD_TAGS if t != "timm" or library == "timm"]
              + ([px["method"]] if px.get("method") and px["method"] not in CARD_TAGS else [])),
        base_model=_hub_id(source_id),
        datasets=_unique([_hub_id(_first(data, "dataset", "id", "name"))]
                         + [_hub_id(r.get("dataset")) for r in eval_results]) or None,
        metrics=_unique([r.get("metric") for r in eval_results]) or None,
        eval_results=[_eval_result(r) for r in eval_results] or None,
        **_license_fields(license_),
    )
    dense = folder / fmt.WEIGHTS_FILE
    compact = folder / fmt.COMPACT_FILE
    sparsity = mask.sparsity()
    context = dict(
        title=f"{arch or 'model'} ticket at {sparsity * 100:.1f} % sparsity ({_method_label(px)})",
        repo_id=repo_id,
        library=library,
        loader=config.get("px_hub_loader"),
        arch=arch,
        stock=library == "transformers" or (library == "timm" and not _px_hub_architecture(arch)),
        source_md=_source_md(source_id, model_info.get("revision"), arch),
        sparsity=sparsity,
        kept=mask.kept(),
        total=mask.total(),
        method_label=_method_label(px),
        compact_file=fmt.COMPACT_FILE,
        dense_mb=_mb(dense) if dense.exists() else "dense",
        compact_mb=_mb(compact) if compact.exists() else "compact",
        pull_mb=(f"{(compact.stat().st_size + (folder / fmt.MASK_FILE).stat().st_size) / 1e6:.1f} MB"
                 if compact.exists() else "the compact copy"),
        how_made=describe_px_config(px, config),
        eval_results=[dict(r, value_str=_fmt_value(r.get("value"))) for r in eval_results],
        training_lines=_training_lines(_dict(results.get("training"))),
        extra_images=sorted(p.name for p in folder.glob("*.png") if p.name != fmt.DENSITY_PLOT_FILE),
        density_plot=fmt.DENSITY_PLOT_FILE,
        layers=[dict(name=r.name, shape="×".join(map(str, r.shape)), kept=r.kept, total=r.total, density=r.density)
                for r in mask.report()],
        n_layers=len(mask),
        collapsed=mask.collapsed_layers(),
        health_lines=health_lines(px, mask),
        weights_sha256=_dict(px.get("ticket")).get("weights_sha256", ""),
        px_hub_version=_dict(px.get("versions")).get("px-hub", ""),
    )
    from ..model_cards import TICKET_CARD_TEMPLATE

    card = ModelCard.from_template(card_data, template_path=str(TICKET_CARD_TEMPLATE), **context)
    check_card(str(card))
    tmp = folder / f"{fmt.CARD_FILE}.tmp"
    tmp.write_text(str(card), encoding="utf-8")
    os.replace(tmp, folder / fmt.CARD_FILE)
    return card


def check_card(text: str) -> ModelCard:
    """Offline checks of the card metadata (the Hub's own check, ``ModelCard.validate()``, needs a server): the
    YAML parses, model-index round-trips into the same number of EvalResults, and the fields the Hub types are
    of the right type."""
    try:
        card = ModelCard(text, ignore_metadata_errors=False)
    except Exception as e:  # huggingface_hub raises ValueError/KeyError/TypeError on a bad header
        raise IntegrityError(f"the model card metadata is invalid ({e}); "
                             "this is a px-hub bug, please report it") from None
    d = card.data.to_dict()
    for key in ("tags", "datasets", "metrics"):
        if key in d and not (isinstance(d[key], list) and all(isinstance(x, str) for x in d[key])):
            raise IntegrityError(f"card metadata {key!r} must be a list of strings; this is a px-hub bug")
    for key in ("library_name", "license", "pipeline_tag", "base_model"):
        if key in d and not isinstance(d[key], str):
            raise IntegrityError(f"card metadata {key!r} must be a string; this is a px-hub bug")
    return card


def plot_density(mask: Mask, path: str | os.PathLike) -> Path:
    """Bar chart of per-layer density (fraction kept), network order, with the overall density as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dens = list(mask.layer_density().values())
    fig = Figure(figsize=(max(6.0, min(16.0, 0.12 * len(dens) + 4)), 3.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(dens)), dens, color="#3b6ea8", width=0.85)
    ax.axhline(mask.density(), color="#c0392b", lw=1, ls="--", label=f"overall {mask.density():.4f}")
    ax.set_xlabel("prunable layer (network order)")
    ax.set_ylabel("density (fraction kept)")
    ax.set_ylim(0, min(1.0, max(dens + [mask.density()]) * 1.15) or 1.0)
    ax.set_xlim(-0.6, len(dens) - 0.4)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", metadata={"Software": None})
    os.replace(tmp, path)
    return path


def describe_px_config(px: dict, config: dict | None = None) -> list[str]:
    """px_config.json in words, one sentence per fact; missing keys are left out."""
    lines = []
    model = _dict(px.get("model"))
    src = _first(model, "id", "source", "model_id", "name")
    if src:
        rev = model.get("revision")
        lib = model.get("library")
        lines.append(f"Source model: `{src}`" + (f" at revision `{rev}`" if rev else "")
                     + (f" (loaded with {lib})" if lib else "") + ".")
    arch = layouts.architecture_of_config(config or {}) or model.get("architecture")
    if arch:
        ncls = layouts.num_classes_of_config(config or {})
        lines.append(f"Architecture: {layouts.library_of_config(config or {})} `{arch}`"
                     + (f" with {ncls} output classes." if ncls is not None else "."))
    if px.get("method"):
        bits = [f"Method: {_method_label(px)} (`{px['method']}`)"]
        if px.get("sparsity") is not None:
            bits.append(f"target sparsity {float(px['sparsity']):.4f}")
        if px.get("rounds") is not None:
            bits.append(f"{px['rounds']} round(s)")
        if px.get("schedule"):
            bits.append(f"{px['schedule']} schedule")
        if px.get("scope"):
            bits.append(f"{px['scope']} scope")
        if px.get("seed") is not None:
            bits.append(f"seed {px['seed']}")
        lines.append(", ".join(bits) + ".")
    targets = _dict(px.get("targets"))
    if targets:
        ex = []
        if targets.get("exclude_first"):
            ex.append("the first layer")
        if targets.get("exclude_classifier"):
            ex.append("the classifier")
        ex += [f"`{e}`" for e in targets.get("exclude") or []]
        lines.append("Pruned every Conv/Linear weight" + (f" except {', '.join(ex)}." if ex else "."))
    data = _dict(px.get("data"))
    spec = PruneSpec.from_px_config(px)  # typed fields (older tickets: rebuilt from the record's keys)
    if data:
        ds = spec.data.dataset if spec else data.get("dataset")
        k = spec.data.examples_per_class if spec else data.get("k")
        n = data.get("num_samples")
        digest = data.get("digest")
        parts = [f"Pruning data: `{ds}`" if ds else "Pruning data"]
        if data.get("revision"):
            parts.append(f"revision `{data['revision']}`")
        if data.get("split"):
            parts.append(f"split `{data['split']}`")
        if k is not None:
            parts.append(f"{k} images per class (class-balanced)")
        if n is not None:
            parts.append(f"{n} images in all")
        if data.get("seed") is not None:
            parts.append(f"drawn with seed {data['seed']}")
        if digest:
            parts.append(f"sample digest `{str(digest)[:16]}…`")
        lines.append(", ".join(parts) + ".")
    elif px.get("method"):
        lines.append("No pruning data (data-free method).")
    ach = _dict(px.get("achieved"))
    if ach:
        lines.append(f"Achieved: sparsity {ach.get('sparsity', 0):.4f} ({ach.get('kept')} of {ach.get('total')} "
                     f"prunable weights kept); collapsed layers: {len(ach.get('collapsed_layers') or [])}.")
    if px.get("seconds") is not None:
        lines.append(f"Pruning took {float(px['seconds']):.1f} s.")
    versions = _dict(px.get("versions") or px.get("library_versions"))
    if versions:
        lines.append("Library versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    return lines


def health_lines(px: dict, mask: Mask) -> list[str]:
    """The card's "Ticket health" section: px_config's ``health`` (dead outputs need the model, so they are
    computed when the ticket is pruned, see px_hub.masking.health) and what the guard did."""
    from ..masking import TicketHealth
    from ..masking.guard import describe_guard

    rec = _dict(px.get("health"))
    if not rec:
        empty = mask.collapsed_layers()
        return [f"Empty layers: {len(empty)}" + (f" ({', '.join(f'`{e}`' for e in empty)})." if empty else "."),
                "Reachability of the outputs was not recorded for this ticket."]
    h = TicketHealth.from_dict(rec)
    alive = h.outputs - len(h.dead_outputs)
    lines = [f"Outputs reachable from the input: {alive} of {h.outputs}"
             + (f"; **dead** (no kept path, never predicted): {', '.join(map(str, h.dead_outputs))}."
                if h.dead_outputs else ".")]
    for label, names in (("Empty layers", h.empty_layers), ("Nearly empty layers", h.nearly_empty_layers),
                         ("Cut-off layers (kept weights on no input-to-output path)", h.cut_off_layers)):
        lines.append(f"{label}: {len(names)}" + (f" ({', '.join(f'`{n}`' for n in names)})." if names else "."))
    if px.get("guard"):
        lines.append(f"Guard: {describe_guard(px['guard'])}.")
    return lines


# -- helpers ----------------------------------------------------------------------------------------------------

_LICENSES = {  # Hub license identifiers (subset px-hub sources use)
    "apache-2.0", "mit", "bsd", "bsd-2-clause", "bsd-3-clause", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0", "cc0-1.0", "gpl-3.0", "lgpl-3.0", "agpl-3.0", "openrail", "llama2",
    "llama3", "unlicense", "other", "cc-by-nc-3.0", "cc-by-3.0", "afl-3.0", "artistic-2.0", "bsl-1.0", "mpl-2.0",
    "wtfpl", "openrail++", "creativeml-openrail-m", "bigscience-openrail-m", "gemma", "unknown",
}


def _license_fields(license_: str | None) -> dict:
    if not license_:
        return {}
    lid = str(license_).strip().lower()
    head = re.match(r"[a-z0-9.+\-]+", lid)  # "mit (OpenAI CLIP)" -> "mit"
    if lid in _LICENSES or (head and head.group(0) in _LICENSES and head.group(0) not in ("other", "unknown")):
        return {"license": lid if lid in _LICENSES else head.group(0)}
    slug = re.sub(r"[^a-z0-9]+", "-", lid).strip("-") or "source-license"
    return {"license": "other", "license_name": slug}


def _eval_result(r: dict) -> EvalResult:
    return EvalResult(
        task_type=r.get("task") or "image-classification",
        dataset_type=str(r["dataset"]),
        dataset_name=str(r.get("dataset_name") or r["dataset"]),
        dataset_split=r.get("split"),
        metric_type=str(r["metric"]),
        metric_name=r.get("name"),
        metric_value=float(r["value"]),
    )


def _hub_id(x) -> str | None:
    if not x or not isinstance(x, str):
        return None
    x = x.removeprefix("hf-hub:").removeprefix("hf_hub:")
    x = x.split("@")[0]
    if os.path.isabs(x) or x.startswith((".", "~")):
        return None
    return x if _REPO_ID.match(x) else None


def _px_hub_architecture(arch: str | None) -> bool:
    """An architecture px-hub itself registers in timm (stock timm cannot build it)."""
    from ..models import TIMM_MODELS

    return arch in TIMM_MODELS


def _source_md(src, rev, arch) -> str:
    if not src:
        return f"`{arch or 'a timm model'}`"
    hid = _hub_id(src)
    label = f"`{src}`" + (f" (revision `{rev}`)" if rev else "")
    return f"[{label}](https://huggingface.co/{hid})" if hid else label


def _method_label(px: dict) -> str:
    from ..methods import method_label  # labels live in the method registry

    return method_label(px.get("method"))


def _training_lines(tr: dict) -> list[str]:
    lines = []
    for k, v in tr.items():
        if isinstance(v, (dict, list)):
            continue
        lines.append(f"{k.replace('_', ' ')}: {v}")
    return lines


def _fmt_value(v) -> str:
    try:
        return f"{float(v):.4f}"
    except (TypeError, ValueError):
        return str(v)


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def _dict(x) -> dict:
    return x if isinstance(x, dict) else {}


def _first(d: dict, *keys):
    for k in keys:
        if d.get(k) not in (None, ""):
            return d[k]
    return None


def _unique(xs) -> list:
    out = []
    for x in xs:
        if x and x not in out:
            out.append(x)
    return out
