"""px-hub against the official PX code's outputs (tests/fixtures/px-reference: made with iurada/px-ntk-pruning
ed6c40e on a 2-core CPU, torch 2.13.0, float32, 2 threads).

The checks hold on any machine of the same kind, not only the one that made the fixtures. Summation order
differs between CPUs (kernels, thread count), so no comparison is bit for bit; each tolerance comes from
``benchmarks/wellposed_reference.py``, which measures how far rounding alone moves each method
(``benchmarks/results/wellposed_reference.json``):

* **Round-1 scores**: px-hub's float32 scores vs the same scores in float64, with 1 thread, and with the samples
  in reverse order; the largest per-layer error relative to the layer's maximum is the method's rounding-only
  error (float64 dominates: px 5.4e-5, px k_batch=full 5.4e-5, SynFlow 5.7e-7, SNIP 2.5e-3, GraSP 3.8e-3 after
  its scale fit). Tolerance = ``ROUND1_MARGIN`` (10) x that error. The margin covers a second float32
  implementation rounding as badly in another direction, on kernels that block sums differently: on a second
  2-core machine SNIP was measured 1.7e-2 from the fixture (6.7x the float64 gap here), inside 10x. A wrong
  formula is off by O(1) (see ``test_px_official_is_noise_float32_vs_float64`` for what noise looks like).
* **Final masks**: 100 rounds amplify rounding: with ``k_batch="full"`` (the official arithmetic) the 1-thread
  and reversed-order runs share only 82 % and 78 % of the fixture's kept weights (a second machine measured
  78.7 %), px's default ``k_batch="one"`` 57-84 %, while SynFlow, SNIP and GraSP masks do not move (GraSP's
  float64 run: 99.9 %). So final masks are checked by what rounding cannot move: the kept total (the schedule
  fixes it), per-layer kept counts inside the rounding-only range measured over the fixture and the variants
  (``final_masks[...]["range_per_layer"]``), widened by ``RANGE_MARGIN``, no empty layer that no rounding-only
  run empties, and the numbers of empty layers and of fc classes with no kept weight inside their measured
  ranges (exact where rounding never moved them).
* Exact equality is tested only where the machine is guaranteed to be the same: 1 vs 2 processes in one run
  (``tests/test_distributed.py``).
"""
from __future__ import annotations

import json
import math
import pathlib

import pytest
import torch
from safetensors.torch import load_file

import px_hub
from px_hub import Mask

SPARSITY = 0.982
FIXTURE_THREADS = 2  # the fixtures' own conditions; the tolerances cover other thread counts and CPUs
MEASURED = json.loads((pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "results" /
                       "wellposed_reference.json").read_text())
ROUND1_MARGIN = 10.0


def RANGE_MARGIN(lo: int, hi: int) -> int:
    """Widening of a measured per-layer range on each side: half its width, at least 2 % of the layer's count
    and at least 2 weights (a handful of rounding-only runs and the fixture sample the spread; another machine's
    run is one more draw, and SNIP there was measured 6.7x further from the fixture than float64 is here)."""
    return max(2, math.ceil(0.5 * (hi - lo)), math.ceil(0.02 * hi))


def _widened(lo: int, hi: int) -> tuple[int, int]:
    """A measured range of a small count (empty layers, dead classes): exact if rounding never moved it, else
    one more on each side."""
    return (lo, hi) if lo == hi else (max(0, lo - 1), hi + 1)


@pytest.fixture(autouse=True)
def _fixture_threads(fixture_threads):  # FIXTURE_THREADS (2), see conftest
    yield


def _rel_err(mine: dict, ref: dict) -> dict[str, float]:
    return {k: float((mine[k].double() - ref[k].double()).abs().max() / ref[k].double().abs().max()) for k in ref}


def round1_tolerance(label: str) -> float:
    return ROUND1_MARGIN * max(MEASURED["round1"][label]["vs_float32"].values())


def test_measured_tolerances_are_tight_enough_to_discriminate():
    """The tolerances stay far below the O(1) errors of a wrong formula or of px_official's noise."""
    for label in ("px", "px[k_batch=full]", "synflow", "snip", "grasp"):
        assert round1_tolerance(label) < 0.05, label
    assert min(MEASURED["round1"]["px_official"]["vs_float32"].values()) > 0.5  # ill-posed: no round-1 check


@pytest.mark.parametrize("label,method,options", [("px", "px", None), ("px[k_batch=full]", "px", {"k_batch": "full"}),
                                                  ("synflow", "synflow", None), ("snip", "snip", None)])
def test_round1_scores_match_official(label, method, options, ref_model, ref_inputs, ref_dir):
    x, y = ref_inputs
    ref = load_file(str(ref_dir / f"{method}_round1_scores.safetensors"))
    mine = px_hub.score(ref_model, [(x, y)], method=method, method_options=options)
    assert set(mine) == set(ref)
    errs = _rel_err(mine, ref)
    assert max(errs.values()) <= round1_tolerance(label), errs


def test_px_k_batch_variants_agree_on_round1(ref_model, ref_inputs):
    x, y = ref_inputs
    one = px_hub.score(ref_model, [(x, y)], method="px")
    full = px_hub.score(ref_model, [(x, y)], method="px", method_options={"k_batch": "full"})
    assert max(_rel_err(one, full).values()) <= round1_tolerance("px")


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
    assert max(errs.values()) <= round1_tolerance("grasp"), errs
    assert float(b.sum().abs() / b.abs().sum()) < 0.05  # the cancellation


FINAL = [("synflow", "synflow", None), ("snip", "snip", None), ("grasp", "grasp", None),
         ("px[k_batch=full]", "px", {"k_batch": "full"}), ("px", "px", None)]


@pytest.mark.parametrize("label,method,options", FINAL)
def test_final_masks_hold_what_rounding_cannot_move(label, method, options, ref_model, ref_inputs, ref_dir):
    x, y = ref_inputs
    meta = json.loads((ref_dir / "meta.json").read_text())
    measured = MEASURED["final_masks"][label]
    ref = Mask(load_file(str(ref_dir / f"{method}_mask.safetensors")))
    mask = px_hub.prune(ref_model, [(x, y)], method=method, sparsity=SPARSITY, progress=False,
                        method_options=options, guard=False)  # the raw method
    assert mask.kept() == ref.kept() == 4877
    key = {"px": "PX", "synflow": "SynFlow", "snip": "SNIP", "grasp": "GraSP"}[method]
    assert meta["methods"][key]["kept_total"] == 4877
    outside = {}
    for name, (lo, hi) in measured["range_per_layer"].items():
        m = RANGE_MARGIN(lo, hi)
        kept = int(mask[name].sum())
        if not lo - m <= kept <= hi + m:
            outside[name] = (kept, lo - m, hi + m)
    assert not outside, outside
    may_empty = {k for k, (lo, hi) in measured["range_per_layer"].items() if lo - RANGE_MARGIN(lo, hi) <= 0}
    empty = {k for k, m in mask.items() if not m.any()}
    assert empty <= may_empty, empty - may_empty  # no layer empties that rounding alone never empties
    lo, hi = _widened(*measured["range_empty_layers"])
    assert lo <= len(empty) <= hi
    dead = int((~mask["fc.weight"].any(dim=1)).sum())
    lo, hi = _widened(*measured["range_dead_classes"])
    assert lo <= dead <= hi


def _double(model):
    import copy

    return copy.deepcopy(model).double()


@pytest.mark.parametrize("arch", ["cifar_resnet20", "cifar_vgg16_bn"])
def test_px_is_well_posed_float32_equals_float64(arch, ref_model, ref_inputs):
    """px's float32 scores are float64's up to rounding (measured 5.1e-5 on the fixture; the tolerance is px's
    round-1 tolerance)."""
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
    assert max(errs.values()) <= round1_tolerance("px"), errs


def test_px_official_is_noise_float32_vs_float64(ref_model, ref_inputs):
    """Documents the degeneracy of the official K (batch statistics on an all-ones batch): ∂R/∂ψ is zero in exact
    arithmetic, so float32 scores are rounding noise, orders of magnitude above the float64 ones and unrelated.
    That is why px_official has no round-1 or final-mask comparison with its fixture beyond this one."""
    x, y = ref_inputs
    s32 = px_hub.score(ref_model, [(x, y)], method="px_official")
    s64 = px_hub.score(_double(ref_model), [(x.double(), y)], method="px_official")
    a = torch.cat([v.double().flatten() for v in s32.values()])
    b = torch.cat([s64[k].double().flatten() for k in s32])
    assert a.abs().max() > 1e4 * b.abs().max()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] < 0.9
