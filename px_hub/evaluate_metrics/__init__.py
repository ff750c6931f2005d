"""``evaluate`` metric modules shipped with px-hub, loadable offline by path.

    import px_hub                                   # torchvision fix before ``evaluate`` imports transformers
    from px_hub.evaluate_metrics import load_metric
    top_k = load_metric("top_k_accuracy")           # == evaluate.load(metric_path("top_k_accuracy"))

Each module is a plain ``evaluate.Metric`` script (``<name>/<name>.py``), so ``evaluate.load("/path/to/<name>.py")``
works without the Hub, and the same file can be pushed as a Space.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import UnknownNameError

METRICS_DIR = Path(__file__).resolve().parent
SHIPPED = ("top_k_accuracy", "mean_iou")


def metric_path(name: str) -> str:
    """Path of a shipped metric script (what ``evaluate.load`` takes)."""
    if name not in SHIPPED:
        raise UnknownNameError(f"unknown px-hub metric {name!r}; shipped metrics are {', '.join(SHIPPED)}")
    return os.fspath(METRICS_DIR / name / f"{name}.py")


def load_metric(name: str, **kwargs):
    """``evaluate.load`` of a shipped metric by path (no Hub access). ``kwargs`` go to ``evaluate.load``
    (e.g. ``experiment_id``, ``keep_in_memory``)."""
    import evaluate

    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(metric_path(name), **kwargs)
