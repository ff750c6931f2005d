"""`px-hub report` on a ticket folder: figures + analysis.json are written, added to the ticket and its card."""
from __future__ import annotations

import json

import pytest

import px_hub
from px_hub.cli.main import main


def _make_ticket(folder):
    """What `px-hub prune` writes: the record of prune_with_record + the data split + the backbone's info."""
    from px_hub.backbones import load_backbone
    from px_hub.data import PruningSplit, eval_transform, load_image_dataset, make_batches
    from px_hub.hub import save_ticket

    ds = load_image_dataset("digits")
    split = PruningSplit.create(ds, k=2, seed=0)
    loaded = load_backbone("cifar_resnet20", num_classes=10, pretrained=False, seed=0)
    batches = make_batches(ds, split.indices, eval_transform(loaded.data_config), batch_size=20, progress=False)
    res = px_hub.prune_with_record(loaded.model, batches, method="px", sparsity=0.95, rounds=3, progress=False)
    cfg = dict(res.record, data=split.to_record(), model=loaded.info)
    save_ticket(folder, loaded.model, res.mask, cfg, data_config=loaded.data_config, source=loaded.info)
    return res.mask


def test_report_on_ticket_folder(tmp_path, capsys):
    ticket = tmp_path / "ticket"
    mask = _make_ticket(ticket)
    out = tmp_path / "report"
    rc = main(["report", str(ticket), "--out", str(out), "--samples", "4", "--max-outputs", "5"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "kept weights verified" in printed and "card updated" in printed

    data = json.loads((out / "analysis.json").read_text())
    assert data["figures"] == {"layer_density": "layer_density.png", "alive_outputs": "alive_outputs.png",
                               "ntk_spectrum": "ntk_spectrum.png"}
    for f in data["figures"].values():
        assert (out / f).read_bytes()[:4] == b"\x89PNG"
    assert data["kept"] == mask.kept() and data["total"] == mask.total()
    assert [(r["parameter"], r["kept"], r["alive_outputs"]) for r in data["layers"]] == \
        [(r.name, r.kept, r.alive_outputs) for r in mask.report()]
    assert data["collapsed_layers"] == mask.collapsed_layers()
    assert data["ntk_data"]["matches_ticket_pruning_split"] is True
    ntk = data["ntk"]
    assert ntk["ticket"]["samples"] == 4 and ntk["ticket"]["outputs"] == [0, 2, 4, 7, 9]
    assert len(ntk["dense"]["eigenvalues"]) == 20
    assert ntk["ticket"]["parameters"] < ntk["dense"]["parameters"]
    assert 0 < ntk["ticket_vs_dense"]["trace_ratio"] < 1
    assert ntk["ticket_vs_dense"]["trace_ratio"] == pytest.approx(ntk["ticket"]["trace"] / ntk["dense"]["trace"])

    # the ticket now carries the figures and the summary, and its card shows them; it still loads verified
    for f in ("alive_outputs.png", "ntk_spectrum.png", "analysis.json"):
        assert (ticket / f).read_bytes() == (out / f).read_bytes()
    card = (ticket / "README.md").read_text()
    assert "ntk_spectrum.png" in card and "alive_outputs.png" in card
    _, mask2, _ = px_hub.hub.load_ticket(ticket)
    assert mask2 == mask


def test_report_rejects_missing_ticket(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope" / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "neither a ticket folder nor a Hub repo id" in err and len(err.splitlines()) == 1
