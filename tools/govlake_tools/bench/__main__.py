"""`python -m govlake_tools.bench --out reports/bench [--quick] [--only sharing]`: run the
benchmark (or some of its parts), print the table of ratios and targets, write `bench.json`
and `bench.png` to `--out`."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from govlake_tools.bench.options import PARTS, Options
from govlake_tools.bench.results import chart, table
from govlake_tools.bench.suite import run

console = Console(width=None if Console().is_terminal else 160)


def _sizes(text: str) -> tuple[int, int, int]:
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not three row counts: {text!r}") from None
    if len(sizes) != 3 or not 0 < sizes[0] < sizes[1] < sizes[2]:
        raise argparse.ArgumentTypeError(
            f"give three increasing row counts, e.g. 100000,1000000,10000000: {text!r}"
        )
    return sizes[0], sizes[1], sizes[2]


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not client counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"give positive client counts, e.g. 8,32: {text!r}")
    return counts


def _parts(text: str) -> tuple[str, ...]:
    parts = tuple(part.strip() for part in text.split(","))
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"parts are {', '.join(PARTS)}: {text!r}")
    return tuple(p for p in PARTS if p in parts)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m govlake_tools.bench", description=__doc__)
    add = parser.add_argument
    add(
        "--out",
        type=Path,
        default=Path("reports/bench"),
        help="folder for bench.json, bench.png and bench.log",
    )
    add("--rows", type=int, default=None, help="residents of the full ingest (default 1,000,000)")
    add(
        "--sizes",
        type=_sizes,
        default=None,
        help="rows of the cycle's three resources (default 100000,1000000,10000000)",
    )
    add(
        "--changes",
        type=int,
        default=10_000,
        help="records per change extract (capped at a tenth of the smallest resource)",
    )
    add(
        "--cycles",
        type=int,
        default=None,
        help="change extracts per resource, the best cycle counts (default 2, quick 1)",
    )
    add(
        "--cycle-budget",
        type=float,
        default=60.0,
        help="seconds: after a cycle longer than this, no further one on that resource",
    )
    add(
        "--read-changes",
        action="store_true",
        help="the client reads the change feed of each cycle, not rows of the new version",
    )
    add(
        "--clients",
        type=_counts,
        default=(8, 32),
        help="concurrent HTTP clients of each load run, e.g. 8,32 (the first count's figures "
        "keep the names metadata_rps, query_p99, ... and carry the targets)",
    )
    add(
        "--workers",
        type=int,
        default=2,
        help="server workers of the several-workers load figures (1: one worker only)",
    )
    add(
        "--only",
        type=_parts,
        default=PARTS,
        help=f"the parts to run, comma-separated, of {', '.join(PARTS)}; sharing alone "
        "reuses the ingest an earlier run left in --work, or runs one",
    )
    add(
        "--seconds",
        type=float,
        default=None,
        help="seconds of load per endpoint (default 10, quick 1)",
    )
    add(
        "--repeat",
        type=int,
        default=None,
        help="repetitions of the shared reads, best kept (default 3, quick 1)",
    )
    add(
        "--quick",
        action="store_true",
        help="50,000 residents, resources of 20,000 / 50,000 / 200,000 rows, short loads",
    )
    add(
        "--work",
        type=Path,
        default=None,
        help="scratch folder (default: a new temporary folder, removed after)",
    )
    return parser


def parse(argv: list[str] | None = None) -> tuple[Options, Path, Path | None, bool]:
    args = _parser().parse_args(argv)
    quick = args.quick
    sizes = args.sizes or ((20_000, 50_000, 200_000) if quick else (100_000, 1_000_000, 10_000_000))
    options = Options(
        rows=args.rows or (50_000 if quick else 1_000_000),
        sizes=sizes,
        changes=max(10, min(args.changes, sizes[0] // 10)),
        cycles=max(1, args.cycles or (1 if quick else 2)),
        cycle_budget=args.cycle_budget,
        read_changes=args.read_changes,
        clients=args.clients,
        load_seconds=args.seconds or (1.0 if quick else 10.0),
        repeat=args.repeat or (1 if quick else 3),
        quick=quick,
        workers=max(1, args.workers),
        only=args.only,
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
    missed = [m.name for m in report.measurements if m.target_met is False]
    console.print(f"targets missed: {', '.join(missed) or 'none'}")
    console.print(f"wrote {saved} and {picture} in {report.wall_seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
