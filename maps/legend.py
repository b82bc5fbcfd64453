"""Colour classes of the heat layer and their legend: head/tail breaks on printed values, the palette, the labels.

Event counts per cell are long-tailed (most cells hold one or two events, a few hold hundreds): quantile classes
paint most of the city in the top colours or print classes like ``1, >1–2, >2–3, >3–140``. Head/tail breaks (Jiang
2013, "Head/tail breaks: a new classification scheme for data with a heavy-tailed distribution"), computed by
``mapclassify.HeadTailBreaks``, cut at the mean, then at the mean of the values above it, and so on: the light
classes hold the many small cells, each darker one the head of the one before.
"""

from __future__ import annotations

import mapclassify
import numpy as np

#: Heat colours, light to dark (ColorBrewer YlOrRd, 7 classes).
HEAT_COLORS = ("#ffffb2", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#b10026")


def class_breaks(values: np.ndarray, n: int = len(HEAT_COLORS)) -> np.ndarray:
    """Upper bounds of up to ``n`` colour classes by head/tail breaks (``mapclassify.HeadTailBreaks``):
    increasing, the last one the maximum; a value ``v`` is in the first class whose bound is ``>= v``.

    When the tail is so long that head/tail breaks give more than ``n`` classes, the top ones are merged into
    the ``n``-th (its bound is the maximum): the darkest colour is the extreme head."""
    values = np.asarray(values, dtype="float64")
    values = values[np.isfinite(values)]
    if not len(values):
        return np.zeros(0)
    if np.unique(values).size == 1:
        return values[:1].copy()
    bins = np.asarray(mapclassify.HeadTailBreaks(values).bins, dtype="float64")
    if len(bins) > n:
        bins = np.r_[bins[:n - 1], values.max()]
    return bins


def legend_values(values: np.ndarray) -> np.ndarray:
    """Values rounded as the legend prints them (:func:`format_value`: whole numbers from 100, else one decimal).

    Classes are cut on these, so two classes never print the same range: densities of one-event cells differ
    only in the cells' slightly different areas (72.52, 72.53 … per km²) and would give breaks that all read 72.5.
    """
    v = np.asarray(values, dtype="float64")
    return np.where(np.abs(v) >= 100, np.round(v), np.round(v, 1))


def class_colors(n: int) -> list[str]:
    """``n`` heat colours spread over the whole palette (light to dark), so few classes still read low to high."""
    if n <= 0:
        return []
    if n == 1:
        return [HEAT_COLORS[-1]]
    return [HEAT_COLORS[i] for i in np.round(np.linspace(0, len(HEAT_COLORS) - 1, n)).astype(int)]


def format_value(v: float) -> str:
    """A legend number: whole numbers and values from 100 without decimals, others with one (thousands separated)."""
    return f"{v:,.0f}" if abs(v - round(v)) < 1e-9 or abs(v) >= 100 else f"{v:,.1f}"


def legend_entries(values: np.ndarray, breaks: np.ndarray, colors: list[str]) -> list[dict]:
    """The legend rows ``{"color", "label", "n"}``: each class as the smallest and largest value it holds
    (``1``, ``2 – 3``, ``4 – 12``, …: head/tail breaks fall between whole counts, so the bounds themselves would
    print as ``> 3.2``) and the number of cells in it.

    Parameters
    ----------
    values
        The classed values (:func:`legend_values`).
    breaks
        Upper bounds of the classes (:func:`class_breaks`).
    colors
        One colour per class (:func:`class_colors`).
    """
    values = np.asarray(values, dtype="float64")
    classes = np.searchsorted(breaks, values, side="left")
    legend = []
    for i, col in enumerate(colors):
        members = values[classes == i]
        if not len(members):
            continue
        a, b = float(members.min()), float(members.max())
        label = format_value(a) if a == b else f"{format_value(a)} – {format_value(b)}"
        legend.append({"color": col, "label": label, "n": len(members)})
    return legend


__all__ = ["HEAT_COLORS", "class_breaks", "class_colors", "format_value", "legend_entries", "legend_values"]
