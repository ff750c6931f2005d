"""transformers image classifiers: the torchvision fix on transformers' import path, the loader (save_pretrained
folders, routing of bare repo ids), pruning a PreTrainedModel, and tickets in transformers' own layout that stock
``AutoModelForImageClassification.from_pretrained`` loads with the zeros in place."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from _transformers_support import image_side, stock_load, tiny_model

import px_hub
from px_hub.backbones import load_backbone
from px_hub.errors import PxHubError, UnknownNameError, WeightsUnavailableError
from px_hub.hub import load_ticket, save_ticket
from px_hub.masking.targets import classifier_module

FAMILIES = ["resnet", "vit", "convnext", "swin", "dinov2"]
HEADS = {"resnet": "classifier.1", "vit": "classifier", "convnext": "classifier", "swin": "classifier",
         "dinov2": "classifier"}


def test_transformers_import_path_works_without_px_hub():
    """In a process that never imports px_hub, transformers probes torchvision with find_spec when it is
    imported and imports it much later; the environment's hook (.pth) must cover that path, once, and keep the
    op definitions alive through garbage collection."""
    script = textwrap.dedent("""
        import gc, sys
        hooks = [f for f in sys.meta_path if type(f).__name__ == "_TorchvisionImportHook"]
        assert len(hooks) == 1, hooks
        import transformers.models.convnext.modeling_convnext as m
        gc.collect()
        import torchvision  # noqa: F401
        from transformers import ConvNextConfig
        model = m.ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2))
        import transformers.image_utils  # noqa: F401  (imports torchvision.transforms)
        assert "px_hub" not in sys.modules
        print("ok", type(model).__name__)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(sys.executable))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ok ConvNextForImageClassification" in proc.stdout


@pytest.mark.parametrize("family", FAMILIES)
def test_classifier_detection(family):
    model = tiny_model(family)
    name, head = classifier_module(model)
    assert name == HEADS[family] and isinstance(head, torch.nn.Linear) and head.out_features == 4
    targets = px_hub.PruneTargets(exclude_classifier=True).select(model)
    assert f"{name}.weight" not in targets and len(targets) >= 2


def test_loader_folder_head_and_data_config(tmp_path):
    src = tmp_path / "src"
    tiny_model("vit").save_pretrained(src)
    m = load_backbone(str(src), num_classes=3, seed=7)
    assert type(m.model).__name__ == "ViTForImageClassification" and not m.model.training
    assert m.model.classifier.out_features == 3 and m.model.config.num_labels == 3
    assert m.info["library"] == "transformers" and m.info["head_replaced"] and m.info["architecture"] == \
        "ViTForImageClassification" and m.info["source"] == "folder"
    # the backbone is the checkpoint's, the head is new (seeded)
    ref = tiny_model("vit")
    assert torch.equal(m.model.vit.embeddings.patch_embeddings.projection.weight,
                       ref.vit.embeddings.patch_embeddings.projection.weight)
    again = load_backbone(f"transformers:{src}", num_classes=3, seed=7)
    assert torch.equal(again.model.classifier.weight, m.model.classifier.weight)
    # no preprocessor_config.json: the model type's processor defaults at the config's image size
    assert m.data_config["input_size"] == (3, 32, 32) and m.data_config["mean"] == (0.5, 0.5, 0.5)
    # with one: its mean/std/size in timm's keys
    (src / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ConvNextImageProcessor", "size": {"shortest_edge": 32}, "crop_pct": 0.5,
        "resample": 3, "image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6]}))
    m2 = load_backbone(str(src))
    assert m2.data_config == {"input_size": (3, 32, 32), "interpolation": "bicubic", "mean": (0.1, 0.2, 0.3),
                              "std": (0.4, 0.5, 0.6), "crop_pct": 0.5, "crop_mode": "center"}
    assert m2.model.config.num_labels == 4 and not m2.info["head_replaced"]
    out = m2.model(torch.randn(2, 3, 32, 32))
    assert out.logits.shape == (2, 4)


def test_loader_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnknownNameError, match="transformers:nobody/tiny-vit-x .*hf-hub:nobody/tiny-vit-x"):
        load_backbone("nobody/tiny-vit-x")
    with pytest.raises(WeightsUnavailableError, match="not in the local Hub cache"):
        load_backbone("transformers:nobody/tiny-vit-x")
    with pytest.raises(UnknownNameError, match="transformers:OWNER/NAME"):
        load_backbone("transformers:not a repo")
    (tmp_path / "plain").mkdir()
    with pytest.raises(WeightsUnavailableError, match="save_pretrained"):
        load_backbone(f"transformers:{tmp_path / 'plain'}")


def test_cli_routes_a_cached_transformers_repo(tmp_path, monkeypatch):
    """A bare OWNER/NAME whose config.json is in the Hub cache goes to the transformers loader (offline)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    snap = cache / "models--someone--tiny-resnet" / "snapshots" / ("0" * 40)
    tiny_model("resnet").save_pretrained(snap)
    (cache / "models--someone--tiny-resnet" / "refs").mkdir()
    (cache / "models--someone--tiny-resnet" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    m = load_backbone("someone/tiny-resnet", num_classes=2)
    assert m.info["library"] == "transformers" and m.info["id"] == "someone/tiny-resnet"
    assert m.info["revision"] == "0" * 40 and m.model.classifier[1].out_features == 2


def test_px_prunes_transformers_resnet():
    """A ModelOutput forward gives its logits to the scorer: px runs on a transformers ResNet (ReLU + BN)."""
    model = tiny_model("resnet")
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 4, (4,), generator=g))]
    res = px_hub.prune_with_record(model, batches, method="px", sparsity=0.8, rounds=2, progress=False)
    assert res.mask.sparsity() == pytest.approx(0.8, abs=1e-3)
    assert "classifier.1.weight" in res.mask and not res.mask.collapsed_layers()


@pytest.mark.parametrize("family", ["vit", "swin"])
def test_synflow_runs_on_transformers_models(family):
    model = tiny_model(family).double()
    res = px_hub.prune_with_record(model, None, method="synflow", sparsity=0.5, rounds=2, progress=False,
                                   input_shape=(3, image_side(family), image_side(family)))
    assert res.mask.sparsity() == pytest.approx(0.5, abs=1e-3)


@pytest.fixture(scope="module")
def tickets(tmp_path_factory):
    """One magnitude ticket per family, from a save_pretrained folder loaded with a new 3-class head."""
    root = tmp_path_factory.mktemp("tf-tickets")
    out = {}
    for family in FAMILIES:
        src = root / f"src-{family}"
        tiny_model(family, seed=1).save_pretrained(src)
        loaded = load_backbone(str(src), num_classes=3)
        side = image_side(family)
        res = px_hub.prune_with_record(loaded.model, None, method="magnitude", sparsity=0.8, progress=False,
                                       input_shape=(3, side, side))
        out[family] = (save_ticket(root / f"ticket-{family}", loaded.model, res.mask, res.record,
                                   data_config=loaded.data_config, source=loaded.info), loaded, res.mask)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_ticket_is_in_transformers_layout(tickets, family):
    folder, loaded, mask = tickets[family]
    names = {p.name for p in folder.iterdir()}
    assert names >= {"config.json", "model.safetensors", "preprocessor_config.json", "mask.safetensors",
                     "model.compact.safetensors", "px_config.json", "README.md", "density.png"}
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == family and cfg["architectures"] == [type(loaded.model).__name__]
    assert len(cfg["id2label"]) == 3
    # the weights file has exactly the keys save_pretrained writes for this model
    ref = folder.parent / f"save-pretrained-{family}"
    loaded.model.save_pretrained(ref)
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as a, safe_open(str(ref / "model.safetensors"), "pt") as b:
        assert set(a.keys()) == set(b.keys()) and a.metadata().get("format") == "pt"
    card = (folder / "README.md").read_text()
    assert "library_name: transformers" in card and "AutoModelForImageClassification.from_pretrained" in card
    assert "\n- timm\n" not in card
    px_cfg = json.loads((folder / "px_config.json").read_text())
    assert px_cfg["model"]["library"] == "transformers" and "transformers" in px_cfg["versions"]
    # px-hub loads it back: mask verified, same tensors, data config preserved, from every entry point
    model, mask2, _ = load_ticket(folder)
    assert mask2 == mask
    sd, own = model.state_dict(), loaded.model.state_dict()
    assert sd.keys() == own.keys()
    for k, m in mask.items():
        assert torch.equal(sd[k], torch.where(m, own[k], torch.zeros(()))), k
    via_backbone = load_backbone(str(folder))
    assert via_backbone.mask == mask and via_backbone.info["library"] == "transformers"
    assert via_backbone.data_config["input_size"] == loaded.data_config["input_size"]
    assert via_backbone.data_config["mean"] == loaded.data_config["mean"]
    assert torch.equal(px_hub.from_pretrained(str(folder)).state_dict()[next(iter(mask))], sd[next(iter(mask))])


def test_stock_transformers_loads_tickets_with_zeros(tickets, tmp_path):
    """Every family's ticket loads in stock transformers (a process that never imports px_hub): identical tensors,
    pruned weights exactly zero."""
    loaded = stock_load({f: str(tickets[f][0]) for f in FAMILIES}, tmp_path / "stock")
    for family in FAMILIES:
        folder = tickets[family][0]
        model, mask, _ = load_ticket(folder)
        own = model.state_dict()
        sd = loaded[family]
        assert sd.keys() == own.keys(), family
        assert all(torch.equal(sd[k], own[k]) for k in sd), family
        for k, m in mask.items():
            assert (sd[k][~m] == 0).all(), (family, k)
        x = torch.randn(2, 3, image_side(family), image_side(family))
        with torch.no_grad():
            assert model(x).logits.shape == (2, 3)


def test_ticket_refuses_a_non_one_to_one_weight_conversion(monkeypatch):
    from px_hub.errors import UnsupportedModelError
    from px_hub.hub import layouts

    model = tiny_model("vit")
    import transformers.core_model_loading as cml

    monkeypatch.setattr(cml, "revert_weight_conversion", lambda m, sd: {"merged": torch.zeros(1)})
    with pytest.raises(UnsupportedModelError, match="one-to-one"):
        layouts.weights_metadata(model)
    assert isinstance(UnsupportedModelError("x"), PxHubError)


def test_cli_prunes_a_save_pretrained_folder_and_explains_an_unknown_repo(tmp_path, capsys, monkeypatch):
    from px_hub.cli.main import main

    src = tmp_path / "tiny-convnext"
    tiny_model("convnext").save_pretrained(src)
    out = tmp_path / "ticket"
    code = main(["prune", "--model", str(src), "--data", "digits", "--method", "magnitude",
                 "--examples-per-class", "1", "--quiet", "--sparsity", "0.5", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "convnext" and len(cfg["id2label"]) == 10  # digits: 10 classes, new head
    assert json.loads((out / "px_config.json").read_text())["data"]["dataset"] == "digits"
    capsys.readouterr()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["prune", "--model", "nobody/tiny-vit-x", "--data", "digits", "--method", "magnitude",
                 "--examples-per-class", "1", "--quiet", "--out", str(tmp_path / "t2")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "transformers:nobody/tiny-vit-x" in err, err
    assert not (tmp_path / "t2").exists()


def test_update_ticket_keeps_the_transformers_layout(tickets, tmp_path):
    """Fine-tuned weights written back (update_ticket) stay in save_pretrained's key names, zeros in place."""
    import shutil

    from px_hub.hub import update_ticket

    folder = tmp_path / "vit-ticket"
    shutil.copytree(tickets["vit"][0], folder)
    model, mask, _ = load_ticket(folder)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.25)
    mask.apply_(model)
    update_ticket(folder, model=model)
    m2, mask2, _ = load_ticket(folder)
    assert mask2 == mask and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                                   m2.state_dict().values()))
    sd = stock_load({"vit": str(folder)}, tmp_path / "stock")["vit"]
    assert all(torch.equal(sd[k], v) for k, v in m2.state_dict().items())
