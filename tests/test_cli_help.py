"""The CLI's surface: help text for every flag with each default printed once, one name per concept (old spellings
still accepted, not shown), `px-hub methods`, `push` in `hf upload` order, --push preconditions checked before any
work, and a start-up that does not import torch for --help or argument errors (timed in
benchmarks/bench_cli_startup.py, not here)."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from px_hub.cli.main import build_parser, main


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", ["prune", "push", "pull", "finetune", "report", "compare", "methods"])
def test_every_flag_has_help_and_defaults_are_printed_once(command):
    p = _subparser(command)
    for a in p._actions:
        if a.help == argparse.SUPPRESS or isinstance(a, argparse._HelpAction):
            continue
        assert a.help, f"{command} {a.option_strings or a.dest} has no help"
        assert a.help.count("(default") <= 1, a.help
        if isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            assert "default" not in a.help.lower(), a.help
    text = p.format_help()
    assert "(default: True)" not in text and "(default: False)" not in text and ":func:" not in text


def test_one_name_per_concept_old_spellings_hidden_but_accepted():
    prune_help = _subparser("prune").format_help()
    for flag in ("--examples-per-class", "--out", "--quiet", "--verbose", "--token", "--commit-message"):
        assert flag in prune_help
    assert "--k " not in prune_help and "--output" not in prune_help
    p = build_parser()
    assert p.parse_args(["prune", "--k", "3"]).examples_per_class == 3
    assert p.parse_args(["prune", "--output", "x"]).out == "x"
    ft = p.parse_args(["finetune", "--recipe", "r", "--output", "run", "--no-progress"])
    assert ft.out == "run" and ft.quiet
    assert "--no-progress" not in _subparser("finetune").format_help()
    for command in ("compare", "report", "finetune", "pull"):
        assert "--out" in _subparser(command).format_help()
    assert p.parse_args(["compare", "--model", "m", "--data", "d", "--sparsity", "0.9", "--k", "4"]) \
        .examples_per_class == 4


def test_finetune_help_and_list_recipes(capsys):
    text = _subparser("finetune").format_help()
    assert "--list-recipes" in text and ":func:" not in text
    assert main(["finetune", "--list-recipes"]) == 0
    assert "cifar10_resnet20" in capsys.readouterr().out.split()
    assert main(["finetune"]) == 2
    assert "--recipe is required" in capsys.readouterr().err


def test_methods_lists_every_method_with_a_description(capsys):
    import px_hub

    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split()[0] for line in lines]
    assert names == px_hub.available_methods()
    for line, info in zip(lines, px_hub.list_methods()):
        assert info.display_name in line and info.description in line
    assert [line.split()[0] for line in lines if line.endswith("; the default)")] == ["px_2024"]


def test_push_accepts_hf_upload_order_and_the_old_form():
    from px_hub.cli.hub import _push_target
    from px_hub.errors import InvalidArgumentError

    p = build_parser()
    assert _push_target(p.parse_args(["push", "alice/repo", "ticket"])) == ("alice/repo", "ticket")
    assert _push_target(p.parse_args(["push", "ticket", "--repo-id", "alice/repo"])) == ("alice/repo", "ticket")
    assert _push_target(p.parse_args(["push", "ticket"])) == (None, "ticket")
    with pytest.raises(InvalidArgumentError, match="two repo ids"):
        _push_target(p.parse_args(["push", "alice/a", "ticket", "--repo-id", "alice/b"]))


def test_push_preconditions_before_any_work(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    out = tmp_path / "t"
    # offline (tests run with HF_HUB_OFFLINE=1): refused at once, nothing loaded or written
    assert main(["prune", "--push", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "HF_HUB_OFFLINE" in err and len(err.splitlines()) == 1 and not out.exists()
    # online but no token anywhere
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("px_hub.cli.hub._stored_token", lambda: None)
    assert main(["prune", "--push", "--out", str(out)]) == 2
    assert "needs a Hugging Face token" in capsys.readouterr().err
    assert main(["push", "not a repo", str(tmp_path), "--token", "hf_secret"]) == 2
    err = capsys.readouterr().err
    assert "is not a repo id" in err and "hf_secret" not in err


def test_help_and_argument_errors_do_not_import_torch():
    """What the console script does (lazy package import): --help and a bad value exit before torch loads."""
    code = ("import sys; sys.argv[0] = 'px-hub'; from px_hub.cli.main import main\n"
            "rc = main({argv!r})\nprint('TORCH', 'torch' in sys.modules, rc)")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    for argv, rc in ((["prune", "--sparsity", "2"], 2), (["methods", "--bogus"], None), (["--version"], None)):
        r = subprocess.run([sys.executable, "-c", code.format(argv=argv)], env=env, capture_output=True, text=True,
                           timeout=120)
        if rc is None:  # argparse exits itself (help, version, unknown option)
            assert "TORCH" not in r.stdout and r.returncode in (0, 2), r.stderr
        else:
            assert r.stdout.split()[-3:] == ["TORCH", "False", str(rc)], (r.stdout, r.stderr)
    r = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'px-hub'\nimport px_hub.cli.main\n"
                        "px_hub.cli.main.build_parser().format_help()\nprint('torch' in sys.modules)"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stderr


def test_cli_allocator_setting_applies_on_glibc():
    """px_hub/_alloc.py: the px-hub command keeps freed buffers in its process (mallopt); True on Linux/glibc."""
    import sys

    from px_hub._alloc import keep_freed_memory

    assert keep_freed_memory() is sys.platform.startswith("linux")
