"""PX's activation handling on stock timm models: module/functional, inplace, ReLU6; and the no-side-effect rule."""
from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import px_hub
from px_hub.errors import UnsupportedModelError
from px_hub.methods.views import GateRecorder, GateReplayer


def _batch(n=8, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.arange(n) % 4


def test_resnet18_inplace_and_out_of_place_relu_give_identical_scores():
    torch.manual_seed(0)
    a = timm.create_model("resnet18", num_classes=4).eval()
    b = copy.deepcopy(a)
    relus = [n for n, m in b.named_modules() if isinstance(m, nn.ReLU)]
    assert relus and all(m.inplace for m in a.modules() if isinstance(m, nn.ReLU))
    for _n, m in b.named_modules():
        for cn, c in m.named_children():
            if isinstance(c, nn.ReLU):
                setattr(m, cn, nn.ReLU(inplace=False))
    x, y = _batch()
    sa = px_hub.score(a, [(x, y)], method="px")
    sb = px_hub.score(b, [(x, y)], method="px")
    assert set(sa) == set(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert all(torch.isfinite(v).all() and (v >= 0).all() for v in sa.values())


class _FunctionalNet(nn.Module):
    """The same computation as _ModuleNet, with functional activations written in forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = F.relu6(self.bn(self.conv(x)) * 4)
        x = F.leaky_relu(x - 1.0).relu_()
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class _ModuleNet(_FunctionalNet):
    def __init__(self):
        super().__init__()
        self.a1, self.a2, self.a3 = nn.ReLU6(inplace=True), nn.LeakyReLU(), nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.a1(self.bn(self.conv(x)) * 4)
        x = self.a3(self.a2(x - 1.0))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_functional_and_module_activations_are_the_same_path_views():
    torch.manual_seed(0)
    f = _FunctionalNet().eval()
    m = _ModuleNet().eval()
    m.load_state_dict(f.state_dict(), strict=False)
    x, y = _batch(6, 16)
    sf, sm = px_hub.score(f, [(x, y)], method="px"), px_hub.score(m, [(x, y)], method="px")
    for k in sf:
        assert torch.equal(sf[k], sm[k]), k


def test_relu6_gate_is_open_only_between_0_and_6():
    u = torch.tensor([[-1.0, 0.0, 3.0, 6.0, 7.0]])
    rec = GateRecorder()
    with rec:
        F.relu6(rec.mark(u.clone()), inplace=True)
        F.relu(rec.mark(u.clone()))
    assert rec.gates[0].tolist() == [[False, False, True, False, False]]
    assert rec.gates[1].tolist() == [[False, False, True, True, True]]
    v = torch.full_like(u, 2.0)
    with GateReplayer(rec.gates) as rep:
        out = F.relu6(rep.mark(v))
    assert out.tolist() == [[0.0, 0.0, 2.0, 0.0, 0.0]]
    assert rep.i == 1


def test_efficientnet_lite0_relu6_gates_are_recorded_and_scored():
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_lite0", num_classes=4).eval()
    n_act = sum(isinstance(m, nn.ReLU6) for m in model.modules())
    assert n_act > 20
    x, y = _batch(4, 64)
    rec = GateRecorder()
    with rec, torch.no_grad():
        model(rec.mark(x.clone()))
    assert len(rec.gates) == n_act
    # ReLU6 saturates somewhere on real-scale inputs: the upper gate matters
    assert any(((g == 0) & (torch.ones_like(g))).any() for g in rec.gates)
    scores = px_hub.score(model, [(x * 20, y)], method="px")
    assert all(torch.isfinite(v).all() for v in scores.values())
    assert sum(int((v > 0).sum()) for v in scores.values()) > 0.5 * sum(v.numel() for v in scores.values())


def test_unsupported_activation_is_a_clear_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Softplus(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(UnsupportedModelError, match="softplus"):
        px_hub.score(model, [_batch(2, 8)], method="px")
    # data-free SynFlow does not need path views and works
    assert set(px_hub.score(model, [_batch(2, 8)], method="synflow")) == {"0.weight", "4.weight"}


@pytest.mark.parametrize("method", ["px", "px_official", "snip", "grasp", "synflow", "synflow_l2", "ntk_sap",
                                    "magnitude", "random"])
def test_scoring_never_changes_the_caller_model(method, ref_model, ref_inputs):
    ref_model.train()
    for p in list(ref_model.parameters())[::3]:
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in ref_model.state_dict().items()}
    modes = [m.training for m in ref_model.modules()]
    reqs = [p.requires_grad for p in ref_model.parameters()]
    x, y = ref_inputs
    px_hub.prune(ref_model, [(x[:20], y[:20])], method=method, sparsity=0.9, rounds=2, progress=False)
    after = ref_model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert [m.training for m in ref_model.modules()] == modes
    assert [p.requires_grad for p in ref_model.parameters()] == reqs
    assert all(p.grad is None for p in ref_model.parameters())


def test_px_uses_the_running_batchnorm_statistics(ref_model, ref_inputs):
    """A and K run BatchNorm with the model's own running statistics: changing them changes the scores."""
    x, y = ref_inputs
    s1 = px_hub.score(ref_model, [(x, y)], method="px")
    with torch.no_grad():
        for m in ref_model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.mul_(3.0)
                m.running_mean.add_(0.2)
    s2 = px_hub.score(ref_model, [(x, y)], method="px")
    assert any(not torch.allclose(s1[k], s2[k], rtol=1e-3) for k in s1)
