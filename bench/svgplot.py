"""A line chart as SVG, written with the standard library alone (no plotting package).

Used for build time against the number of app servers: a handful of points per
series, so axes, ticks, lines, markers and a legend are all it needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 720, 400
LEFT, RIGHT, TOP, BOTTOM = 60, 230, 40, 50
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

# One series: its label, its points (x, y), and whether it is drawn dashed (an older run).
Series = tuple[str, Sequence[tuple[float, float]], bool]


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / max(1, ticks)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _fmt(value: float) -> str:
    return f"{value:g}"


def line_chart(title: str, x_label: str, y_label: str, series: Sequence[Series]) -> str:
    """The SVG text of ``series`` drawn against shared axes starting at 0."""
    points = [p for _, pts, _ in series for p in pts]
    x_max = max((x for x, _ in points), default=1) or 1
    y_max = max((y for _, y in points), default=1) or 1
    x_step, y_step = _nice_step(x_max), _nice_step(y_max)
    x_top = math.ceil(x_max / x_step) * x_step
    y_top = math.ceil(y_max / y_step) * y_step
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + plot_w * x / x_top

    def py(y: float) -> float:
        return TOP + plot_h * (1 - y / y_top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="{TOP - 16}" font-size="14">{escape(title)}</text>',
    ]
    tick = 0.0
    while tick <= y_top + 1e-9:
        y = py(tick)
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(tick)}</text>')
        tick += y_step
    tick = 0.0
    while tick <= x_top + 1e-9:
        x = px(tick)
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP + plot_h}" x2="{x:.1f}" y2="{TOP + plot_h + 4}" '
            'stroke="black"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">{_fmt(tick)}</text>'
        )
        tick += x_step
    out += [
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="black"/>',
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 12}" text-anchor="middle">'
        f"{escape(x_label)}</text>",
        f'<text transform="translate(16 {TOP + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>',
    ]
    for index, (label, pts, dashed) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(pts))
        if path:
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
            )
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')
        legend_y = TOP + 10 + 20 * index
        legend_x = LEFT + plot_w + 12
        out.append(
            f'<line x1="{legend_x}" y1="{legend_y}" x2="{legend_x + 24}" y2="{legend_y}" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{legend_x + 30}" y="{legend_y + 4}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_line_chart(
    path: Path, title: str, x_label: str, y_label: str, series: Sequence[Series]
) -> Path:
    path.write_text(line_chart(title, x_label, y_label, series))
    return path


def build_time_series(rows: Sequence[dict], when: str, dashed: bool = False) -> list[Series]:
    """Build and no-op re-run seconds of ``bench/build_times.py``'s rows, by app servers."""
    return [
        (f"build, {when}", [(r["servers"], r["build_s"]) for r in rows], dashed),
        (f"no-op re-run, {when}", [(r["servers"], r["noop_rerun_s"]) for r in rows], dashed),
    ]
