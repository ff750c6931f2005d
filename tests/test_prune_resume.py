"""Resumable pruning: a `px-hub prune` killed (SIGKILL) mid-run and run again with the same command continues from
its checkpoint and ends with the same mask as an uninterrupted run at the same threads per process; a checkpoint
of another spec, a corrupt one, or one made under other threads is never resumed from."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch
from safetensors import safe_open

import px_hub
from px_hub import Mask, pipeline
from px_hub.spec import DataSpec, ModelSpec, PruneSpec

ARGS = ["prune", "--model", "cifar_resnet20", "--no-pretrained", "--data", "digits", "--examples-per-class", "2",
        "--batch-size", "10", "--sparsity", "0.95", "--rounds", "12", "--seed", "0", "--threads", "1",
        "--checkpoint-every", "0", "--quiet"]


def _cmd(out):
    return [sys.executable, "-m", "px_hub.cli.main", *ARGS, "--out", str(out)]


def _env():
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def _checkpoint_round(folder) -> int:
    files = list(folder.glob("prune-*.safetensors")) if folder.is_dir() else []
    if not files:
        return 0
    try:
        with safe_open(str(files[0]), framework="pt") as f:
            return int((f.metadata() or {}).get("round", 0))
    except Exception:  # noqa: BLE001 - mid-replace; poll again
        return 0


def test_killed_prune_resumes_to_the_uninterrupted_mask(tmp_path):
    out = tmp_path / "ticket"
    resume_dir = pipeline.resume_dir_for(out)
    proc = subprocess.Popen(_cmd(out), env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while _checkpoint_round(resume_dir) < 3:
            assert proc.poll() is None, f"prune ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # nothing half-written
    killed_at = _checkpoint_round(resume_dir)
    assert 3 <= killed_at < 12

    r = subprocess.run(_cmd(out), env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((out / "px_config.json").read_text())
    assert cfg["resumed_at_round"] >= killed_at and cfg["rounds"] == 12 and cfg["torch_threads"] == 1
    assert not resume_dir.exists()  # checkpoints are removed once the ticket is written

    whole = tmp_path / "uninterrupted"
    r2 = subprocess.run(_cmd(whole), env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "resumed_at_round" not in json.loads((whole / "px_config.json").read_text())
    a, b = Mask.load(out / "mask.safetensors"), Mask.load(whole / "mask.safetensors")
    assert a == b and a.sha256() == b.sha256()
    assert cfg["spec_hash"] == json.loads((whole / "px_config.json").read_text())["spec_hash"]


# -- in-process: the loop and the checkpoint file ---------------------------------------------------------------
SPEC = PruneSpec(model=ModelSpec("cifar_resnet20", pretrained=False, num_classes=10),
                 data=DataSpec("digits", examples_per_class=1, batch_size=10), sparsity=0.9, rounds=6)


@pytest.fixture(scope="module")
def prepared():
    torch.set_num_threads(1)
    return pipeline.prepare(SPEC)


def test_resumed_loop_equals_uninterrupted(prepared, one_thread):
    whole = pipeline.run(SPEC, prepared=prepared)
    states = {}
    px_hub.prune_with_record(prepared.model, prepared.mine, sparsity=0.9, rounds=6, progress=False,
                             on_round=lambda r, m, h: states.setdefault(r, (m, list(h))))
    mask3, hist3 = states[3]
    rest = px_hub.prune_with_record(prepared.model, prepared.mine, sparsity=0.9, rounds=6, progress=False,
                                    initial_round=3, initial_mask=mask3, initial_history=hist3)
    assert rest.mask == whole.mask and [h["round"] for h in rest.history] == list(range(6))


def test_checkpoint_round_trip_and_refusals(prepared, tmp_path, one_thread):
    states = {}
    pipeline.run(SPEC, prepared=prepared)  # warm
    ck = pipeline.RoundCheckpoint(tmp_path, SPEC, every_seconds=0)
    px_hub.prune_with_record(prepared.model, prepared.mine, sparsity=0.9, rounds=6, progress=False,
                             on_round=lambda r, m, h: (states.setdefault(r, m), ck.save(r, m, h)))
    rnd, mask, history = ck.load()
    assert rnd == 5 and mask == states[5] and len(history) == 5  # never the last round: the ticket follows

    # another spec has another file name, and a file renamed to it is refused by its recorded hash
    other = dataclasses.replace(SPEC, sparsity=0.8)
    ck2 = pipeline.RoundCheckpoint(tmp_path, other)
    assert ck2.path != ck.path and ck2.load() is None
    shutil.copyfile(ck.path, ck2.path)
    with pytest.warns(UserWarning, match="not a checkpoint of this spec"):
        assert ck2.load() is None

    # other threads per process: the mask would differ, so start over
    torch.set_num_threads(2)
    try:
        with pytest.warns(UserWarning, match="torch_threads"):
            assert ck.load() is None
    finally:
        torch.set_num_threads(1)

    # corrupt (truncated) file: warning, start over
    data = ck.path.read_bytes()
    ck.path.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="ignoring pruning checkpoint"):
        assert ck.load() is None
    # a resumed run through the pipeline ignores it and still ends with the right mask
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pipeline.run(SPEC, prepared=prepared, checkpoint_dir=tmp_path, checkpoint_every=0)
    assert "resumed_at_round" not in res.record
    ck.remove()
    assert not ck.path.exists()
