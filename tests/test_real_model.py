"""Real weights, offline: the built-in EfficientNet-Lite0 classifies real photos and is pruned with PX on real images;
the CLIP / DINO / MoCo loaders read checkpoints written here in each official key layout."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import px_hub
from px_hub.backbones import load_backbone
from px_hub.data import PruningSplit, eval_transform, load_image_dataset, make_batches
from px_hub.errors import IntegrityError

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {504, 967, 968}  # coffee mug, espresso, cup




@pytest.fixture(scope="module")
def lite0():
    return load_backbone("builtin:efficientnet_lite0")


def test_efficientnet_lite0_classifies_real_photos(lite0):
    import skimage.data

    tf = eval_transform(lite0.data_config)
    x = torch.stack([tf(Image.fromarray(skimage.data.chelsea())), tf(Image.fromarray(skimage.data.coffee()))])
    with torch.no_grad():
        p = lite0.model(x).softmax(-1)
    top = p.argmax(-1).tolist()
    assert top[0] in CAT_CLASSES and top[1] in COFFEE_CLASSES, top
    assert p[0, list(CAT_CLASSES)].sum() > 0.8 and p[1, sorted(COFFEE_CLASSES)].sum() > 0.8


@pytest.mark.slow
def test_px_prunes_lite0_on_real_images_reproducibly():
    ds = load_image_dataset("digits", "train")
    split = PruningSplit.create(ds, k=1, seed=0)
    masks = []
    for _ in range(2):
        lm = load_backbone("builtin:efficientnet_lite0", num_classes=10, seed=0)
        before = {k: v.clone() for k, v in lm.model.state_dict().items()}
        # digits, real pixels; 96 px keeps the CPU time down (the cost here is per round, not per pixel)
        batches = make_batches(ds, split.indices, eval_transform(dict(lm.data_config, input_size=(3, 96, 96))),
                               batch_size=10, progress=False)
        res = px_hub.prune_with_record(lm.model, batches, method="px", sparsity=0.956, rounds=1, seed=0,
                                       progress=False)
        assert all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())  # weights untouched
        masks.append(res.mask)
    a, b = masks
    assert a == b and a.sha256() == b.sha256()
    n = a.total()
    assert a.kept() == n - int(0.956 * n) or abs(a.density() - 0.044) < 1e-4
    dens = a.layer_density()
    weighted = [n for n, mod in lm.model.named_modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
    assert set(dens) == {f"{n}.weight" for n in weighted} and len(dens) == 50  # every conv + the classifier
    assert not a.collapsed_layers()
    print("\nlayer densities (EfficientNet-Lite0, PX 0.956, 1 round, digits k=1):")
    for rep in a.report():
        print(f"  {rep.name:32s} {rep.kept:8d}/{rep.total:8d}  density {rep.density:.4f}"
              f"  alive outputs {rep.alive_outputs}/{rep.outputs}")


# ---------------------------------------------------------------------------------------------------------------
# official checkpoint layouts, written here with random weights
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet50_state():
    import timm

    torch.manual_seed(0)
    m = timm.create_model("resnet50", pretrained=False)
    # float16 halves the files; fp16 → fp32 is exact, so equality checks below stay exact
    return {k: (v.half() if v.is_floating_point() else v) for k, v in m.state_dict().items()}


def _same_backbone(model, state):
    own = model.state_dict()
    return all(torch.equal(own[k], v.to(own[k].dtype)) for k, v in state.items() if not k.startswith("fc."))


def test_moco_v2_checkpoint_layout(tmp_path, resnet50_state):
    sd = {f"module.encoder_q.{k}": v for k, v in resnet50_state.items() if not k.startswith("fc.")}
    sd["module.encoder_q.fc.0.weight"] = torch.zeros(2048, 2048, dtype=torch.half)  # MoCo v2 MLP head
    sd["module.encoder_q.fc.2.weight"] = torch.zeros(128, 2048, dtype=torch.half)
    sd["module.encoder_k.conv1.weight"] = torch.ones(64, 3, 7, 7)
    sd["module.queue"] = torch.zeros(128, 16)
    path = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": sd}, path)
    m = load_backbone(f"moco:{path}", num_classes=10)
    assert _same_backbone(m.model, resnet50_state)
    assert m.model.fc.out_features == 10 and m.info["head_replaced"] and m.info["pretraining"] == "moco"
    assert m.info["architecture"] == "resnet50" and m.data_config["crop_pct"] == 0.875
    with pytest.raises(IntegrityError, match="encoder_q"):
        torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, tmp_path / "x.pth")
        load_backbone(f"moco:{tmp_path / 'x.pth'}")


def test_dino_checkpoint_layouts(tmp_path, resnet50_state):
    plain = {k: v for k, v in resnet50_state.items() if not k.startswith("fc.")}
    torch.save(plain, tmp_path / "dino_resnet50_pretrain.pth")
    m = load_backbone(f"dino:{tmp_path / 'dino_resnet50_pretrain.pth'}", num_classes=5)
    assert _same_backbone(m.model, resnet50_state) and m.model.fc.out_features == 5
    full = {"teacher": {f"module.backbone.{k}": v for k, v in plain.items()},
            "student": {"module.backbone.conv1.weight": torch.zeros(1)}}
    torch.save(full, tmp_path / "full.pth")
    m2 = load_backbone(f"dino:{tmp_path / 'full.pth'}", num_classes=5)
    assert torch.equal(m2.model.layer4[2].conv3.weight, m.model.layer4[2].conv3.weight)
    broken = dict(plain)
    broken.pop("layer2.0.downsample.0.weight")
    broken["layer9.weight"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(IntegrityError, match=r"1 missing \(first: layer2.0.downsample.0.weight\); "
                                             r"1 unexpected \(first: layer9.weight\)"):
        load_backbone(f"dino:{tmp_path / 'broken.pth'}")


def test_open_clip_image_tower(tmp_path):
    import open_clip

    # a tiny ModifiedResNet CLIP (same code path as RN50, 64 px) registered from a JSON config
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
           "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "PXTinyRN.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "cfg")
    torch.manual_seed(1)
    clip = open_clip.create_model("PXTinyRN").eval()
    state = {f"module.{k}": v for k, v in clip.state_dict().items()}  # DDP-saved open_clip checkpoint
    torch.save({"epoch": 1, "state_dict": state}, tmp_path / "clip.pt")
    m = load_backbone(f"open_clip:PXTinyRN={tmp_path / 'clip.pt'}", num_classes=4)
    assert m.info["library"] == "open_clip" and m.info["head_replaced"] and m.model.num_classes == 4
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        emb = clip.encode_image(x)
        assert torch.allclose(m.model.visual(x), emb, atol=1e-5)
        assert torch.allclose(m.model(x), m.model.head(emb), atol=1e-5)
    assert m.data_config == {"input_size": (3, 64, 64), "interpolation": "bicubic",
                             "mean": (0.48145466, 0.4578275, 0.40821073),
                             "std": (0.26862954, 0.26130258, 0.27577711), "crop_pct": 1.0, "crop_mode": "center"}
    torch.save({"text_projection": torch.zeros(2)}, tmp_path / "textonly.pt")
    with pytest.raises(px_hub.PxHubError, match="no 'visual.\\*' keys"):
        load_backbone(f"open_clip:PXTinyRN={tmp_path / 'textonly.pt'}")


def test_open_clip_rn50_architecture_and_preprocessing():
    m = load_backbone("open_clip:RN50", num_classes=10, pretrained=False)
    assert m.data_config["input_size"] == (3, 224, 224) and m.data_config["interpolation"] == "bicubic"
    assert np.allclose(m.data_config["mean"], (0.48145466, 0.4578275, 0.40821073))
    assert m.model.head.in_features == 1024 and m.model.get_classifier() is m.model.head
    assert sum(p.numel() for p in m.model.visual.parameters()) == 38_316_896
