"""What a benchmark run is asked to do (`Options`, the parts it may run) and the run itself
(`Run`: its folder, log and voice), apart from the steps that use them, so that every step's
module can take a run without importing the suite."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from govlake_tools.bench.worker import run_task

#: The benchmark's parts, in the order they run (`--only` picks some).
PARTS = ("cycles", "ingest", "sharing")


@dataclass(frozen=True)
class Options:
    rows: int = 1_000_000  # residents of the full ingest
    sizes: tuple[int, int, int] = (100_000, 1_000_000, 10_000_000)  # rows of the cycle's resources
    changes: int = 10_000  # records per change extract
    cycles: int = 2  # change extracts per resource; the best cycle counts
    cycle_budget: float = 60.0  # no further cycle on a resource after one longer than this
    read_changes: bool = False  # the client reads the change feed instead of the new version
    clients: tuple[int, ...] = (8, 32)  # client counts of the load runs
    load_seconds: float = 10.0
    repeat: int = 3
    quick: bool = False
    workers: int = 2  # server workers of the several-workers load figures (1: none)
    only: tuple[str, ...] = PARTS  # the parts to run


@dataclass(frozen=True)
class Run:
    """One benchmark run: its options, scratch folder, log and voice."""

    options: Options
    catalog_dir: Path
    work: Path
    log: Path
    say: Callable[[str], Any]

    def task(self, task: str, arguments: dict[str, Any], name: str | None = None, *,
             mode: str = "local") -> dict[str, Any]:  # fmt: skip
        """Run `task` in a process of its own, its embedded engine in Sail's `mode`."""
        return run_task(task, arguments, self.work / "tasks" / (name or task), log=self.log,
                        env=engine_mode(mode))  # fmt: skip


def engine_mode(mode: str) -> dict[str, str]:
    """The environment that starts the embedded engine in Sail's `mode`: Sail's own variable
    and govlake's setting (which, when set, wins over Sail's), so a mode set around the
    benchmark does not leak into it."""
    return {"SAIL_MODE": mode, "GOVLAKE_SAIL_MODE": mode}
