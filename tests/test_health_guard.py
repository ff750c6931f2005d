"""Ticket health (px_hub.masking.health) and the pruning guard (px_hub.masking.guard)."""
from __future__ import annotations

import copy
import json

import pytest
import timm
import torch
from safetensors.torch import load_file
from torch import nn

import px_hub
from px_hub import Mask
from px_hub.masking import TicketHealth, ticket_health
from px_hub.masking.guard import describe_guard, guard_round

SPARSITY = 0.982


@pytest.fixture(autouse=True)
def _two_threads():  # the reference fixtures were made with 2 threads (see tests/test_px_reference.py)
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


# -- health on hand-built masks -------------------------------------------------------------------------------------

def _conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def _hand_mask(conv3_weight=None) -> Mask:
    conv0 = torch.zeros(4, 3, 3, 3, dtype=torch.bool)
    conv0[0] = True                 # channel 0: all 27 kept
    conv0[2, 1, 2, 0] = True        # channel 2: one weight
    conv0[3, :, 1, 1] = True        # channel 3: 3 kept; channel 1: none
    conv3 = torch.zeros(6, 4, 3, 3, dtype=torch.bool)
    if conv3_weight is not None:
        conv3[conv3_weight] = True
    lin = torch.ones(3, 6, dtype=torch.bool)
    lin[1] = False                  # class 1: no weight
    lin[2, :5] = False              # class 2: only its weight from feature 5
    return Mask({"0.weight": conv0, "3.weight": conv3, "8.weight": lin})


def test_health_of_an_emptied_layer_kills_every_output():
    model = _conv_net()
    h = ticket_health(model, _hand_mask(), (3, 6, 6))
    assert h.outputs == 3 and h.dead_outputs == (0, 1, 2) and not h.healthy
    assert h.empty_layers == ("3.weight",)
    assert set(h.cut_off_layers) == {"0.weight", "8.weight"}  # their kept weights lead nowhere / come from nowhere
    assert {r.name: r.on_path for r in h.layers} == {"0.weight": 0, "3.weight": 0, "8.weight": 0}


def test_health_follows_the_one_kept_path_exactly():
    """conv3 keeps one weight, channel 0 -> channel 5: the only path is conv0 ch 0 -> conv3 ch 5 -> feature 5."""
    model = _conv_net()
    state = copy.deepcopy(model.state_dict())
    model.train()
    h = ticket_health(model, _hand_mask((5, 0, 1, 1)), (3, 6, 6))
    assert h.dead_outputs == (1,)  # class 0 (all weights) and class 2 (feature 5) are reached; class 1 has none
    assert h.empty_layers == () and h.cut_off_layers == ()
    assert {r.name: r.on_path for r in h.layers} == {"0.weight": 27, "3.weight": 1, "8.weight": 2}
    assert "3.weight" in h.nearly_empty_layers  # 1 of 216 kept, 1 of 6 output units
    # a weight from a channel conv0 does not produce (channel 1) reaches nothing
    h1 = ticket_health(model, _hand_mask((5, 1, 1, 1)), (3, 6, 6))
    assert h1.dead_outputs == (0, 1, 2) and h1.cut_off_layers == ("0.weight", "3.weight", "8.weight")
    # the model is untouched: weights, BatchNorm statistics, mode
    assert model.training and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_health_dict_round_trip_and_summary():
    h = ticket_health(_conv_net(), _hand_mask((5, 0, 1, 1)), (3, 6, 6))
    d = json.loads(json.dumps(h.to_dict()))
    assert TicketHealth.from_dict(d) == h
    assert d["num_dead_outputs"] == 1 and d["healthy"] is False and d["kept_on_path"] == 30
    assert h.summary() == "2/3 outputs reachable, 0 empty, 1 nearly empty, 0 cut-off layer(s); dead outputs: 1"


@pytest.mark.parametrize("arch,size", [("cifar_resnet20", 32), ("cifar_vgg16_bn", 32), ("resnet18", 64),
                                       ("efficientnet_lite0", 64), ("efficientnet_b0", 64)])
def test_dense_mask_is_healthy_with_every_weight_on_a_path(arch, size):
    """Residual adds, max pooling (vgg, resnet18 stem), depthwise convs, ReLU6, SiLU and squeeze-excite gates."""
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=10).eval()
    mask = Mask.ones(px_hub.PruneTargets().select(model))
    h = ticket_health(model, mask, (3, size, size))
    assert h.healthy and h.dead_outputs == () and h.cut_off_layers == () and h.nearly_empty_layers == ()
    assert all(r.on_path == r.kept for r in h.layers), [r for r in h.layers if r.on_path != r.kept]


@pytest.mark.parametrize("fixture,dead,empty", [("px", 4, 6), ("px_official", 7, 0), ("px2024", 0, 0),
                                                ("snip", 0, 4), ("synflow", 0, 1), ("grasp", 0, 0)])
def test_health_of_the_reference_masks(fixture, dead, empty, ref_model, ref_dir):
    """The numbers of issue 9's table (ResNet-20, sparsity 0.982)."""
    mask = Mask(load_file(str(ref_dir / f"{fixture}_mask.safetensors")))
    h = ticket_health(ref_model, mask, (3, 32, 32))
    assert (len(h.dead_outputs), len(h.empty_layers)) == (dead, empty)
    assert set(h.empty_layers) == set(mask.collapsed_layers())
    rows_without_weight = set(torch.nonzero(~mask["fc.weight"].any(dim=1)).reshape(-1).tolist())
    assert rows_without_weight <= set(h.dead_outputs)


# -- the guard rule on a toy network --------------------------------------------------------------------------------

def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))


def test_guard_restores_a_dead_class_with_its_best_reachable_weight_and_gives_back_the_lowest():
    model = _mlp()
    prev = Mask({"0.weight": torch.ones(3, 4, dtype=torch.bool), "2.weight": torch.ones(2, 3, dtype=torch.bool)})
    new = Mask({"0.weight": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool),
                "2.weight": torch.tensor([[0, 0, 0], [1, 1, 0]], dtype=torch.bool)})
    scores = {"0.weight": torch.tensor([[9., 8., 7., 6.], [5., 4.5, 1., 1.], [1., 1., 1., 1.]]),
              "2.weight": torch.tensor([[3., 2.5, 3.5], [4., 3., 0.]])}
    # class 0 is dead; its best candidate 2.weight[0, 2] (3.5) reads unit 2, which no kept weight feeds: the rule
    # takes 2.weight[0, 0] (3.0, unit 0 is reached) and gives back the lowest-scored kept weight, 2.weight[1, 1] (3.0;
    # class 1 keeps 2.weight[1, 0]).
    mask, rec = guard_round(model, prev, new, scores, (4,), "2.weight")
    assert rec["dead_classes"] == [0] and rec["restored_classes"] == [0] and rec["restored"] == 1
    assert rec["removed"] == 1 and "unresolved" not in rec
    assert mask["2.weight"].tolist() == [[True, False, False], [True, False, False]]
    assert torch.equal(mask["0.weight"], new["0.weight"])
    assert mask.kept() == new.kept()
    assert ticket_health(model, mask, (4,)).healthy


def test_guard_reconnects_an_empty_layer_through_its_best_weight_on_a_path():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 3, bias=False), nn.ReLU(),
                          nn.Linear(3, 2, bias=False))
    ones = {"0.weight": (3, 4), "2.weight": (3, 3), "4.weight": (2, 3)}
    prev = Mask({k: torch.ones(s, dtype=torch.bool) for k, s in ones.items()})
    new = Mask({"0.weight": torch.ones(3, 4, dtype=torch.bool), "2.weight": torch.zeros(3, 3, dtype=torch.bool),
                "4.weight": torch.tensor([[0, 1, 0], [0, 1, 0]], dtype=torch.bool)})
    scores = {"0.weight": torch.arange(1, 13, dtype=torch.float32).reshape(3, 4),
              "2.weight": torch.tensor([[9., 1., 1.], [1., 5., 1.], [1., 1., 1.]]),
              "4.weight": torch.tensor([[1., 20., 1.], [1., 10., 1.]])}
    scores["0.weight"][0, 0] = 0.01
    # the middle layer is empty (both classes dead). Its best weight, 2.weight[0, 0] (9), feeds unit 0, which the
    # head does not read: the rule keeps 2.weight[1, 1] (5), the best on a complete path, and gives back the lowest
    # kept weight, 0.weight[0, 0] (0.01; unit 0 of the first layer keeps three other inputs).
    mask, rec = guard_round(model, prev, new, scores, (4,), "4.weight")
    assert rec["empty_layers"] == ["2.weight"] and rec["dead_classes"] == [0, 1]
    assert rec["restored_layers"] == ["2.weight"] and rec["restored_classes"] == []
    assert rec["restored"] == rec["removed"] == 1 and "unresolved" not in rec
    assert torch.nonzero(mask["2.weight"]).tolist() == [[1, 1]]
    assert torch.nonzero(~mask["0.weight"]).tolist() == [[0, 0]]
    assert torch.equal(mask["4.weight"], new["4.weight"]) and mask.kept() == new.kept()
    assert ticket_health(model, mask, (4,)).healthy


def test_guard_grows_a_path_back_through_the_trunk_when_no_single_weight_can():
    """Rule 2b: class 1's only previous path runs through hidden unit g1, which nothing feeds any more, and its
    head row is empty: no single weight reconnects it. The guard keeps the best weight into g1 from a reached unit
    (2.weight[1, 1], 3 > 2), then the head weight that completes the path (4.weight[1, 1]), and gives back the two
    lowest-scored kept weights (0.weight[0, 0] and [0, 1])."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 3, bias=False), nn.ReLU(),
                          nn.Linear(3, 2, bias=False))
    prev = Mask({"0.weight": torch.ones(3, 4, dtype=torch.bool), "2.weight": torch.ones(3, 3, dtype=torch.bool),
                 "4.weight": torch.tensor([[1, 1, 1], [0, 1, 0]], dtype=torch.bool)})
    new = Mask({"0.weight": torch.tensor([[1] * 4, [1] * 4, [0] * 4], dtype=torch.bool),
                "2.weight": torch.tensor([[1, 0, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.bool),
                "4.weight": torch.tensor([[1, 0, 0], [0, 0, 0]], dtype=torch.bool)})
    scores = {"0.weight": torch.arange(1, 13, dtype=torch.float32).reshape(3, 4),
              "2.weight": torch.tensor([[5., 1., 1.], [2., 3., 1.], [1., 1., 1.]]),
              "4.weight": torch.tensor([[4., 1., 1.], [1., 0.5, 1.]])}
    assert ticket_health(model, new, (4,)).dead_outputs == (1,)
    mask, rec = guard_round(model, prev, new, scores, (4,), "4.weight")
    assert rec["dead_classes"] == [1] and rec["restored_classes"] == [1] and "unresolved" not in rec
    assert rec["restored"] == rec["removed"] == 2 and rec["restored_layers"] == ["2.weight", "4.weight"]
    assert torch.nonzero(mask["2.weight"]).tolist() == [[0, 0], [1, 1]]
    assert torch.nonzero(mask["4.weight"]).tolist() == [[0, 0], [1, 1]]
    assert torch.nonzero(~mask["0.weight"][:2]).tolist() == [[0, 0], [0, 1]]
    assert mask.kept() == new.kept() and ticket_health(model, mask, (4,)).healthy


def test_guard_does_nothing_to_a_healthy_round():
    model = _mlp()
    prev = Mask({"0.weight": torch.ones(3, 4, dtype=torch.bool), "2.weight": torch.ones(2, 3, dtype=torch.bool)})
    scores = {"0.weight": torch.rand(3, 4), "2.weight": torch.rand(2, 3)}
    mask, rec = guard_round(model, prev, prev, scores, (4,), "2.weight")
    assert rec is None and mask is prev


# -- the guard in the pruning loop, on the reference fixture ---------------------------------------------------------

def test_guard_on_reference_px(ref_model, ref_inputs):
    """Raw px at 0.982 leaves 4 classes dead and 6 layers empty; guarded: none, at the same sparsity."""
    x, y = ref_inputs
    raw = px_hub.prune_with_record(copy.deepcopy(ref_model), [(x, y)], method="px", sparsity=SPARSITY,
                                   progress=False, guard=False)
    hr = raw.record["health"]
    assert (len(hr["dead_outputs"]), len(hr["empty_layers"])) == (4, 6)
    res = px_hub.prune_with_record(ref_model, [(x, y)], method="px", sparsity=SPARSITY, progress=False)
    h = res.record["health"]
    assert h["dead_outputs"] == [] and h["empty_layers"] == [] and h["healthy"]
    assert res.mask.kept() == raw.mask.kept()
    target_kept = res.mask.total() - int(SPARSITY * res.mask.total())
    assert abs(res.mask.sparsity() - SPARSITY) <= 1e-3 and res.mask.kept() <= target_kept
    g = res.record["guard"]
    assert g["enabled"] and g["restored"] == g["removed"] > 0 and g["rounds_changed"] == len(g["changes"])
    restored = {n for c in g["changes"] for n in c["restored_layers"]}
    assert {"blocks.7.conv1.weight", "blocks.8.conv2.weight"} <= restored
    assert {k for c in g["changes"] for k in c["restored_classes"]}
    assert all(c["restored"] == c["removed"] and "unresolved" not in c for c in g["changes"])
    assert [h.get("guard") for h in res.history if h.get("guard")] == [
        {k: v for k, v in c.items() if k != "round"} for c in g["changes"]]
    assert "restored" in describe_guard(g)
    json.dumps(res.record)


def test_guard_is_deterministic(ref_model, ref_inputs):
    x, y = ref_inputs
    runs = [px_hub.prune_with_record(copy.deepcopy(ref_model), [(x, y)], method="px", sparsity=SPARSITY,
                                     progress=False) for _ in range(2)]
    assert runs[0].record["guard"]["restored"] > 0
    assert runs[0].mask == runs[1].mask and runs[0].record["guard"] == runs[1].record["guard"]


# -- the CLI, the card and compare -----------------------------------------------------------------------------------

def _cli(argv):
    from px_hub.cli.main import main

    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_cli_prune_guard_flag_summary_px_config_and_card(tmp_path, capsys):
    base = ["prune", "--model", "cifar_resnet20", "--no-pretrained", "--data", "digits", "--examples-per-class", "2",
            "--method", "px", "--sparsity", "0.995", "--rounds", "4", "--quiet"]
    assert _cli([*base, "--out", str(tmp_path / "g")]) == 0
    out = capsys.readouterr().out
    assert "health: 10/10 outputs reachable, 0 empty" in out and "guard: on" in out
    assert _cli([*base, "--no-guard", "--out", str(tmp_path / "raw")]) == 0
    out_raw = capsys.readouterr().out
    assert "guard: off" in out_raw
    for name, enabled in (("g", True), ("raw", False)):
        cfg = json.loads((tmp_path / name / "px_config.json").read_text())
        assert cfg["guard"]["enabled"] is enabled and "dead_outputs" in cfg["health"]
        card = (tmp_path / name / "README.md").read_text()
        assert "## Ticket health" in card and "Outputs reachable from the input:" in card and "Guard:" in card
    cfg = json.loads((tmp_path / "g" / "px_config.json").read_text())
    assert cfg["health"]["healthy"]


def test_compare_table_shows_health():
    from px_hub.analysis.compare import comparison_table

    rec = {"guard": {"enabled": True, "restored": 3}}
    entry = {"rounds": 1, "sparsity": 0.9, "alive_outputs": 5, "outputs": 6, "pruning_seconds": 0.1, "record": rec,
             "health": {"outputs": 10, "dead_outputs": [2], "nearly_empty_layers": ["a"]},
             "layers": [{"layer": "a", "shape": [2, 3], "density": 0.5, "alive_outputs": 1, "outputs": 2,
                         "collapsed": False}]}
    table = comparison_table({"sparsity": 0.9, "seed": 0, "methods": {"px": entry}})
    assert "| dead classes | empty layers | nearly empty | guard restored |" in table
    assert "| px | 1 | 0.9000 | 1/10 | 0 | 1 | 3 |" in table


def test_offline_default_ticket_keeps_every_class(tmp_path, capsys):
    """`make prune` end to end (the CLI's offline default: EfficientNet-Lite0 with its ImageNet weights, px_2024,
    0.982, digits at 2 per class, 100 rounds): every class alive, at the exact target count. Raw, the last rounds
    would cut class 0 off (the guard restores 1 weight at round 86). With `px` as the default, before the guard
    grew paths through the trunk (rule 2b), it wrote 3 of 10 classes dead, unresolved from round 67."""
    assert _cli(["prune", "--out", str(tmp_path / "t"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "health: 10/10 outputs reachable, 0 empty" in out and "unresolved" not in out
    cfg = json.loads((tmp_path / "t" / "px_config.json").read_text())
    assert cfg["health"]["healthy"] and cfg["health"]["dead_outputs"] == [] and cfg["health"]["empty_layers"] == []
    assert not any(c.get("unresolved") for c in cfg["guard"]["changes"])
    assert cfg["method"] == "px_2024"
    assert cfg["kept"] == 60153 and abs(cfg["achieved_sparsity"] - 0.982) < 1e-3


class _ConstantFedConv(nn.Module):
    """A conv stem plus a positional encoding made by a conv on a fixed grid (as timm's EdgeNeXt / XCiT build
    theirs): that conv's input is a constant, not the model input."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.pos = nn.Conv2d(2, 4, 1)
        self.fc = nn.Linear(4, 3)
        self.register_buffer("grid", torch.linspace(0.1, 1.0, 2 * 8 * 8).reshape(1, 2, 8, 8))

    def forward(self, x):
        h = torch.relu(self.stem(x) + self.pos(self.grid))
        return self.fc(h.mean(dim=(2, 3)))


def test_a_layer_fed_by_constants_only_is_traced_not_a_crash():
    """Before: the guard's backward pass asked for the gradient of the positional conv's output, which did not
    require grad ('One of the differentiated Tensors does not require grad'), on edgenext, xcit and maxvit."""
    from px_hub.masking.health import connectivity

    torch.manual_seed(0)
    model = _ConstantFedConv()
    full = Mask.ones({n: p for n, p in model.named_parameters() if n.endswith("weight")})
    c = connectivity(model, full, (3, 8, 8))
    assert bool(c.output_reaches("pos.weight", model.pos.weight.shape).all())  # it does reach the logits
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    mask = px_hub.prune(model, [(x, y)], method="px_2024", sparsity=0.5, rounds=2, progress=False)
    assert ticket_health(model, mask, input_shape=(3, 8, 8)).healthy
