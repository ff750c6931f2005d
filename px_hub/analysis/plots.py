"""Report figures (matplotlib, Agg backend, no global state touched). Each function takes one or several labelled
series, so the same figure serves ``report`` (one ticket vs dense) and ``compare`` (methods overlaid). PNGs carry
no version/time metadata, so the same numbers give the same bytes."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .ntk import NTKSpectrum


def _wrap(title: str, width: int = 70) -> str:
    """Long titles wrap instead of running off the figure."""
    import textwrap

    return "\n".join(textwrap.wrap(title, width)) or title

_PNG_METADATA = {"Software": None}


def _figure(n_layers: int) -> Figure:
    fig = Figure(figsize=(max(6.4, 0.32 * n_layers + 2.0), 4.6), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> str:
    fig.tight_layout()
    fig.savefig(os.fspath(path), format="png", metadata=_PNG_METADATA)
    return os.fspath(path)


def _grouped_bars(ax, series: Mapping[str, Sequence[dict]], key: str, scale: float = 1.0) -> list[str]:
    labels = [r["layer"] for r in next(iter(series.values()))]
    x = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    for i, (name, rows) in enumerate(series.items()):
        by_layer = {r["layer"]: r[key] for r in rows}
        vals = [scale * by_layer.get(lbl, np.nan) for lbl in labels]
        ax.bar(x - 0.4 + width * (i + 0.5), vals, width=width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.grid(axis="y", alpha=0.3)
    return labels


def plot_layer_density(series: Mapping[str, Sequence[dict]], path: str | os.PathLike, title: str = "") -> str:
    """Per-layer density (% of weights kept), layers in network order; ``series``: label -> layer_rows()."""
    n = len(next(iter(series.values())))
    fig = _figure(n)
    ax = fig.add_subplot(1, 1, 1)
    _grouped_bars(ax, series, "density", 100.0)
    ax.set_ylabel("weights kept (%)")
    ax.set_xlabel("layer (network order)")
    ax.set_title(_wrap(title or "Per-layer density"))
    ax.set_ylim(0, 118)
    ax.legend(fontsize=8, loc="upper center", ncol=min(len(series), 6))
    return _save(fig, path)


def plot_alive_outputs(series: Mapping[str, Sequence[dict]], path: str | os.PathLike, title: str = "") -> str:
    """Per-layer remaining output units (% of conv channels / linear units with at least one kept weight)."""
    n = len(next(iter(series.values())))
    fig = _figure(n)
    ax = fig.add_subplot(1, 1, 1)
    _grouped_bars(ax, series, "alive_fraction", 100.0)
    if len(series) == 1:  # one ticket: print "alive/total" over each bar
        rows = next(iter(series.values()))
        for i, r in enumerate(rows):
            ax.text(i, 100.0 * r["alive_fraction"] + 1.0, f"{r['alive_outputs']}/{r['outputs']}", rotation=90,
                    ha="center", va="bottom", fontsize=6)
    ax.set_ylabel("alive output units (%)")
    ax.set_xlabel("layer (network order)")
    ax.set_title(_wrap(title or "Per-layer remaining output units (unit alive while any weight is kept)"))
    ax.set_ylim(0, 130 if len(series) == 1 else 118)
    ax.legend(fontsize=8, loc="upper center", ncol=min(len(series), 6))
    return _save(fig, path)


def plot_spectra(spectra: Mapping[str, NTKSpectrum], path: str | os.PathLike, title: str = "",
                 reference: str | None = "dense") -> str:
    """Sorted eigenvalues of each NTK on a log scale; ``reference`` (e.g. the dense network) drawn dashed black."""
    fig = Figure(figsize=(6.4, 4.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, sp in spectra.items():
        ev = np.asarray(sp.eigenvalues, dtype=np.float64)
        floor = max(float(ev[0]), 1e-300) * 1e-12  # drop numerical zeros (cannot go on a log axis)
        keep = ev > floor
        idx = np.arange(1, ev.size + 1)[keep]
        style = {"color": "black", "linestyle": "--", "linewidth": 1.6} if name == reference else {"linewidth": 1.2}
        ax.plot(idx, ev[keep], label=f"{name} (tr {sp.trace:.3g}, λmax {sp.top:.3g})", **style)
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("eigenvalue index (descending)")
    ax.set_ylabel("eigenvalue of empirical NTK")
    any_sp = next(iter(spectra.values()))
    ax.set_title(_wrap(title or f"NTK eigenspectrum ({any_sp.samples} samples x {len(any_sp.outputs)} outputs)"))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)
