"""Which timm families PX prunes: one small random-init model per family, 2 PX rounds (not a test).

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
    "efficientformer": ("efficientformer_l1", {"img_size": 64}, 64),
    "edgenext": ("edgenext_xx_small", {}, 64),
    "xcit": ("xcit_nano_12_p16_224", {"img_size": 64}, 64),
    "pvt_v2": ("pvt_v2_b0", {}, 64),
    "convmixer": ("convmixer_768_32", {"depth": 2}, 64),
    "inception": ("inception_v3", {}, 96),
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


def run_family(family, name, kwargs, size, batch):
    import timm
    import torch

    import px_hub
    from px_hub.errors import PxHubError

    row = {"family": family, "model": name, "kwargs": kwargs, "input": size, "batch": batch}
    try:
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, num_classes=4, **kwargs).eval()
    except Exception as e:  # a variant timm cannot build at this size: not PX's verdict
        row.update(status="not built", reason=f"{type(e).__name__}: {e}"[:300])
        return row
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, size, size, generator=g), torch.arange(batch) % 4
    row["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = px_hub.prune_with_record(model, [(x, y)], method="px", sparsity=0.5, rounds=2, progress=False)
            s32 = px_hub.score(model, [(x, y)], method="px")
            s64 = px_hub.score(copy.deepcopy(model).double(), [(x.double(), y)], method="px")
    except PxHubError as e:
        row.update(status="refused", reason=str(e))
        return row
    except Exception as e:
        row.update(status="crash", reason=f"{type(e).__name__}: {e}"[:300])
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
    return row


def markdown(rows, header):
    lines = [header, "", "| family | model (input) | status | s / round | PX round ÷ fwd+bwd | f32 vs f64 "
                         "| gate-scored | reason / note |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "works":
            note = f"{r['zero_score_layers']} layer(s) with all-zero scores" if r["zero_score_layers"] else ""
            lines.append(f"| {r['family']} | `{r['model']}` ({r['input']} px, batch {r['batch']}) | works | "
                         f"{r['seconds_per_round']:.2f} | {r['px_round_over_fwd_bwd']:.1f} | {r['f32_vs_f64']:.1e} | "
                         f"{100 * r['gate_scored_fraction']:.1f} % | {note} |")
        else:
            reason = r["reason"].replace("|", "\\|")
            lines.append(f"| {r['family']} | `{r['model']}` ({r['input']} px, batch {r['batch']}) | {r['status']} "
                         f"| | | | | {reason} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated families")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    import torch

    fams = {k: v for k, v in FAMILIES.items() if args.only is None or k in args.only.split(",")}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "coverage.json"
    # rows of families not rerun are kept, so the table can be built in parts (--only)
    old = {r["family"]: r for r in json.loads(path.read_text())["rows"]} if path.exists() else {}
    rows = []
    for fam, (name, kw, size) in fams.items():
        t = time.perf_counter()
        row = run_family(fam, name, kw, size, args.batch)
        row["wall_seconds"] = round(time.perf_counter() - t, 1)
        old[fam] = row
        rows.append(row)
        print(f"{fam:<28} {name:<32} {row['status']:<9} {row['wall_seconds']:6.1f}s  "
              f"{row.get('reason', '')[:110]}", flush=True)
        ordered = [old[f] for f in FAMILIES if f in old]
        header = (f"# PX coverage of timm families (random init, pretrained=False, 2 PX rounds to sparsity 0.5, "
                  f"one batch of random images)\n\nMade by `benchmarks/coverage.py` on {torch.get_num_threads()} "
                  "CPU threads, torch "
                  f"{torch.__version__}. **Timings were measured on a shared, heavily contended machine (load ~12 on "
                  "2 cores): treat seconds and ratios as rough; rerun on a quiet machine for numbers to quote.** "
                  "f32 vs f64 = max over layers of max |s32 − s64| / max s64 for round-1 scores (well-posed: "
                  "≤ 1e-4). gate-scored = fraction of prunable weights scored by the straight-through rule (Q/K "
                  "projections, squeeze-excite MLPs; docs/px-generalized.md). transformers, open_clip and DINO rows "
                  "are added by the lead.")
        (out / "coverage.md").write_text(markdown(ordered, header))
        path.write_text(json.dumps({"torch_threads": torch.get_num_threads(), "rows": ordered}, indent=2))
    return rows


if __name__ == "__main__":
    main()
