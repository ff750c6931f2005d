"""Distributed scoring: two CPU processes (gloo, accelerate.debug_launcher) each pass their own whole batches
(round-robin, px_hub.distributed.shard); the masks must be identical on every rank and identical, bit for bit, to
the single-process mask. Plus an end-to-end ``accelerate launch`` of ``px-hub prune``."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from _launch import run_processes
from conftest import reference_dir

import px_hub
from px_hub import Mask
from px_hub.data import PruningSplit, eval_transform, load_image_dataset, make_batches
from px_hub.distributed import shard

REF_ROUNDS = 10
TIMM_ROUNDS = 3


def _ref_model_and_batches():
    """The reference fixture's ResNet-20 and its 100 inputs as 4 whole batches of 25 (conftest's loading rule)."""
    import timm
    from safetensors.torch import load_file

    ref = reference_dir()
    init = load_file(str(ref / "init.safetensors"))
    order = json.loads((ref / "meta.json").read_text())["state_dict_order"]
    model = timm.create_model("cifar_resnet20", num_classes=10)
    sd = model.state_dict()
    model.load_state_dict({k: init[n].reshape(sd[k].shape).to(sd[k].dtype) for k, (n, _) in zip(sd, order)})
    d = load_file(str(ref / "inputs.safetensors"))
    x, y = d["x"], d["y"].long()
    return model.eval(), [(x[i:i + 25], y[i:i + 25]) for i in range(0, 100, 25)]


def _timm_model_and_batches():
    """resnet18 (random init, seed 0) at 64 px on real digits: k=4 per class → 4 batches of 10."""
    from px_hub.backbones import load_backbone

    lm = load_backbone("resnet18", num_classes=10, pretrained=False, seed=0)
    ds = load_image_dataset("digits", "train")
    split = PruningSplit.create(ds, k=4, seed=0)
    cfg = dict(lm.data_config, input_size=(3, 64, 64), crop_pct=1.0)
    return lm.model, make_batches(ds, split.indices, eval_transform(cfg), batch_size=10, progress=False)


CASES = {"ref": (_ref_model_and_batches, REF_ROUNDS), "timm": (_timm_model_and_batches, TIMM_ROUNDS)}


def _prune(case: str, batches, method: str) -> Mask:
    build, rounds = CASES[case]
    model, _ = build()
    return px_hub.prune(model, batches, method=method, sparsity=0.982, rounds=rounds, seed=0, progress=False)


def _worker(case: str, method: str, out_dir: str):
    """Runs in each of the 2 processes started by debug_launcher (torch.distributed already initialised)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    assert dist.is_initialized() and dist.get_world_size() == 2
    rank = dist.get_rank()
    _, batches = CASES[case][0]()
    mine = shard(batches)[0]  # rank r: batches r, r+2
    assert len(mine) == 2
    mask = _prune(case, mine, method)
    mask.save(os.path.join(out_dir, f"{case}_rank{rank}.safetensors"))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("case,method", [("ref", "px"), ("timm", "px"), ("ref", "px_2024"), ("timm", "px_2024")])
def test_two_process_masks_equal_single_process(case, method, tmp_path):
    """px sums per-batch Z1 in global batch order (bit-identical by construction); px_2024 sums each rank's
    per-batch gradients in float64 before the cross-rank sum (the order differs only in float64 rounding)."""
    reference_dir()  # fails when the vendored fixtures are missing
    run_processes(_worker, args=(case, method, str(tmp_path)), num_processes=2)
    m0 = Mask.load(tmp_path / f"{case}_rank0.safetensors")
    m1 = Mask.load(tmp_path / f"{case}_rank1.safetensors")
    _, batches = CASES[case][0]()
    single = _prune(case, batches, method)
    assert m0 == m1 and m0.sha256() == m1.sha256()
    assert m0 == single and m0.sha256() == single.sha256()
    # at most the target density; below it only by ties at the threshold (pruned by rule)
    assert single.kept() <= single.total() - int(0.982 * single.total()) and single.density() > 0.015


def test_shard_batches_round_robin_covers_each_batch_once():
    batches = [(torch.full((1,), float(i)), torch.tensor([i])) for i in range(7)]
    shards = [shard(batches, r, 3)[0] for r in range(3)]
    assert [[int(b[1]) for b in s] for s in shards] == [[0, 3, 6], [1, 4], [2, 5]]


def test_accelerate_launch_prune_cli(tmp_path):
    """``accelerate launch --multi_gpu --num_processes 2 -m px_hub.cli.main prune`` on CPU: one ticket whose mask
    equals the single-process CLI run's."""
    repo = pathlib.Path(__file__).resolve().parents[1]
    env = dict(os.environ, ACCELERATE_USE_CPU="true", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(repo))
    args = ["prune", "--model", "cifar_resnet20", "--no-pretrained", "--data", "digits", "--examples-per-class", "4",
            "--batch-size", "10", "--sparsity", "0.9", "--rounds", "3", "--seed", "0"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "px_hub.cli.main"]
    dist_out, single_out = tmp_path / "dist", tmp_path / "single"
    r = subprocess.run(launch + args + ["--out", str(dist_out)], env=env, capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r1 = subprocess.run([sys.executable, "-m", "px_hub.cli.main"] + args + ["--out", str(single_out)], env=env,
                        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r1.returncode == 0, r1.stderr[-3000:]
    a, b = Mask.load(dist_out / "mask.safetensors"), Mask.load(single_out / "mask.safetensors")
    assert a == b and a.sha256() == b.sha256()
    cfg = json.loads((dist_out / "px_config.json").read_text())
    assert 2 in _values_of(cfg, "processes"), "px_config.json should record processes=2"
    assert "px_2024" in _values_of(cfg, "method"), "the default method should be px_2024"


def _values_of(obj, key):
    if isinstance(obj, dict):
        return [v for k, v in obj.items() if k == key] + [x for v in obj.values() for x in _values_of(v, key)]
    if isinstance(obj, list):
        return [x for v in obj for x in _values_of(v, key)]
    return []
