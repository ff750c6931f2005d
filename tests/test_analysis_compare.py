"""`px-hub compare` on ResNet-20 with three methods: the table and JSON must describe exactly the masks that
px_hub.prune produces for the same model, split and seed."""
from __future__ import annotations

import json
import re

import pytest

import px_hub
from px_hub.cli.main import main


def test_compare_resnet20_three_methods(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(["compare", "--model", "cifar_resnet20", "--no-pretrained", "--data", "digits", "--sparsity", "0.9",
               "--methods", "px,synflow,snip", "--k", "2", "--rounds", "2", "--batch-size", "20",
               "--samples", "3", "--max-outputs", "5", "--seed", "1", "--out", str(out)])
    assert rc == 0
    assert "| px | 2 | 0.9000 |" in capsys.readouterr().out
    data = json.loads((out / "compare.json").read_text())
    table = (out / "compare.md").read_text()
    for f in ("compare_layer_density.png", "compare_alive_outputs.png", "compare_ntk_spectrum.png"):
        assert (out / f).read_bytes()[:4] == b"\x89PNG"
    assert list(data["methods"]) == ["px", "synflow", "snip"]

    # the same model, split and seed, pruned independently
    from px_hub.backbones import load_backbone
    from px_hub.data import PruningSplit, eval_transform, load_image_dataset, make_batches

    ds = load_image_dataset("digits")
    split = PruningSplit.create(ds, k=2, seed=1)
    assert data["data"]["digest"] == split.digest
    loaded = load_backbone("cifar_resnet20", num_classes=10, pretrained=False, seed=1)
    batches = make_batches(ds, split.indices, eval_transform(loaded.data_config), batch_size=20, progress=False)
    table_rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    for method, entry in data["methods"].items():
        mask = px_hub.prune(loaded.model, batches, method=method, sparsity=0.9, rounds=2, seed=1, progress=False)
        assert entry["record"]["mask_sha256"] == mask.sha256()
        assert entry["kept"] == mask.kept() and entry["sparsity"] == pytest.approx(mask.sparsity())
        dens = mask.layer_density()
        reports = {r.name: r for r in mask.report()}
        assert [r["parameter"] for r in entry["layers"]] == [n for n, _ in loaded.model.named_parameters()
                                                            if n in mask]
        for r in entry["layers"]:
            q = reports[r["parameter"]]
            assert r["density"] == q.kept / q.total and r["kept"] == q.kept
            assert r["density"] == pytest.approx(dens[r["parameter"]], abs=1e-6)
            assert r["alive_outputs"] == reports[r["parameter"]].alive_outputs
        assert entry["alive_outputs"] == sum(r.alive_outputs for r in mask.report())
        # the table's per-layer cells are these numbers
        col = list(data["methods"]).index(method)
        for r in entry["layers"]:
            cells = [c.strip() for c in table_rows[r["layer"]].strip("|").split("|")]
            assert cells[2 + col] == f"{100 * r['density']:.2f} ({r['alive_outputs']}/{r['outputs']})"
        ratio = entry["ntk_vs_dense"]
        assert 0 < ratio["trace_ratio"] < 1 and 0 < ratio["top_eigenvalue_ratio"] < 1
        h = entry["health"]  # dead classes, empty, nearly empty layers, guard restored, alive outputs
        assert re.search(rf"\| {method} \| 2 \| 0\.9000 \| {len(h['dead_outputs'])}/10 \| {len(h['empty_layers'])} \| "
                         rf"{len(h['nearly_empty_layers'])} \| \d+ \| {entry['alive_outputs']}/{entry['outputs']} \|",
                         table)
    assert data["ntk"]["dense"]["samples"] == 3 and len(data["ntk"]["dense"]["eigenvalues"]) == 15


def test_compare_rejects_unknown_method(tmp_path, capsys):
    rc = main(["compare", "--model", "cifar_resnet20", "--no-pretrained", "--data", "digits", "--sparsity", "0.9",
               "--methods", "px,nope", "--k", "1", "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "nope" in err and len(err.strip().splitlines()) == 1
