"""benchmarks/study_tickets.py's arch regime: its plan, and that its two models load by name and prune with px
(the path views cover their GELU, LayerNorm and attention); the study itself is a benchmark, not a test."""
from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import pytest
import timm
import torch

import px_hub
from px_hub.backbones import load_backbone
from px_hub.errors import InvalidArgumentError

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "study_tickets.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("study_tickets", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["study_tickets"] = mod
    spec.loader.exec_module(mod)
    mod._register_arch_models()
    return mod


def test_arch_plan(study, tmp_path):
    runs = study.plan(study.parse_args(["--regime", "arch", "--out", str(tmp_path)]))
    assert len(runs) == 28 and {r["seed"] for r in runs} == {0, 1}
    assert runs[0]["key"] == "arch_vit-dense-s0.0-seed0" and runs[1]["key"] == "arch_vit-px-s0.9-seed0"
    assert {r["method"] for r in runs} == {"dense", "px", "px_2024", "magnitude", "snip", "synflow", "random"}
    assert not any(r["guard"] for r in runs)
    assert {r["settings"]["model"] for r in runs} == {"study_vit_32", "study_convnext_32"}
    # the other regimes keep their default seeds; --seeds overrides every regime
    scratch = study.plan(study.parse_args(["--regime", "scratch", "--out", str(tmp_path)]))
    assert {r["seed"] for r in scratch} == {0, 1, 2} and len(scratch) == 120
    one = study.plan(study.parse_args(["--regime", "all", "--seeds", "0", "--out", str(tmp_path)]))
    assert {r["seed"] for r in one} == {0} and [r["regime"] for r in one][-1] == "arch_convnext"
    a = study.parse_args(["--regime", "arch", "--arch-epochs", "8", "--out", str(tmp_path)])
    recipe = study._recipe(a, study.plan(a)[0])
    assert (recipe.optim.name, recipe.model.name, recipe.optim.milestones) == ("adamw", "study_vit_32", [4, 6])
    assert (recipe.train.epochs, recipe.optim.weight_decay) == (8, study.ARCH_WD)


@pytest.mark.parametrize("name", ["study_vit_32", "study_convnext_32"])
def test_arch_models_load_by_name_and_prune_with_px(study, name, one_thread):
    loaded = load_backbone(name, num_classes=10, pretrained=False, seed=1)
    assert loaded.data_config["input_size"] == (3, 32, 32) and loaded.model.num_classes == 10
    again = load_backbone(name, num_classes=10, pretrained=False, seed=1).model.state_dict()
    assert all(torch.equal(v, again[k]) for k, v in loaded.model.state_dict().items())  # the seed decides the init
    x, y = torch.randn(20, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(20) % 10
    res = px_hub.prune_with_record(loaded.model, [(x, y)], method="px", sparsity=0.9, rounds=2, progress=False)
    assert res.mask.sparsity() == pytest.approx(0.9, abs=1e-3)
    assert res.record["health"]["dead_outputs"] == []
    with pytest.raises(InvalidArgumentError, match="no pretrained weights"):
        timm.create_model(name, pretrained=True)


def test_guarded_run_reuses_its_raw_twins_training_only_for_an_identical_mask(study, tmp_path):
    runs = study.plan(study.parse_args(["--regime", "scratch", "--seeds", "0", "--out", str(tmp_path),
                                        "--only", "scratch-px_2024*-s0.956-*"]))
    raw, guarded = sorted(runs, key=lambda r: r["guard"])
    assert guarded["variant"] == "px_2024+guard" and raw["variant"] == "px_2024"
    assert study._trained_twin(guarded, "abc") is None  # twin not run yet
    raw["file"].parent.mkdir(parents=True)
    raw["file"].write_text(json.dumps({"key": raw["key"], "mask_sha256": "abc", "top1": 0.5, "history": []}))
    assert study._trained_twin(guarded, "abc")["top1"] == 0.5
    assert study._trained_twin(guarded, "other") is None  # the guard changed the mask: train it
