"""px_hub.Ticket (from_pretrained / save_pretrained / push_to_hub) through the local Hub server with the real
huggingface_hub client: the mask, tensors and spec survive a round trip, revisions, the standard Hub cache only,
tampered tickets refused, px_hub.from_pretrained keeps pruned weights at zero while training, and the card's
loading snippet for architectures stock timm does not know."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import timm
import torch

import px_hub
from px_hub import Mask, Ticket
from px_hub.errors import IntegrityError, InvalidArgumentError, OutputExistsError
from px_hub.hub import load_ticket, save_ticket

TOKEN = "hf_" + "pxhubTicketToken0123456789abcd"


def _ticket(folder: Path, arch: str = "test_resnet", sparsity: float = 0.9, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, num_classes=5)
    g = torch.Generator().manual_seed(seed)
    mask = Mask.from_scores({n: torch.rand(p.shape, generator=g) for n, p in model.named_parameters()
                             if p.dim() > 1}, sparsity)
    return save_ticket(folder, model, mask, {"method": "random", "sparsity": sparsity, "seed": seed},
                       source={"source": "hf-hub", "id": f"timm/{arch}", "library": "timm", "license": "apache-2.0"})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _ticket(tmp_path_factory.mktemp("tk") / "api-ticket")


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_from_folder_holds_model_mask_spec(folder):
    t = Ticket.from_pretrained(folder)
    model, mask, cfg = load_ticket(folder)
    assert _same(t.model, model) and t.mask == mask and t.px_config == cfg
    assert t.spec is not None and t.spec.method == "random" and t.spec.sparsity == 0.9
    assert t.data_config["input_size"] == tuple(model.pretrained_cfg["input_size"])
    assert t.folder == folder and t.repo_id is None and not t.model.training
    assert "sparsity=0.9" in repr(t)
    with pytest.raises(InvalidArgumentError, match="for Hub repos only"):
        Ticket.from_pretrained(folder, revision="v1")


def test_round_trip_through_the_hub_keeps_mask_and_spec(hub, env, folder, tmp_path):
    t0 = Ticket.from_pretrained(folder)
    url = t0.push_to_hub("alice/api-round-trip")
    head = hub.head("alice/api-round-trip")
    assert url.endswith(f"/commit/{head}") and hub.n_commits("alice/api-round-trip") == 2  # create + ONE commit
    assert hub.files("alice/api-round-trip")["model.safetensors"] == (folder / "model.safetensors").read_bytes()

    t1 = Ticket.from_pretrained("alice/api-round-trip")
    assert _same(t0.model, t1.model) and t1.mask == t0.mask
    assert t1.spec.hash() == t0.spec.hash() and t1.data_config == t0.data_config
    assert (t1.repo_id, t1.commit) == ("alice/api-round-trip", head)
    # read where huggingface_hub stored it: the standard cache, no second copy beside it
    cache = Path(env["HF_HUB_CACHE"]).resolve()
    assert t1.folder.resolve().is_relative_to(cache)
    assert not (Path(env["HF_HOME"]) / "px-hub").exists()
    assert not (t1.folder / "model.safetensors").exists()  # the compact copy + mask were enough

    saved = t1.save_pretrained(tmp_path / "saved")  # the same ticket format, byte for byte weights and mask
    for name in ("model.safetensors", "model.compact.safetensors", "mask.safetensors"):
        assert _sha(saved / name) == _sha(folder / name), name
    with pytest.raises(OutputExistsError):
        t1.save_pretrained(tmp_path / "saved")
    assert t1.save_pretrained(tmp_path / "saved", overwrite=True) == tmp_path / "saved"


def test_revision(hub, env, folder, tmp_path):
    main = Ticket.from_pretrained(folder)
    main.push_to_hub("alice/api-revs")
    other = Ticket.from_pretrained(_ticket(tmp_path / "v1-ticket", sparsity=0.8, seed=1))
    other.push_to_hub("alice/api-revs", branch="v1", commit_message="sparser ticket")
    at_main = Ticket.from_pretrained("alice/api-revs")
    at_v1 = Ticket.from_pretrained("alice/api-revs", revision="v1")
    assert at_main.mask == main.mask and at_v1.mask == other.mask and at_v1.mask != at_main.mask
    assert at_v1.commit == hub.head("alice/api-revs", "v1") != at_main.commit
    assert Ticket.from_pretrained("alice/api-revs@v1").mask == other.mask
    pinned = Ticket.from_pretrained("alice/api-revs", revision=at_main.commit)
    assert _same(pinned.model, main.model)
    with pytest.raises(InvalidArgumentError, match="give the revision once"):
        Ticket.from_pretrained("alice/api-revs@v1", revision="main")


def test_tampered_tickets_are_refused(hub, env, folder, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    cfg = json.loads((bad / "px_config.json").read_text())
    cfg["method"] = "px"  # claim another method than the one that made the mask
    (bad / "px_config.json").write_text(json.dumps(cfg))
    with pytest.raises(IntegrityError, match="px_config.json"):
        Ticket.from_pretrained(bad)
    with pytest.raises(IntegrityError):
        px_hub.from_pretrained(bad)

    Ticket.from_pretrained(folder).push_to_hub("alice/api-corrupt")
    hub.corrupt("alice/api-corrupt", "model.compact.safetensors")
    with pytest.raises(IntegrityError, match="alice/api-corrupt@main"):
        Ticket.from_pretrained("alice/api-corrupt")
    snapshots = Path(env["HF_HUB_CACHE"]) / "models--alice--api-corrupt" / "snapshots"
    assert not any(snapshots.glob("*/model.compact.safetensors"))  # the bad download left the cache


def test_from_pretrained_model_keeps_pruned_weights_zero_while_training(folder):
    model = px_hub.from_pretrained(folder)
    assert isinstance(model.px_ticket, Ticket)
    mask = model.px_ticket.mask
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 5, (8,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    params = dict(model.named_parameters())
    for name, m in mask.items():
        assert int((params[name].detach()[~m] != 0).sum()) == 0, name
    assert any(not torch.equal(params[n].detach(), before[n]) for n in mask)  # it did train
    # without the hooks the same training moves pruned weights (so the check above can fail)
    plain = Ticket.from_pretrained(folder).model.train()
    opt = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    torch.nn.functional.cross_entropy(plain(torch.randn(8, 3, 32, 32)), torch.randint(0, 5, (8,))).backward()
    opt.step()
    assert any(int((p.detach()[~mask[n]] != 0).sum()) for n, p in plain.named_parameters() if n in mask)


def test_card_snippet_for_px_hub_architectures(tmp_path):
    from px_hub.models import TIMM_MODELS

    assert set(timm.list_models(module="cifar")) == set(TIMM_MODELS)  # the list matches what px-hub registers
    own = _ticket(tmp_path / "cifar-ticket", arch="cifar_resnet20")
    card = (own / "README.md").read_text()
    assert "With timm only" not in card and "loads in stock" not in card
    assert "import px_hub" in card and "px_hub.from_pretrained(" in card
    assert "`cifar_resnet20` is an architecture px-hub registers in timm" in card
    stock = (_ticket(tmp_path / "resnet-ticket").joinpath("README.md")).read_text()
    assert "With timm only" in stock and "loads in stock timm" in stock
