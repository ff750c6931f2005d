"""Tiny transformers image classifiers built from configs (no download), and a stock-transformers loader run in a
subprocess that never imports px_hub."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

IMAGE = 32  # input side of every tiny model (Dinov2: 28, a multiple of its 14-px patches)


def tiny_config(family: str, num_labels: int = 4):
    from transformers import ConvNextConfig, Dinov2Config, ResNetConfig, SwinConfig, ViTConfig

    if family == "resnet":
        return ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                            num_labels=num_labels)
    if family == "vit":
        return ViTConfig(image_size=IMAGE, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, num_labels=num_labels)
    if family == "convnext":
        return ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                              num_labels=num_labels)
    if family == "swin":
        return SwinConfig(image_size=IMAGE, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                          window_size=4, num_labels=num_labels)
    if family == "dinov2":
        return Dinov2Config(image_size=28, patch_size=14, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            num_labels=num_labels)
    raise ValueError(family)


def image_side(family: str) -> int:
    return 28 if family == "dinov2" else IMAGE


def tiny_model(family: str, seed: int = 0, num_labels: int = 4):
    from transformers import AutoModelForImageClassification

    torch.manual_seed(seed)
    return AutoModelForImageClassification.from_config(tiny_config(family, num_labels)).eval()


def stock_load(refs: dict[str, str], out: Path, env: dict | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Load each ``{name: folder or repo id}`` with stock ``AutoModelForImageClassification.from_pretrained`` (and
    its image processor) in a fresh process that never imports px_hub; return each model's state dict. Fails
    when transformers reports a missing, unexpected or mis-shaped key."""
    out.mkdir(parents=True, exist_ok=True)
    script = textwrap.dedent(f"""
        import json, sys
        from safetensors.torch import save_file
        from transformers import AutoImageProcessor, AutoModelForImageClassification
        refs = json.loads({json.dumps(json.dumps(refs))})
        for name, ref in refs.items():
            model, info = AutoModelForImageClassification.from_pretrained(ref, output_loading_info=True)
            bad = {{k: v for k, v in info.items() if k != "error_msgs" and v}}
            assert not bad and not info.get("error_msgs"), (name, bad)
            AutoImageProcessor.from_pretrained(ref)
            save_file({{k: v.contiguous() for k, v in model.state_dict().items()}}, f"{out}/{{name}}.safetensors")
        assert "px_hub" not in sys.modules
    """)
    run_env = {**os.environ, **(env or {}), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=run_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from safetensors.torch import load_file

    return {name: load_file(str(out / f"{name}.safetensors")) for name in refs}
