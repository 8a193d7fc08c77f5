"""Library code that reads Delta tables outside the CLI (schema evolution, linking
corrections after a publication) leaves nothing behind that makes its process abort when it
exits through plain `sys.exit`. A pyarrow dataset scan over delta-rs leaves an Arrow thread
that still needs the interpreter after the scan ("terminate called without an active
exception", SIGABRT / exit 134), failing the run after its work is done. (Airflow 3.3's
supervisor ends a task's forked process with `os._exit`; `dag.test()`, scripts and jobs run
directly end through the interpreter's exit.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings
from govlake.lake.tables import TableSet

REPO = Path(__file__).resolve().parents[2]
RESIDENTS = "population.residents"
PERSON = "11010519491231002X"
FILES = 20  # the abort needs a scan over several files
# Before the reads were converted, 10 to 12 runs in 30 aborted here (fewer when two drivers
# ran side by side).
RUNS = 30

# A driver imports the library once, then forks one process per run, one after the other
# (cheap, so that enough runs fit in a test). Each does what a task does after a publication:
# widen a column the catalogue widened (evolution) and link a correction to the first
# published version that carries it (`link_fixes`; filed before the last publication, so one
# version is read); then it ends through plain `sys.exit`. The driver prints the exit codes.
DRIVER = """
import json, os, shutil, sys
from datetime import datetime
from pathlib import Path

from govlake.core.catalog import Catalog
from govlake.lake.evolution import evolve
from govlake.core.settings import Settings
from govlake.sharing.requests import find_fix
from govlake.platform.database import VerificationRequest

warehouse, narrow, person, catalog_dir, runs, last, filed_at = sys.argv[1:8]
resource = Catalog.load(Path(catalog_dir)).get("population.residents")
settings = Settings(warehouse=warehouse, catalog_dir=catalog_dir, spark_remote=None)
codes = []
for run in range(int(runs)):
    mine = os.path.abspath(f"narrow-{run}")  # in the driver's own directory
    shutil.copytree(narrow, mine)  # each run widens its own copy
    pid = os.fork()
    if pid == 0:
        widened = evolve("t", mine, [("id", "bigint"), ("v", "string")], {}).widened
        request = VerificationRequest(key=person, item="marital_status", corrected_value="20",
                                      filed_at=datetime.fromisoformat(filed_at))
        fix = find_fix(resource, settings, request)
        # 3: the work was not done as it should have been.
        sys.exit(0 if widened == ("id",) and fix and fix.version == int(last) else 3)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print(json.dumps(codes))
"""


@pytest.fixture
def lake(tmp_path: Path, catalog: Catalog) -> tuple[Path, str]:
    """The residents' conditional table, published FILES times (one file each, the correction
    in the last), and a table of FILES files whose `id` is still an integer; with the time of
    the last publication but one (naive UTC), as when the correction was filed."""
    settings = Settings(warehouse=str(tmp_path / "lakehouse"), spark_remote=None)
    published = (
        TableSet(catalog.get(RESIDENTS), settings.warehouse_location)
        .published("conditional")
        .location
    )
    for i in range(FILES):
        last = i == FILES - 1
        people = [PERSON if last else f"1101051949123{i:04d}X"] + [
            f"2{i:03d}{j:014d}" for j in range(200)
        ]
        status = ["20" if last else "10"] + ["10"] * 200
        rows = pa.table(
            {"citizen_id": people, "name": ["居民"] * len(people), "marital_status": status}
        )
        write_deltalake(published.uri, rows, mode="append")
        time.sleep(0.01)  # distinct commit times
        ids = pa.array(range(i * 100, (i + 1) * 100), pa.int32())
        write_deltalake(tmp_path / "narrow", pa.table({"id": ids, "v": ["a"] * 100}), mode="append")
    commits = {c["version"]: c["timestamp"] for c in DeltaTable(published.uri).history()}
    filed_at = datetime.fromtimestamp(commits[FILES - 2] / 1000, UTC).replace(tzinfo=None)
    return tmp_path, filed_at.isoformat()


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the driver forks one process per run")
def test_reading_delta_tables_then_exiting_through_sys_exit_never_aborts(
    lake: tuple[Path, str],
) -> None:
    root, filed_at = lake
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOVLAKE_", "AWS_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    args = [str(root / "lakehouse"), str(root / "narrow"), PERSON, str(REPO / "schemas"),
            str(RUNS), str(FILES - 1), filed_at]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", DRIVER, *args], env=env, cwd=root,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    codes = json.loads(done.stdout.splitlines()[-1])
    # -6: SIGABRT at exit; 3: the work itself went wrong.
    assert Counter(codes) == {0: RUNS}
    assert "terminate called" not in done.stderr
