"""Inline SVG charts for the run report: no JavaScript, no external assets.

Three chart kinds cover the report: horizontal (grouped) bars, a rank-size plot of cluster sizes
on a log axis, and line charts of per-round curves. Every function returns one ``<svg>`` string.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

PALETTE = ("#2f6db5", "#e07b39", "#3a9e5f", "#b4418e", "#7a6a4f", "#5b5b5b")
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]`` (steps of 1, 2 or 5 x 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"tick range must be finite, got [{lo}, {hi}]")
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    f = raw / mag  # Heckbert's "nice numbers": round the raw step to 1, 2, 5 or 10 x 10^k
    step = (1 if f < 1.5 else 2 if f < 3 else 5 if f < 7 else 10) * mag
    start = math.floor(lo / step) * step
    ticks = [start + i * step for i in range(int(math.ceil((hi - start) / step)) + 1)]
    return [round(t, 12) for t in ticks]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten spanning ``[lo, hi]`` (``lo > 0``)."""
    if lo <= 0:
        raise ValueError(f"log axis needs positive values, got lower bound {lo}")
    return [10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-2:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{v:g}"


def _legend(names: Sequence[str], x: float, y: float) -> str:
    out = []
    for i, name in enumerate(names):
        xx = x + i * 110
        out.append(
            f'<rect x="{xx}" y="{y - 9}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{xx + 14}" y="{y}" {FONT}>{escape(name)}</text>'
        )
    return "".join(out)


def hbar_chart(
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
    *,
    unit: str = "",
    width: int = 640,
    bar: int = 12,
    value_fmt: str = "{:.3g}",
) -> str:
    """Horizontal bars, one group per label and one bar per series (linear axis from 0)."""
    names = list(series)
    values = np.array([list(series[s]) for s in names], dtype=np.float64).reshape(len(names), len(labels))
    if values.size and (values < 0).any():
        raise ValueError("bar values must be >= 0")
    left, right, top = 150, 60, 22 if len(names) > 1 else 6
    group = bar * len(names) + 6
    height = top + group * len(labels) + 24
    vmax = float(values.max()) if values.size and values.max() > 0 else 1.0
    ticks = nice_ticks(0.0, vmax, 4)
    scale = (width - left - right) / ticks[-1]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
    ]
    if len(names) > 1:
        parts.append(_legend(names, left, 12))
    axis_y = top + group * len(labels)
    for t in ticks:
        x = left + t * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{axis_y}" stroke="#ddd"/>'
            f'<text x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle" {FONT}>{_fmt(t)}{escape(unit)}</text>'
        )
    for i, label in enumerate(labels):
        y0 = top + i * group + 3
        parts.append(f'<text x="{left - 6}" y="{y0 + group / 2}" text-anchor="end" {FONT}>{escape(str(label))}</text>')
        for j in range(len(names)):
            v = values[j, i]
            parts.append(
                f'<rect x="{left}" y="{y0 + j * bar}" width="{max(v * scale, 0.5):.1f}" height="{bar - 2}" '
                f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(names[j])}: {value_fmt.format(v)}</title></rect>'
                f'<text x="{left + v * scale + 4:.1f}" y="{y0 + j * bar + bar - 3}" {FONT}>{value_fmt.format(v)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _frame(
    width: int,
    height: int,
    box: tuple[float, float, float, float],
    xticks: list[tuple[float, str]],
    yticks: list[tuple[float, str]],
    xlabel: str,
    ylabel: str,
) -> list[str]:
    x0, y0, x1, y1 = box
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
        f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="none" stroke="#999"/>',
    ]
    for py, text in yticks:
        parts.append(
            f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" stroke="#e4e4e4"/>'
            f'<text x="{x0 - 5}" y="{py + 4:.1f}" text-anchor="end" {FONT}>{text}</text>'
        )
    for px, text in xticks:
        parts.append(f'<text x="{px:.1f}" y="{y1 + 14}" text-anchor="middle" {FONT}>{text}</text>')
    parts.append(
        f'<text x="{(x0 + x1) / 2}" y="{height - 4}" text-anchor="middle" {FONT}>{escape(xlabel)}</text>'
        f'<text x="12" y="{(y0 + y1) / 2}" transform="rotate(-90 12 {(y0 + y1) / 2})" text-anchor="middle" {FONT}>{escape(ylabel)}</text>'
    )
    return parts


def rank_size_chart(
    series: dict[str, Sequence[float]],
    *,
    width: int = 460,
    height: int = 260,
    xlabel: str = "cluster rank (largest first)",
    ylabel: str = "items (log scale)",
) -> str:
    """Sizes of every cluster sorted in decreasing order against their rank, log-scaled y axis.

    Zero sizes cannot sit on a log axis: each curve stops at its last positive size (the caption
    of the report states how many clusters are empty).
    """
    curves = {name: np.sort(np.asarray(v, dtype=np.float64))[::-1] for name, v in series.items()}
    positive = np.concatenate([c[c > 0] for c in curves.values()] or [np.ones(1)])
    if positive.size == 0:
        positive = np.ones(1)
    ticks = log_ticks(float(positive.min()), float(positive.max()))
    lo, hi = math.log10(ticks[0]), math.log10(ticks[-1])
    hi = hi if hi > lo else lo + 1
    n = max([len(c) for c in curves.values()] + [1])
    x0, y0, x1, y1 = 56, 24, width - 12, height - 34

    def px(rank: np.ndarray) -> np.ndarray:
        return x0 + (rank / max(n - 1, 1)) * (x1 - x0)

    def py(v: np.ndarray) -> np.ndarray:
        return y1 - (np.log10(v) - lo) / (hi - lo) * (y1 - y0)

    xt = [(float(px(np.array(r))), str(int(r) + 1)) for r in np.unique(np.linspace(0, n - 1, min(n, 5)).round())]
    parts = _frame(
        width, height, (x0, y0, x1, y1), xt, [(float(py(np.array(t))), _fmt(t)) for t in ticks], xlabel, ylabel
    )
    parts.append(_legend(list(curves), x0, 14))
    for i, (name, c) in enumerate(curves.items()):
        c = c[c > 0]
        if not len(c):
            continue
        xs, ys = px(np.arange(len(c), dtype=np.float64)), py(c)
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, ys))
        color = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.8"><title>{escape(name)}</title></polyline>'
        )
        if len(c) <= 64:
            parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2" fill="{color}"/>' for a, b in zip(xs, ys)]
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    x: Sequence[float],
    series: dict[str, Sequence[float]],
    *,
    width: int = 460,
    height: int = 240,
    xlabel: str = "round",
    ylabel: str = "",
    y_range: tuple[float, float] | None = None,
) -> str:
    """One polyline (with markers) per series over a shared x; NaNs break nothing (points skipped)."""
    xs = np.asarray(x, dtype=np.float64)
    ys = {k: np.asarray(v, dtype=np.float64) for k, v in series.items()}
    finite = np.concatenate([v[np.isfinite(v)] for v in ys.values()] or [np.zeros(1)])
    if y_range is None:
        y_range = (min(0.0, float(finite.min())) if finite.size else 0.0, float(finite.max()) if finite.size else 1.0)
    yt = nice_ticks(*y_range, 4)
    xt_vals = nice_ticks(float(xs.min()) if xs.size else 0.0, float(xs.max()) if xs.size else 1.0, 5)
    x_lo, x_hi = xt_vals[0], xt_vals[-1]
    x0, y0, x1, y1 = 56, 24, width - 12, height - 34

    def px(v: np.ndarray) -> np.ndarray:
        return x0 + (v - x_lo) / max(x_hi - x_lo, 1e-12) * (x1 - x0)

    def py(v: np.ndarray) -> np.ndarray:
        return y1 - (v - yt[0]) / max(yt[-1] - yt[0], 1e-12) * (y1 - y0)

    parts = _frame(
        width,
        height,
        (x0, y0, x1, y1),
        [(float(px(np.array(t))), _fmt(t)) for t in xt_vals],
        [(float(py(np.array(t))), _fmt(t)) for t in yt],
        xlabel,
        ylabel,
    )
    parts.append(_legend(list(ys), x0, 14))
    for i, v in enumerate(ys.values()):
        ok = np.isfinite(v) & np.isfinite(xs)
        color = PALETTE[i % len(PALETTE)]
        pts = list(zip(px(xs[ok]), py(v[ok])))
        parts.append(
            f'<polyline points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}" fill="none" stroke="{color}" stroke-width="1.8"/>'
        )
        parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{color}"/>' for a, b in pts]
    parts.append("</svg>")
    return "".join(parts)
