"""How well-posed is each method's score on the reference fixture? (the measurement behind the tolerances of
tests/test_px_reference.py; not a test).

Round 1: px-hub's scores on the fixture model and batch in float32 with 2 threads (the fixture's conditions) are
compared with runs that differ only in rounding: float64, 1 thread, the 100 samples in reverse order (sums in
another order; batch statistics are order-free). Reported per method: the largest per-layer error relative to
that layer's largest score (the measure the tests use), against the float32 run and against the fixture.

Final masks (``--masks``): the same rounding-only variants pruned to 0.982 (100 rounds for the iterative methods,
one shot for SNIP and GraSP): kept weights per layer, empty layers, fc classes with no kept weight, and the share
of the fixture's kept weights each variant keeps. The spread over the variants and the fixture is the
"rounding-only range" the tests check final masks against.

    .venv/bin/python benchmarks/wellposed_reference.py [--masks] [--rounds 100] [--json out.json]
"""
from __future__ import annotations

import argparse
import copy
import json
import pathlib
import sys
import time

import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "px-reference"
SPARSITY = 0.982
# (label, method, options, fixture file stem or None)
METHODS = [
    ("px", "px", None, "px"),
    ("px[k_batch=full]", "px", {"k_batch": "full"}, "px"),
    ("px_official", "px_official", None, "px_official"),
    ("px_official[k_batch=one]", "px_official", {"k_batch": "one"}, "px_official"),
    ("synflow", "synflow", None, "synflow"),
    ("snip", "snip", None, "snip"),
    ("grasp", "grasp", None, "grasp"),
]
VARIANTS = ("float64", "threads1", "reversed")


def fixture_model():
    import timm
    from safetensors.torch import load_file

    import px_hub  # noqa: F401  (registers cifar_resnet20)

    init = load_file(str(FIXTURES / "init.safetensors"))
    order = json.loads((FIXTURES / "meta.json").read_text())["state_dict_order"]
    model = timm.create_model("cifar_resnet20", num_classes=10)
    sd = model.state_dict()
    model.load_state_dict({k: init[name].reshape(sd[k].shape).to(sd[k].dtype) for k, (name, _) in zip(sd, order)})
    d = load_file(str(FIXTURES / "inputs.safetensors"))
    return model.eval(), d["x"], d["y"].long()


def setup(variant: str, model, x, y):
    """(model, batch, threads) of one rounding-only variant."""
    threads = 1 if variant == "threads1" else 2
    if variant == "float64":
        return copy.deepcopy(model).double(), [(x.double(), y)], threads
    if variant == "reversed":
        return model, [(x.flip(0), y.flip(0))], threads
    return model, [(x, y)], threads


def rel_err(a: dict, b: dict, scale_fit: bool = False) -> float:
    """max over layers of max|a - b| / max|b|; with ``scale_fit`` a is first scaled by the least-squares factor
    (GraSP's normaliser |sum of scores| is itself ill-conditioned; the ranking is not)."""
    s = 1.0
    if scale_fit:
        va = torch.cat([a[k].double().flatten() for k in b])
        vb = torch.cat([b[k].double().flatten() for k in b])
        s = float((va * vb).sum() / (va * va).sum())
    return max(float((a[k].double() * s - b[k].double()).abs().max() / b[k].double().abs().max()) for k in b)


def round1(model, x, y) -> dict:
    from safetensors.torch import load_file

    import px_hub

    out = {}
    for label, method, options, stem in METHODS:
        runs = {}
        for variant in ("float32",) + VARIANTS:
            m, batches, threads = setup(variant, model, x, y)
            torch.set_num_threads(threads)
            runs[variant] = {k: v.double() for k, v in
                             px_hub.score(m, batches, method=method, method_options=options).items()}
        torch.set_num_threads(2)
        ref = {k: v.double() for k, v in load_file(str(FIXTURES / f"{stem}_round1_scores.safetensors")).items()}
        fit = method == "grasp"
        out[label] = {
            "vs_float32": {v: rel_err(runs[v], runs["float32"], fit) for v in VARIANTS},
            "vs_fixture": {v: rel_err(runs[v], ref, fit) for v in ("float32",) + VARIANTS},
        }
        print(f"{label:26s} vs float32: " + " ".join(f"{v}={e:.2e}" for v, e in out[label]["vs_float32"].items())
              + " | vs fixture: " + " ".join(f"{v}={e:.2e}" for v, e in out[label]["vs_fixture"].items()),
              flush=True)
    return out


def mask_stats(mask, ref) -> dict:
    fc = mask["fc.weight"]
    return {"kept": mask.kept(), "kept_per_layer": {k: int(m.sum()) for k, m in mask.items()},
            "empty_layers": sorted(k for k, m in mask.items() if not m.any()),
            "dead_classes": int((~fc.any(dim=1)).sum()),
            "shared_with_fixture": sum(int((mask[k] & ref[k]).sum()) for k in ref) / ref.kept()}


def final_masks(model, x, y, rounds: int, labels: list[str]) -> dict:
    from safetensors.torch import load_file

    import px_hub

    out = {}
    for label, method, options, stem in METHODS:
        if label not in labels:
            continue
        ref = px_hub.Mask(load_file(str(FIXTURES / f"{stem}_mask.safetensors")))
        res = {"fixture": mask_stats(ref, ref)}
        for variant in ("float32",) + VARIANTS:
            m, batches, threads = setup(variant, model, x, y)
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            r = None if method in ("snip", "grasp") else rounds
            mask = px_hub.prune(m, batches, method=method, sparsity=SPARSITY, rounds=r, progress=False,
                                method_options=options)
            res[variant] = mask_stats(mask, ref)
            res[variant]["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"{label:26s} {variant:9s} kept={mask.kept()} empty={len(res[variant]['empty_layers'])} "
                  f"dead={res[variant]['dead_classes']} shared={res[variant]['shared_with_fixture']:.3f}",
                  flush=True)
        torch.set_num_threads(2)
        res["runs"] = sorted(res)
        runs = [res[k] for k in res["runs"]]
        res["range_per_layer"] = {k: [min(r["kept_per_layer"][k] for r in runs),
                                      max(r["kept_per_layer"][k] for r in runs)] for k in ref}
        res["range_empty_layers"] = [min(len(r["empty_layers"]) for r in runs),
                                     max(len(r["empty_layers"]) for r in runs)]
        res["range_dead_classes"] = [min(r["dead_classes"] for r in runs), max(r["dead_classes"] for r in runs)]
        out[label] = res
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--masks", action="store_true", help="also prune to 0.982 under each variant (minutes)")
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--methods", default=",".join(m[0] for m in METHODS), help="labels for --masks")
    p.add_argument("--no-round1", action="store_true", help="keep the round-1 part of an earlier --json")
    p.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "wellposed_reference.json"))
    args = p.parse_args(argv)
    model, x, y = fixture_model()
    path = pathlib.Path(args.json)
    earlier = json.loads(path.read_text()) if path.exists() else {}
    result = {"torch": torch.__version__, "fixture_threads": 2, "variants": list(VARIANTS),
              "round1": earlier["round1"] if args.no_round1 and "round1" in earlier else round1(model, x, y)}
    if args.masks:
        result["rounds"] = args.rounds
        result["final_masks"] = final_masks(model, x, y, args.rounds, args.methods.split(","))
    if earlier:  # keep the parts of an earlier run this one did not redo
        result["final_masks"] = {**(earlier.get("final_masks") or {}), **(result.get("final_masks") or {})}
        result.setdefault("rounds", earlier.get("rounds"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
