"""Recipes: the shipped YAML match the paper's Table 3, overrides, validation, hashing, round trip."""
from __future__ import annotations

import pytest
import torch

from px_hub.errors import InvalidArgumentError, UnknownNameError
from px_hub.finetune import available_recipes, load_recipe, lr_at_epoch
from px_hub.finetune.trainer import make_optimizer

TABLE3 = {  # name: (lr, milestones, momentum, wd, epochs, batch, nesterov)
    "cifar10_resnet20": (0.1, [80, 120], 0.9, 1e-4, 160, 128, False),
    "cifar100_vgg16bn": (0.1, [60, 120], 0.9, 5e-4, 160, 128, True),
    "tinyimagenet_resnet18": (0.2, [100, 150], 0.9, 1e-4, 200, 256, False),
    "imagenet_resnet50": (0.1, [30, 60, 80], 0.9, 1e-4, 90, 448, False),
    "cifar10_resnet50_pretrained": (0.1, [91, 136], 0.9, 1e-4, 182, 256, False),
    "cifar100_resnet50_pretrained": (0.1, [91, 136], 0.9, 1e-4, 182, 256, False),
    "tinyimagenet_resnet50_pretrained": (0.1, [91, 136], 0.9, 1e-4, 182, 256, False),
    "voc2012_deeplabv3plus_resnet50": (0.001, [50, 60], 0.9, 1e-4, 80, 4, False),
}


@pytest.mark.parametrize("name", sorted(TABLE3))
def test_table3_rows(name):
    r = load_recipe(name)
    lr, ms, mom, wd, ep, bs, nest = TABLE3[name]
    assert (r.optim.lr, r.optim.milestones, r.optim.momentum, r.optim.weight_decay) == (lr, ms, mom, wd)
    assert (r.train.epochs, r.train.batch_size, r.optim.nesterov, r.optim.gamma) == (ep, bs, nest, 0.1)


def test_augmentations_and_inputs():
    assert load_recipe("cifar10_resnet20").augment.policy == "cifar"
    t = load_recipe("tinyimagenet_resnet18").augment
    assert (t.policy, t.input_size, t.scale) == ("tinyimagenet", 64, (0.1, 1.0))
    i = load_recipe("imagenet_resnet50").augment
    assert (i.input_size, i.scale, i.grayscale_p, i.color_jitter) == (224, (0.2, 1.0), 0.2, 0.4)
    v = load_recipe("voc2012_deeplabv3plus_resnet50")
    assert ((v.task, v.augment.input_size, v.augment.scale, v.optim.head_lr_mult)
            == ("segmentation", 513, (0.5, 2.0), 10.0))
    assert set(TABLE3) | {"animal_mnist_resnet20", "digits_resnet20"} <= set(available_recipes())


def test_overrides_hash_and_round_trip(tmp_path):
    base = load_recipe("cifar10_resnet20")
    r = load_recipe("cifar10_resnet20", ["train.epochs=2", "optim.lr=0.05", "optim.milestones=[1]",
                                         "augment.scale=[0.5, 1]"])
    assert (r.train.epochs, r.optim.lr, r.optim.milestones, r.augment.scale) == (2, 0.05, [1], (0.5, 1.0))
    assert r.hash() != base.hash() and len(r.hash()) == 12
    assert load_recipe("cifar10_resnet20").hash() == base.hash()  # deterministic
    r.save(tmp_path / "r.yaml")
    back = load_recipe(tmp_path / "r.yaml")
    assert back == r and back.hash() == r.hash()
    assert load_recipe("cifar10_resnet20", {"optim.weight_decay": "1e-4"}).optim.weight_decay == 1e-4


@pytest.mark.parametrize("override, words", [
    (["train.epoch=3"], "unknown recipe key"),
    (["nope.lr=1"], "unknown recipe key"),
    (["train.epochs=two"], "must be an integer"),
    (["optim.lr=-1"], "optim.lr must be > 0"),
    (["optim.milestones=[5, 2]"], "increasing"),
    (["augment.policy=autoaugment"], "augment.policy must be one of"),
    (["train.epochs"], "key=value"),
    (["optim.name=adam"], "optim.name must be one of sgd, adamw"),
    (["optim.name=adamw", "optim.nesterov=true"], "nesterov is an SGD option"),
])
def test_bad_overrides(override, words):
    with pytest.raises(InvalidArgumentError, match=words):
        load_recipe("cifar10_resnet20", override)


def test_unknown_recipe_names_the_choices():
    with pytest.raises(UnknownNameError, match="cifar10_resnet20"):
        load_recipe("cifar11")


def test_step_decay():
    assert [round(lr_at_epoch(0.1, e, [80, 120], 0.1), 6) for e in (0, 79, 80, 119, 120, 159)] == \
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]


def test_optimizer_choice():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    sgd = make_optimizer(load_recipe("cifar10_resnet20"), model)
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 1e-4
    r = load_recipe("cifar10_resnet20", ["optim.name=adamw", "optim.lr=2e-3", "optim.weight_decay=0.05"])
    adamw = make_optimizer(r, model)
    assert type(adamw) is torch.optim.AdamW
    d = adamw.defaults
    assert (d["lr"], d["weight_decay"], d["betas"]) == (2e-3, 0.05, (0.9, 0.999))
    assert [g["base_lr"] for g in adamw.param_groups] == [2e-3]  # the step decay scales base_lr
    assert sum(len(g["params"]) for g in adamw.param_groups) == 4
    assert r.hash() != load_recipe("cifar10_resnet20", ["optim.lr=2e-3", "optim.weight_decay=0.05"]).hash()
