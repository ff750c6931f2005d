"""transformers tickets through the local Hub server (huggingface_hub's real client): push → pull with identical
tensors and bytes, px_hub.from_pretrained, the bare repo id routed to transformers, and stock
``AutoModelForImageClassification.from_pretrained("user/repo")`` (HF_ENDPOINT at the server) in a process that
never imports px_hub."""
from __future__ import annotations

import pytest
import torch
from _transformers_support import image_side, stock_load, tiny_model

import px_hub
from px_hub.backbones import load_backbone
from px_hub.hub import from_pretrained, load_ticket, pull_ticket, push_ticket, save_ticket

TOKEN = "hf_" + "pxhubTestToken0123456789abcdef"
FAMILIES = ["vit", "resnet"]  # ViT: file names differ from state-dict names; ResNet: they are the same


def _ticket(folder, family):
    src = folder.parent / f"src-{folder.name}"
    tiny_model(family, seed=3).save_pretrained(src)
    loaded = load_backbone(str(src), num_classes=5)
    side = image_side(family)
    res = px_hub.prune_with_record(loaded.model, None, method="magnitude", sparsity=0.9, progress=False,
                                   input_shape=(3, side, side))
    return save_ticket(folder, loaded.model, res.mask, res.record, data_config=loaded.data_config,
                       source=loaded.info)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family", FAMILIES)
def test_push_pull_and_stock_from_pretrained(hub, env, tmp_path, family):
    folder = _ticket(tmp_path / f"tf-{family}", family)
    repo = f"alice/tiny-{family}-px"
    push_ticket(folder, repo)
    remote = hub.files(repo)
    assert remote["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert "preprocessor_config.json" in remote and "library_name: transformers" in remote["README.md"].decode()
    assert f'from_pretrained("{repo}")' in remote["README.md"].decode()  # the card's snippet names the repo

    m0, mask0, _ = load_ticket(folder)
    pulled = pull_ticket(repo, out_dir=tmp_path / "pulled")  # compact copy + mask; dense file rebuilt
    assert (pulled / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    m1, mask1, cfg1 = load_ticket(pulled)
    assert mask1 == mask0 and _same(m0.state_dict(), m1.state_dict())
    assert cfg1["ticket"]["repo_id"] == repo
    assert _same(m0.state_dict(), from_pretrained(repo).state_dict())
    # a bare repo id is routed by its config.json to the transformers loader (the pushed ticket, as a model)
    routed = load_backbone(repo)
    assert routed.info["library"] == "transformers" and _same(m0.state_dict(), routed.model.state_dict())

    sd = stock_load({family: repo}, tmp_path / "stock", env=env)[family]
    assert _same(sd, m0.state_dict())
    for k, m in mask0.items():
        assert (sd[k][~m] == 0).all() and int((sd[k] != 0).sum()) <= int(m.sum()), k
