"""The one place where px-hub works around its environment.

torchvision 0.28.0 (the only release that accepts torch 2.13.0) ships a CUDA build of its C extension. On a
CPU-only torch that extension cannot load, and ``import torchvision`` (hence timm, open_clip, evaluate) then dies
in ``torchvision/_meta_registrations.py`` with ``operator torchvision::nms does not exist``: it registers fake
kernels for ``torchvision::nms``/``torchvision::qnms`` whose schemas the extension would have defined.

Fix: before torchvision is imported, try to load its real extension; only if that fails, define the two op
schemas with ``torch.library`` so the fake-kernel registration succeeds. Where the real ops load (GPU machines,
CPU builds of torchvision) this does nothing. Detection models (which need a real nms kernel) remain unavailable
on such machines; px-hub never calls them.

Two ways in, one fix: ``import px_hub`` applies it directly; ``scripts/setup-env.sh`` also writes a one-line
``.pth`` file into the virtual environment that calls :func:`install_import_hook`, so ``import timm`` in any
process of that environment (user scripts, ``accelerate launch`` workers) works too. The hook is a
``sys.meta_path`` finder that acts the first time anything looks ``torchvision`` up (no cost at start-up). That
is an ``import torchvision`` (timm, open_clip) or only a probe: transformers asks ``importlib.util.find_spec
("torchvision")`` when it is imported and imports torchvision much later (``transformers.image_utils``). So the
hook applies the fix at the first look-up and then stays in ``sys.meta_path`` as a no-op: the ``.pth`` module is
in no ``sys.modules``, and the hook is what keeps it, and with it the ``torch.library`` definitions, alive (a
definition that is garbage-collected removes the op schema again). This file imports nothing but the standard
library at module level, so the ``.pth`` can load it without ``px_hub``.
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


class _TorchvisionImportHook:
    """Applies the fix at the first look-up of ``torchvision`` (import or ``find_spec`` probe), then does nothing.

    It stays in ``sys.meta_path`` on purpose: it holds this module, whose ``_LIBRARY`` keeps the op schemas defined.
    """

    done = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" and not self.done:
            self.done = True
            ensure_torchvision_importable()
        return None


def install_import_hook() -> None:
    # One hook per process, even when the .pth runs twice (a venv's lib64 -> lib link lists site-packages twice)
    # and each run builds its own module object (so the check is by class name, not isinstance).
    if "torchvision" not in sys.modules and not any(
        type(f).__name__ == _TorchvisionImportHook.__name__ for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _TorchvisionImportHook())


if __name__ != "_px_hub_compat":  # imported as px_hub._compat: apply now
    ensure_torchvision_importable()
