"""Two CPU processes (accelerate.debug_launcher, gloo DDP): the mask holds under DDP and every rank ends with the
same weights and mask; and the ``accelerate launch`` entry point runs a recipe end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _launch import run_processes
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]


def _tiny_mask(model):
    import px_hub

    return px_hub.Mask({n: torch.rand(p.shape, generator=torch.Generator().manual_seed(len(n))) > 0.6
                        for n, p in model.named_parameters() if p.dim() > 1})


def _hooks_only_grads(out: str) -> None:
    """Mask.enforce hooks alone (no extra masking) under DDP: pruned gradient positions after backward."""
    import timm
    from accelerate import Accelerator

    torch.set_num_threads(1)
    acc = Accelerator(cpu=True)
    torch.manual_seed(0)
    m = timm.create_model("cifar_resnet20", num_classes=10)
    mask = _tiny_mask(m)
    mask.enforce(m)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    ddp, opt = acc.prepare(m, opt)
    torch.manual_seed(acc.process_index)  # different data per rank
    loss = torch.nn.functional.cross_entropy(ddp(torch.randn(4, 3, 16, 16)), torch.randint(0, 10, (4,)))
    acc.backward(loss)
    params = dict(m.named_parameters())
    bad = sum(int((params[k].grad[~v] != 0).sum()) for k, v in mask.items())
    live = sum(int((params[k].grad[v] != 0).sum()) for k, v in mask.items())
    Path(out, f"hooks_{acc.process_index}.json").write_text(json.dumps(
        {"ddp": type(ddp).__name__, "world": acc.num_processes, "pruned_nonzero": bad, "kept_nonzero": live}))


def _train_two_ranks(out: str) -> None:
    import timm

    from px_hub.data import load_image_dataset
    from px_hub.finetune import finetune, load_recipe

    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = timm.create_model("cifar_resnet20", num_classes=10)
    mask = _tiny_mask(m)
    recipe = load_recipe("digits_resnet20", [
        "augment.input_size=16", "augment.policy=cifar", "data.train_subset=128", "data.val_subset=64",
        "train.batch_size=32", "train.epochs=1", "optim.lr=0.05", "train.checkpoint_every=2"])
    res = finetune(recipe, model=m, mask=mask, output_dir=Path(out) / "run", progress=False,
                   train_data=load_image_dataset("digits", "train"), val_data=load_image_dataset("digits", "test"))
    from accelerate import PartialState

    rank = PartialState().process_index
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in res.model.state_dict().items()}, str(Path(out) / f"w_{rank}.safetensors"))
    res.mask.save(Path(out) / f"mask_{rank}.safetensors")
    Path(out, f"metrics_{rank}.json").write_text(json.dumps(dict(res.metrics, world=res.num_processes, seconds=0)))


def test_mask_hooks_hold_under_ddp(tmp_path):
    run_processes(_hooks_only_grads, args=(str(tmp_path),), num_processes=2)
    rows = [json.loads((tmp_path / f"hooks_{r}.json").read_text()) for r in (0, 1)]
    assert all(r["ddp"] == "DistributedDataParallel" and r["world"] == 2 for r in rows)
    assert [r["pruned_nonzero"] for r in rows] == [0, 0]
    assert all(r["kept_nonzero"] > 1000 for r in rows)  # the gradient itself is real


def test_two_processes_same_weights_and_mask(tmp_path):
    import px_hub

    run_processes(_train_two_ranks, args=(str(tmp_path),), num_processes=2)
    w0, w1 = load_file(str(tmp_path / "w_0.safetensors")), load_file(str(tmp_path / "w_1.safetensors"))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    m0, m1 = px_hub.Mask.load(tmp_path / "mask_0.safetensors"), px_hub.Mask.load(tmp_path / "mask_1.safetensors")
    assert m0 == m1
    assert all(int((w0[k][~m] != 0).sum()) == 0 for k, m in m0.items())
    r0, r1 = (json.loads((tmp_path / f"metrics_{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1 and r0["world"] == 2
    run = tmp_path / "run"
    assert ((run / "model.safetensors").is_file()
            and json.loads((run / "metrics.json").read_text())["num_processes"] == 2)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000000004"]  # 128/32 steps, keep 1


@pytest.mark.slow
def test_accelerate_launch_entry_point(tmp_path):
    """``accelerate launch --multi_gpu --num_processes 2 -m px_hub.finetune`` on CPU."""
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "px_hub.finetune", "--recipe", "digits_resnet20", "--output", str(tmp_path / "run"), "--no-progress",
           "augment.input_size=16", "data.train_subset=64", "data.val_subset=32", "train.batch_size=32",
           "--set", "train.epochs=1"]
    p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "top_1_accuracy=" in p.stdout
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["train_examples"] == 1437 and saved["history"][0]["step"] == 2  # 64 examples / global batch 32
