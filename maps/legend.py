"""Colour classes of the heat layer and their legend: quantile breaks on printed values, the palette, the labels."""

from __future__ import annotations

import numpy as np

#: Heat colours, light to dark (ColorBrewer YlOrRd, 7 classes).
HEAT_COLORS = ("#ffffb2", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#b10026")


def class_breaks(values: np.ndarray, n: int = len(HEAT_COLORS)) -> np.ndarray:
    """Upper bounds of up to ``n`` colour classes at quantiles of ``values`` (distinct, increasing)."""
    values = np.asarray(values, dtype="float64")
    if not len(values):
        return np.zeros(0)
    qs = np.quantile(values, np.arange(1, n + 1) / n)
    return np.unique(qs)


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
    """The legend rows ``{"color", "label"}``: ``lo – b1``, ``> b1 – b2``, … (one value when the first class is one).

    Parameters
    ----------
    values
        The classed values (:func:`legend_values`); the smallest starts the first class.
    breaks
        Upper bounds of the classes (:func:`class_breaks`).
    colors
        One colour per class (:func:`class_colors`).
    """
    legend = []
    lo = float(values.min()) if len(values) else 0.0
    for i, (b, col) in enumerate(zip(breaks, colors, strict=True)):
        a = lo if i == 0 else float(breaks[i - 1])
        legend.append({"color": col, "label": format_value(a) if i == 0 and a == b else
                       (f"{format_value(a)} – {format_value(b)}" if i == 0
                        else f"> {format_value(a)} – {format_value(b)}")})
    return legend


__all__ = ["HEAT_COLORS", "class_breaks", "class_colors", "format_value", "legend_entries", "legend_values"]
