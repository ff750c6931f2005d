"""px-hub PX vs the official PX code (iurada/px-ntk-pruning), timed in the same run on the reference fixture.

Each repeat runs, in this order and each in its own fresh Python process with the same torch thread count:
the official code's PX pruner (its own ResNet-20 class, masked layers, pruner and global masking), px-hub's
``px_hub.prune(..., method="px", guard=False)`` with its default ``k_batch``, and px-hub with
``k_batch="full"`` (the official arithmetic). Every case prunes the fixture model (``init.safetensors``) on the
fixture batch (``inputs.safetensors``, 100 digits images) to sparsity 0.982 with the exponential schedule and
global scope. The timed span is the pruning loop alone (after imports, model construction and one untimed
warm-up scoring pass in both codes); the table gives medians over repeats and the ratio official / px-hub.

Correctness gate, same run: with 100 rounds at 0.982 the official code's final mask must equal
``tests/fixtures/px-reference/px_official_mask.safetensors`` exactly (the fixture was made with the official code
unchanged on 2 threads), and every repeat of a case must give the same mask; the script exits with status 1
otherwise. px-hub's masks are compared with ``px_mask.safetensors`` (information only: the tests check them by
what rounding cannot move).

Model names matter to the official PX: it picks the tensors its views leave alone by name (``'bn'`` in the
name). The fixture's model named the two downsampling shortcuts' modules ``shortcut.conv`` / ``shortcut.bn`` (see
its ``meta.json`` state_dict_order), where the release's class has ``shortcut.0`` / ``shortcut.1``; with the
release's names the official J view sets the shortcut BatchNorm's bias to 1 and the final mask differs (it shares
~47 % of the fixture's kept weights). So the harness renames those two modules (same objects, same code);
``--shortcut-names release`` keeps the release's names. Timing is not affected.

The official code is never copied into px-hub: it is imported from a separate checkout at run time. Time it on a
quiet machine.

    .venv/bin/python benchmarks/bench_vs_official.py                      # 100 rounds, 3 repeats, 2 threads
    .venv/bin/python benchmarks/bench_vs_official.py --rounds 2 --repeats 1 --json /tmp/tiny.json   # smoke run
    .venv/bin/python benchmarks/bench_vs_official.py --official-dir /path/to/px-ntk-pruning

``--official-dir`` defaults to commit ed6c40e extracted (``git archive``) from the mirror
/work/.mirror/iurada+px-ntk-pruning/repo into a temporary folder. Results: ``benchmarks/results/
bench_vs_official.json`` (settings, per-repeat seconds, medians, ratios, masks' kept counts, torch version, the
official code's commit).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict

REPO = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "fixtures" / "px-reference"
MIRROR = pathlib.Path("/work/.mirror/iurada+px-ntk-pruning/repo")
OFFICIAL_COMMIT = "ed6c40e"  # the px_official fixture's commit
FIXTURE_ROUNDS, FIXTURE_SPARSITY = 100, 0.982
CASES = {  # name -> (label, px-hub method_options or None for the official code)
    "official": ("official PX (ed6c40e code)", None),
    "pxhub": ("px-hub px (default k_batch)", {}),
    "pxhub_full": ("px-hub px k_batch=full", {"k_batch": "full"}),
    # the allocator setting the px-hub command applies to its process (px_hub/_alloc.py), given to both codes
    "official_alloc": ("official PX, CLI allocator", None),
    "pxhub_alloc": ("px-hub px, CLI allocator", {}),
}


def _fixture():
    """(ordered [(name, shape)], init tensors, x, y) of the reference fixture."""
    from safetensors.torch import load_file

    order = json.loads((REFERENCE / "meta.json").read_text())["state_dict_order"]
    inputs = load_file(str(REFERENCE / "inputs.safetensors"))
    return order, load_file(str(REFERENCE / "init.safetensors")), inputs["x"], inputs["y"].long()


# -- workers: one case per fresh process --------------------------------------------------------------------------
def _official_worker(official_dir: str, rounds: int, sparsity: float, shortcut_names: str):
    """The official code's own objects: its lottery ResNet-20 (masked Conv2d/Linear buffers), its PX pruner
    scoring on a DataLoader as its CIFAR-10 experiment does (class-balanced subset, 10 per class: the fixture
    batch, in file order), its global masking with density d**((r+1)/R) after each round."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    sys.path.insert(0, official_dir)
    import lib.generator as generator  # noqa: E402
    from globals import CONFIG  # noqa: E402  (the official code's configuration object)
    from lib.models.lottery_resnet import resnet20  # noqa: E402
    from lib.pruners import PX  # noqa: E402

    order, init, x, y = _fixture()

    class FixtureSet(Dataset):  # what its balanced-subset sampler needs: items and a list of int targets
        targets = [int(v) for v in y]

        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return x[i], int(y[i])

    CONFIG.update(dataset="CIFAR10", device="cpu", batch_size=len(x), experiment_args={"examples_per_class": 10})
    model = resnet20(num_classes=10)
    if shortcut_names == "fixture":
        for block in model.blocks:
            if isinstance(block.shortcut, torch.nn.Sequential):
                block.shortcut = torch.nn.Sequential(OrderedDict(conv=block.shortcut[0], bn=block.shortcut[1]))
    sd = model.state_dict()
    # by order, as the fixture README says (its names are px-hub's: shortcut.conv / shortcut.bn for the official
    # shortcut.0 / shortcut.1); the mask buffers are not in the fixture
    names = [k for k in sd if "mask" not in k]
    if [list(sd[k].shape) for k in names] != [list(shape) for _, shape in order]:
        raise SystemExit("the official ResNet-20's state_dict does not match the fixture's state_dict_order")
    fixture_name = {k: n for k, (n, _) in zip(names, order)}
    sd.update({k: init[fixture_name[k]].reshape(sd[k].shape) for k in names})
    model.load_state_dict(sd)
    model.eval()  # as its experiment does before PX rounds
    loader = DataLoader(FixtureSet(), batch_size=len(x), shuffle=False)
    pruner = PX(generator.masked_parameters(model))
    loss = torch.nn.CrossEntropyLoss()
    pruner.score(model, loss, loader, "cpu")  # warm-up (oneDNN primitives); every round overwrites the scores
    density = 1.0 - sparsity
    t = time.perf_counter()
    for r in range(rounds):
        pruner.score(model, loss, loader, "cpu")
        pruner.mask(density ** ((r + 1) / rounds), "global")
    sec = time.perf_counter() - t
    masks = {fixture_name[f"{name}.weight"]: m.weight_mask.detach().to(torch.uint8).clone()
             for name, m in model.named_modules() if generator.prunable(m, False, False)}
    return sec, masks


def _pxhub_worker(options: dict, rounds: int, sparsity: float):
    """px-hub on its timm cifar_resnet20 loaded with the fixture weights by order (as tests/conftest.py)."""
    import timm
    import torch

    import px_hub

    order, init, x, y = _fixture()
    model = timm.create_model("cifar_resnet20", num_classes=10)
    sd = model.state_dict()
    if len(sd) != len(order):
        raise SystemExit("px-hub's cifar_resnet20 does not match the fixture's state_dict_order")
    model.load_state_dict({k: init[n].reshape(sd[k].shape).to(sd[k].dtype) for k, (n, _) in zip(sd, order)})
    model.eval()
    px_hub.score(model, [(x, y)], method="px", method_options=options)  # warm-up, as on the official side
    t = time.perf_counter()
    mask = px_hub.prune(model, [(x, y)], method="px", sparsity=sparsity, rounds=rounds, progress=False,
                        guard=False, method_options=options)
    sec = time.perf_counter() - t
    return sec, {k: v.to(torch.uint8) for k, v in mask.items()}, px_hub.__file__


def _worker(args) -> None:
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    if args.worker.endswith("_alloc"):
        from px_hub._alloc import keep_freed_memory

        if not keep_freed_memory():
            raise SystemExit("the allocator setting needs glibc")
    if args.worker.startswith("official"):
        sec, masks = _official_worker(args.official_dir, args.rounds, args.sparsity, args.shortcut_names)
        code = None
    else:
        sec, masks, code = _pxhub_worker(CASES[args.worker][1], args.rounds, args.sparsity)
    out = pathlib.Path(args.out)
    save_file({k: v.contiguous() for k, v in masks.items()}, str(out.with_suffix(".safetensors")))
    out.write_text(json.dumps({"seconds": sec, "threads": torch.get_num_threads(), "px_hub_file": code,
                               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


# -- the driver ---------------------------------------------------------------------------------------------------
def _official_checkout(arg: str | None, tmp: pathlib.Path) -> tuple[pathlib.Path, str | None]:
    """(the official code's folder, its commit if known)."""
    if arg:
        d = pathlib.Path(arg).resolve()
        if not (d / "lib" / "pruners.py").is_file():
            raise SystemExit(f"error: --official-dir {d} has no lib/pruners.py; pass a checkout of "
                             "iurada/px-ntk-pruning")
        r = subprocess.run(["git", "-C", str(d), "rev-parse", "HEAD"], capture_output=True, text=True)
        return d, (r.stdout.strip() or None) if r.returncode == 0 else None
    if not MIRROR.is_dir():
        raise SystemExit(f"error: no mirror of the official code at {MIRROR}; pass --official-dir DIR (a checkout "
                         "of iurada/px-ntk-pruning, commit ed6c40e)")
    git = ["git", f"--git-dir={MIRROR}"]
    commit = subprocess.run(git + ["rev-parse", OFFICIAL_COMMIT], capture_output=True, text=True, check=True)
    d = tmp / f"px-official-{OFFICIAL_COMMIT}"
    d.mkdir()
    archive = subprocess.run(git + ["archive", OFFICIAL_COMMIT], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(d)], input=archive, check=True)
    return d, commit.stdout.strip()


def _run_case(case: str, args, official_dir: pathlib.Path, out: pathlib.Path) -> dict:
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", case, "--out", str(out),
           "--rounds", str(args.rounds), "--sparsity", str(args.sparsity), "--threads", str(args.threads),
           "--official-dir", str(official_dir), "--shortcut-names", args.shortcut_names]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"error: case {case} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    res = json.loads(out.read_text())
    res["process_seconds"] = time.perf_counter() - t
    return res


def _load_mask(path: pathlib.Path) -> dict:
    from safetensors.torch import load_file

    return {k: v.bool() for k, v in load_file(str(path)).items()}


def _digest(mask: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(mask):
        h.update(k.encode() + b"\0" + mask[k].to("cpu").numpy().tobytes())
    return h.hexdigest()


def _compare(mask: dict, ref: dict) -> dict:
    """Equality with a reference mask and the share of the reference's kept weights also kept."""
    if set(mask) != set(ref) or any(mask[k].shape != ref[k].shape for k in ref):
        return {"equal": False, "same_layers": False}
    both = sum(int((mask[k] & ref[k]).sum()) for k in ref)
    return {"equal": all(bool((mask[k] == ref[k]).all()) for k in ref), "same_layers": True,
            "shared_kept_fraction": round(both / max(1, sum(int(ref[k].sum()) for k in ref)), 4)}


def _kept(mask: dict) -> dict:
    return {"total": sum(int(v.sum()) for v in mask.values()), "per_layer": {k: int(v.sum()) for k, v in mask.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--official-dir", default=None, help="a checkout of iurada/px-ntk-pruning (default: ed6c40e "
                    f"extracted from {MIRROR})")
    ap.add_argument("--rounds", type=int, default=FIXTURE_ROUNDS)
    ap.add_argument("--sparsity", type=float, default=FIXTURE_SPARSITY)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads in every case (the fixtures used 2)")
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "bench_vs_official.json"))
    ap.add_argument("--shortcut-names", choices=("fixture", "release"), default="fixture",
                    help="names of the official model's downsampling shortcut modules: conv/bn (default, as in the "
                    "fixture) or the release's 0/1")
    ap.add_argument("--worker", choices=sorted(CASES), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0
    if args.rounds < 1 or args.repeats < 1 or args.threads < 1 or not 0.0 < args.sparsity < 1.0:
        raise SystemExit("error: --rounds, --repeats and --threads must be >= 1 and --sparsity in (0, 1)")
    import torch

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-vs-official-"))
    try:
        official_dir, commit = _official_checkout(args.official_dir, tmp)
        load_before = os.getloadavg()
        runs: dict[str, list[dict]] = {c: [] for c in CASES}
        masks: dict[str, list[dict]] = {c: [] for c in CASES}
        for rep in range(args.repeats):
            for case in CASES:  # interleaved: official, px-hub, px-hub full, official, ...
                out = tmp / f"{case}-{rep}.json"
                res = _run_case(case, args, official_dir, out)
                masks[case].append(_load_mask(out.with_suffix(".safetensors")))
                runs[case].append(res)
                print(f"  repeat {rep + 1}/{args.repeats} {case:<11} {res['seconds']:8.2f} s", flush=True)
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    fixture_setting = args.rounds == FIXTURE_ROUNDS and args.sparsity == FIXTURE_SPARSITY
    refs = {"px_official_mask": _load_mask(REFERENCE / "px_official_mask.safetensors"),
            "px_mask": _load_mask(REFERENCE / "px_mask.safetensors")}
    cases, failures = {}, []
    for case, (label, options) in CASES.items():
        digests = [_digest(m) for m in masks[case]]
        if len(set(digests)) != 1:
            failures.append(f"{case}: repeats gave different masks")
        secs = [r["seconds"] for r in runs[case]]
        entry = {"label": label, "method_options": options, "seconds": secs, "median_s": statistics.median(secs),
                 "process_seconds": [round(r["process_seconds"], 3) for r in runs[case]],
                 "peak_rss_mb": [round(r["peak_rss_mb"], 1) for r in runs[case]],
                 "threads": sorted({r["threads"] for r in runs[case]}), "mask_sha256": digests[0],
                 "px_hub_file": runs[case][0]["px_hub_file"],
                 "kept": _kept(masks[case][0])}
        if fixture_setting:
            ref = "px_official_mask" if case.startswith("official") else "px_mask"
            entry["vs_fixture"] = {ref: _compare(masks[case][0], refs[ref])}
        cases[case] = entry
    gate = None
    if fixture_setting:
        gate = all(cases[c]["vs_fixture"]["px_official_mask"]["equal"] for c in ("official", "official_alloc"))
        if not gate:
            failures.append("the official code's final mask differs from px_official_mask.safetensors")
        if cases["pxhub_alloc"]["mask_sha256"] != cases["pxhub"]["mask_sha256"]:
            failures.append("the allocator setting changed px-hub's mask")
    off = cases["official"]["median_s"]
    ratios = {c: off / cases[c]["median_s"] for c in CASES if c != "official"}
    ratios["pxhub_alloc_vs_official_alloc"] = cases["official_alloc"]["median_s"] / cases["pxhub_alloc"]["median_s"]

    print(f"\n{args.rounds} PX rounds on the reference fixture, sparsity {args.sparsity}, {args.threads} threads, "
          f"median of {args.repeats} (load average {load_before[0]:.2f} before, {load_after[0]:.2f} after)")
    print(f"{'case':<32} {'median s':>9} {'official/this':>14} {'kept':>6}  per repeat s")
    for case, e in cases.items():
        ratio = "" if case == "official" else f"{ratios[case]:.2f}x"
        if case == "pxhub_alloc":
            ratio += f" ({ratios['pxhub_alloc_vs_official_alloc']:.2f}x vs official_alloc)"
        print(f"{e['label']:<32} {e['median_s']:>9.2f} {ratio:>14} {e['kept']['total']:>6}  "
              + " ".join(f"{s:.2f}" for s in e["seconds"]))
    if fixture_setting:
        v = cases["official"]["vs_fixture"]["px_official_mask"]
        print(f"gate: official mask == px_official_mask.safetensors: {'yes' if gate else 'NO'}"
              + ("" if gate else f" (shares {v.get('shared_kept_fraction')} of its kept weights)"))
        for case in ("pxhub", "pxhub_full"):
            v = cases[case]["vs_fixture"]["px_mask"]
            print(f"info: {case} mask == px_mask.safetensors: {'yes' if v['equal'] else 'no'} "
                  f"(shares {v.get('shared_kept_fraction')} of its kept weights)")
    else:
        print(f"gate: not applicable (the fixture masks are for {FIXTURE_ROUNDS} rounds at {FIXTURE_SPARSITY})")

    result = {
        "settings": {"rounds": args.rounds, "sparsity": args.sparsity, "repeats": args.repeats,
                     "threads": args.threads, "official_shortcut_names": args.shortcut_names,
                     "schedule": "exponential", "scope": "global",
                     "order": "interleaved per repeat: " + ", ".join(CASES), "timed": "the pruning loop, after "
                     "imports, model construction and one untimed warm-up scoring pass; each case a fresh process"},
        "official_code": {"repo": "iurada/px-ntk-pruning", "commit": commit, "dir_given": args.official_dir},
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "load_average": {"before": load_before, "after": load_after},
        "cases": cases, "ratio_official_over": ratios, "gate": {"official_equals_fixture": gate,
                                                               "failures": failures},
    }
    pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")
    for f in failures:
        print(f"GATE FAILED: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
