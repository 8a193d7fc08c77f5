"""`python -m govlake_tools.bench --quick` end to end: every measurement is there, positive and
consistent, and the chart is a PNG. No timing is asserted: this is a benchmark, not a test of
speed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXPECTED = {
    "ingest_vs_floor",
    "ingest_vs_peer",
    "gx_share",
    "merge_big_vs_small",
    "merge_small_vs_floor",
    "merge_big_vs_floor",
    "peak_memory_big",
    "share_read_vs_pyarrow",
    "metadata_rps",
    "metadata_p99",
    "query_rps",
    "query_p99",
}


def test_quick_bench_writes_every_measurement(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "-m", "govlake_tools.bench", "--quick", "--seconds", "0.5",
         "--out", str(out), "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    report = json.loads((out / "bench.json").read_text())
    assert report["parameters"]["quick"] is True
    assert report["machine"]["cpus"] >= 1
    assert report["versions"]["pysail"] == "0.7.2"
    assert report["date"]
    measurements = {m["name"]: m for m in report["measurements"]}
    assert set(measurements) == EXPECTED
    for name, m in measurements.items():
        assert m["value"] > 0 and m["baseline"] > 0 and m["ratio"] > 0, name
        expected = m["value"] / m["baseline"]
        if m["better"] == "higher":
            expected = 1 / expected
        assert math.isclose(m["ratio"], expected, rel_tol=1e-9), name
        if m["ideal"] is None:
            assert m["excess"] is None
        else:
            assert math.isclose(m["excess"], m["ratio"] / m["ideal"], rel_tol=1e-9), name
        assert m["unit"] in {"s", "bytes", "req/s", "share"}, name
        assert m["notes"], name
    assert 0 < measurements["gx_share"]["ratio"] < 1
    ranked = [m for m in measurements.values() if m["excess"] is not None]
    assert report["slowest"] == max(ranked, key=lambda m: m["excess"])["name"]
    assert measurements["merge_big_vs_small"]["rows"] == 200_000
    for endpoint in ("metadata", "query"):
        assert measurements[f"{endpoint}_rps"]["details"]["server"]["errors"] == 0

    png = (out / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
