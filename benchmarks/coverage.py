"""Which backbone families PX prunes: one small random-init model per family, 2 PX rounds (not a test).

timm families by name; then the other sources px-hub loads (transformers image classifiers from configs, an
open_clip ViT tower, a DINO ViT through the ``dino:`` loader from a local checkpoint), built small at random init.

For each model: works / refused (the one-line reason px-hub gives) / crash (a bug), seconds per PX round,
PX round ÷ one plain forward+backward (train mode, cross-entropy) on the same batch, float32-vs-float64 agreement
of round-1 scores (max over layers of max |s32 - s64| / max s64), and the fraction of prunable weights scored
through gates (straight-through rule, docs/px-generalized.md). Writes benchmarks/results/coverage.{md,json}.

    .venv/bin/python benchmarks/coverage.py [--only resnet,vit] [--batch 4]

Models are small variants at small inputs so the whole table runs in minutes on a laptop CPU; timings are
ratios measured in the same process, but they are noisy when the machine is shared.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import statistics
import time
import warnings

REPO = pathlib.Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results"

# family -> (timm model, create_model kwargs, input size)
FAMILIES = {
    "resnet": ("resnet18", {"zero_init_last": False}, 64),
    "efficientnet": ("efficientnet_b0", {}, 64),
    "mobilenetv3": ("mobilenetv3_small_050", {}, 64),
    "regnet-x": ("regnetx_002", {"zero_init_last": False}, 64),
    "regnet-y (SE)": ("regnety_002", {"zero_init_last": False}, 64),
    "convnext": ("convnext_atto", {}, 64),
    "vit": ("vit_tiny_patch16_224", {"img_size": 64}, 64),
    "deit": ("deit_tiny_patch16_224", {"img_size": 64}, 64),
    "swin": ("swin_tiny_patch4_window7_224", {"img_size": 64, "window_size": 2}, 64),
    "densenet": ("densenet121", {}, 64),
    "vgg": ("vgg11_bn", {}, 64),
    "mobilenetv2": ("mobilenetv2_050", {}, 64),
    "ghostnet": ("ghostnet_050", {}, 64),
    "repvgg": ("repvgg_a0", {}, 64),
    "rexnet": ("rexnet_100", {}, 64),
    "dla": ("dla34", {}, 64),
    "resnext": ("resnext26ts", {}, 64),
    "nfnet": ("nf_resnet26", {}, 64),
    "levit": ("levit_128s", {"img_size": 64}, 64),
    "poolformer": ("poolformerv2_s12", {}, 64),
    "mlp-mixer": ("mixer_s16_224", {"img_size": 64}, 64),
    "resmlp": ("resmlp_12_224", {"img_size": 64}, 64),
    "cait": ("cait_xxs24_224", {"img_size": 64}, 64),
    "coat": ("coat_lite_tiny", {"img_size": 64}, 64),
    "beit": ("beit_base_patch16_224", {"img_size": 64, "depth": 2}, 64),
    "eva": ("eva02_tiny_patch14_224", {"img_size": 56}, 56),
    "maxvit": ("maxvit_rmlp_pico_rw_256", {"img_size": 64}, 64),
    "mobilevit": ("mobilevit_xxs", {}, 64),
    "efficientformer": ("efficientformer_l1", {}, 224),  # its attention biases are sized for 224 px
    "edgenext": ("edgenext_xx_small", {}, 64),
    "xcit": ("xcit_nano_12_p16_224", {"img_size": 64}, 64),
    "pvt_v2": ("pvt_v2_b0", {}, 64),
    "convmixer": ("convmixer_768_32", {}, 64),
    "inception": ("inception_v3", {}, 96),
}


def _transformers(kind: str):
    import transformers as tf

    common = {"num_labels": 4}
    cfg = {
        "resnet": lambda: tf.ResNetConfig(embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1],
                                          layer_type="bottleneck", **common),
        "vit": lambda: tf.ViTConfig(image_size=64, patch_size=16, hidden_size=96, num_hidden_layers=4,
                                    num_attention_heads=3, intermediate_size=384, **common),
        "convnext": lambda: tf.ConvNextConfig(hidden_sizes=[24, 48, 96, 192], depths=[1, 1, 2, 1], **common),
        "swin": lambda: tf.SwinConfig(image_size=64, patch_size=4, embed_dim=24, depths=[1, 1, 2, 1],
                                      num_heads=[1, 2, 2, 4], window_size=2, **common),
        "dinov2": lambda: tf.Dinov2Config(image_size=56, patch_size=14, hidden_size=96, num_hidden_layers=4,
                                          num_attention_heads=3, **common),
    }[kind]()
    return tf.AutoModelForImageClassification.from_config(cfg)


def _open_clip_vit(tmp: pathlib.Path):
    import open_clip

    from px_hub.backbones import load_backbone

    cfg = {"embed_dim": 64, "vision_cfg": {"image_size": 64, "layers": 4, "width": 96, "patch_size": 16,
                                           "head_width": 32},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    (tmp / "PXCoverageViT.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp)
    return load_backbone("open_clip:PXCoverageViT", num_classes=4, pretrained=False).model


def _dino_vit(tmp: pathlib.Path):
    import timm
    import torch

    from px_hub.backbones import load_backbone

    torch.manual_seed(0)  # a checkpoint in the official DINO ViT-S/16 layout (backbone keys, no head)
    state = {k: v for k, v in timm.create_model("vit_small_patch16_224", num_classes=0).state_dict().items()}
    torch.save(state, tmp / "dino_deitsmall16_pretrain.pth")
    return load_backbone(f"dino:vit_small_patch16_224={tmp / 'dino_deitsmall16_pretrain.pth'}", num_classes=4).model


# family -> (how px-hub users name it, builder(tmp dir) -> model, input size)
OTHER_SOURCES = {
    "transformers ResNet": ("`ResNetForImageClassification` (config)", lambda t: _transformers("resnet"), 64),
    "transformers ViT": ("`ViTForImageClassification` (config)", lambda t: _transformers("vit"), 64),
    "transformers ConvNeXt": ("`ConvNextForImageClassification` (config)", lambda t: _transformers("convnext"), 64),
    "transformers Swin": ("`SwinForImageClassification` (config)", lambda t: _transformers("swin"), 64),
    "transformers DINOv2": ("`Dinov2ForImageClassification` (config)", lambda t: _transformers("dinov2"), 56),
    "open_clip ViT": ("`open_clip:` ViT tower (config)", _open_clip_vit, 64),
    "DINO ViT": ("`dino:vit_small_patch16_224=FILE`", _dino_vit, 224),
}


def _rel_err(a, b):
    out = 0.0
    for k in b:
        scale = float(b[k].abs().max())
        if scale > 0:
            out = max(out, float((a[k].double() - b[k]).abs().max()) / scale)
    return out


def _fwd_bwd_seconds(model, x, y, repeats=3):
    import torch.nn.functional as F

    from px_hub.methods.context import logits_of

    m = copy.deepcopy(model).train()

    def step():
        m.zero_grad(set_to_none=True)
        F.cross_entropy(logits_of(m(x)), y).backward()

    step()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def run_family(family, name, kwargs, size, batch, build=None):
    import tempfile

    import timm
    import torch

    import px_hub  # noqa: F401  (torchvision fix, timm registrations)

    row = {"family": family, "model": name, "kwargs": kwargs, "input": size, "batch": batch}
    try:
        torch.manual_seed(0)
        if build is None:
            model = timm.create_model(name, pretrained=False, num_classes=4, **kwargs).eval()
        else:
            with tempfile.TemporaryDirectory() as tmp:
                model = build(pathlib.Path(tmp)).eval()
    except Exception as e:  # a variant that cannot be built at this size: not PX's verdict
        row.update(status="not built", reason=f"{type(e).__name__}: {e}"[:300])
        return row
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, size, size, generator=g), torch.arange(batch) % 4
    row["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    try:
        with torch.no_grad():
            model(x)
    except Exception as e:  # the model itself does not run at this input: not PX's verdict either
        row.update(status="not built", reason=f"plain forward fails: {type(e).__name__}: {e}"[:300])
        return row
    status, reason, res, s32, s64 = _run_method(model, x, y, "px")
    if status != "works":
        row.update(status=status, reason=reason)
        if status == "refused":
            row["px_2024"] = _px_2024(model, x, y)
        return row
    per_round = [h["seconds"] for h in res.history]
    fb = _fwd_bwd_seconds(model, x, y)
    notes = res.record["method_notes"].get("px", {})
    total = sum(int(v.numel()) for v in s32.values())
    gate_scored = sum(f * s32[k].numel() for k, f in notes.get("gate_scored", {}).items()) / total
    zero_layers = [k for k, v in s64.items() if float(v.max()) == 0]
    row.update(status="works", seconds_per_round=round(statistics.mean(per_round), 3), fwd_bwd_seconds=round(fb, 4),
               px_round_over_fwd_bwd=round(statistics.mean(per_round) / fb, 2), f32_vs_f64=_rel_err(s32, s64),
               gate_scored_fraction=round(gate_scored, 4), zero_score_layers=len(zero_layers),
               achieved_sparsity=round(res.mask.sparsity(), 4))
    row["px_2024"] = _px_2024(model, x, y)
    return row


def _run_method(model, x, y, method: str):
    """2 rounds of ``method`` to sparsity 0.5 and its round-1 scores in float32 and float64:
    (status, reason, result, s32, s64); status is works / refused (px-hub's one-line reason) / crash (a bug)."""
    import px_hub
    from px_hub.errors import PxHubError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = px_hub.prune_with_record(model, [(x, y)], method=method, sparsity=0.5, rounds=2, progress=False)
            s32 = px_hub.score(model, [(x, y)], method=method)
            s64 = px_hub.score(copy.deepcopy(model).double(), [(x.double(), y)], method=method)
    except PxHubError as e:
        return "refused", str(e), None, None, None
    except Exception as e:
        return "crash", f"{type(e).__name__}: {e}"[:300], None, None, None
    return "works", None, res, s32, s64


def _px_2024(model, x, y) -> dict:
    """px-hub's default method (PX as first published) on the same model and batch: status, seconds per round,
    float32 vs float64 of round-1 scores (its K differentiates through batch statistics: not well-posed by the
    1e-4 rule, measured rather than promised)."""
    status, reason, res, s32, s64 = _run_method(model, x, y, "px_2024")
    if status != "works":
        return {"status": status, "reason": reason}
    return {"status": "works", "seconds_per_round": round(statistics.mean(h["seconds"] for h in res.history), 3),
            "f32_vs_f64": _rel_err(s32, s64)}


def _px_2024_cells(r) -> str:
    p = r.get("px_2024")
    if p is None:
        return "not run | |"
    if p["status"] != "works":
        return f"{p['status']} | |"
    return f"{p['seconds_per_round']:.2f} | {p['f32_vs_f64']:.1e} |"


def _label(r) -> str:
    return r["model"] if r["model"].startswith("`") else f"`{r['model']}`"


def markdown(rows, header):
    lines = [header, "", "| family | model (input) | status | s / round | PX round ÷ fwd+bwd | f32 vs f64 "
                         "| gate-scored | px_2024 s / round | px_2024 f32 vs f64 | reason / note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r.get("px_2024") or {}
        if p.get("status", "works") != "works" and p.get("reason") != r.get("reason"):
            r = {**r, "reason": f"{r.get('reason', '')} px_2024: {p['reason']}".strip()}
        if r["status"] == "works":
            note = f"{r['zero_score_layers']} layer(s) with all-zero scores" if r["zero_score_layers"] else ""
            note = f"{note} {r.get('reason', '')}".strip().replace("|", "\\|")
            lines.append(f"| {r['family']} | {_label(r)} ({r['input']} px, batch {r['batch']}) | works | "
                         f"{r['seconds_per_round']:.2f} | {r['px_round_over_fwd_bwd']:.1f} | {r['f32_vs_f64']:.1e} | "
                         f"{100 * r['gate_scored_fraction']:.1f} % | {_px_2024_cells(r)} {note} |")
        else:
            reason = r["reason"].replace("|", "\\|")
            lines.append(f"| {r['family']} | {_label(r)} ({r['input']} px, batch {r['batch']}) | {r['status']} "
                         f"| | | | | {_px_2024_cells(r)} {reason} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated families")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    every = {**{k: (*v, None) for k, v in FAMILIES.items()},
             **{k: (label, {}, size, build) for k, (label, build, size) in OTHER_SOURCES.items()}}
    fams = {k: v for k, v in every.items() if args.only is None or k in args.only.split(",")}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "coverage.json"
    # rows of families not rerun are kept, so the table can be built in parts (--only)
    old = {r["family"]: r for r in json.loads(path.read_text())["rows"]} if path.exists() else {}
    rows = []
    for fam, (name, kw, size, build) in fams.items():
        t, load = time.perf_counter(), os.getloadavg()[0]
        row = run_family(fam, name, kw, size, args.batch, build)
        row["load_average"] = round(load, 2)
        row["wall_seconds"] = round(time.perf_counter() - t, 1)
        old[fam] = row
        rows.append(row)
        print(f"{fam:<28} {name:<32} {row['status']:<9} {row['wall_seconds']:6.1f}s  "
              f"{row.get('reason', '')[:110]}", flush=True)
        ordered = [old[f] for f in every if f in old]
        # rows from before loads were recorded were timed on a contended machine (load ~12)
        load = max(r.get("load_average", 12.0) for r in ordered)
        quiet = (f"The machine was quiet (load average ≤ {load:.1f} on {os.cpu_count()} cores at every row's start)."
                 if load <= os.cpu_count() else
                 f"**Some rows were timed on a contended machine (load average up to {load:.1f} on {os.cpu_count()} "
                 "cores, per row in coverage.json): treat those seconds and ratios as rough.**")
        header = (f"# PX coverage of backbone families (random init, pretrained=False, 2 PX rounds to sparsity 0.5, "
                  f"one batch of random images)\n\nMade by `benchmarks/coverage.py` on {torch.get_num_threads()} "
                  f"CPU threads, torch {torch.__version__}. {quiet} "
                  "f32 vs f64 = max over layers of max |s32 − s64| / max s64 for round-1 scores (well-posed: "
                  "≤ 1e-4). gate-scored = fraction of prunable weights scored by the straight-through rule (Q/K "
                  "projections, squeeze-excite MLPs; docs/px-generalized.md). px_2024 (the default method, PX as "
                  "first published) on the same model and batch: its K differentiates through batch statistics, so "
                  "its f32 vs f64 is measured, not held to 1e-4.")
        (out / "coverage.md").write_text(markdown(ordered, header))
        path.write_text(json.dumps({"torch_threads": torch.get_num_threads(), "rows": ordered}, indent=2))
    return rows


if __name__ == "__main__":
    main()
