"""The one place where px-hub works around its environment.

torchvision 0.28.0 (the only release that accepts torch 2.13.0) ships a CUDA build of its C extension. On a
CPU-only torch that extension cannot load, and ``import torchvision`` (hence timm, open_clip, evaluate) then dies
in ``torchvision/_meta_registrations.py`` with ``operator torchvision::nms does not exist``: it registers fake
kernels for ``torchvision::nms``/``torchvision::qnms`` whose schemas the extension would have defined.

Fix: before torchvision is imported, try to load its real extension; only if that fails, define the two op
schemas with ``torch.library`` so the fake-kernel registration succeeds. Where the real ops load (GPU machines,
CPU builds of torchvision) this does nothing. Detection models (which need a real nms kernel) remain unavailable
on such machines; px-hub never calls them.
"""
from __future__ import annotations

import importlib.util
import os
import sys

_LIBRARY = None  # keeps the torch.library definitions alive for the life of the process


def ensure_torchvision_importable() -> None:
    global _LIBRARY
    if _LIBRARY is not None or "torchvision" in sys.modules:
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018  (already defined by a loaded extension)
        return
    except (AttributeError, RuntimeError):
        pass
    pkg_dir = list(spec.submodule_search_locations)[0]
    for name in sorted(os.listdir(pkg_dir)):
        if name.startswith("_C") and name.endswith((".so", ".pyd")):
            try:
                torch.ops.load_library(os.path.join(pkg_dir, name))
                return
            except OSError:
                break
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY = lib


ensure_torchvision_importable()
