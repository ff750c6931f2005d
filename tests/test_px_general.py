"""PX's generalized path views (docs/px-generalized.md): bit-identical to the original PX on ReLU networks,
well-posed (float32 = float64) on every supported timm family, attention and squeeze-excite handled, and no
operation on a path passes silently."""
from __future__ import annotations

import copy
import re
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import px_hub
from px_hub.errors import UnsupportedModelError

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import _px_legacy  # noqa: E402,F401  (registers px_legacy_test: the PX implementation before this extension)


def _batch(n=4, size=64, seed=0, classes=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.arange(n) % classes


def _rel_err(a: dict, b: dict) -> float:
    """max over layers of max |a - b| relative to the layer's maximum (of b)."""
    out = 0.0
    for k in b:
        ref = b[k].double()
        scale = float(ref.abs().max())
        if scale > 0:
            out = max(out, float((a[k].double() - ref).abs().max()) / scale)
    return out


# -- ReLU networks: exactly the original PX -------------------------------------------------------------------------
@pytest.mark.parametrize("k_batch", ["one", "full"])
def test_relu_fixture_scores_are_bit_identical_to_the_original_px(k_batch, ref_model, ref_inputs):
    x, y = ref_inputs
    opts = {"k_batch": k_batch}
    new = px_hub.score(ref_model, [(x, y)], method="px", method_options=opts)
    old = px_hub.score(ref_model, [(x, y)], method="px_legacy_test", method_options=opts)
    assert set(new) == set(old)
    for k in old:
        assert torch.equal(new[k], old[k]), k


def test_relu_fixture_masks_after_rounds_are_identical_to_the_original_px(ref_model, ref_inputs):
    x, y = ref_inputs
    batches = [(x[:50], y[:50])]
    new = px_hub.prune(ref_model, batches, method="px", sparsity=0.9, rounds=3, progress=False)
    old = px_hub.prune(ref_model, batches, method="px_legacy_test", sparsity=0.9, rounds=3, progress=False)
    assert new == old


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
def test_relu_timm_scores_are_bit_identical_to_the_original_px(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=4).eval()
    x, y = _batch(4, 64)
    new = px_hub.score(model, [(x, y)], method="px")
    old = px_hub.score(model, [(x, y)], method="px_legacy_test")
    for k in old:
        assert torch.equal(new[k], old[k]), k


# -- well-posedness on every supported family -----------------------------------------------------------------------
FAMILIES = [
    ("test_resnet", {"zero_init_last": False}, 64),
    ("test_efficientnet", {}, 64),
    ("test_vit", {}, 160),
    ("mobilenetv3_small_050", {}, 64),
    ("regnetx_002", {"zero_init_last": False}, 64),
    ("regnety_002", {"zero_init_last": False}, 64),
    ("convnext_atto", {}, 64),
    ("deit_tiny_patch16_224", {"img_size": 64}, 64),
    ("swin_tiny_patch4_window7_224", {"img_size": 64, "window_size": 2, "embed_dim": 24, "depths": (1, 1, 2, 1),
                                      "num_heads": (1, 2, 2, 4)}, 64),
    # Z1 cancels at random init (condition 3.5e5): A and J rerun in float64 (px.Z1_CANCELLATION_LIMIT); 0.16 before
    ("efficientnet_b0", {}, 64),
]


def _f32_f64(name, kwargs, size, gate="ratio"):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=4, **kwargs).eval()
    x, y = _batch(4, size)
    opts = {"gate": gate}
    s32 = px_hub.score(model, [(x, y)], method="px", method_options=opts)
    s64 = px_hub.score(copy.deepcopy(model).double(), [(x.double(), y)], method="px", method_options=opts)
    return s32, s64


@pytest.mark.parametrize("name,kwargs,size", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_float32_and_float64_round1_scores_agree(name, kwargs, size, fixture_threads):
    s32, s64 = _f32_f64(name, kwargs, size)
    assert all(torch.isfinite(v).all() and (v >= 0).all() for v in s32.values())
    # every prunable layer gets scores (no layer is silently left at zero)
    assert all(float(v.max()) > 0 for v in s64.values()), [k for k, v in s64.items() if float(v.max()) == 0]
    assert _rel_err(s32, s64) <= 1e-4


@pytest.mark.parametrize("name,kwargs,size", [FAMILIES[1], FAMILIES[6]], ids=["test_efficientnet", "convnext_atto"])
def test_derivative_gate_is_well_posed_too(name, kwargs, size):
    s32, s64 = _f32_f64(name, kwargs, size, gate="derivative")
    assert _rel_err(s32, s64) <= 1e-4


def test_ill_conditioned_z1_reruns_a_and_j_in_float64_and_says_so():
    """The fallback is taken where Z1 cancels (efficientnet_b0 at random init) and nowhere else (ReLU nets keep
    their speed and their bit-identical scores); the record says which precision and condition each round had."""
    notes = {}
    for name in ("efficientnet_b0", "resnet18"):
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=4).eval()
        res = px_hub.prune_with_record(model, [_batch(4, 64)], method="px", sparsity=0.5, rounds=1, progress=False)
        notes[name] = res.record["method_notes"]["px"]
    assert notes["efficientnet_b0"]["z1_precision"] == "float64" and notes["efficientnet_b0"]["z1_condition"] > 1e4
    assert notes["resnet18"]["z1_precision"] == "float32" and notes["resnet18"]["z1_condition"] < 84


def test_precision_float64_covers_what_the_cancellation_rule_cannot_see():
    """mobilenetv2_050 (64 px, batch 4, seed 0): Z1's condition is 5.5, so the rule keeps float32, yet a ReLU6 gate
    sits at its step and float32 scores are 2.5e-4 of a layer's maximum from float64's (the coverage table's row;
    measured at 1 thread: the flip depends on the float32 summation order).
    ``precision="float64"`` runs A and J in float64 every round and agrees to ~1e-6."""
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv2_050", pretrained=False, num_classes=4).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, 64, 64, generator=g), torch.arange(4) % 4
    s64 = px_hub.score(copy.deepcopy(model).double(), [(x.double(), y)], method="px")
    exact = px_hub.score(model, [(x, y)], method="px", method_options={"precision": "float64"})
    assert _rel_err(exact, s64) <= 1e-5
    res = px_hub.prune_with_record(model, [(x, y)], method="px", sparsity=0.5, rounds=1, progress=False,
                                   method_options={"precision": "float64"})
    assert res.record["method_notes"]["px"]["z1_precision"] == "float64"
    with pytest.raises(px_hub.errors.InvalidArgumentError, match="precision must be one of auto, float64"):
        px_hub.score(model, [(x, y)], method="px", method_options={"precision": "float16"})


def test_gate_option_is_validated():
    model = timm.create_model("test_resnet", num_classes=4).eval()
    with pytest.raises(px_hub.errors.InvalidArgumentError, match="gate"):
        px_hub.score(model, [_batch(2, 32)], method="px", method_options={"gate": "tangent"})


def test_ratio_and_derivative_gates_of_gelu():
    from px_hub.methods.views import smooth_gate

    u = torch.tensor([-3.0, -0.5, 0.0, 1e-8, 0.5, 3.0], dtype=torch.float64)
    ratio = smooth_gate(F.gelu, u, "ratio")
    phi = 0.5 * (1 + torch.erf(u / 2 ** 0.5))  # GELU(u)/u = Φ(u), and Φ(0) = 1/2 = GELU'(0)
    assert torch.allclose(ratio, phi, atol=1e-12)
    deriv = smooth_gate(F.gelu, u, "derivative")
    assert torch.allclose(deriv, phi + u * torch.exp(-u * u / 2) / (2 * torch.pi) ** 0.5, atol=1e-12)
    # the ratio gate reconstructs the activation exactly: u * g = phi(u)
    assert torch.allclose(u * smooth_gate(F.silu, u, "ratio"), F.silu(u), atol=1e-15)


# -- attention, squeeze-excite, normalizations: handled, and reported ----------------------------------------------
def test_relu_vit_layernorm_and_attention_are_handled_not_silently_passed():
    from px_hub.methods.views import GateRecorder

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=4,
                              act_layer=nn.ReLU).eval()
    x, y = _batch(2, 32)
    rec = GateRecorder(model=model)
    with rec, torch.no_grad():
        model(rec.mark(x.clone()))
    n_relu = sum(isinstance(m, nn.ReLU) for m in model.modules())
    assert len(rec.gates) == n_relu + 2  # + one attention-probability gate per block
    result = px_hub.prune_with_record(model, [(x, y)], method="px", sparsity=0.5, rounds=1, progress=False)
    notes = result.record["method_notes"]["px"]
    assert notes["gates_in_network"]
    # the Q and K rows of each fused qkv only shape the attention gate: 2/3 of qkv is scored straight-through
    for i in range(2):
        assert abs(notes["gate_scored"][f"blocks.{i}.attn.qkv.weight"] - 2 / 3) < 1e-6
    assert not any("mlp" in k for k in notes["gate_scored"])
    s = px_hub.score(model, [(x, y)], method="px")
    assert all(float(v.max()) > 0 for v in s.values())


def test_open_clip_attention_pool_is_handled():
    from open_clip.modified_resnet import ModifiedResNet

    torch.manual_seed(0)
    model = ModifiedResNet(layers=(1, 1, 1, 1), output_dim=4, heads=2, image_size=64, width=8).eval()
    for m in model.modules():  # open_clip zero-initializes the last BatchNorm scale of each block
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
    x, y = _batch(4, 64)
    result = px_hub.prune_with_record(model, [(x, y)], method="px", sparsity=0.5, rounds=1, progress=False)
    gate_scored = result.record["method_notes"]["px"]["gate_scored"]
    assert set(gate_scored) == {"attnpool.q_proj.weight", "attnpool.k_proj.weight"}
    assert all(f == 1.0 for f in gate_scored.values())
    s32 = px_hub.score(model, [(x, y)], method="px")
    s64 = px_hub.score(copy.deepcopy(model).double(), [(x.double(), y)], method="px")
    assert all(float(v.max()) > 0 for v in s32.values())
    assert _rel_err(s32, s64) <= 1e-4


def test_squeeze_excite_convs_are_scored_through_their_gate():
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=4).eval()
    result = px_hub.prune_with_record(model, [_batch(2, 64)], method="px", sparsity=0.5, rounds=1, progress=False)
    gate_scored = result.record["method_notes"]["px"]["gate_scored"]
    se = [n for n, _ in model.named_parameters() if ".se." in n and n.endswith("weight")]
    assert se and set(gate_scored) == set(se)


def test_layer_norm_in_k_and_j_is_a_detached_positive_scaling():
    from px_hub.methods.views import Linearizer

    ln = nn.LayerNorm(4)
    with torch.no_grad():
        ln.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        ln.bias.fill_(0.5)
    lin = Linearizer()
    u = torch.ones(1, 4, requires_grad=True)  # the degenerate input: a constant
    with lin:
        out = ln(lin.mark(u * 1))
    assert torch.equal(out.detach(), torch.tensor([[1.5, 2.5, 3.5, 4.5]]))  # not beta: no centering
    out.sum().backward()
    assert torch.equal(u.grad, torch.tensor([[1.0, 2.0, 3.0, 4.0]]))  # statistic detached: d/du = gamma / rms(u)


# -- no silent pass ------------------------------------------------------------------------------------------------
class _Odd(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.conv, self.fc, self.op = nn.Conv2d(3, 4, 3), nn.Linear(4, 2), op

    def forward(self, x):
        return self.fc(self.op(self.conv(x)).mean((2, 3)))


class _ErfBlock(nn.Module):
    def forward(self, x):
        return torch.erf(x)


class _Square(nn.Module):
    def forward(self, x):
        return x ** 2  # an operator: torch turns a TypeError raised inside it into "unsupported operand"


class _ManualLayerNorm(nn.Module):
    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return (x - u) / torch.sqrt(s + 1e-6)


@pytest.mark.parametrize("op,name,module", [
    (_ErfBlock(), "erf", "op (_ErfBlock)"),
    (nn.Softplus(), "softplus", "op (Softplus)"),
    (_ManualLayerNorm(), "pow", "op (_ManualLayerNorm)"),
    (_Square(), "pow", "op (_Square)"),
])
def test_unknown_operation_on_a_path_is_refused_by_name(op, name, module):
    model = _Odd(op).eval()
    with pytest.raises(UnsupportedModelError, match=re.escape(f"`{name}` on a path in module {module}")):
        px_hub.score(model, [_batch(2, 8)], method="px")


def test_exp_written_in_forward_is_refused():
    class ExpNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc2(self.fc1(x.flatten(1)).exp())

    with pytest.raises(UnsupportedModelError, match=r"`exp` on a path in module <root> \(ExpNet\)"):
        px_hub.score(ExpNet(), [(torch.randn(2, 2, 2, 2), torch.tensor([0, 1]))], method="px")


def test_a_product_of_paths_used_as_a_path_is_refused():
    class Bilinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            x = x.flatten(1)
            return self.fc(self.a(x) * self.b(x))

    with pytest.raises(UnsupportedModelError, match="logit"):
        px_hub.score(Bilinear(), [(torch.randn(2, 8), torch.tensor([0, 1]))], method="px")


# -- forward outputs --------------------------------------------------------------------------------------------
class _DictOut(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.conv, self.fc, self.kind = nn.Conv2d(3, 4, 3), nn.Linear(4, 2), kind

    def forward(self, x):
        logits = self.fc(F.relu(self.conv(x)).mean((2, 3)))
        if self.kind == "dict":
            return {"logits": logits, "features": x}
        if self.kind == "model_output":
            from transformers.modeling_outputs import ImageClassifierOutput

            return ImageClassifierOutput(logits=logits)
        return (logits,)


@pytest.mark.parametrize("method", ["px", "snip", "synflow", "grasp"])
@pytest.mark.parametrize("kind", ["dict", "model_output"])
def test_model_output_and_dict_forwards_are_scored_on_their_logits(kind, method):
    torch.manual_seed(0)
    plain = _DictOut("tensor_via_dict")
    model = _DictOut(kind)
    model.load_state_dict(plain.state_dict())
    x, y = _batch(2, 8, classes=2)
    s = px_hub.score(model, [(x, y)], method=method)
    assert set(s) == {"conv.weight", "fc.weight"} and all(torch.isfinite(v).all() for v in s.values())


def test_a_forward_without_logits_is_a_clear_error():
    with pytest.raises(UnsupportedModelError, match="tuple, not logits"):
        px_hub.score(_DictOut("tuple"), [_batch(2, 8, classes=2)], method="px")


@pytest.mark.parametrize("method", ["px", "px_2024"])
def test_multihead_attention_input_projection_is_prunable_and_scored(method):
    """Both PX computations find nn.MultiheadAttention's packed input projection (px_2024 used to look for a
    ``weight`` attribute there and stopped with a KeyError on open_clip ViT towers)."""
    class Tiny(nn.Module):  # open_clip's ViT blocks use nn.MultiheadAttention
        def __init__(self):
            super().__init__()
            self.conv, self.ln, self.fc = nn.Conv2d(3, 16, 4, 4), nn.LayerNorm(16), nn.Linear(16, 4)
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

        def forward(self, x):
            t = self.conv(x).flatten(2).transpose(1, 2)
            h = self.ln(t)
            t = t + self.attn(h, h, h, need_weights=False)[0]
            return self.fc(t.mean(1))

    torch.manual_seed(0)
    model = Tiny().eval()
    x, y = _batch(4, 32)
    result = px_hub.prune_with_record(model, [(x, y)], method=method, sparsity=0.5, rounds=1, progress=False)
    assert set(result.mask) == {"conv.weight", "attn.in_proj_weight", "attn.out_proj.weight", "fc.weight"}
    if method == "px_2024":  # K differentiates through every weight, the input projection's included
        assert all(float(v.max()) > 0 for v in px_hub.score(model, [(x, y)], method=method).values())
        return
    assert abs(result.record["method_notes"]["px"]["gate_scored"]["attn.in_proj_weight"] - 2 / 3) < 1e-6
    s32 = px_hub.score(model, [(x, y)], method="px")
    s64 = px_hub.score(copy.deepcopy(model).double(), [(x.double(), y)], method="px")
    assert all(float(v.max()) > 0 for v in s32.values()) and _rel_err(s32, s64) <= 1e-4


@pytest.mark.parametrize("method", ["px", "px_2024"])
def test_zero_initialized_head_is_refused_with_the_fix(method):
    """timm's MLP-Mixer zero-initializes its head: every PX path ends there, so every score would be exactly 0 (the
    mask emptied at round 1). PX refuses in one line naming the head and the fix; with a drawn head it scores."""
    from timm.models.mlp_mixer import MlpMixer

    torch.manual_seed(0)
    model = MlpMixer(num_classes=4, img_size=32, patch_size=8, num_blocks=2, embed_dim=32).eval()
    assert not bool(model.head.weight.any())
    with pytest.raises(px_hub.errors.UnsupportedModelError, match=r"head\.weight is all zeros.*synflow"):
        px_hub.score(model, [_batch(4, 32)], method=method)
    torch.nn.init.trunc_normal_(model.head.weight, std=0.02)
    scores = px_hub.score(model, [_batch(4, 32)], method=method)
    assert all(float(v.max()) > 0 for v in scores.values())
