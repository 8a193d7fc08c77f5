"""`python -m govlake_tools.bench --out reports/bench [--rows N] [--big-rows N] [--quick]`: run the
benchmark, print the table of ratios, write `bench.json` and `bench.png` to `--out`."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from govlake_tools.bench.results import chart, table
from govlake_tools.bench.suite import Options, run

console = Console(width=None if Console().is_terminal else 160)


def parse(argv: list[str] | None = None) -> tuple[Options, Path, Path | None, bool]:
    parser = argparse.ArgumentParser(prog="python -m govlake_tools.bench", description=__doc__)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("reports/bench"),
        help="folder for bench.json, bench.png and bench.log",
    )
    parser.add_argument("--rows", type=int, default=None, help="residents (default 1,000,000)")
    parser.add_argument(
        "--big-rows",
        type=int,
        default=None,
        help="rows of the large silver table (default 10,000,000)",
    )
    parser.add_argument(
        "--changes",
        type=int,
        default=10_000,
        help="changed rows merged into silver (capped at a tenth of --rows)",
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="seconds of load per endpoint (default 10, quick 1)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="repetitions of the shared reads, best kept (default 3, quick 1)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="50,000 / 200,000 rows and short loads: a smoke run"
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="scratch folder (default: a new temporary folder, removed after)",
    )
    args = parser.parse_args(argv)
    rows = args.rows or (50_000 if args.quick else 1_000_000)
    big_rows = args.big_rows or (200_000 if args.quick else 10_000_000)
    options = Options(
        rows=rows,
        big_rows=big_rows,
        changes=max(1, min(args.changes, rows // 10)),
        clients=args.clients,
        load_seconds=args.seconds or (1.0 if args.quick else 10.0),
        repeat=args.repeat or (1 if args.quick else 3),
        quick=args.quick,
    )
    return options, args.out, args.work, args.work is None


def main(argv: list[str] | None = None) -> int:
    options, out, work, temporary = parse(argv)
    out.mkdir(parents=True, exist_ok=True)
    scratch = work or Path(tempfile.mkdtemp(prefix="govlake-bench-"))
    started = time.perf_counter()
    try:
        report = run(
            options,
            work=scratch,
            out=out,
            say=lambda text: console.print(
                f"[dim]{time.perf_counter() - started:6.1f}s[/dim] {text}"
            ),
        )
    finally:
        if temporary:
            shutil.rmtree(scratch, ignore_errors=True)
    report.wall_seconds = time.perf_counter() - started
    saved = report.save(out)
    picture = chart(report, out / "bench.png")
    console.print(table(report))
    slowest = report.slowest
    if slowest is not None:
        console.print(
            f"furthest above its ideal: [bold]{slowest.name}[/bold] "
            f"({slowest.ratio:.2f}× against an ideal of {slowest.ideal:g})"
        )
    console.print(f"wrote {saved} and {picture} in {report.wall_seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
