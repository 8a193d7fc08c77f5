"""Core: the catalogue model and its rules, settings, the error base, time and text helpers.

Imports nothing else of govlake; every other floor may import it."""

from __future__ import annotations
