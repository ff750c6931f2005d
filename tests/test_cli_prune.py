"""`px-hub prune` end to end on the offline default, and every bad-input case: one line, exit code 2, nothing
written."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from px_hub import Mask
from px_hub.cli.main import main

FAST = ["--rounds", "2", "--examples-per-class", "1", "--quiet"]


def _cli(args, cwd, **env):
    e = dict(os.environ, HF_HUB_OFFLINE="1", **env)
    return subprocess.run([sys.executable, "-m", "px_hub.cli.main", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=600)


def test_offline_default_end_to_end(tmp_path):
    """No --model/--data: the built-in EfficientNet-Lite0 (real ImageNet weights) on scikit-learn digits."""
    r = _cli(["prune", "--rounds", "3", "--sparsity", "0.956", "--out", "ticket"], tmp_path)  # k=2: the demo's split
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "ticket"
    for f in ("model.safetensors", "config.json", "mask.safetensors", "px_config.json", "README.md"):
        assert (out / f).is_file(), f
    cfg = json.loads((out / "px_config.json").read_text())
    assert cfg["method"] == "px_2024" and cfg["sparsity"] == 0.956 and cfg["rounds"] == 3
    assert cfg["schedule"] == "exponential" and cfg["seed"] == 0
    assert cfg["data"]["dataset"] == "digits" and cfg["data"]["k"] == 2 and len(cfg["data"]["sample_ids"]) == 20
    assert "torch" in cfg["versions"] and cfg["per_layer"]
    mask = Mask.load(out / "mask.safetensors")
    n = mask.total()
    assert mask.kept() <= n - int(0.956 * n) and mask.kept() > 0.99 * (n - int(0.956 * n))
    assert "classifier.weight" in r.stdout and "density" in r.stdout  # the per-layer table
    assert "ticket written to" in r.stdout and "offline default" in r.stderr
    # the same command again refuses to overwrite
    r2 = _cli(["prune", "--rounds", "3", "--examples-per-class", "2", "--out", "ticket"], tmp_path)
    assert r2.returncode == 2 and "exists; pass --overwrite" in r2.stderr


@pytest.mark.parametrize("args,message", [
    (["--model", "resnet5O", "--no-pretrained"], "unknown"),
    (["--method", "pxx"], "unknown pruning method 'pxx'; did you mean px?"),
    (["--rounds", "0"], "--rounds must be >= 1"),
    (["--push"], "HF_HUB_OFFLINE"),
    (["--sparsity", "1.5"], "(0, 1)"),
    (["--sparsity", "0"], "(0, 1)"),
    (["--examples-per-class", "500"], "fewer than k=500"),
    (["--data", "no-such-dataset-xyz"], "no-such-dataset-xyz"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    code = _run_inprocess(["prune", *FAST, "--out", str(tmp_path / "t"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message.lower() in err.lower(), err
    assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "t").exists()


def test_dataset_without_labels(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i, i, i)).save(folder / f"{i}.png")
    code = _run_inprocess(["prune", *FAST, "--data", f"imagefolder:{folder}", "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "label" in err.lower(), err
    assert not (tmp_path / "t").exists()


def _run_inprocess(argv):
    try:
        return main(argv)
    except SystemExit as e:  # argparse errors
        return e.code
