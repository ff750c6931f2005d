"""Per-layer density and width of a mask, in network order, and the collapse warnings the report prints.

Width follows the paper's definition: an output unit (a conv output channel or a linear unit, i.e. a row of the
weight along dim 0) is *alive* while any of its weights is kept. The counting itself is ``Mask.report()``.
"""
from __future__ import annotations

from torch import nn

from ..masking import LayerReport, Mask


def layer_reports(mask: Mask, model: nn.Module | None = None) -> list[LayerReport]:
    """``mask.report()`` ordered as the model registers its parameters (network order) when ``model`` is given,
    else in the mask's own order."""
    rows = mask.report()
    if model is None:
        return rows
    order = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    return sorted(rows, key=lambda r: order.get(r.name, len(order)))


def layer_label(param_name: str) -> str:
    """``blocks.0.conv1.weight`` -> ``blocks.0.conv1`` (the module name the plots show)."""
    return param_name[: -len(".weight")] if param_name.endswith(".weight") else param_name


def layer_rows(mask: Mask, model: nn.Module | None = None) -> list[dict]:
    """JSON-able rows: layer, shape, kept, total, density, alive_outputs, outputs, alive_fraction, collapsed."""
    return [{"layer": layer_label(r.name), "parameter": r.name, "shape": list(r.shape), "kept": r.kept,
             "total": r.total, "density": r.density, "alive_outputs": r.alive_outputs, "outputs": r.outputs,
             "alive_fraction": r.alive_outputs / r.outputs if r.outputs else 0.0, "collapsed": r.collapsed}
            for r in layer_reports(mask, model)]


def collapse_warnings(mask: Mask, model: nn.Module | None = None) -> list[str]:
    """One sentence per collapsed layer: no weight kept, or no alive output unit."""
    out = []
    for r in layer_reports(mask, model):
        if r.kept == 0:
            out.append(f"{layer_label(r.name)}: every weight pruned (0 of {r.total} kept)")
        elif r.alive_outputs == 0:
            out.append(f"{layer_label(r.name)}: no alive output unit (0 of {r.outputs})")
    return out
