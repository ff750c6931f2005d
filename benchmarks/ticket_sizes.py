"""Ticket download sizes: dense ``model.safetensors`` vs what ``px-hub pull`` fetches (compact weights + mask),
for random-score masks at given sparsities (the size depends only on the sparsity pattern's density per layer).

    .venv/bin/python benchmarks/ticket_sizes.py --arch resnet50 --sparsity 0.956 0.9 0.8 0.5
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import px_hub  # noqa: F401  (torchvision fix before timm)
from px_hub import Mask
from px_hub.hub import format as fmt
from px_hub.hub import load_ticket, save_ticket


def measure(arch: str, sparsity: float, seed: int = 0) -> dict:
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False)
    g = torch.Generator().manual_seed(seed)
    mask = Mask.from_scores({n: torch.rand(p.shape, generator=g) for n, p in model.named_parameters()
                             if p.dim() > 1}, sparsity)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        out = save_ticket(Path(d) / "t", model, mask, {"method": "random", "sparsity": sparsity})
        t_save = time.perf_counter() - t0
        (out / fmt.WEIGHTS_FILE).rename(out / "dense.bak")  # load from the compact copy, as a pull does
        t0 = time.perf_counter()
        load_ticket(out)
        t_load = time.perf_counter() - t0
        dense = (out / "dense.bak").stat().st_size
        compact = (out / fmt.COMPACT_FILE).stat().st_size
        mask_b = (out / fmt.MASK_FILE).stat().st_size
    return {"arch": arch, "sparsity": round(mask.sparsity(), 6), "dense_MB": round(dense / 1e6, 2),
            "compact_MB": round(compact / 1e6, 2), "mask_MB": round(mask_b / 1e6, 2),
            "pull_MB": round((compact + mask_b) / 1e6, 2), "ratio": round((compact + mask_b) / dense, 4),
            "save_s": round(t_save, 2), "load_from_compact_s": round(t_load, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.956])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for s in args.sparsity:
        print(json.dumps(measure(args.arch, s)))


if __name__ == "__main__":
    main()
