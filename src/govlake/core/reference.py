"""Reference data shipped by maintained packages: GB/T 2260 divisions and the 56 ethnic groups.

Source: the `cpca` package (MIT), `cpca/resources/adcodes.csv` (3,511 province, prefecture
and county divisions, 12-digit codes whose first six digits are the GB/T 2260 code, with
centroid longitude/latitude) and `cpca/resources/56_nations.csv`.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

Level = Literal["province", "prefecture", "county"]


@dataclass(frozen=True)
class Division:
    code: str
    name: str
    level: Level
    parent_code: str | None
    longitude: float | None
    latitude: float | None


def _resources() -> Path:
    # Locate the data without importing cpca, whose import builds address matchers.
    spec = importlib.util.find_spec("cpca")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the cpca package is not installed: it ships the division table")
    return Path(next(iter(spec.submodule_search_locations))) / "resources"


def _level(code: str) -> Level:
    if code[2:] == "0000":
        return "province"
    if code[4:] == "00":
        return "prefecture"
    return "county"


def _float(text: str) -> float | None:
    return float(text) if text.strip() else None


@cache
def divisions() -> tuple[Division, ...]:
    """All divisions, ordered by code."""
    with (_resources() / "adcodes.csv").open(encoding="utf-8", newline="") as handle:
        rows = {row["adcode"][:6]: row for row in csv.DictReader(handle)}
    result = []
    for code in sorted(rows):
        row = rows[code]
        level = _level(code)
        parent: str | None = None
        if level == "prefecture":
            parent = code[:2] + "0000"
        elif level == "county":
            parent = code[:4] + "00" if code[:4] + "00" in rows else code[:2] + "0000"
        result.append(
            Division(
                code=code,
                name=row["name"],
                level=level,
                parent_code=parent if parent in rows else None,
                longitude=_float(row["longitude"]),
                latitude=_float(row["latitude"]),
            )
        )
    return tuple(result)


@cache
def division_codes() -> frozenset[str]:
    return frozenset(d.code for d in divisions())


@cache
def ethnic_groups() -> tuple[str, ...]:
    """The 56 ethnic groups (民族), in the package's order (汉族 first)."""
    text = (_resources() / "56_nations.csv").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


#: China's extent in WGS 84, for coordinate plausibility checks (including the South China Sea
#: islands): longitude 73.5°E–135.1°E, latitude 3.8°N–53.6°N.
CHINA_LONGITUDE = (73.5, 135.1)
CHINA_LATITUDE = (3.8, 53.6)
