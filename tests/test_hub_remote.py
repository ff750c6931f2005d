"""Push and pull through a local Hub server speaking huggingface_hub's real protocol (never a mocked client):
round trip, stock timm loading, offline cache, corruption on the server, missing token, mid-upload failures
(no partial commit), token hygiene, and the CLI."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from _hub_support import hub_env

from px_hub import Mask
from px_hub.errors import HubError, IntegrityError, OutputExistsError, WeightsUnavailableError
from px_hub.hub import from_pretrained, load_ticket, pull_ticket, push_ticket, save_ticket

TOKEN = "hf_" + "pxhubTestToken0123456789abcdef"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _ticket(folder: Path, arch: str = "test_resnet", num_classes: int = 5, sparsity: float = 0.9) -> Path:
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    g = torch.Generator().manual_seed(0)
    mask = Mask.from_scores({n: torch.rand(p.shape, generator=g) for n, p in model.named_parameters()
                             if p.dim() > 1}, sparsity)
    return save_ticket(folder, model, mask, {"method": "random", "sparsity": sparsity, "seed": 0},
                       source={"source": "hf-hub", "id": f"timm/{arch}", "library": "timm", "license": "apache-2.0"})


@pytest.fixture(scope="module")
def ticket(tmp_path_factory):
    return _ticket(tmp_path_factory.mktemp("tk") / "tiny-ticket")


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _same_model(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_push_pull_round_trip(hub, env, ticket, tmp_path):
    url = push_ticket(ticket, "alice/round-trip")
    head = hub.head("alice/round-trip")
    assert url.endswith(f"/alice/round-trip/commit/{head}")
    assert hub.n_commits("alice/round-trip") == 2  # repo creation + exactly one commit with the whole folder
    remote = hub.files("alice/round-trip")
    assert set(remote) == {".gitattributes", *(p.name for p in ticket.iterdir())}
    assert remote["model.safetensors"] == (ticket / "model.safetensors").read_bytes()
    assert 'hf-hub:alice/round-trip"' in remote["README.md"].decode()  # the card names the repo after a push

    n = len(hub.requests)
    out = pull_ticket("alice/round-trip", out_dir=tmp_path / "pulled")
    fetched = [p for m, p in hub.requests[n:] if m == "GET" and "/_cdn/" in p]
    sizes = {hashlib.sha256(b).hexdigest(): name for name, b in remote.items()}
    assert "model.safetensors" not in {sizes.get(p.rsplit("/", 1)[-1]) for p in fetched}  # compact preferred
    m0, mask0, cfg0 = load_ticket(ticket)
    m1, mask1, cfg1 = load_ticket(out)
    assert mask1 == mask0 and _same_model(m0, m1)
    assert (out / "model.safetensors").read_bytes() == (ticket / "model.safetensors").read_bytes()
    assert cfg1["ticket"]["repo_id"] == "alice/round-trip"
    assert _same_model(m0, from_pretrained("alice/round-trip"))
    with pytest.raises(OutputExistsError):
        pull_ticket("alice/round-trip", out_dir=out)

    # pinned revision, then offline from the cache with no request reaching the server
    assert (pull_ticket(f"alice/round-trip@{head}", out_dir=tmp_path / "pinned") / "mask.safetensors").exists()
    from huggingface_hub import constants

    env["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True  # restored by monkeypatch (hub_env set it)
    n = len(hub.requests)
    offline = pull_ticket("alice/round-trip", out_dir=tmp_path / "offline")
    assert hub.requests[n:] == []
    assert _same_model(m0, load_ticket(offline)[0])
    with pytest.raises(WeightsUnavailableError, match="not in the local cache"):
        pull_ticket("alice/never-pushed")


def test_stock_timm_loads_pushed_ticket(hub, env, tmp_path):
    """A ticket of a real timm architecture (timm's small test_resnet, pretrained=False) loads with stock
    timm.create_model('hf-hub:...') in a process that never imports px_hub."""
    folder = _ticket(tmp_path / "tr", arch="test_resnet", num_classes=10, sparsity=0.95)
    push_ticket(folder, "alice/test-resnet-px")
    ref = tmp_path / "ref.pt"
    _, mask, _ = load_ticket(folder)
    script = textwrap.dedent(f"""
        import importlib.util, sys
        # only the environment's torchvision workaround, loaded by path: px_hub itself is never imported
        spec = importlib.util.spec_from_file_location("px_compat", {str(REPO_ROOT / "px_hub" / "_compat.py")!r})
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        import re
        from pathlib import Path
        from safetensors.torch import save_file
        card = Path({str(folder / "README.md")!r}).read_text()
        snippet = re.search(r"```python\\n(.*?)```", card, re.S).group(1)  # the card's first (timm-only) snippet
        assert 'timm.create_model("hf-hub:alice/test-resnet-px", pretrained=True)' in snippet
        scope = {{}}
        exec(snippet, scope)
        model, transform = scope["model"], scope["transform"]
        assert "px_hub" not in sys.modules and not model.training
        save_file({{k: v.contiguous() for k, v in model.state_dict().items()}}, {str(ref)!r})
    """)
    run_env = {**os.environ, **env, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=run_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from safetensors.torch import load_file

    sd = load_file(str(ref))
    expected = load_file(str(folder / "model.safetensors"))
    assert sd.keys() == expected.keys() and all(torch.equal(sd[k], expected[k]) for k in sd)
    assert mask.sparsity() == pytest.approx(0.95, abs=1e-4)
    for k, m in mask.items():
        assert (sd[k][~m] == 0).all() and (sd[k][m] != 0).all(), k


@pytest.mark.parametrize("victim", ["model.compact.safetensors", "mask.safetensors"])
def test_corrupted_remote_file_is_rejected(hub, env, ticket, tmp_path, victim):
    repo = f"alice/corrupt-{victim.split('.')[1]}"
    push_ticket(ticket, repo)
    hub.corrupt(repo, victim)
    with pytest.raises(IntegrityError, match="pull again"):
        pull_ticket(repo, out_dir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    # the bad cached copy was evicted: once the server serves the right bytes again, a new pull succeeds
    hub.corrupt(repo, victim)  # flips the same bytes back
    good = pull_ticket(repo, out_dir=tmp_path / "good")
    assert load_ticket(good)[1] == load_ticket(ticket)[1]


def test_push_without_token(hub, ticket, tmp_path, monkeypatch):
    hub_env(monkeypatch, hub, tmp_path, token=None)
    before = _digest(ticket)
    with pytest.raises(HubError, match="HF_TOKEN"):
        push_ticket(ticket, "alice/no-token")
    assert "alice/no-token" not in hub.repos and _digest(ticket) == before


def test_push_with_rejected_token(hub, ticket, tmp_path, monkeypatch):
    hub_env(monkeypatch, hub, tmp_path, token="hf_" + "wrongTokenWrongToken0123456789")
    with pytest.raises(HubError, match="401") as e:
        push_ticket(ticket, "alice/bad-token")
    assert "wrongTokenWrongToken" not in str(e.value)


@pytest.mark.parametrize("failure", ["commit", "lfs_put"])
def test_failed_upload_leaves_no_partial_commit(hub, env, ticket, failure):
    repo = f"alice/fail-{failure.replace('_', '-')}"
    before = _digest(ticket)
    hub.fail[failure] = 500 if failure == "commit" else 403
    with pytest.raises(HubError) as e:
        push_ticket(ticket, repo)
    msg = str(e.value)
    assert ("500" in msg if failure == "commit" else "403" in msg) and "injected" in msg
    assert "intact" in msg and TOKEN not in msg
    assert set(hub.files(repo)) == {".gitattributes"} and hub.n_commits(repo) == 1
    assert _digest(ticket) == before
    assert not [p for p in ticket.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    push_ticket(ticket, repo)  # the same push succeeds once the server is healthy
    assert "model.safetensors" in hub.files(repo)


def test_push_to_branch_and_private(hub, env, ticket, tmp_path, monkeypatch):
    url = push_ticket(ticket, "alice/branchy", private=True, revision="v1")
    assert hub.repos["alice/branchy"].private
    assert set(hub.files("alice/branchy", "main")) == {".gitattributes"}
    assert hub.head("alice/branchy", "v1") in url
    out = pull_ticket("alice/branchy@v1", out_dir=tmp_path / "v1")
    assert (out / "mask.safetensors").exists()
    monkeypatch.delenv("HF_TOKEN")  # private: anonymous reads (with nothing cached) are refused clearly
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(HubError, match="not found"):
        pull_ticket("alice/branchy@v1", out_dir=tmp_path / "anon")


def test_token_never_written(hub, env, ticket, tmp_path):
    push_ticket(ticket, "alice/token-check")
    out = pull_ticket("alice/token-check", out_dir=tmp_path / "pulled")
    written = [p for root in (ticket.parent, tmp_path) for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "model.compact.safetensors" for p in written)
    for p in written:
        assert TOKEN.encode() not in p.read_bytes(), p
    for content in hub.files("alice/token-check").values():
        assert TOKEN.encode() not in content
    assert out.exists()


def test_cli_push_and_pull(hub, env, ticket, tmp_path, capsys):
    from px_hub.cli.main import main

    assert main(["push", str(ticket), "--repo-id", "alice/cli-ticket"]) == 0
    assert f"/alice/cli-ticket/commit/{hub.head('alice/cli-ticket')}" in capsys.readouterr().out
    assert main(["pull", "alice/cli-ticket", "--out", str(tmp_path / "p")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "p")
    assert main(["pull", "alice/cli-ticket", "--out", str(tmp_path / "p")]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["pull", "not a repo"]) == 2
    assert "USER/REPO" in capsys.readouterr().err
    # default repo id: <user>/<folder name>
    assert main(["push", str(ticket)]) == 0
    assert "alice/tiny-ticket" in hub.repos
    # `hf upload` order, with a commit message and an explicit token (never printed)
    assert main(["push", "alice/hf-order", str(ticket), "--commit-message", "first ticket", "--token", TOKEN]) == 0
    out = capsys.readouterr()
    assert "alice/hf-order" in hub.repos and TOKEN not in out.out + out.err


def test_push_refuses_offline_mode(ticket):
    """tests/conftest.py runs with HF_HUB_OFFLINE=1: a push says so instead of failing deep in the client."""
    before = _digest(ticket)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE=1"):
        push_ticket(ticket, "alice/offline")
    assert _digest(ticket) == before
