"""Fine-tuning inputs that must not be silently ignored or crash (issue 12): named weights are loaded whatever
the recipe's ``pretrained`` says, recipes are range-checked, a pickled ``optimizer.bin`` is refused in one line,
and a run resumed mid-epoch records the same train_loss as the uninterrupted run."""
from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import save_file

import px_hub
from px_hub.data import load_image_dataset
from px_hub.errors import IntegrityError, InvalidArgumentError
from px_hub.finetune import finetune, latest_checkpoint, load_recipe
from px_hub.finetune.trainer import build_model

TINY = ["augment.input_size=16", "augment.policy=cifar", "augment.crop_padding=2", "augment.hflip=false",
        "data.train_subset=200", "data.val_subset=100", "train.batch_size=50", "optim.lr=0.05",
        "optim.milestones=[]", "train.epochs=1"]


# -- 4. a source that names weights is loaded -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def resnet50_state():
    torch.manual_seed(0)
    m = timm.create_model("resnet50", pretrained=False)
    # float16 halves the file; fp16 -> fp32 is exact, so the equality checks stay exact
    return {k: (v.half() if v.is_floating_point() else v) for k, v in m.state_dict().items()
            if not k.startswith("fc.")}


def _backbone_equals(model, state) -> bool:
    own = model.state_dict()
    return all(torch.equal(own[k], v.to(own[k].dtype)) for k, v in state.items())


@pytest.mark.parametrize("kind", ["dino", "moco"])
def test_ssl_weights_are_loaded_when_the_recipe_says_not_pretrained(kind, resnet50_state, tmp_path):
    path = tmp_path / f"{kind}.pth"
    if kind == "dino":
        torch.save(resnet50_state, path)
    else:
        torch.save({"state_dict": {f"module.encoder_q.{k}": v for k, v in resnet50_state.items()}}, path)
    recipe = load_recipe("digits_resnet20", [f"model.name={kind}:{path}"])
    assert recipe.model.pretrained is False
    model, _ = build_model(recipe, 10)
    assert _backbone_equals(model, resnet50_state)  # FILE was read, not a random ResNet-50


def test_local_weights_are_loaded_when_the_recipe_says_not_pretrained(tmp_path):
    torch.manual_seed(3)
    src = timm.create_model("cifar_resnet20", num_classes=10)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    recipe = load_recipe("digits_resnet20", [f"model.name=local:cifar_resnet20={tmp_path / 'w.safetensors'}"])
    model, _ = build_model(recipe, 10)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), src.state_dict().values()))


def test_named_weights_that_cannot_be_read_stop_the_run(tmp_path):
    recipe = load_recipe("digits_resnet20", [f"model.name=dino:{tmp_path / 'missing.pth'}"])
    with pytest.raises(px_hub.errors.PxHubError, match="missing.pth"):
        build_model(recipe, 10)


# -- 6. recipes are range-checked ---------------------------------------------------------------------------------

@pytest.mark.parametrize("override,words", [
    ("optim.lr=nan", "optim.lr"), ("optim.lr=inf", "optim.lr"), ("optim.lr=-1", "optim.lr"),
    ("optim.momentum=nan", "optim.momentum"), ("optim.momentum=1.5", "optim.momentum"),
    ("optim.gamma=-5", "optim.gamma"), ("optim.gamma=nan", "optim.gamma"), ("optim.gamma=0", "optim.gamma"),
    ("optim.weight_decay=inf", "optim.weight_decay"), ("optim.weight_decay=nan", "optim.weight_decay"),
    ("optim.head_lr_mult=nan", "optim.head_lr_mult"), ("train.epochs=nan", "train.epochs"),
    ("train.epochs=1.5", "train.epochs"), ("augment.grayscale_p=2", "augment.grayscale_p"),
    ("prune.sparsity=nan", "prune.sparsity"),
])
def test_recipe_values_out_of_range_are_one_line_errors(override, words):
    over = [override] + (["prune.method=px"] if override.startswith("prune.") else [])
    with pytest.raises(InvalidArgumentError, match=words.replace(".", r"\.")) as e:
        load_recipe("digits_resnet20", over).validate()
    assert "\n" not in str(e.value)


# -- 5. a pickled optimizer.bin is refused, saying why ------------------------------------------------------------

class Payload:  # any object a weights-only unpickler refuses
    def __init__(self):
        self.x = 1


@pytest.fixture(scope="module")
def digits():
    return load_image_dataset("digits", "train"), load_image_dataset("digits", "test")


def _fresh():
    torch.manual_seed(0)
    m = timm.create_model("cifar_resnet20", num_classes=10)
    return m, px_hub.Mask({n: torch.rand(p.shape, generator=torch.Generator().manual_seed(len(n))) > 0.5
                           for n, p in m.named_parameters() if p.dim() > 1})


class _Interrupt(Exception):
    pass


def test_pickled_optimizer_state_is_refused_in_one_line(digits, tmp_path):
    torch.set_num_threads(2)
    recipe = load_recipe("digits_resnet20", TINY + ["train.checkpoint_every=2"])

    def stop(step):
        if step == 3:
            raise _Interrupt

    m, mask = _fresh()
    with pytest.raises(_Interrupt):
        finetune(recipe, model=m, mask=mask, output_dir=tmp_path / "run", train_data=digits[0],
                 val_data=digits[1], progress=False, on_step=stop)
    ck = latest_checkpoint(tmp_path / "run")
    opt = ck / "optimizer.bin"
    assert opt.is_file()
    state = torch.load(opt, weights_only=True)
    state["payload"] = Payload()
    torch.save(state, opt)
    m, mask = _fresh()
    with pytest.raises(IntegrityError) as e:
        finetune(recipe, model=m, mask=mask, output_dir=tmp_path / "run", train_data=digits[0],
                 val_data=digits[1], progress=False)
    msg = str(e.value)
    assert "optimizer.bin" in msg and "refused" in msg and "\n" not in msg, msg
    assert "weights_only=False" not in msg and "weights_only" not in msg


# -- 6. resumed mid-epoch: the same train_loss as uninterrupted ---------------------------------------------------

def test_resume_mid_epoch_records_the_same_train_loss(digits, tmp_path):
    torch.set_num_threads(2)
    recipe = load_recipe("digits_resnet20", TINY + ["train.checkpoint_every=2"])  # 4 steps: checkpoint at 2
    m, mask = _fresh()
    full = finetune(recipe, model=m, mask=mask, output_dir=tmp_path / "full", train_data=digits[0],
                    val_data=digits[1], progress=False)

    def stop(step):
        if step == 3:
            raise _Interrupt

    m, mask = _fresh()
    with pytest.raises(_Interrupt):
        finetune(recipe, model=m, mask=mask, output_dir=tmp_path / "cut", train_data=digits[0],
                 val_data=digits[1], progress=False, on_step=stop)
    assert latest_checkpoint(tmp_path / "cut").name == "step_000000002"  # mid-epoch
    m, mask = _fresh()
    resumed = finetune(recipe, model=m, mask=mask, output_dir=tmp_path / "cut", train_data=digits[0],
                       val_data=digits[1], progress=False)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    lines = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["train_loss"] == full.history[-1]["train_loss"]
