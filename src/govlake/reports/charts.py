"""Charts for the reports, drawn with matplotlib on the Agg canvas and returned as base64 PNG
data URIs, so a mailed report is one self-contained HTML file.

Labels stay ASCII (resource and rule ids): the default fonts carry no Chinese glyphs.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from datetime import datetime

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

_WIDTH, _HEIGHT, _DPI = 7.5, 3.2, 100


@dataclass(frozen=True)
class Series:
    """One line of a time chart: a label and its (time, value) points."""

    label: str
    points: tuple[tuple[datetime, float], ...]


def _data_uri(figure: Figure) -> str:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def time_chart(
    series: list[Series],
    *,
    title: str,
    ylabel: str,
    span: tuple[datetime, datetime],
    share: bool = False,
    floor: float = 0.0,
    limit: float | None = None,
    limit_label: str = "",
) -> str | None:
    """A line per series over `span` (the report period), one marker per point. `share`
    formats the axis in %; the axis starts at `floor` (or the lowest point, if lower);
    `limit` draws a dashed threshold line. None when there is nothing to draw."""
    drawn = [s for s in series if s.points]
    if not drawn:
        return None
    figure = Figure(figsize=(_WIDTH, _HEIGHT))
    axes = figure.add_subplot()
    for line in drawn:
        points = sorted(line.points)
        times = date2num([p[0] for p in points])
        axes.plot(times, [p[1] for p in points], marker="o", label=line.label)
    if limit is not None:
        axes.axhline(limit, color="#b03a2e", linestyle="--", linewidth=1, label=limit_label)
    axes.set_xlim(float(date2num(span[0])), float(date2num(span[1])))
    locator = AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    values = [p[1] for line in drawn for p in line.points]
    top = max([*values, limit or 0.0, 1.0 if share else 0.0])
    bottom = min([*values, floor])
    margin = (top - bottom) * 0.05 or 0.01
    axes.set_ylim(bottom - margin if bottom < floor else bottom, top + margin)
    if share:
        axes.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=1))
    axes.set_title(title, fontsize=10)
    axes.set_ylabel(ylabel, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return _data_uri(figure)


def bar_chart(bars: list[tuple[str, float]], *, title: str, xlabel: str) -> str | None:
    """Horizontal bars, largest on top. None when there is nothing to draw."""
    if not bars:
        return None
    ordered = sorted(bars, key=lambda bar: bar[1])
    figure = Figure(figsize=(_WIDTH, max(1.6, 0.35 * len(ordered) + 0.8)))
    axes = figure.add_subplot()
    positions = range(len(ordered))
    axes.barh(list(positions), [bar[1] for bar in ordered], color="#2e6da4")
    axes.set_yticks(list(positions), [bar[0] for bar in ordered], fontsize=8)
    for position, (_, value) in zip(positions, ordered, strict=True):
        axes.annotate(
            f"{value:,.0f}", (value, position), xytext=(3, 0), textcoords="offset points",
            va="center", fontsize=8,
        )  # fmt: skip
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(xlabel, fontsize=9)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(axis="x", alpha=0.3)
    return _data_uri(figure)
