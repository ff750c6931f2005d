"""Real tiny fine-tuning runs on CPU: a PX ResNet-20 ticket on digits (improves over chance, keeps its zeros,
results in the ticket), and resume-equals-uninterrupted."""
from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import load_file

import px_hub
from px_hub.data import PruningSplit, eval_transform, load_image_dataset, make_batches
from px_hub.finetune import finetune, latest_checkpoint, load_recipe

TINY = ["augment.input_size=16", "augment.policy=cifar", "augment.crop_padding=2", "augment.hflip=false",
        "data.train_subset=600", "data.val_subset=300", "train.batch_size=32", "optim.lr=0.05",
        "optim.milestones=[]", "train.checkpoint_every=0"]


@pytest.fixture(scope="module")
def digits():
    return load_image_dataset("digits", "train"), load_image_dataset("digits", "test")


@pytest.fixture(scope="module")
def px_ticket(digits, tmp_path_factory):
    """A ResNet-20 ticket pruned with PX (5 rounds, 80 %) on a class-balanced digits split."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    train, _ = digits
    model = timm.create_model("cifar_resnet20", num_classes=10)
    split = PruningSplit.create(train, k=5, seed=0)
    tf = eval_transform({"input_size": (3, 16, 16), "mean": (0.5,) * 3, "std": (0.25,) * 3, "crop_pct": 1.0})
    batches = make_batches(train, split.indices, tf, batch_size=25, progress=False)
    res = px_hub.prune_with_record(model, batches, method="px", sparsity=0.8, rounds=5, progress=False)
    record = dict(res.record, data=split.to_record())
    from px_hub.hub import save_ticket

    folder = save_ticket(tmp_path_factory.mktemp("t") / "ticket", model, res.mask, record)
    return folder, res.mask


def test_px_ticket_trains_keeps_zeros_and_records_results(digits, px_ticket, tmp_path):
    torch.set_num_threads(2)
    folder, mask = px_ticket
    recipe = load_recipe("digits_resnet20", TINY + ["train.epochs=3"])
    res = finetune(recipe, ticket=folder, output_dir=tmp_path / "run", train_data=digits[0], val_data=digits[1],
                   progress=False)
    top1 = res.metrics["top_1_accuracy"]
    assert top1 > 0.3, res.history  # chance is 0.1
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    params = dict(res.model.named_parameters())
    assert all(int((params[k].detach()[~m] != 0).sum()) == 0 for k, m in mask.items())
    assert any(float(params[k].detach()[m].abs().sum()) > 0 for k, m in mask.items())
    # run folder: resolved recipe with hash, metrics, curve, weights
    run = tmp_path / "run"
    assert load_recipe(run / "recipe.yaml").hash() == recipe.hash()
    assert json.loads((run / "metrics.json").read_text())["final"]["top_1_accuracy"] == top1
    assert (run / "curve.png").stat().st_size > 1000
    sd = load_file(str(run / "model.safetensors"))
    assert torch.equal(sd["fc.weight"], params["fc.weight"].detach())
    # ticket updated: verified weights, eval results (-> model-index), recipe + curve
    model2, mask2, _ = px_hub.hub.load_ticket(folder)
    assert mask2 == mask and torch.equal(dict(model2.named_parameters())["fc.weight"], params["fc.weight"].detach())
    results = json.loads((folder / "results.json").read_text())
    top1_entry = [r for r in results["eval_results"] if r["metric"] == "accuracy"]
    assert top1_entry and top1_entry[0]["value"] == pytest.approx(top1) and top1_entry[0]["split"] == "test"
    assert (folder / "finetune" / "curve.png").is_file() and (folder / "finetune" / "recipe.yaml").is_file()
    assert "model-index" in (folder / "README.md").read_text()


def test_adamw_trains_a_masked_network_and_keeps_its_zeros(digits, tmp_path):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    m = timm.create_model("cifar_resnet20", num_classes=10)
    mask = px_hub.Mask({n: torch.rand(p.shape, generator=torch.Generator().manual_seed(len(n))) > 0.5
                        for n, p in m.named_parameters() if p.dim() > 1})
    recipe = load_recipe("digits_resnet20", TINY + ["train.epochs=2", "optim.name=adamw", "optim.lr=3e-3",
                                                    "optim.weight_decay=0.05"])
    res = finetune(recipe, model=m, mask=mask, output_dir=tmp_path / "run", train_data=digits[0],
                   val_data=digits[1], progress=False)
    assert res.metrics["top_1_accuracy"] > 0.3, res.history  # chance is 0.1
    params = dict(res.model.named_parameters())
    assert all(int((params[k].detach()[~keep] != 0).sum()) == 0 for k, keep in mask.items())
    assert load_recipe(tmp_path / "run" / "recipe.yaml").optim.name == "adamw"


class _Interrupt(Exception):
    pass


def test_resume_equals_uninterrupted(digits, tmp_path):
    torch.set_num_threads(2)
    over = TINY + ["train.batch_size=50", "data.train_subset=200", "data.val_subset=100", "train.epochs=2",
                   "train.checkpoint_every=3", "train.keep_checkpoints=2"]
    recipe = load_recipe("digits_resnet20", over)

    def fresh():
        torch.manual_seed(0)
        m = timm.create_model("cifar_resnet20", num_classes=10)
        return m, px_hub.Mask({n: torch.rand(p.shape, generator=torch.Generator().manual_seed(len(n))) > 0.5
                               for n, p in m.named_parameters() if p.dim() > 1})

    m, mask = fresh()
    full = finetune(recipe, model=m, mask=mask, output_dir=tmp_path / "full", train_data=digits[0],
                    val_data=digits[1], progress=False)

    def stop(step):
        if step == 5:  # 4 steps per epoch: mid-epoch 2, two steps after the step-3 checkpoint
            raise _Interrupt

    m, mask = fresh()
    with pytest.raises(_Interrupt):
        finetune(recipe, model=m, mask=mask, output_dir=tmp_path / "cut", train_data=digits[0], val_data=digits[1],
                 progress=False, on_step=stop)
    ck = latest_checkpoint(tmp_path / "cut")
    assert ck.name == "step_000000004"  # epoch-1 end (step 4) is newer than the step-3 checkpoint
    m, mask = fresh()
    resumed = finetune(recipe, model=m, mask=mask, output_dir=tmp_path / "cut", train_data=digits[0],
                       val_data=digits[1], progress=False)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(full.history) == strip(resumed.history)
