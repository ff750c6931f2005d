"""The pruning loop, the Mask object, targets and the registered models."""
from __future__ import annotations

import json
import math

import pytest
import timm
import torch

import px_hub
from px_hub import Mask, PruneTargets
from px_hub.errors import IntegrityError, InvalidArgumentError, LayerCollapseError, MaskMismatchError, UnknownNameError
from px_hub.masking import sparsity_schedule


def _data(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 10)]


@pytest.fixture()
def resnet20():
    torch.manual_seed(0)
    return timm.create_model("cifar_resnet20", num_classes=10).eval()


def test_same_seed_same_mask_and_seed_matters_for_random(resnet20):
    a = px_hub.prune(resnet20, _data(), method="px", sparsity=0.9, rounds=5, progress=False)
    b = px_hub.prune(resnet20, _data(), method="px", sparsity=0.9, rounds=5, progress=False)
    assert a == b and a.sha256() == b.sha256()
    r0 = px_hub.prune(resnet20, None, method="random", sparsity=0.9, seed=0, input_shape=(3, 32, 32))
    r0b = px_hub.prune(resnet20, None, method="random", sparsity=0.9, seed=0, input_shape=(3, 32, 32))
    r1 = px_hub.prune(resnet20, None, method="random", sparsity=0.9, seed=1, input_shape=(3, 32, 32))
    assert r0 == r0b and r0 != r1


@pytest.mark.parametrize("sparsity", [0.36, 0.5904, 0.893, 0.956, 0.982])
def test_exact_sparsity(resnet20, sparsity):
    mask = px_hub.prune(resnet20, None, method="magnitude", sparsity=sparsity, input_shape=(3, 32, 32))
    n = mask.total()
    assert n == 270_896
    assert mask.kept() == n - math.floor(sparsity * n)


def test_iterative_masks_are_nested_and_follow_the_exponential_schedule(resnet20):
    res = px_hub.prune_with_record(resnet20, _data(), method="synflow", sparsity=0.982, rounds=10, progress=False)
    plan = sparsity_schedule(0.982, 10)
    assert plan[-1] == 0.982 and plan[0] == pytest.approx(1 - 0.018 ** 0.1)
    kept = [h["kept"] for h in res.history]
    assert kept == sorted(kept, reverse=True)
    assert [h["kept"] for h in res.history] == [270_896 - math.floor(s * 270_896) for s in plan]
    rec = res.record
    assert rec["method"] == "synflow" and rec["rounds"] == 10 and rec["schedule"] == "exponential"
    assert sum(r["kept"] for r in rec["per_layer"]) == rec["kept"]
    json.dumps(rec)


def test_local_scope_prunes_every_layer_to_the_same_density(resnet20):
    mask = px_hub.prune(resnet20, _data(), method="snip", sparsity=0.9, scope="local", progress=False)
    for row in mask.report():
        assert row.kept == row.total - math.floor(0.9 * row.total), row.name


def test_targets_exclusions(resnet20):
    t = PruneTargets(exclude_first=True, exclude_classifier=True, exclude=("blocks.0",))
    mask = px_hub.prune(resnet20, _data(), method="px", sparsity=0.9, rounds=2, targets=t, progress=False)
    assert "conv.weight" not in mask and "fc.weight" not in mask
    assert not any(k.startswith("blocks.0.") for k in mask)
    assert "blocks.1.conv1.weight" in mask
    with pytest.raises(InvalidArgumentError, match="names no Conv/Linear"):
        PruneTargets(exclude=("nope",)).select(resnet20)


def test_bad_arguments(resnet20):
    with pytest.raises(InvalidArgumentError, match=r"\(0, 1\)"):
        px_hub.prune(resnet20, _data(), sparsity=1.5)
    with pytest.raises(InvalidArgumentError):
        px_hub.prune(resnet20, _data(), sparsity=0.0)
    with pytest.raises(UnknownNameError, match="did you mean px"):
        px_hub.prune(resnet20, _data(), method="pxx")
    with pytest.raises(InvalidArgumentError, match="no option"):
        px_hub.prune(resnet20, _data(), method="px", method_options={"k": 1})
    from px_hub.errors import DataError

    with pytest.raises(DataError, match="needs pruning data"):
        px_hub.prune(resnet20, [], method="px")


def test_collapse_detection_and_fail_option(resnet20, ref_inputs):
    x, y = ref_inputs
    mask = px_hub.prune(resnet20, [(x, y)], method="synflow", sparsity=0.999, rounds=5, progress=False, guard=False)
    bad = mask.collapsed_layers()
    assert bad
    with pytest.raises(LayerCollapseError, match="layer collapse"):
        mask.check_collapse(fail=True)


def test_mask_report_alive_outputs_by_hand():
    m = Mask({"a.weight": torch.tensor([[1, 0], [0, 0], [0, 1]], dtype=torch.bool),
              "b.weight": torch.zeros(2, 3, 1, 1, dtype=torch.bool)})
    rows = {r.name: r for r in m.report()}
    assert (rows["a.weight"].kept, rows["a.weight"].alive_outputs, rows["a.weight"].outputs) == (2, 2, 3)
    assert rows["b.weight"].collapsed and not rows["a.weight"].collapsed
    assert m.collapsed_layers() == ["b.weight"]


@pytest.mark.parametrize("density", [0.5, 0.01])  # packed bits / kept indices
def test_mask_save_load_roundtrip_and_corruption(tmp_path, density):
    g = torch.Generator().manual_seed(0)
    m = Mask({"x.weight": torch.rand(64, 32, 3, 3, generator=g) < density,
              "y.weight": torch.rand(10, 7, generator=g) < 0.5})
    p = tmp_path / "mask.safetensors"
    m.save(p, metadata={"weights_sha256": "abc"})
    back, meta = Mask.load_with_metadata(p)
    assert back == m and meta["weights_sha256"] == "abc"
    enc = json.loads(meta["layers"])["x.weight"]["encoding"]
    assert enc == ("indices" if density < 1 / 32 else "bits")
    raw = bytearray(p.read_bytes())
    raw[-3] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        Mask.load(p)


def test_mask_apply_and_enforce_keep_exact_zeros_under_momentum_and_weight_decay(resnet20, ref_inputs):
    mask = px_hub.prune(resnet20, None, method="magnitude", sparsity=0.9, input_shape=(3, 32, 32))
    resnet20.train()
    enf = mask.enforce(resnet20)
    opt = torch.optim.SGD(resnet20.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    x, y = ref_inputs
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(resnet20(x[:32]), y[:32]).backward()
        opt.step()
        enf.after_step()
    params = dict(resnet20.named_parameters())
    for k, m in mask.items():
        assert torch.all(params[k][~m] == 0), k
        assert torch.any(params[k][m] != 0), k
    enf.remove()


def test_mask_that_does_not_fit_is_refused(resnet20):
    other = timm.create_model("cifar_resnet20", num_classes=100)
    mask = Mask.ones(PruneTargets().select(other))
    with pytest.raises(MaskMismatchError, match="fc.weight"):
        mask.apply_(resnet20)
    with pytest.raises(MaskMismatchError, match="lacks"):
        Mask({"nope.weight": torch.ones(3, dtype=torch.bool)}).validate(resnet20)


def test_paper_models_are_registered_in_timm_with_official_layouts(ref_dir):
    order = json.loads((ref_dir / "meta.json").read_text())["state_dict_order"]
    m = timm.create_model("cifar_resnet20", num_classes=10)
    assert [(k, list(v.shape)) for k, v in m.state_dict().items()] == [(n, s) for n, s in order]
    assert sum(p.numel() for p in PruneTargets().select(m).values()) == 270_896
    vgg = timm.create_model("cifar_vgg16_bn", num_classes=100)
    convs = [n for n, _ in vgg.named_modules() if isinstance(_, torch.nn.Conv2d)]
    assert len(convs) == 13 and all(vgg.get_submodule(c).bias is not None for c in convs)
    assert vgg(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    r18 = timm.create_model("tinyimagenet_resnet18")
    assert r18(torch.zeros(1, 3, 64, 64)).shape == (1, 200) and r18.num_classes == 200
    assert "cifar_resnet20" in timm.list_models("cifar_*")
