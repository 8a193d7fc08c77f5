"""Run one benchmark task in a process of its own, so that its peak memory (the embedded Sail
engine runs in-process) and its CPU are its own: `python -m govlake_tools.bench.worker TASK IN OUT`
reads keyword arguments from the JSON file IN and writes the task's result, with the
process's peak resident set, to OUT."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from govlake.core.errors import GovlakeError
from govlake_tools.bench.results import peak_rss_bytes


class TaskFailed(GovlakeError, RuntimeError):
    """A benchmark task's process exited with an error; the log file has the details."""


def spawn(
    task: str,
    arguments: dict[str, Any],
    scratch: Path,
    *,
    log: Path,
    wait: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `task` in a child process (with `env` added to this process's environment)."""
    scratch.mkdir(parents=True, exist_ok=True)
    given = scratch / f"{task}.in.json"
    given.write_text(json.dumps(arguments, default=str))
    out = scratch / f"{task}.out.json"
    out.unlink(missing_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "govlake_tools.bench.worker", task, str(given), str(out)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=None if env is None else os.environ | env,
        )
    if wait:
        process.wait()
    return process


def run_task(
    task: str,
    arguments: dict[str, Any],
    scratch: Path,
    *,
    log: Path,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run `task` in a child process and return its result."""
    process = spawn(task, arguments, scratch, log=log, env=env)
    out = scratch / f"{task}.out.json"
    if process.returncode != 0 or not out.exists():
        raise TaskFailed(f"benchmark task {task} failed (exit {process.returncode}); see {log}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def main(argv: list[str]) -> int:
    from govlake_tools.bench import tasks

    task, given, out = argv
    logging.basicConfig(level=logging.WARNING)
    arguments = json.loads(Path(given).read_text())
    result = tasks.TASKS[task](**arguments)
    result["peak_rss_bytes"] = peak_rss_bytes()
    Path(out).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
