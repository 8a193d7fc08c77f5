"""Governance: the catalogue change register, timeliness, DCAT export and backups."""

from __future__ import annotations
