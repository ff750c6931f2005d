"""PX speed on this machine, as ratios against a baseline measured in the same run (not a test).

For each model/batch: one plain forward+backward (train mode, cross-entropy) vs one PX round (``k_batch='one'``,
px-hub's default, and ``'full'``, the official code's arithmetic), medians of repeats after a warm-up; then 100 PX
rounds on the reference fixture vs the official code's 24.2 s measured on this 2-core machine. Every case runs in
its own fresh process so its peak RSS is its own.

    .venv/bin/python benchmarks/bench_px.py [--repeats 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import pathlib
import resource
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
OFFICIAL_100_ROUNDS_S = 24.187  # ../shared/px-reference/meta.json, methods.PX.seconds_total (official code, this CPU)


def _model_and_batch(case):
    import timm
    import torch

    import px_hub  # noqa: F401

    torch.manual_seed(0)
    if case == "resnet20":
        model = timm.create_model("cifar_resnet20", num_classes=10)
        x, y = torch.randn(100, 3, 32, 32), torch.arange(100) % 10
    elif case == "resnet50":
        model = timm.create_model("resnet50", num_classes=10)
        x, y = torch.randn(16, 3, 224, 224), torch.arange(16) % 10
    else:
        raise ValueError(case)
    return model, x, y


def _timed(fn, repeats):
    fn()  # warm-up (oneDNN primitive creation)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _case(kind, case, repeats, q):
    import torch
    import torch.nn.functional as F

    import px_hub

    torch.set_num_threads(torch.get_num_threads())
    if kind == "fixture100":
        sys.path.insert(0, str(REPO / "tests"))
        from conftest import reference_dir  # noqa: E402
        from safetensors.torch import load_file

        ref = reference_dir()
        model, _, _ = _model_and_batch("resnet20")
        order = json.loads((ref / "meta.json").read_text())["state_dict_order"]
        init = load_file(str(ref / "init.safetensors"))
        sd = model.state_dict()
        model.load_state_dict({k: init[n].reshape(sd[k].shape) for k, (n, _) in zip(sd, order)})
        inp = load_file(str(ref / "inputs.safetensors"))
        x, y = inp["x"], inp["y"].long()
        px_hub.score(model.eval(), [(x, y)], method="px", method_options={"k_batch": case})  # warm-up
        t = time.perf_counter()
        px_hub.prune(model, [(x, y)], method="px", sparsity=0.982, rounds=100, progress=False,
                     method_options={"k_batch": case})
        sec = time.perf_counter() - t
    else:
        model, x, y = _model_and_batch(case)
        if kind == "fwd_bwd":
            model.train()

            def step():
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
        else:
            model.eval()

            def step():
                px_hub.score(model, [(x, y)], method="px", method_options={"k_batch": kind.split(":")[1]})
        sec = _timed(step, repeats)
    q.put({"seconds": sec, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def run_case(kind, case, repeats):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_case, args=(kind, case, repeats, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--skip-fixture", action="store_true")
    args = ap.parse_args(argv)
    import torch

    results = {"torch_threads": torch.get_num_threads(), "cases": {}}
    print(f"PX round vs plain forward+backward (median of {args.repeats}, {torch.get_num_threads()} threads)")
    print(f"{'model / batch':<28} {'fwd+bwd s':>10} {'PX one s':>9} {'ratio':>6} {'PX full s':>10} {'ratio':>6}"
          f" {'peak MB (fb/one/full)':>22}")
    for case, label in (("resnet20", "ResNet-20, 100 x 32 px"), ("resnet50", "timm resnet50, 16 x 224 px")):
        fb = run_case("fwd_bwd", case, args.repeats)
        one = run_case("px:one", case, args.repeats)
        full = run_case("px:full", case, args.repeats)
        results["cases"][case] = {"fwd_bwd": fb, "px_one": one, "px_full": full,
                                  "ratio_one": one["seconds"] / fb["seconds"],
                                  "ratio_full": full["seconds"] / fb["seconds"]}
        print(f"{label:<28} {fb['seconds']:>10.3f} {one['seconds']:>9.3f} {one['seconds'] / fb['seconds']:>6.2f}"
              f" {full['seconds']:>10.3f} {full['seconds'] / fb['seconds']:>6.2f}"
              f" {fb['peak_rss_mb']:>7.0f}/{one['peak_rss_mb']:.0f}/{full['peak_rss_mb']:.0f}")
    if not args.skip_fixture:
        print(f"\n100 PX rounds on the reference fixture (official code: {OFFICIAL_100_ROUNDS_S:.1f} s on this CPU)")
        for kb in ("one", "full"):
            r = run_case("fixture100", kb, 1)
            results["cases"][f"fixture100_{kb}"] = {**r, "speedup_vs_official": OFFICIAL_100_ROUNDS_S / r["seconds"]}
            print(f"  k_batch={kb:<5} {r['seconds']:7.2f} s   {OFFICIAL_100_ROUNDS_S / r['seconds']:.2f}x faster than "
                  f"official   peak {r['peak_rss_mb']:.0f} MB")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
