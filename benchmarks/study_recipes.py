"""Recipes study: which pruning method trains best at the same short schedule? (offline, CPU)

ResNet-20 on animal-mnist (10 classes, 28 px resized to 32), pruned at initialisation to each sparsity with each
method on a class-balanced split (k=10 per class, seed = run seed), then trained with the same short recipe
(``animal_mnist_resnet20`` with the overrides below) and evaluated on the test split. Every run writes one JSON
file; a rerun skips finished runs, so the study can be interrupted and continued. Runs go seed-major (all
methods of seed 0 first), so a partial study still compares every method.

    .venv/bin/python benchmarks/study_recipes.py\
            # full study → benchmarks/results/study_recipes.{md,json,png}
    .venv/bin/python benchmarks/study_recipes.py --seeds 0 --methods px px_official random   # a subset
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import timm  # noqa: E402
import torch  # noqa: E402

import px_hub  # noqa: E402  (torchvision fix, timm registrations)
from px_hub import pipeline  # noqa: E402
from px_hub.data import load_image_dataset  # noqa: E402
from px_hub.finetune import finetune, load_recipe  # noqa: E402
from px_hub.spec import DataSpec, ModelSpec, PruneSpec  # noqa: E402

METHODS = ["px", "px_official", "synflow", "snip", "grasp", "magnitude", "random", "ntk_sap"]
HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--sparsities", nargs="+", type=float, default=[0.982, 0.893])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--dense", action="store_true", default=True, help="also train the dense network (reference)")
    p.add_argument("--no-dense", dest="dense", action="store_false")
    p.add_argument("--train-subset", type=int, default=1536, help="training examples (of 8,000)")
    p.add_argument("--val-subset", type=int, default=1000, help="test examples (of 2,000)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=20,
                   help="rounds of the iterative methods (px, px_official, synflow, ntk_sap; paper: 100); the "
                        "single-shot ones (snip, grasp, magnitude, random) always use 1")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=HERE / "results" / "study_recipes")
    return p.parse_args(argv)


def recipe_overrides(a) -> list[str]:
    return [f"train.epochs={a.epochs}", f"train.batch_size={a.batch_size}", f"optim.lr={a.lr}",
            f"optim.milestones=[{max(1, a.epochs - 1)}]" if a.epochs > 1 else "optim.milestones=[]",
            f"data.train_subset={a.train_subset}", f"data.val_subset={a.val_subset}", "train.checkpoint_every=0"]


def run_one(a, method: str, sparsity: float, seed: int, train, runs: Path) -> dict:
    key = f"{method}-s{sparsity}-seed{seed}"
    path = runs / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    torch.manual_seed(seed)
    model = timm.create_model("cifar_resnet20", num_classes=10)
    row = {"method": method, "sparsity": sparsity, "seed": seed}
    mask, t0 = None, time.time()
    if method != "dense":
        rounds = a.rounds if px_hub.get_method(method).default_rounds > 1 else None
        spec = PruneSpec(model=ModelSpec("cifar_resnet20", pretrained=False, num_classes=10, head_seed=seed),
                         data=DataSpec("animal-mnist", examples_per_class=10, seed=seed, batch_size=100),
                         method=method, sparsity=sparsity, rounds=rounds, seed=seed)
        res = pipeline.run(spec, model=model, dataset=train)  # the model at torch.manual_seed(seed)'s init
        mask = res.mask
        row.update(prune_seconds=round(time.time() - t0, 1), actual_sparsity=round(mask.sparsity(), 5),
                   collapsed_layers=len(mask.collapsed_layers()), rounds=res.record.get("rounds"))
    recipe = load_recipe("animal_mnist_resnet20", recipe_overrides(a) + [f"train.seed={seed}"])
    t1 = time.time()
    out = finetune(recipe, model=model, mask=mask, output_dir=runs / key, overwrite=True, progress=False)
    if mask is not None:  # the trained weights kept their zeros
        sd = out.model.state_dict()
        row["nonzero_pruned"] = int(sum(int((sd[k][~m] != 0).sum()) for k, m in mask.items()))
    row.update(top1=out.metrics["top_1_accuracy"], top5=out.metrics["top_5_accuracy"],
               train_seconds=round(time.time() - t1, 1), history=out.history)
    path.write_text(json.dumps(row, indent=1))
    shutil.rmtree(runs / key, ignore_errors=True)  # keep the record, not the weights/checkpoints
    return row


def summarize(rows: list[dict], a, wall: float, complete: bool) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["sparsity"] if r["method"] != "dense" else 0.0, r["method"]), []).append(r)

    def ms(v):
        return (f"{100 * statistics.mean(v):.2f} ± {100 * statistics.stdev(v):.2f}" if len(v) > 1
                else f"{100 * v[0]:.2f}")

    lines = [f"# Recipes study: ResNet-20 on animal-mnist, {'complete' if complete else 'PARTIAL'}", "",
             f"Command: `.venv/bin/python benchmarks/study_recipes.py {' '.join(sys.argv[1:])}`".rstrip() + "  ",
             f"Schedule (same for all): {a.epochs} epochs, batch {a.batch_size}, SGD lr {a.lr} (x0.1 for the last "
             f"epoch), momentum 0.9, wd 1e-4, pad-4 crop + flip, {a.train_subset} train / {a.val_subset} test "
             f"examples; pruning split k=10/class; {a.rounds} rounds for the iterative methods "
             "(px, px_official, synflow, ntk_sap), 1 for the others.  ",
             f"Wall time: {wall / 60:.1f} min on {os.cpu_count()} shared CPU cores ({a.threads} torch threads).", "",
             "| sparsity | method | seeds | top-1 % (mean ± sd) | top-5 % | collapsed layers | prune s |",
             "|---|---|---|---|---|---|---|"]
    for (s, m) in sorted(groups, key=lambda k: (-k[0], -statistics.mean(r["top1"] for r in groups[k]))):
        g = groups[(s, m)]
        lines.append(f"| {s} | {m} | {len(g)} | {ms([r['top1'] for r in g])} | {ms([r['top5'] for r in g])} | "
                     f"{statistics.mean(r.get('collapsed_layers', 0) for r in g):.1f} | "
                     f"{statistics.mean(r.get('prune_seconds', 0) for r in g):.1f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    methods = sorted({r["method"] for r in rows if r["method"] != "dense"})
    for m in methods:
        sp = sorted({r["sparsity"] for r in rows if r["method"] == m})
        mean = [statistics.mean(r["top1"] for r in rows if r["method"] == m and r["sparsity"] == s) for s in sp]
        ax.plot([100 * s for s in sp], [100 * v for v in mean], marker="o", label=m)
    dense = [r["top1"] for r in rows if r["method"] == "dense"]
    if dense:
        ax.axhline(100 * statistics.mean(dense), color="k", ls="--", lw=1, label="dense")
    ax.set_xlabel("sparsity %"), ax.set_ylabel("top-1 %"), ax.set_title("ResNet-20, animal-mnist (mean over seeds)")
    ax.legend(fontsize=8), fig.tight_layout(), fig.savefig(path, dpi=110), plt.close(fig)


def main(argv=None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    runs = a.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    train = load_image_dataset("animal-mnist", "train")
    plan = [(m, s, seed) for seed in a.seeds for s in a.sparsities for m in a.methods]
    if a.dense:
        plan += [("dense", 0.0, seed) for seed in a.seeds]
        plan.sort(key=lambda t: t[2])
    t0, rows = time.time(), []
    for i, (m, s, seed) in enumerate(plan):
        r = run_one(a, m, s, seed, train, runs)
        rows.append(r)
        print(f"[{i + 1}/{len(plan)} {time.time() - t0:.0f}s] {m} s={s} seed={seed}: top1={r['top1']:.4f}", flush=True)
        table = summarize(rows, a, time.time() - t0, complete=i + 1 == len(plan))
        (a.out.parent / "study_recipes.md").write_text(table)
        (a.out.parent / "study_recipes.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "history"}
                                                                     for r in rows], indent=1))
        plot(rows, a.out.parent / "study_recipes.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
