"""Tickets that cannot lie or lose data (issue 12): --overwrite only replaces what px-hub made; every figure a
ticket states is checked against its mask and weights; push verifies every file it uploads; pull errors name the
repo and the file; every error a user can cause is one line (exit 2) with nothing left behind; one writer per
output (a lock); identical content gives identical bytes."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch

from px_hub import Mask
from px_hub.cli.main import main
from px_hub.errors import (
    DataError,
    IntegrityError,
    OutputBusyError,
    OutputExistsError,
    OutputNotWritableError,
    PxHubError,
)
from px_hub.hub import format as fmt
from px_hub.hub import load_ticket, pull_ticket, push_ticket, save_ticket
from px_hub.hub.card import render_card

TOKEN = "hf_" + "pxhubReliability0123456789abcd"
REPO_ROOT = Path(__file__).resolve().parents[1]
FAST = ["--rounds", "1", "--examples-per-class", "1", "--quiet", "--method", "random"]


def _ticket(folder: Path, sparsity: float = 0.9, method: str = "random", overwrite: bool = False) -> Path:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=5)
    g = torch.Generator().manual_seed(0)
    mask = Mask.from_scores({n: torch.rand(p.shape, generator=g) for n, p in model.named_parameters()
                             if p.dim() > 1}, sparsity)
    return save_ticket(folder, model, mask, {"method": method, "sparsity": sparsity, "rounds": 1, "seed": 0},
                       source={"source": "hf-hub", "id": "timm/test_resnet", "library": "timm",
                               "license": "apache-2.0"}, overwrite=overwrite)


def _cli(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse
        return e.code


def _one_line_error(capsys, *needles) -> str:
    """stderr holds one line (progress bars of downloads/uploads aside) with every needle, and no traceback."""
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    err = "\n".join(x for x in lines if x.strip() and "it/s]" not in x and "B/s]" not in x)
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n.lower() in err.lower(), err
    assert "Traceback" not in err
    return err


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _hidden(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


@pytest.fixture()
def ticket(tmp_path) -> Path:
    return _ticket(tmp_path / "tk" / "ticket")


# -- 1. --overwrite only replaces what px-hub made ----------------------------------------------------------------

def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    (path / "data").mkdir()
    (path / "data" / "results.csv").write_text("1,2,3")
    return path


def test_overwrite_refuses_a_folder_that_is_not_a_ticket_api(tmp_path):
    folder = _user_folder(tmp_path / "mine")
    before = _tree(folder)
    with pytest.raises(OutputExistsError, match="not a px-hub ticket"):
        _ticket(folder, overwrite=True)
    with pytest.raises(OutputExistsError, match="exists; pass --overwrite"):
        _ticket(folder)
    assert _tree(folder) == before and _hidden(tmp_path) == []


def test_overwrite_refuses_a_folder_that_is_not_a_ticket_cli(tmp_path, capsys, monkeypatch):
    import px_hub

    monkeypatch.setattr(px_hub, "prune_with_record", lambda *a, **k: pytest.fail("pruned before checking --out"))
    folder = _user_folder(tmp_path / "mine")
    before = _tree(folder)
    assert _cli(["prune", *FAST, "--out", str(folder), "--overwrite"]) == 2
    _one_line_error(capsys, "not a px-hub ticket", "--overwrite")
    assert _tree(folder) == before


def test_overwrite_replaces_a_ticket_and_accepts_an_empty_folder(tmp_path):
    out = _ticket(tmp_path / "t", sparsity=0.9)
    with pytest.raises(OutputExistsError, match="exists; pass --overwrite"):
        _ticket(out)
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=5)
    mask = Mask.from_scores({n: torch.rand(p.shape) for n, p in model.named_parameters() if p.dim() > 1}, 0.8)
    save_ticket(out, model, mask, {"method": "random", "sparsity": 0.8}, overwrite=True)
    assert load_ticket(out)[1] == mask
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_ticket(_ticket(empty))[1].kept() > 0
    assert _hidden(tmp_path) == []


def test_finetune_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    from px_hub.finetune import load_recipe
    from px_hub.finetune.trainer import _prepare_output

    class _Acc:  # the parts of an Accelerator _prepare_output uses
        is_main_process = True

        def wait_for_everyone(self):
            pass

    recipe = load_recipe("digits_resnet20")
    folder = _user_folder(tmp_path / "mine")
    before = _tree(folder)
    with pytest.raises(OutputExistsError, match="not a px-hub run folder"):
        _prepare_output(folder, recipe, _Acc(), resume=True, overwrite=True)
    assert _tree(folder) == before
    with pytest.raises(OutputExistsError, match="did not write"):  # nor are files mixed into it
        _prepare_output(folder, recipe, _Acc(), resume=True, overwrite=False)
    assert _tree(folder) == before
    run = tmp_path / "run"
    _prepare_output(run, recipe, _Acc(), resume=True, overwrite=False)  # a run folder px-hub made ...
    (run / "metrics.jsonl").write_text("{}\n")
    _prepare_output(run, recipe, _Acc(), resume=True, overwrite=True)  # ... is replaced
    assert sorted(p.name for p in run.iterdir()) == ["recipe.yaml"]


# -- 2. every figure is checked against the mask and weights ------------------------------------------------------

def _edit_config(folder: Path, **changes) -> None:
    path = folder / fmt.PX_CONFIG_FILE
    cfg = json.loads(path.read_text())
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    path.write_text(json.dumps(cfg, indent=2))


@pytest.mark.parametrize("changes", [
    {"method": "synflow"},
    {"sparsity": 0.5},
    {"sparsity": 0.5, "density": 0.5, "method": "synflow"},
    {"achieved__sparsity": 0.5},
    {"achieved__kept": 123},
    {"kept": 123},
    {"ticket__mask_sha256": "0" * 64},
    {"data": {"dataset": "imagenet-1k", "k": 10}},
])
def test_edited_px_config_is_an_integrity_error_everywhere(ticket, capsys, changes):
    _edit_config(ticket, **changes)
    before = _tree(ticket)
    with pytest.raises(IntegrityError, match="px_config.json"):
        load_ticket(ticket)
    with pytest.raises(IntegrityError, match="px_config.json"):
        render_card(ticket)
    with pytest.raises(IntegrityError, match="px_config.json"):  # refused before the offline check
        push_ticket(ticket, "alice/edited")
    assert _cli(["push", str(ticket), "--repo-id", "alice/edited"]) == 2
    _one_line_error(capsys, "px_config.json")
    assert _tree(ticket) == before


def test_report_refuses_an_edited_ticket(ticket, capsys):
    _edit_config(ticket, method="synflow")
    assert _cli(["report", str(ticket), "--no-dense", "--no-card", "--out", str(ticket.parent / "r")]) == 2
    _one_line_error(capsys, "px_config.json")
    assert not (ticket.parent / "r").exists()


def test_widened_mask_with_recomputed_checksum_is_caught(ticket):
    mask, meta = Mask.load_with_metadata(ticket / fmt.MASK_FILE)
    name = next(iter(mask))
    wider = dict(mask.items())
    wider[name] = torch.ones_like(mask[name])  # every weight of the first layer "kept" (they are zeros)
    # a forger re-saves the mask: the file's own checksum is recomputed and valid; other metadata carried over
    Mask(wider).save(ticket / fmt.MASK_FILE, metadata={k: v for k, v in meta.items()
                                                      if k not in ("format", "version", "layers", "sha256")})
    assert Mask.load(ticket / fmt.MASK_FILE).kept() > mask.kept()
    with pytest.raises(IntegrityError, match="mask"):
        load_ticket(ticket)
    with pytest.raises(IntegrityError, match="mask"):
        render_card(ticket)
    with pytest.raises(IntegrityError, match="mask"):
        push_ticket(ticket, "alice/widened")


def test_card_and_pull_figures_come_from_the_mask(ticket):
    card = (ticket / fmt.CARD_FILE).read_text()
    mask = load_ticket(ticket)[1]
    assert f"{mask.sparsity() * 100:.1f} % sparsity" in card and f"{mask.kept():,}" in card


# -- 3. push verifies every file; pull errors name the repo and the file ------------------------------------------

def _flip(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    for i in range(8):
        data[(offset + i) % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("victim,needle", [
    (fmt.COMPACT_FILE, fmt.COMPACT_FILE),
    (fmt.WEIGHTS_FILE, fmt.WEIGHTS_FILE),
    (fmt.CONFIG_FILE, fmt.CONFIG_FILE),
    (fmt.RESULTS_FILE, fmt.RESULTS_FILE),
])
def test_push_refuses_any_bad_file(ticket, victim, needle):
    if victim == fmt.RESULTS_FILE:
        (ticket / victim).write_text("{not json")
    elif victim == fmt.CONFIG_FILE:
        (ticket / victim).write_text("{\"architecture\": ")
    else:
        _flip(ticket / victim)
    with pytest.raises(IntegrityError, match=needle.replace(".", r"\.")):
        push_ticket(ticket, "alice/bad-file")


def test_pull_error_names_repo_and_file_not_a_temp_path(hub, env, ticket, tmp_path, capsys):
    push_ticket(ticket, "alice/corrupt-compact")
    hub.corrupt("alice/corrupt-compact", fmt.COMPACT_FILE)
    try:
        with pytest.raises(IntegrityError) as e:
            pull_ticket("alice/corrupt-compact", out_dir=tmp_path / "bad")
    finally:  # the server stores files by content: identical tickets share the flipped bytes until restored
        hub.corrupt("alice/corrupt-compact", fmt.COMPACT_FILE)
    msg = str(e.value)
    assert "alice/corrupt-compact@" in msg and fmt.COMPACT_FILE in msg, msg
    assert ".partial-" not in msg and str(tmp_path) not in msg, msg
    assert "pull again" in msg and "push it again" in msg, msg  # what helps: a retry, else the publisher
    assert not (tmp_path / "bad").exists()
    assert [n for n in _hidden(tmp_path) if n.startswith(".bad")] == []


def test_pull_checks_px_config_against_the_mask(hub, env, ticket, tmp_path, capsys):
    """A px_config.json edited on the Hub (claims 50 % and SynFlow for a 90 % random ticket) is refused by pull;
    `pull` never prints figures it has not checked."""
    from huggingface_hub import HfApi

    push_ticket(ticket, "alice/lying-config")
    cfg = json.loads((ticket / fmt.PX_CONFIG_FILE).read_text())
    cfg.update(sparsity=0.5, method="synflow")
    cfg["achieved"]["sparsity"] = 0.5
    HfApi(token=TOKEN).upload_file(path_or_fileobj=json.dumps(cfg).encode(), path_in_repo=fmt.PX_CONFIG_FILE,
                                   repo_id="alice/lying-config")
    capsys.readouterr()
    assert _cli(["pull", "alice/lying-config", "--out", str(tmp_path / "p")]) == 2
    _one_line_error(capsys, "alice/lying-config", "px_config.json")
    assert not (tmp_path / "p").exists()


def test_pull_prints_figures_from_the_mask(hub, env, ticket, tmp_path, capsys):
    push_ticket(ticket, "alice/honest")
    assert _cli(["pull", "alice/honest", "--out", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    mask = load_ticket(tmp_path / "p")[1]
    assert f"{mask.kept()}/{mask.total()} weights kept" in err and f"sparsity {mask.sparsity():.4f}" in err


def test_pull_out_pointing_at_a_file(hub, env, ticket, tmp_path, capsys):
    push_ticket(ticket, "alice/to-a-file")
    target = tmp_path / "afile"
    target.write_text("keep me")
    capsys.readouterr()
    assert _cli(["pull", "alice/to-a-file", "--out", str(target)]) == 2
    _one_line_error(capsys, "not a folder")
    assert target.read_text() == "keep me"
    assert _cli(["pull", "alice/to-a-file", "--out", str(target), "--overwrite"]) == 2
    _one_line_error(capsys, "not a folder")
    assert target.read_text() == "keep me" and _hidden(tmp_path) == []


def test_pull_overwrite_refuses_a_folder_that_is_not_a_ticket(hub, env, ticket, tmp_path, capsys):
    push_ticket(ticket, "alice/over")
    folder = _user_folder(tmp_path / "mine")
    before = _tree(folder)
    capsys.readouterr()
    assert _cli(["pull", "alice/over", "--out", str(folder), "--overwrite"]) == 2
    _one_line_error(capsys, "not a px-hub ticket")
    assert _tree(folder) == before
    good = tmp_path / "good"
    assert _cli(["pull", "alice/over", "--out", str(good)]) == 0
    assert _cli(["pull", "alice/over", "--out", str(good), "--overwrite"]) == 0  # a ticket is replaced


# -- 5. one line, exit 2, nothing left behind ---------------------------------------------------------------------

def _imagefolder(root: Path, classes=("a", "b"), per_class: int = 2) -> Path:
    from PIL import Image

    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (40 * c, 10 * i, 0)).save(root / name / f"{i}.png")
    return root


def test_corrupt_image_is_one_line_naming_the_file(tmp_path, capsys):
    root = _imagefolder(tmp_path / "imgs", per_class=1)  # the split (1 per class) must read the bad file
    bad = root / "b" / "0.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    assert _cli(["prune", *FAST, "--data", f"imagefolder:{root}", "--out", str(tmp_path / "t")]) == 2
    _one_line_error(capsys, str(bad))
    assert not (tmp_path / "t").exists()
    from px_hub.data import load_image_dataset

    ds = load_image_dataset(f"imagefolder:{root}")
    with pytest.raises(DataError, match="0.png"):
        ds.images(list(range(len(ds))))


def test_imagefolder_with_one_class_is_refused(tmp_path):
    from px_hub.data import load_image_dataset

    root = _imagefolder(tmp_path / "one", classes=("only",))
    with pytest.raises(DataError, match="2 classes"):
        load_image_dataset(f"imagefolder:{root}")


def test_out_whose_parent_is_a_file_fails_before_pruning(tmp_path, capsys, monkeypatch):
    """Tests run as root, for whom a chmod'ed read-only folder is writable, so the provable case is a parent that
    is a file: the check is a real write probe (a folder created and removed), made before anything is loaded."""
    import px_hub

    monkeypatch.setattr(px_hub, "prune_with_record", lambda *a, **k: pytest.fail("pruned before checking --out"))
    (tmp_path / "file").write_text("x")
    assert _cli(["prune", *FAST, "--out", str(tmp_path / "file" / "ticket")]) == 2
    _one_line_error(capsys, "is a file")
    with pytest.raises(OutputNotWritableError):
        from px_hub._fs import check_output

        check_output(tmp_path / "file" / "deeper" / "ticket", overwrite=False)


def test_unwritable_output_is_caught_by_the_probe(tmp_path, monkeypatch):
    """A read-only folder (EACCES/EROFS from the kernel): the probe's own error becomes one line."""
    import tempfile

    from px_hub._fs import check_output

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(OutputNotWritableError, match="Permission denied"):
        check_output(tmp_path / "ro" / "ticket", overwrite=False)


_HOLD = textwrap.dedent("""
    import sys, time
    from px_hub._fs import output_lock
    with output_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")


@pytest.fixture()
def other_writer(tmp_path):
    """A second process holding the output lock on tmp_path/'ticket' (as a running `px-hub prune` does)."""
    out = tmp_path / "ticket"
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                         cwd=REPO_ROOT)
    assert p.stdout.readline().strip() == "locked"
    yield out
    p.kill()
    p.wait()


def test_second_writer_gets_busy_not_a_crash(other_writer, tmp_path, capsys, monkeypatch):
    import px_hub

    monkeypatch.setattr(px_hub, "prune_with_record", lambda *a, **k: pytest.fail("pruned while the output is busy"))
    assert _cli(["prune", *FAST, "--out", str(other_writer)]) == 2
    _one_line_error(capsys, "busy")
    with pytest.raises(OutputBusyError):
        _ticket(other_writer)
    assert not other_writer.exists() and _hidden(tmp_path) == []


def test_writer_that_loses_a_race_leaves_no_partial_folder(tmp_path, monkeypatch):
    """If the output appears while a ticket is being built (a writer that does not use px-hub's lock), the build
    stops with one line and its hidden .partial-* folder is removed."""
    from px_hub.hub import card

    out = tmp_path / "ticket"
    real = card.render_card

    def racing(folder, *a, **k):
        _user_folder(out)
        return real(folder, *a, **k)

    monkeypatch.setattr(card, "render_card", racing)
    with pytest.raises(OutputExistsError):
        _ticket(out)
    assert _hidden(tmp_path) == [] and (out / "thesis.tex").exists()


def test_lock_is_released_and_leaves_nothing(tmp_path):
    from px_hub._fs import _lock_path, output_lock

    out = tmp_path / "t"
    with output_lock(out):
        with output_lock(out):  # re-entrant in one process
            assert _lock_path(out).exists()
    assert not _lock_path(out).exists() and list(tmp_path.iterdir()) == []


def test_every_error_class_is_a_pxhub_error():
    assert issubclass(OutputBusyError, PxHubError) and issubclass(OutputNotWritableError, PxHubError)


# -- 6. identical content, identical bytes ------------------------------------------------------------------------

_WRITE = textwrap.dedent("""
    import sys, torch
    from px_hub import Mask
    from px_hub.hub import format as fmt
    g = torch.Generator().manual_seed(0)
    w = {f"l{i}.weight": torch.randn(8, 4, 3, 3, generator=g) for i in range(6)}
    mask = Mask({k: torch.rand(v.shape, generator=g) > (0.5 if i % 2 else 0.99) for i, (k, v) in enumerate(w.items())})
    meta = {"weights_sha256": "a" * 64, "zeta": "1", "alpha": "2", "recipe_hash": "x", "m": "3"}
    mask.save(sys.argv[1] + "/mask.safetensors", metadata=meta)
    dense = {k: torch.where(mask[k], v, torch.zeros(())) for k, v in w.items()}
    fmt.save_compact(dense, mask, __import__("pathlib").Path(sys.argv[1]) / "model.compact.safetensors", "d" * 64)
    fmt.save_weights(dense, __import__("pathlib").Path(sys.argv[1]) / "model.safetensors", {"b": "1", "a": "2"})
""")


def test_mask_and_compact_files_are_byte_identical_between_runs(tmp_path):
    outs = []
    for i in range(4):  # separate processes: safetensors orders its metadata map by a per-process random hash
        d = tmp_path / f"run{i}"
        d.mkdir()
        subprocess.run([sys.executable, "-c", _WRITE, str(d)], check=True, cwd=REPO_ROOT)
        outs.append(_tree(d))
    assert all(o == outs[0] for o in outs[1:]), [sorted(k for k in o if o[k] != outs[0][k]) for o in outs[1:]]
    assert Mask.load(tmp_path / "run0" / "mask.safetensors").kept() > 0


def test_saved_ticket_files_are_byte_identical(tmp_path):
    a, b = _ticket(tmp_path / "a"), _ticket(tmp_path / "b")
    for name in (fmt.MASK_FILE, fmt.COMPACT_FILE, fmt.WEIGHTS_FILE):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
