"""Ticket folder format: save/load round trip, exact zeros, compact copy, hashes, update after fine-tuning,
corruption and mismatch rejection, and the compact-size promise on ResNet-50 at 95.6 % sparsity."""
from __future__ import annotations

import json
import shutil

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from px_hub import Mask
from px_hub.errors import IntegrityError, MaskMismatchError, OutputExistsError
from px_hub.hub import format as fmt
from px_hub.hub import load_ticket, save_ticket, update_ticket

PX_CONFIG = {
    "method": "random", "sparsity": 0.9, "rounds": 1, "schedule": "exponential", "scope": "global", "seed": 0,
    "targets": {"exclude_first": False, "exclude_classifier": False, "exclude": []},
    "data": {"dataset": "sklearn-digits", "revision": None, "split": "train", "k": 2, "digest": "d" * 64},
    "model": {"source": "hf-hub", "id": "timm/test_resnet.r160_in1k", "revision": "abc123", "library": "timm",
              "architecture": "test_resnet", "license": "apache-2.0"},
}


def random_mask(model: torch.nn.Module, sparsity: float, seed: int = 0) -> Mask:
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(p.shape, generator=g) for n, p in model.named_parameters() if p.dim() > 1}
    return Mask.from_scores(scores, sparsity)


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("test_resnet", pretrained=False, num_classes=7).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = tiny_model()
    mask = random_mask(model, 0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = save_ticket(tmp_path_factory.mktemp("t") / "ticket", model, mask, PX_CONFIG,
                      data_config={"input_size": (3, 64, 64), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)})
    return out, model, mask, before


def test_save_load_round_trip_exact(saved):
    out, model, mask, before = saved
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "mask.safetensors",
                                               "model.compact.safetensors", "px_config.json", "README.md",
                                               "density.png"}
    # the caller's model is untouched (the mask went onto a copy)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    loaded, mask2, cfg = load_ticket(out)
    assert mask2 == mask and not loaded.training
    sd = loaded.state_dict()
    for k, v in before.items():
        expected = torch.where(mask[k], v, torch.zeros(())) if k in mask else v
        assert torch.equal(sd[k], expected), k
    # exact +0.0 at every pruned position, and the saved file agrees bit for bit
    dense = load_file(str(out / "model.safetensors"))
    for k, m in mask.items():
        assert (dense[k][~m] == 0).all() and not torch.signbit(dense[k][~m]).any()
    assert cfg["method"] == "random" and cfg["data"]["k"] == 2
    assert cfg["achieved"]["kept"] == mask.kept() and cfg["achieved"]["total"] == mask.total()
    assert cfg["layer_density"]["conv1.0.weight"] == pytest.approx(mask.layer_density()["conv1.0.weight"], abs=1e-6)
    timm_cfg = json.loads((out / "config.json").read_text())
    assert timm_cfg["architecture"] == "test_resnet" and timm_cfg["num_classes"] == 7
    assert timm_cfg["pretrained_cfg"]["input_size"] == [3, 64, 64]
    assert timm_cfg["pretrained_cfg"]["mean"] == [0.5, 0.5, 0.5]


def test_weights_hash_and_compact_copy(saved):
    out, _, mask, _ = saved
    dense = load_file(str(out / "model.safetensors"))
    mask_file, meta = Mask.load_with_metadata(out / "mask.safetensors")
    assert meta["weights_sha256"] == fmt.weights_sha256(dense)
    expanded, cmeta = fmt.expand_compact(out / "model.compact.safetensors", mask_file)
    assert cmeta["weights_sha256"] == meta["weights_sha256"]
    assert expanded.keys() == dense.keys() and all(torch.equal(expanded[k], dense[k]) for k in dense)
    # the compact file stores exactly the kept values of masked tensors
    raw = load_file(str(out / "model.compact.safetensors"))
    assert sum(raw[k].numel() for k in mask) == mask.kept()
    # the hash covers names, dtypes and values: one changed value changes it
    altered = dict(dense)
    k = next(iter(mask))
    altered[k] = dense[k].clone()
    altered[k].view(-1)[torch.nonzero(mask[k].view(-1))[0]] += 1
    assert fmt.weights_sha256(altered) != meta["weights_sha256"]


def test_load_from_compact_only(saved, tmp_path):
    out, _, mask, _ = saved
    copy = tmp_path / "compact_only"
    shutil.copytree(out, copy)
    (copy / "model.safetensors").unlink()
    m1, _, _ = load_ticket(out)
    m2, mask2, _ = load_ticket(copy)
    assert mask2 == mask
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_existing_output_needs_overwrite(saved, tmp_path):
    out, model, mask, _ = saved
    target = tmp_path / "t"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        save_ticket(target, model, mask, PX_CONFIG)
    assert (target / "keep.txt").read_text() == "x"
    with pytest.raises(OutputExistsError, match="not a px-hub ticket"):  # overwrite replaces only a ticket
        save_ticket(target, model, mask, PX_CONFIG, overwrite=True)
    assert (target / "keep.txt").read_text() == "x"
    (target / "keep.txt").unlink()
    save_ticket(target, model, mask, PX_CONFIG)  # an empty folder is fine
    (target / "keep.txt").write_text("x")  # a file added to a ticket goes with it on --overwrite
    save_ticket(target, model, mask, PX_CONFIG, overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "mask.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["t"]  # no temp folders left behind


def test_failed_save_leaves_nothing(tmp_path):
    model = tiny_model()
    bad = Mask({"conv1.0.weight": torch.ones(3, 3, 3, 3, dtype=torch.bool)})  # wrong shape
    with pytest.raises(MaskMismatchError):
        save_ticket(tmp_path / "t", model, bad, PX_CONFIG)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("victim", ["model.safetensors", "model.compact.safetensors", "mask.safetensors"])
def test_corrupted_files_are_rejected(saved, tmp_path, victim):
    out, _, _, _ = saved
    copy = tmp_path / "c"
    shutil.copytree(out, copy)
    if victim == "model.compact.safetensors":
        (copy / "model.safetensors").unlink()
    data = bytearray((copy / victim).read_bytes())
    for i in range(1, 9):
        data[-i * 16] ^= 0xFF  # flip bytes in the tensor data, size unchanged
    (copy / victim).write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        load_ticket(copy)


def test_truncated_file_is_rejected(saved, tmp_path):
    out, _, _, _ = saved
    copy = tmp_path / "c"
    shutil.copytree(out, copy)
    (copy / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(IntegrityError, match="model.safetensors"):
        load_ticket(copy)


def test_nonzero_at_pruned_position_is_rejected(saved, tmp_path):
    """Weights changed consistently with the recorded hash but breaking the mask are still refused."""
    out, _, mask, _ = saved
    copy = tmp_path / "c"
    shutil.copytree(out, copy)
    dense = load_file(str(copy / "model.safetensors"))
    k = next(iter(mask))
    dense[k].view(-1)[torch.nonzero(~mask[k].view(-1))[0]] = 0.5
    save_file(dense, str(copy / "model.safetensors"))
    Mask.load(copy / "mask.safetensors").save(copy / "mask.safetensors",
                                              metadata={"weights_sha256": fmt.weights_sha256(dense)})
    with pytest.raises(IntegrityError, match="not zero"):
        load_ticket(copy)


def test_mask_for_another_architecture_is_refused(saved, tmp_path):
    out, _, _, _ = saved
    copy = tmp_path / "c"
    shutil.copytree(out, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["num_classes"] = 3  # a 3-class head: the mask's fc.weight (7×C) no longer fits
    cfg["model_args"]["num_classes"] = 3
    cfg["pretrained_cfg"]["num_classes"] = 3
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MaskMismatchError, match="fc.weight"):
        load_ticket(copy)


def test_update_ticket_after_finetuning(saved, tmp_path):
    out, _, mask, _ = saved
    folder = tmp_path / "ft"
    shutil.copytree(out, folder)
    model, mask, _ = load_ticket(folder)
    enforcer = mask.enforce(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    model.train()
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        enforcer.after_step()
    enforcer.remove()
    curve = tmp_path / "curve.png"
    curve.write_bytes((out / "density.png").read_bytes())
    results = [{"task": "image-classification", "dataset": "sklearn-digits", "dataset_name": "digits",
                "split": "test", "metric": "accuracy", "name": "top-1", "value": 0.8125}]
    update_ticket(folder, model=model, eval_results=results, extra_files={"training_curve.png": curve},
                  training={"epochs": 2, "lr": 0.1, "optimizer": "sgd"})
    loaded, mask2, cfg = load_ticket(folder)
    assert mask2 == mask
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    saved_results = json.loads((folder / "results.json").read_text())
    assert saved_results["eval_results"][0]["value"] == 0.8125 and saved_results["training"]["epochs"] == 2
    card = (folder / "README.md").read_text()
    assert "| digits | test | top-1 | 0.8125 |" in card and "training_curve.png" in card
    # a second update replaces the result for the same dataset/split/metric instead of duplicating it
    update_ticket(folder, eval_results=[dict(results[0], value=0.84)])
    assert [r["value"] for r in json.loads((folder / "results.json").read_text())["eval_results"]] == [0.84]


def test_update_refuses_weights_that_break_the_mask(saved, tmp_path):
    out, _, mask, _ = saved
    folder = tmp_path / "ft"
    shutil.copytree(out, folder)
    model, _, _ = load_ticket(folder)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # an un-enforced optimizer step: pruned weights move off zero
    before = (folder / "model.safetensors").read_bytes()
    with pytest.raises(MaskMismatchError, match="mask.enforce"):
        update_ticket(folder, model=model)
    assert (folder / "model.safetensors").read_bytes() == before


def test_resnet50_compact_is_at_most_an_eighth(tmp_path):
    """The issue's size promise: at 95.6 % sparsity, compact weights + mask ≤ 1/8 of the dense file."""
    torch.manual_seed(0)
    model = timm.create_model("resnet50", pretrained=False)
    mask = random_mask(model, 0.956)
    assert mask.sparsity() == pytest.approx(0.956, abs=1e-6)
    out = save_ticket(tmp_path / "r50", model, mask, {"method": "random", "sparsity": 0.956})
    dense = (out / "model.safetensors").stat().st_size
    compact = (out / "model.compact.safetensors").stat().st_size
    mask_size = (out / "mask.safetensors").stat().st_size
    assert dense > 100e6
    assert compact + mask_size <= dense / 8, (compact, mask_size, dense)
    assert compact + mask_size <= 10e6
