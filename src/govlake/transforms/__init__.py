"""Transforms: DataFrame -> DataFrame (row rules, check characters, de-identification).

No I/O: reading and writing stay in `govlake.lake` and the jobs."""

from __future__ import annotations
