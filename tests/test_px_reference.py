"""px-hub against the official PX code's outputs (../shared/px-reference, made with iurada/px-ntk-pruning ed6c40e
on this CPU, torch 2.13.0, float32)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import px_hub
from px_hub import Mask

SPARSITY = 0.982
# The fixtures were made on a 2-core machine with torch's default 2 threads; CPU kernels sum in an order that
# depends on the thread count, and iterative PX amplifies rounding (see README), so bit-exact comparisons pin it.
FIXTURE_THREADS = 2


@pytest.fixture(autouse=True)
def _fixture_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(FIXTURE_THREADS)
    yield
    torch.set_num_threads(n)


def _rel_err(mine: dict, ref: dict) -> dict[str, float]:
    return {k: float((mine[k].double() - ref[k].double()).abs().max() / ref[k].double().abs().max()) for k in ref}


@pytest.mark.parametrize("method", ["px", "synflow", "snip"])
def test_round1_scores_match_official(method, ref_model, ref_inputs, ref_dir):
    x, y = ref_inputs
    ref = load_file(str(ref_dir / f"{method}_round1_scores.safetensors"))
    mine = px_hub.score(ref_model, [(x, y)], method=method)
    assert set(mine) == set(ref)
    errs = _rel_err(mine, ref)
    assert max(errs.values()) <= 1e-4, errs


def test_px_k_batch_variants_agree_on_round1(ref_model, ref_inputs):
    x, y = ref_inputs
    one = px_hub.score(ref_model, [(x, y)], method="px")
    full = px_hub.score(ref_model, [(x, y)], method="px", method_options={"k_batch": "full"})
    assert max(_rel_err(one, full).values()) <= 1e-4


def test_grasp_round1_scores_match_official_up_to_its_normaliser(ref_model, ref_inputs, ref_dir):
    """GraSP divides by |Σ scores|, a sum of ±terms that nearly cancel (|Σ s| ≈ 1e-3 Σ|s| here), so float32
    rounding moves the normaliser by ~10 %. The mask only depends on the ranking, which a positive scale keeps:
    compare after fitting that one scale, and check the cancellation that explains it."""
    x, y = ref_inputs
    ref = load_file(str(ref_dir / "grasp_round1_scores.safetensors"))
    mine = px_hub.score(ref_model, [(x, y)], method="grasp")
    a = torch.cat([mine[k].double().flatten() for k in ref])
    b = torch.cat([ref[k].double().flatten() for k in ref])
    scale = float((a * b).sum() / (a * a).sum())
    assert 0.7 < scale < 1.4
    errs = _rel_err({k: mine[k].double() * scale for k in ref}, ref)
    assert max(errs.values()) <= 1e-4, errs
    assert float(b.sum().abs() / b.abs().sum()) < 0.05  # the cancellation


def _agreement(mask: Mask, ref: Mask) -> float:
    return sum(int((mask[k] & ref[k]).sum()) for k in ref) / ref.kept()


@pytest.mark.parametrize("method,options", [("synflow", None), ("snip", None), ("grasp", None),
                                            ("px", {"k_batch": "full"})])
def test_final_masks_match_official(method, options, ref_model, ref_inputs, ref_dir):
    x, y = ref_inputs
    meta = json.loads((ref_dir / "meta.json").read_text())
    key = {"px": "PX", "synflow": "SynFlow", "snip": "SNIP", "grasp": "GraSP"}[method]
    ref = Mask(load_file(str(ref_dir / f"{method}_mask.safetensors")))
    mask = px_hub.prune(ref_model, [(x, y)], method=method, sparsity=SPARSITY, progress=False,
                        method_options=options, guard=False)  # the raw method, as the official code
    assert mask.kept() == meta["methods"][key]["kept_total"] == 4877
    assert _agreement(mask, ref) >= 0.999
    if method == "synflow":  # SynFlow empties the second 1x1 shortcut conv, as the official run shows
        assert "blocks.6.shortcut.conv.weight" in mask.collapsed_layers()
    if method == "px":  # PX empties residual-branch convs of the last stage; the identity shortcuts remain
        assert {"blocks.7.conv1.weight", "blocks.8.conv2.weight"} <= set(mask.collapsed_layers())
        assert "blocks.6.shortcut.conv.weight" not in mask.collapsed_layers()


def test_px_default_mask_is_a_float_rounding_neighbour_of_official(ref_model, ref_inputs, ref_dir):
    """The default k_batch='one' is exact in real arithmetic but rounds differently from the official code, and
    100 rounds of PX amplify rounding (float32 vs float64 of the *same* code also share only ~78 % of kept weights).
    Its mask is the same kind of ticket: same size, same collapse pattern, most weights shared."""
    x, y = ref_inputs
    ref = Mask(load_file(str(ref_dir / "px_mask.safetensors")))
    mask = px_hub.prune(ref_model, [(x, y)], method="px", sparsity=SPARSITY, progress=False, guard=False)
    assert mask.kept() == 4877
    assert _agreement(mask, ref) > 0.6
    assert {"blocks.7.conv1.weight", "blocks.7.conv2.weight", "blocks.8.conv1.weight",
            "blocks.8.conv2.weight"} <= set(mask.collapsed_layers())


def _double(model):
    import copy

    return copy.deepcopy(model).double()


@pytest.mark.parametrize("arch", ["cifar_resnet20", "cifar_vgg16_bn"])
def test_px_is_well_posed_float32_equals_float64(arch, ref_model, ref_inputs):
    x, y = ref_inputs  # real images (digits)
    if arch == "cifar_resnet20":
        model = ref_model
    else:
        import timm

        torch.manual_seed(1)
        model = timm.create_model(arch, num_classes=10).eval()
    s32 = px_hub.score(model, [(x, y)], method="px")
    s64 = px_hub.score(_double(model), [(x.double(), y)], method="px")
    errs = _rel_err(s32, s64)
    assert max(errs.values()) <= 1e-4, errs


def test_px_official_is_noise_float32_vs_float64(ref_model, ref_inputs):
    """Documents the degeneracy of the official K (batch statistics on an all-ones batch): ∂R/∂ψ is zero in exact
    arithmetic, so float32 scores are rounding noise, orders of magnitude above the float64 ones and unrelated."""
    x, y = ref_inputs
    s32 = px_hub.score(ref_model, [(x, y)], method="px_official")
    s64 = px_hub.score(_double(ref_model), [(x.double(), y)], method="px_official")
    a = torch.cat([v.double().flatten() for v in s32.values()])
    b = torch.cat([s64[k].double().flatten() for k in s32])
    assert a.abs().max() > 1e4 * b.abs().max()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] < 0.9
