"""What people and schedulers run: the `govlake` command (`cli`), the pipeline runner
(`pipeline`) and the Airflow glue (`orchestration`). The only package that imports `jobs`;
nothing imports it."""

from __future__ import annotations
