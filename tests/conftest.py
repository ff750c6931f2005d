"""Shared test setup. Tests never reach the Hub: HF_HUB_OFFLINE=1 unless a test starts the local Hub server."""
from __future__ import annotations

import os
import pathlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

import px_hub  # noqa: E402,F401

REPO = pathlib.Path(__file__).resolve().parents[1]


FIXTURES = REPO / "tests" / "fixtures"
REFERENCE = FIXTURES / "px-reference"   # outputs of the official PX code, vendored (see its README.md)
SHARED_REFERENCE = REPO.parent / "shared" / "px-reference"  # the copy they were vendored from, where present


def reference_dir() -> pathlib.Path:
    """The vendored reference fixtures. They ship with the repository, so a missing file is a failure, never a
    skip."""
    if not (REFERENCE / "meta.json").is_file():
        pytest.fail(f"reference fixtures missing: {REFERENCE}/meta.json (they are part of the repository; restore "
                    "tests/fixtures/px-reference with git)")
    return REFERENCE


@pytest.fixture(scope="session")
def ref_dir() -> pathlib.Path:
    return reference_dir()


@pytest.fixture(scope="session")
def ref_inputs(ref_dir):
    from safetensors.torch import load_file

    d = load_file(str(ref_dir / "inputs.safetensors"))
    return d["x"], d["y"].long()


@pytest.fixture()
def ref_model(ref_dir):
    """cifar_resnet20 loaded with the fixture's initial weights (by order, as the fixture README says)."""
    import json

    import timm
    from safetensors.torch import load_file

    init = load_file(str(ref_dir / "init.safetensors"))
    order = json.loads((ref_dir / "meta.json").read_text())["state_dict_order"]
    model = timm.create_model("cifar_resnet20", num_classes=10)
    sd = model.state_dict()
    assert len(sd) == len(order)
    new = {k: init[name].reshape(sd[k].shape).to(sd[k].dtype) for k, (name, _shape) in zip(sd, order)}
    model.load_state_dict(new)
    return model.eval()


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture()
def fixture_threads():
    """Two torch threads: the reference fixtures' own conditions (CPU kernels sum in a thread-count-dependent
    order), also used where a float32 measurement must be stable."""
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def one_thread():
    """Run a test's torch ops on one thread (stable timing and summation order on the shared 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- the local Hub (tests/_hub_support.py): one server per test module, the real huggingface_hub client ------------

HUB_TOKEN = "hf_" + "pxhubTestToken0123456789abcdef"  # a module may set its own TOKEN


@pytest.fixture(scope="module")
def hub(request):
    from _hub_support import LocalHub

    server = LocalHub(tokens={getattr(request.module, "TOKEN", HUB_TOKEN): "alice"}).start()
    yield server
    server.stop()


@pytest.fixture()
def env(request, hub, tmp_path, monkeypatch):
    """HF_ENDPOINT pointing at ``hub``, the module's token, a private HF_HOME; returns the environment."""
    from _hub_support import hub_env

    return hub_env(monkeypatch, hub, tmp_path, token=getattr(request.module, "TOKEN", HUB_TOKEN))
