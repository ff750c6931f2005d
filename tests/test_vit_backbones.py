"""Self-supervised and CLIP ViTs by name: DINO ViT-S/16, MoCo v3 ViT-S/16 and DINOv2 ViT-S/14 from fake checkpoints
in the official key layouts (a timm model's own tensors saved under the official names, then reloaded through
px-hub and compared), an open_clip ViT tower (a tiny config, random init), each pruned (magnitude), saved as a
ticket, loaded back, and pushed / pulled through the local Hub server like the CNNs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
from _hub_support import hub_env

import px_hub
from px_hub.backbones import load_backbone, remap_ssl_vit
from px_hub.errors import IntegrityError, UnknownNameError, UnsupportedModelError
from px_hub.hub import load_ticket, pull_ticket, push_ticket, save_ticket

TOKEN = "hf_" + "pxhubTestToken0123456789abcdef"


def _backbone_state(arch: str, seed: int, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, **kwargs)
    return {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}


def _same_backbone(model, state) -> bool:
    own = model.state_dict()
    return all(torch.equal(own[k], v) for k, v in state.items())


def _magnitude_ticket(loaded, folder, sparsity=0.9):
    side = loaded.data_config["input_size"][1]
    res = px_hub.prune_with_record(loaded.model, None, method="magnitude", sparsity=sparsity, progress=False,
                                   input_shape=(3, side, side))
    return save_ticket(folder, loaded.model, res.mask, res.record, data_config=loaded.data_config,
                       source=loaded.info), res.mask


@pytest.fixture(scope="module")
def dino_vits16(tmp_path_factory):
    """DINO's ViT-S/16 key layout: the plain backbone file and a full training checkpoint (teacher, backbone.
    prefix, DINO head)."""
    root = tmp_path_factory.mktemp("dino")
    state = _backbone_state("vit_small_patch16_224", seed=0)
    official = {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "norm.weight"}
    assert official <= set(state)
    torch.save(state, root / "dino_deitsmall16_pretrain.pth")
    full = {"teacher": {f"backbone.{k}": v for k, v in state.items()}
            | {"head.mlp.0.weight": torch.zeros(8, 384), "head.last_layer.weight_g": torch.ones(65536, 1)},
            "student": {"module.backbone.cls_token": torch.zeros(1)}, "epoch": 100}
    torch.save(full, root / "dino_deitsmall16_full.pth")
    return root, state


def test_dino_vit_s16_official_layouts(dino_vits16):
    root, state = dino_vits16
    m = load_backbone(f"dino:vit_small_patch16_224={root / 'dino_deitsmall16_pretrain.pth'}", num_classes=7)
    assert _same_backbone(m.model, state) and m.model.head.out_features == 7
    assert m.info["pretraining"] == "dino" and m.info["architecture"] == "vit_small_patch16_224"
    assert m.info["license"].startswith("apache-2.0") and m.model.blocks[0].attn.num_heads == 6
    assert m.data_config["mean"] == (0.485, 0.456, 0.406) and m.data_config["interpolation"] == "bicubic"
    m2 = load_backbone(f"dino:vit_small_patch16_224={root / 'dino_deitsmall16_full.pth'}", num_classes=7)
    assert _same_backbone(m2.model, state) and torch.equal(m2.model.head.weight, m.model.head.weight)
    broken = dict(state)
    broken.pop("blocks.3.attn.qkv.weight")
    torch.save(broken, root / "broken.pth")
    with pytest.raises(IntegrityError, match=r"1 missing \(first: blocks.3.attn.qkv.weight\)"):
        load_backbone(f"dino:vit_small_patch16_224={root / 'broken.pth'}")
    with pytest.raises(UnknownNameError, match="unknown timm architecture 'vit_smal'"):
        load_backbone(f"dino:vit_smal={root / 'broken.pth'}")
    with pytest.raises(UnsupportedModelError, match="VisionTransformer"):
        load_backbone(f"dino:convnext_atto={root / 'broken.pth'}")


def test_dino_vit_ticket_push_pull_and_stock_timm(hub, dino_vits16, tmp_path, monkeypatch):
    root, state = dino_vits16
    loaded = load_backbone(f"dino:vit_small_patch16_224={root / 'dino_deitsmall16_pretrain.pth'}", num_classes=10)
    folder, mask = _magnitude_ticket(loaded, tmp_path / "dino-vits16-px")
    assert mask.sparsity() == pytest.approx(0.9, abs=1e-4)
    m0, mask0, cfg0 = load_ticket(folder)
    assert mask0 == mask and _same_backbone(m0, {k: torch.where(mask[k], v, torch.zeros(())) if k in mask else v
                                                 for k, v in loaded.model.state_dict().items()})
    assert json.loads((folder / "config.json").read_text())["architecture"] == "vit_small_patch16_224"
    assert "dino" in (folder / "README.md").read_text()

    env = hub_env(monkeypatch, hub, tmp_path, token=TOKEN)
    push_ticket(folder, "alice/dino-vits16-px")
    pulled = pull_ticket("alice/dino-vits16-px", out_dir=tmp_path / "pulled")
    m1, mask1, _ = load_ticket(pulled)
    assert mask1 == mask0 and all(torch.equal(a, b) for a, b in zip(m0.state_dict().values(),
                                                                   m1.state_dict().values()))
    # stock timm from the Hub id, in a process that never imports px_hub
    out = tmp_path / "stock.safetensors"
    script = textwrap.dedent(f"""
        import sys, timm
        from safetensors.torch import save_file
        model = timm.create_model("hf-hub:alice/dino-vits16-px", pretrained=True)
        assert model.blocks[0].attn.num_heads == 6 and "px_hub" not in sys.modules
        save_file({{k: v.contiguous() for k, v in model.state_dict().items()}}, {str(out)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from safetensors.torch import load_file

    sd = load_file(str(out))
    own = m0.state_dict()
    assert sd.keys() == own.keys() and all(torch.equal(sd[k], own[k]) for k in sd)
    for k, m in mask0.items():
        assert (sd[k][~m] == 0).all(), k


def test_moco_v3_vit_s16_layout_keeps_its_12_heads(tmp_path):
    """MoCo v3 checkpoints: {"state_dict": {"module.base_encoder.*", "module.momentum_encoder.*",
    "module.predictor.*"}}; its ViT-S has 12 heads, recorded in the ticket's model_args for stock timm."""
    state = _backbone_state("vit_small_patch16_224", seed=1, num_heads=12)
    sd = {f"module.base_encoder.{k}": v for k, v in state.items()}
    sd |= {f"module.momentum_encoder.{k}": torch.zeros(1) for k in list(state)[:3]}
    sd |= {"module.base_encoder.head.0.weight": torch.zeros(4096, 384), "module.predictor.0.weight": torch.zeros(2)}
    path = tmp_path / "vit-s-300ep.pth.tar"
    torch.save({"epoch": 300, "arch": "vit_small", "state_dict": sd, "optimizer": {"lr": torch.tensor(0.1)}}, path)
    m = load_backbone(f"moco:vit_small_patch16_224={path}", num_classes=5)
    assert _same_backbone(m.model, state) and m.model.blocks[0].attn.num_heads == 12
    assert m.info["model_args"] == {"num_heads": 12} and m.info["license"].startswith("cc-by-nc-4.0")
    x = torch.randn(1, 3, 224, 224)
    ref = timm.create_model("vit_small_patch16_224", pretrained=False, num_heads=12, num_classes=5).eval()
    ref.load_state_dict(m.model.state_dict())
    with torch.no_grad():
        assert torch.allclose(ref(x), m.model(x), atol=1e-5)
    folder, mask = _magnitude_ticket(m, tmp_path / "moco-ticket", sparsity=0.8)
    assert json.loads((folder / "config.json").read_text())["model_args"]["num_heads"] == 12
    m2, mask2, _ = load_ticket(folder)
    assert mask2 == mask and m2.blocks[0].attn.num_heads == 12
    stock = timm.create_model(f"local-dir:{folder}", pretrained=True)  # stock timm reads model_args too
    assert stock.blocks[0].attn.num_heads == 12
    assert all(torch.equal(a, b) for a, b in zip(stock.state_dict().values(), m2.state_dict().values()))
    # MoCo v3 ResNet-50 uses the same module.base_encoder. prefix
    with pytest.raises(IntegrityError, match="module.base_encoder"):
        torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, tmp_path / "x.pth")
        load_backbone(f"moco:vit_small_patch16_224={tmp_path / 'x.pth'}")


def test_dinov2_vit_s14_official_layout(tmp_path):
    """DINOv2's files (dinov2_vits14_pretrain.pth): timm names incl. layer scale (ls1.gamma) plus a mask_token."""
    state = _backbone_state("vit_small_patch14_dinov2", seed=2)
    assert "blocks.0.ls1.gamma" in state and state["pos_embed"].shape == (1, 1370, 384)
    official = dict(state, mask_token=torch.zeros(1, 384))
    torch.save(official, tmp_path / "dinov2_vits14_pretrain.pth")
    assert "mask_token" not in remap_ssl_vit(official, "dino")
    m = load_backbone(f"dino:vit_small_patch14_dinov2={tmp_path / 'dinov2_vits14_pretrain.pth'}", num_classes=3)
    assert _same_backbone(m.model, state) and m.info["pretraining"] == "dinov2"
    assert m.info["license"].startswith("apache-2.0")
    folder, mask = _magnitude_ticket(m, tmp_path / "dinov2-ticket", sparsity=0.9)
    m2, mask2, _ = load_ticket(folder)
    assert mask2 == mask and m2.blocks[0].ls1.gamma.shape == (384,)
    own = m2.state_dict()
    assert all(torch.equal(own[k], torch.where(mask[k], v, torch.zeros(()))) if k in mask else torch.equal(own[k], v)
               for k, v in m.model.state_dict().items())


@pytest.fixture(scope="module")
def tiny_clip_vit(tmp_path_factory):
    import open_clip

    root = tmp_path_factory.mktemp("clipvit")
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8,
                                           "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    (root / "cfg").mkdir()
    (root / "cfg" / "PXTinyViT.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root / "cfg")
    torch.manual_seed(4)
    clip = open_clip.create_model("PXTinyViT").eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()}}, root / "clip.pt")
    return root, clip


def test_open_clip_vit_tower_prune_ticket_push(hub, tiny_clip_vit, tmp_path, monkeypatch):
    root, clip = tiny_clip_vit
    rnd = load_backbone("open_clip:PXTinyViT", num_classes=4, pretrained=False)
    assert type(rnd.model.visual).__name__ == "VisionTransformer" and rnd.model.head.in_features == 16
    m = load_backbone(f"open_clip:PXTinyViT={root / 'clip.pt'}", num_classes=4)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(m.model.visual(x), clip.encode_image(x), atol=1e-5)
    assert m.data_config["input_size"] == (3, 32, 32)
    folder, mask = _magnitude_ticket(m, tmp_path / "clip-vit-px", sparsity=0.8)
    # nn.MultiheadAttention's input projection is a bare Parameter; px-hub prunes it like a Linear weight
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in mask
    assert "visual.transformer.resblocks.0.mlp.c_fc.weight" in mask and "head.weight" in mask
    m1, mask1, _ = load_ticket(folder)
    assert mask1 == mask
    hub_env(monkeypatch, hub, tmp_path, token=TOKEN)
    push_ticket(folder, "alice/clip-vit-px")
    m2, mask2, _ = load_ticket(pull_ticket("alice/clip-vit-px", out_dir=tmp_path / "pulled"))
    assert mask2 == mask
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    with torch.no_grad():
        assert torch.equal(m1(x), m2(x))
