"""What the benchmark measured: one `Measurement` per comparison, each a ratio to a baseline,
with the machine and versions it ran on; saved as JSON, shown as a table and a chart."""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

Better = Literal["lower", "higher"]
TargetOn = Literal["ratio", "value"]

PACKAGES = (
    "govlake",
    "pysail",
    "pyspark",
    "deltalake",
    "pyarrow",
    "polars",
    "great-expectations",
    "delta-sharing",
    "pandas",
    "fastapi",
    "uvicorn",
    "httpx",
)


@dataclass(frozen=True)
class Measurement:
    """`value` against `baseline` (same unit). `ratio` is how many times worse than the
    baseline: value/baseline when lower is better, baseline/value when higher is better; so
    1 means as good as the baseline and `ideal` says what the ratio should be. `target` is
    the goal the project set for the ratio (or, `target_on="value"`, for the value itself):
    reported, never asserted."""

    name: str
    title: str
    value: float
    baseline: float
    unit: str  # s | bytes | req/s | share | count (of `baseline`: errors among requests)
    baseline_label: str
    better: Better = "lower"
    ideal: float | None = 1.0
    rows: int | None = None
    notes: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    target: float | None = None
    target_on: TargetOn = "ratio"

    @property
    def ratio(self) -> float:
        """Infinite when the value is nothing at all where more is better (no request
        answered) or the baseline nothing where less is."""
        over, under = (self.value, self.baseline) if self.better == "lower" else (
            self.baseline, self.value)  # fmt: skip
        return over / under if under else math.inf

    @property
    def excess(self) -> float | None:
        """How far above its ideal the ratio is (1 = at the ideal), None without an ideal."""
        return None if self.ideal is None else self.ratio / self.ideal

    @property
    def target_met(self) -> bool | None:
        """Whether the ratio (or the value) is within its target; None without one."""
        if self.target is None:
            return None
        measured = self.ratio if self.target_on == "ratio" else self.value
        if self.better == "higher" and self.target_on == "value":
            return measured >= self.target
        return measured <= self.target

    @property
    def target_ratio(self) -> float | None:
        """The target as a ratio to this run's baseline (for the chart)."""
        if self.target is None or self.target_on == "ratio":
            return self.target
        if self.better == "lower":
            return self.target / self.baseline
        return self.baseline / self.target

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["excess"] = self.excess
        data["target_met"] = self.target_met
        return data


def _proc_status_bytes(field: str, pid: int | None = None) -> int | None:
    """A size field (in kB) of a process's /proc status (this process's by default), in
    bytes; None off Linux or when the process is gone."""
    status = Path(f"/proc/{pid or 'self'}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM), engine threads included."""
    peak = _proc_status_bytes("VmHWM")
    if peak is not None:
        return peak
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def peak_rss_of(pid: int) -> int | None:
    """The peak resident set (VmHWM) of another running process, None if unknown."""
    try:
        return _proc_status_bytes("VmHWM", pid)
    except OSError:
        return None


def cpu_seconds_of(pid: int) -> float | None:
    """The CPU time (user and system) a running process has used, None if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes() -> int:
    """This process's resident set now."""
    now = _proc_status_bytes("VmRSS")
    return peak_rss_bytes() if now is None else now


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_bytes"] = int(line.split()[1]) * 1024
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    return info


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


@dataclass
class Report:
    parameters: dict[str, Any]
    measurements: list[Measurement] = field(default_factory=list)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    wall_seconds: float = 0.0

    def add(self, measurement: Measurement) -> Measurement:
        self.measurements.append(measurement)
        return measurement

    @property
    def slowest(self) -> Measurement | None:
        """The measurement furthest above its ideal."""
        ranked = [m for m in self.measurements if m.excess is not None]
        return max(ranked, key=lambda m: m.excess or 0.0) if ranked else None

    def to_json(self) -> dict[str, Any]:
        slowest = self.slowest
        return {
            "date": self.started.isoformat(timespec="seconds"),
            "wall_seconds": round(self.wall_seconds, 1),
            "machine": machine(),
            "versions": versions(),
            "parameters": self.parameters,
            "slowest": None if slowest is None else slowest.name,
            "targets_met": {
                m.name: m.target_met for m in self.measurements if m.target is not None
            },
            "measurements": [m.to_json() for m in self.measurements],
        }

    def save(self, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        path = out / "bench.json"
        path.write_text(
            json.dumps(self.to_json(), indent=2, ensure_ascii=False, default=str) + "\n"
        )
        return path


def human(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "bytes":
        return f"{value / 2**20:,.0f} MiB"
    if unit == "req/s":
        return f"{value:,.0f} req/s"
    if unit == "share":
        return f"{value:.1%}"
    if unit == "count":
        return f"{value:,.0f}"
    return f"{value:g} {unit}"


def _target(m: Measurement, unit: str) -> str:
    if m.target is None:
        return "-"
    if m.target_on == "value":
        goal = f"≤ {human(m.target, unit)}"
    else:
        goal = f"≤ {m.target:.0%}" if m.unit == "share" else f"≤ {m.target:g}×"
    return f"{goal} [green]met[/green]" if m.target_met else f"{goal} [red]missed[/red]"


def table(report: Report) -> Any:
    from rich.table import Table

    slowest = report.slowest
    grid = Table(title=f"govlake bench ({report.wall_seconds:.0f} s)")
    columns = ("measurement", "value", "baseline", "ratio", "ideal", "target", "rows", "against")
    for column in columns:
        grid.add_column(column, justify="left" if column in ("measurement", "against") else "right")
    for m in report.measurements:
        ratio = f"{m.ratio:.2f}×" if m.unit not in ("share", "count") else f"{m.ratio:.1%}"
        if slowest is not None and m.name == slowest.name:
            ratio = f"[bold red]{ratio}[/bold red]"
        unit = "s" if m.unit == "share" else m.unit
        grid.add_row(
            m.name,
            human(m.value, unit),
            human(m.baseline, unit),
            ratio,
            "-" if m.ideal is None else f"{m.ideal:g}",
            _target(m, unit),
            "" if m.rows is None else f"{m.rows:,}",
            m.baseline_label,
        )
    return grid


def chart(report: Report, path: Path) -> Path:
    """A horizontal bar per ratio (log scale), the ideal marked, the slowest in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measurements = report.measurements
    slowest = report.slowest
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(measurements) + 1.5))
    names = [m.name for m in measurements]
    ratios = [m.ratio for m in measurements]
    colours = [
        "#c0392b" if slowest is not None and m.name == slowest.name else "#2e86c1"
        for m in measurements
    ]
    positions = list(range(len(measurements)))
    finite = [r for r in ratios if 0 < r < math.inf]
    floor = min(finite + [1.0]) / 10  # where a count of 0 shows on the log axis
    ceiling = max(finite + [1.0]) * 10  # where nothing answered shows (an infinite ratio)

    def drawn(ratio: float) -> float:
        return floor if math.isnan(ratio) else min(max(ratio, floor), ceiling)

    ax.barh(positions, [drawn(r) for r in ratios], color=colours)
    for pos, m in zip(positions, measurements, strict=True):
        if m.ideal is not None:
            ax.plot([m.ideal, m.ideal], [pos - 0.4, pos + 0.4], color="black", lw=1)
        if m.target_ratio is not None and m.target_ratio > 0:
            ax.plot([m.target_ratio] * 2, [pos - 0.4, pos + 0.4], color="#c0392b", lw=1.5,
                    ls="--")  # fmt: skip
        missed = " (target missed)" if m.target_met is False else ""
        shown = f"{m.value:,.0f} of {m.baseline:,.0f}" if m.unit == "count" else f"{m.ratio:.2f}"
        ax.text(drawn(m.ratio), pos, f" {shown}{missed}", va="center", fontsize=8)
    ax.set_yticks(positions, names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(
        "ratio to baseline (log; black tick: ideal; dashed red: target; red bar: furthest "
        "above ideal)"
    )
    ax.set_title(f"govlake bench, {report.started:%Y-%m-%d %H:%M} UTC")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
