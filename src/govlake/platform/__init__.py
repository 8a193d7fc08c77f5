"""Platform services: the platform database, the audit journal, the working-day calendar,
mail transport and the pipeline leases."""

from __future__ import annotations
