"""The JSON records px-hub writes (px_config.json, analysis.json, compare.json): one conversion to JSON-able
values and one list of library versions."""
from __future__ import annotations

import dataclasses
import math
import os
import platform


def to_jsonable(obj):
    """A JSON-able copy: tensors and arrays -> lists (0-d -> numbers), tuples/sets -> lists, paths -> str,
    dataclasses and objects with ``to_dict()`` -> dicts, non-finite floats -> strings ("nan", "inf");
    anything else -> ``str(obj)``."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # torch.Tensor, numpy arrays and scalars
        return to_jsonable(obj.tolist())
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    return str(obj)


_VERSIONED = ("px-hub", "torch", "timm", "huggingface-hub", "accelerate", "datasets", "safetensors",
              "open-clip-torch", "transformers")


def library_versions() -> dict[str, str]:
    """Python and the installed versions of the libraries that decide a ticket's bytes."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in _VERSIONED:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
