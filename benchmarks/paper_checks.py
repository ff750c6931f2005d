"""Check two analysis claims of the PX paper (Iurada et al., CVPR 2024) on ResNet-20 with offline data.

1. Fig. 5 / ablation: at sparsity 0.9312 the NTK eigenspectrum of the PX ticket is closer to the dense network's
   than SynFlow-L2's, measured by the ratios (ticket / dense) of the NTK trace and of the top eigenvalue.
2. Fig. 6: at sparsity 0.982 PX keeps more alive output units per layer than SynFlow and NTK-SAP.

Each PX variant is checked: ``px`` (px-hub's), ``px_official`` (the latest official code) and ``px_2024`` (the
first official release, most likely behind the paper's numbers). Every method runs raw (``guard=False``): these are
claims about the published methods, not about px-hub's ticket-health guard.

Setting: timm.create_model("cifar_resnet20", num_classes=10) at a seeded random init (the paper prunes at
init), pruning data = k=10 examples per class of an offline set upsampled to 32 px with the model's CIFAR
preprocessing, one batch of 100, each method's default rounds (PX / SynFlow / SynFlow-L2 / NTK-SAP: 100).
NTK: empirical Fixed-Weight NTK on the first 20 pruning examples x 10 logits, BatchNorm in eval mode.

    .venv/bin/python benchmarks/paper_checks.py [--data digits] [--seeds 0 1 2]

Writes benchmarks/results/paper_checks.{json,md}, per-run comparison folders, and docs/figures/paper_*.png.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import shutil
import sys
import time

import timm
import torch

import px_hub  # noqa: F401  (first: torchvision fix, registers cifar_resnet20)
from px_hub import pipeline
from px_hub.analysis.compare import compare_methods, write_comparison
from px_hub.records import to_jsonable
from px_hub.spec import DataSpec, ModelSpec, PruneSpec

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PX_VARIANTS = ("px", "px_official", "px_2024")
FIGURES = ROOT / "docs" / "figures"


def prepared_split(data: str, k: int, seed: int, model, sparsity: float):
    """The pipeline's split and batches for ``model`` at its seeded init: one batch of k x 10 examples, with the
    model's own preprocessing (3x32x32, CIFAR mean/std: digits are upsampled to 32 px)."""
    spec = PruneSpec(model=ModelSpec("cifar_resnet20", pretrained=False, num_classes=10, head_seed=seed),
                     data=DataSpec(data, examples_per_class=k, seed=seed, batch_size=k * 10),
                     sparsity=sparsity, seed=seed, guard=False)
    return pipeline.prepare(spec, model=model)


def closeness(ratio: float) -> float:
    """|log10 ratio|: 0 = same as dense."""
    return abs(math.log10(ratio)) if ratio > 0 else math.inf


def run(data: str, seeds: list[int], k: int, samples: int, threads: int, parts: list[str], save) -> dict:
    torch.set_num_threads(threads)
    out = {"data": data, "k": k, "ntk_samples": samples, "fig5": [], "fig6": []}
    for seed in seeds:
        torch.manual_seed(seed)
        model = timm.create_model("cifar_resnet20", num_classes=10).eval()
        if "fig5" in parts:
            out["fig5"].append(fig5(prepared_split(data, k, seed, model, 0.9312), data, seed, samples))
            save(out)
        if "fig6" in parts:
            out["fig6"].append(fig6(prepared_split(data, k, seed, model, 0.982), data, seed))
            save(out)
    return out


def fig5(prepared, data: str, seed: int, samples: int) -> dict:
    """Spectrum vs dense at 0.9312 (px_official too: the paper's numbers come from the official code)."""
    t0 = time.perf_counter()
    split = prepared.split
    s5 = compare_methods(prepared, [*PX_VARIANTS, "synflow_l2", "synflow"], ntk_samples=samples,
                         progress=False)
    write_comparison(s5, RESULTS / f"paper_fig5_{data}_seed{seed}", title=f"ResNet-20, {data}, seed {seed}")
    row = {"seed": seed, "split_digest": split.digest, "seconds": round(time.perf_counter() - t0, 1)}
    for name, e in s5["methods"].items():
        row[name] = {**e["ntk_vs_dense"], "trace": e["ntk"]["trace"], "top": e["ntk"]["top_eigenvalue"],
                     "collapsed": e["record"]["collapsed_layers"], "pruning_seconds": e["pruning_seconds"]}
    row["dense"] = {"trace": s5["ntk"]["dense"]["trace"], "top": s5["ntk"]["dense"]["top_eigenvalue"]}
    for px_name in PX_VARIANTS:
        for key in ("trace_ratio", "top_eigenvalue_ratio", "mean_abs_log10_eigenvalue_gap"):
            a, b = row[px_name][key], row["synflow_l2"][key]
            closer = (a < b) if key.startswith("mean") else (closeness(a) < closeness(b))
            row[f"{px_name}_closer_than_synflow_l2_by_{key}"] = closer
    print(json.dumps({k: v for k, v in row.items() if "_closer_" in k}), file=sys.stderr)
    if seed == 0:
        FIGURES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(RESULTS / f"paper_fig5_{data}_seed{seed}" / "compare_ntk_spectrum.png",
                        FIGURES / f"paper_fig5_ntk_spectrum_{data}.png")
    return row


def fig6(prepared, data: str, seed: int) -> dict:
    """Alive output units at 0.982."""
    t0 = time.perf_counter()
    s6 = compare_methods(prepared, ["px", "px_2024", "synflow", "ntk_sap"], ntk_samples=0, progress=False)
    write_comparison(s6, RESULTS / f"paper_fig6_{data}_seed{seed}", title=f"ResNet-20, {data}, seed {seed}")
    layers = {n: [r["alive_outputs"] for r in e["layers"]] for n, e in s6["methods"].items()}
    names = [r["layer"] for r in s6["methods"]["px"]["layers"]]
    row6 = {"seed": seed, "seconds": round(time.perf_counter() - t0, 1), "layers": names,
            "alive_outputs": layers, "outputs": [r["outputs"] for r in s6["methods"]["px"]["layers"]],
            "total_alive": {n: sum(v) for n, v in layers.items()},
            "collapsed": {n: e["record"]["collapsed_layers"] for n, e in s6["methods"].items()},
            "pruning_seconds": {n: e["pruning_seconds"] for n, e in s6["methods"].items()}}
    for px_name, other in [(p, o) for p in ("px", "px_2024") for o in ("synflow", "ntk_sap")]:
        px_, ot = layers[px_name], layers[other]
        row6[f"{px_name}_vs_{other}"] = {"layers_more": sum(a > b for a, b in zip(px_, ot)),
                                  "layers_equal": sum(a == b for a, b in zip(px_, ot)),
                                  "layers_fewer": sum(a < b for a, b in zip(px_, ot)),
                                  "fewer_at": [n for n, a, b in zip(names, px_, ot) if a < b]}
    print(json.dumps({k: v for k, v in row6.items() if "_vs_" in k or k == "total_alive"}), file=sys.stderr)
    if seed == 0:
        FIGURES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(RESULTS / f"paper_fig6_{data}_seed{seed}" / "compare_alive_outputs.png",
                        FIGURES / f"paper_fig6_alive_outputs_{data}.png")
    return row6


def markdown(res: dict) -> str:
    L = [f"# Paper checks: ResNet-20 (random init), {res['data']} upsampled to 32 px, k={res['k']}, "
         f"NTK on {res['ntk_samples']} samples x 10 logits", "",
         "## Fig. 5 setting (sparsity 0.9312): NTK of ticket / NTK of dense", "",
         "| seed | method | trace ratio | λmax ratio | mean abs log10 eigenvalue gap | collapsed layers |",
         "|---|---|---|---|---|---|"]
    for row in res["fig5"]:
        for m in (*PX_VARIANTS, "synflow_l2", "synflow"):
            if m not in row:
                continue
            e = row[m]
            L.append(f"| {row['seed']} | {m} | {e['trace_ratio']:.4g} | {e['top_eigenvalue_ratio']:.4g} | "
                     f"{e['mean_abs_log10_eigenvalue_gap']:.3f} | {len(e['collapsed'])} |")
    L += ["", "## Fig. 6 setting (sparsity 0.982): alive output units", "",
          "| seed | PX variant | its total | synflow total | ntk_sap total | vs synflow (more/equal/fewer layers) | "
          "vs ntk_sap (more/equal/fewer layers) |", "|---|---|---|---|---|---|---|"]
    for row in res["fig6"]:
        t = row["total_alive"]
        for px_name in ("px", "px_2024"):
            if px_name not in t:
                continue
            a, b = row[f"{px_name}_vs_synflow"], row[f"{px_name}_vs_ntk_sap"]
            L.append(f"| {row['seed']} | {px_name} | {t[px_name]} | {t['synflow']} | {t['ntk_sap']} | "
                     f"{a['layers_more']}/{a['layers_equal']}/{a['layers_fewer']} | "
                     f"{b['layers_more']}/{b['layers_equal']}/{b['layers_fewer']} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits", help="digits or animal-mnist (default digits)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", nargs="+", choices=["fig5", "fig6"], default=["fig5", "fig6"],
                    help="which checks to (re)run; results of the other part already on disk are kept")
    a = ap.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"paper_checks_{a.data}.json"
    old = json.loads(path.read_text()) if path.exists() else {}

    def save(res: dict) -> None:
        merged = dict(res)
        for part in ("fig5", "fig6"):
            if part not in a.parts:  # keep what an earlier run measured
                merged[part] = old.get(part, [])
        path.write_text(json.dumps(to_jsonable(merged), indent=2) + "\n")
        (RESULTS / f"paper_checks_{a.data}.md").write_text(markdown(merged))

    res = run(a.data, a.seeds, a.k, a.samples, a.threads, a.parts, save)
    save(res)
    print((RESULTS / f"paper_checks_{a.data}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
