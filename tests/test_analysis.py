"""px_hub.analysis: empirical NTK against an explicit Jacobian product, alive-output counting, figures + JSON."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from px_hub import Mask
from px_hub.analysis import (
    analyze,
    collapse_warnings,
    compare_spectra,
    empirical_ntk,
    layer_rows,
    ntk_spectrum,
    pick_outputs,
    take_inputs,
    write_report,
)
from px_hub.errors import InvalidArgumentError, PxHubError, UnsupportedModelError

pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp() -> nn.Sequential:
    torch.manual_seed(3)
    m = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Tanh(), nn.Linear(7, 4))
    with torch.no_grad():  # non-trivial running statistics, so eval mode is visible in the result
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 2.0)
    return m


def _explicit_ntk(model: nn.Module, x: torch.Tensor, mask: Mask | None, outputs: list[int]) -> torch.Tensor:
    """Θ from one backward per (sample, output) on a masked copy in eval mode: rows sample-major."""
    m = copy.deepcopy(model).eval()
    if mask is not None:
        mask.apply_(m)
    rows = []
    for n in range(x.shape[0]):
        for c in outputs:
            m.zero_grad()
            m(x[n:n + 1])[0, c].backward()
            g = [(p.grad * mask[k] if mask is not None and k in mask else p.grad).reshape(-1)
                 for k, p in m.named_parameters()]
            rows.append(torch.cat(g))
    jac = torch.stack(rows).double()
    return jac @ jac.T


def test_ntk_of_masked_mlp_equals_explicit_jacobian_product():
    model = _mlp().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    mask = Mask({"0.weight": torch.rand(7, 5, generator=g) > 0.5, "3.weight": torch.rand(4, 7, generator=g) > 0.4})
    x = torch.randn(6, 5, generator=g)

    theta, info = empirical_ntk(model, x, mask=mask)
    expected = _explicit_ntk(model, x, mask, [0, 1, 2, 3])
    assert theta.shape == (24, 24) and theta.dtype == torch.float64
    torch.testing.assert_close(theta, expected, rtol=1e-5, atol=1e-6)
    # kept weights + every bias and BatchNorm parameter
    assert info["parameters"] == int(mask["0.weight"].sum()) + 7 + 7 + 7 + int(mask["3.weight"].sum()) + 4
    # the caller's model is untouched: mode, weights (pruned ones included), BN statistics
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k

    # a subset of outputs gives the matching sub-block; the dense NTK differs from the masked one
    sub, _ = empirical_ntk(model, x, mask=mask, outputs=[1, 3])
    torch.testing.assert_close(sub, _explicit_ntk(model, x, mask, [1, 3]), rtol=1e-5, atol=1e-6)
    dense, _ = empirical_ntk(model, x)
    torch.testing.assert_close(dense, _explicit_ntk(model, x, None, [0, 1, 2, 3]), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(dense, theta)


def test_spectrum_numbers_and_comparison():
    model = _mlp()
    x = torch.randn(5, 5, generator=torch.Generator().manual_seed(1))
    theta, _ = empirical_ntk(model, x)
    sp = ntk_spectrum(model, x, chunk_bytes=1)  # chunk of one sample: same result
    np.testing.assert_allclose(sp.eigenvalues, np.sort(np.linalg.eigvalsh(theta.numpy()))[::-1], rtol=1e-6,
                               atol=1e-7)
    assert sp.trace == pytest.approx(float(theta.trace()), rel=1e-6)
    assert sp.top == pytest.approx(float(sp.eigenvalues.max()))
    assert np.all(np.diff(sp.eigenvalues) <= 0)
    full = Mask.ones({k: p for k, p in model.named_parameters() if k.endswith("weight") and p.dim() == 2})
    same = compare_spectra(ntk_spectrum(model, x, mask=full), sp)
    assert same["trace_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert same["top_eigenvalue_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert same["mean_abs_log10_eigenvalue_gap"] < 1e-5
    d = sp.to_dict()
    assert d["samples"] == 5 and d["outputs"] == [0, 1, 2, 3] and len(d["eigenvalues"]) == 20


def test_pick_outputs_and_bad_input():
    assert pick_outputs(4) == [0, 1, 2, 3]
    assert pick_outputs(1000, 5) == [0, 250, 500, 749, 999]
    model = _mlp()
    with pytest.raises(InvalidArgumentError):
        empirical_ntk(model, torch.randn(2, 5), outputs=[4])
    with pytest.raises(UnsupportedModelError):
        empirical_ntk(nn.Sequential(nn.Linear(5, 4), nn.Flatten(0)), torch.randn(2, 5))
    with pytest.raises(PxHubError):
        take_inputs([], 3)


def _conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def _hand_mask() -> Mask:
    conv0 = torch.zeros(4, 3, 3, 3, dtype=torch.bool)
    conv0[0] = True                 # channel 0: all 27 kept
    conv0[2, 1, 2, 0] = True        # channel 2: one weight keeps it alive
    conv0[3, :, 1, 1] = True        # channel 3: 3 kept; channel 1: none -> dead
    conv3 = torch.zeros(6, 4, 3, 3, dtype=torch.bool)  # every weight pruned: collapsed layer
    lin = torch.ones(3, 6, dtype=torch.bool)
    lin[1] = False                  # unit 1 dead
    lin[2, :5] = False              # unit 2 alive through its last weight
    return Mask({"0.weight": conv0, "3.weight": conv3, "8.weight": lin})


def test_alive_outputs_on_hand_built_mask():
    model = _conv_net()
    # mask given out of network order: rows come back in the model's order
    m = _hand_mask()
    shuffled = Mask({k: m[k] for k in ["8.weight", "0.weight", "3.weight"]})
    rows = layer_rows(shuffled, model)
    assert [r["layer"] for r in rows] == ["0", "3", "8"]
    r0, r3, r8 = rows
    assert (r0["kept"], r0["total"], r0["alive_outputs"], r0["outputs"]) == (31, 108, 3, 4)
    assert r0["density"] == pytest.approx(31 / 108) and r0["alive_fraction"] == 0.75 and not r0["collapsed"]
    assert (r3["kept"], r3["alive_outputs"], r3["outputs"], r3["collapsed"]) == (0, 0, 6, True)
    assert (r8["kept"], r8["alive_outputs"], r8["outputs"]) == (7, 2, 3)
    assert collapse_warnings(shuffled, model) == ["3: every weight pruned (0 of 216 kept)"]


def test_analyze_and_write_report(tmp_path):
    model = _conv_net()
    dense = copy.deepcopy(model)
    mask = _hand_mask()
    mask.apply_(model)
    x = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    batches = [(x[:3], torch.zeros(3)), (x[3:], torch.zeros(5))]
    inputs = take_inputs(batches, 4)
    assert torch.equal(inputs, x[:4])

    summary = analyze(model, mask, inputs, dense_model=dense)
    assert summary["kept"] == 38 and summary["total"] == 108 + 216 + 18
    assert summary["collapsed_layers"] == ["3.weight"]
    ntk = summary["ntk"]
    assert ntk["ticket"]["samples"] == 4 and ntk["ticket"]["outputs"] == [0, 1, 2]
    # with conv 3 empty the features are constant: only the head's bias/weights on a constant input remain
    assert ntk["ticket_vs_dense"]["trace_ratio"] < 1.0

    paths = write_report(summary, tmp_path / "a", title="toy")
    data = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert data["figures"] == {"layer_density": "layer_density.png", "alive_outputs": "alive_outputs.png",
                               "ntk_spectrum": "ntk_spectrum.png"}
    assert data["ntk"]["ticket"]["trace"] == pytest.approx(summary["ntk"]["ticket"]["trace"])
    assert data["warnings"] == ["3: every weight pruned (0 of 216 kept)"]
    for key in ("layer_density", "alive_outputs", "ntk_spectrum"):
        raw = (tmp_path / "a" / data["figures"][key]).read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 5000
    # reproducible: the same summary gives byte-identical figures
    write_report(summary, tmp_path / "b", title="toy")
    for key in ("layer_density", "alive_outputs", "ntk_spectrum"):
        name = data["figures"][key]
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert set(paths) == {"layer_density", "alive_outputs", "ntk_spectrum", "summary"}
