"""Distributed PX scoring benchmark: wall time and peak memory per process, 1 vs N CPU processes (gloo).

Default = the issue's setting: 100 PX rounds, timm resnet50 (pretrained=False, seed 0) at 224 px, 10 images per
class of digits (100 images, batches of 25: 4 whole batches shared round-robin). Each configuration runs in fresh
processes (so peak RSS is per configuration); every process gets cpu_count // N threads. The masks of all runs
are compared (they must be identical).

    python benchmarks/bench_distributed.py                       # full run (slow on a small CPU)
    python benchmarks/bench_distributed.py --rounds 2 --k 2 --size 96 --batch-size 10 --model resnet18
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import tempfile
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), HF_HUB_OFFLINE="1")
    import torch
    import torch.distributed as dist

    from px_hub import pipeline
    from px_hub.spec import DataSpec, ModelSpec, PruneSpec

    threads = max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    spec = PruneSpec(model=ModelSpec(args.model, pretrained=False, num_classes=10),
                     data=DataSpec(args.dataset, examples_per_class=args.k, batch_size=args.batch_size,
                                   input_size=args.size),
                     method="px", sparsity=args.sparsity, rounds=args.rounds)
    prepared = pipeline.prepare(spec)  # this rank's whole batches: prepared.mine
    mine = prepared.mine
    if world > 1:
        dist.barrier()
    t0 = time.perf_counter()
    res = pipeline.run(spec, prepared=prepared, progress=rank == 0)
    seconds = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    row = {"rank": rank, "world": world, "threads": threads, "batches": len(mine), "seconds": round(seconds, 2),
           "s_per_round": round(seconds / args.rounds, 3), "peak_rss_mib": round(peak_mib, 1),
           "mask_sha256": res.mask.sha256(), "density": res.mask.density()}
    with open(os.path.join(out_dir, f"w{world}_r{rank}.json"), "w") as f:
        json.dump(row, f)
    if world > 1:
        dist.destroy_process_group()


def run(world: int, args: argparse.Namespace, out_dir: str) -> list[dict]:
    import torch.multiprocessing as mp

    port = _free_port()
    mp.start_processes(_worker, args=(world, port, args, out_dir), nprocs=world, join=True, start_method="spawn")
    return [json.load(open(os.path.join(out_dir, f"w{world}_r{r}.json"))) for r in range(world)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--k", type=int, default=10, help="images per class")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--sparsity", type=float, default=0.982)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for w in args.processes:
            rows += run(w, args, d)
    print(f"{args.model} {args.size}px, k={args.k} ({args.k * 10} images, batch {args.batch_size}), "
          f"PX {args.rounds} rounds to {args.sparsity}, {os.cpu_count()} CPUs")
    print(f"{'procs':>5} {'rank':>4} {'threads':>7} {'batches':>7} {'seconds':>8} {'s/round':>8} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['world']:>5} {r['rank']:>4} {r['threads']:>7} {r['batches']:>7} {r['seconds']:>8} "
              f"{r['s_per_round']:>8} {r['peak_rss_mib']:>9}")
    same = len({r["mask_sha256"] for r in rows}) == 1
    print(f"masks identical across all runs and ranks: {same}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "masks_identical": same}, f, indent=1)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
