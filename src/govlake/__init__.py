"""govlake: a catalogue-driven lakehouse for government information-resource sharing."""

from __future__ import annotations

__version__ = "0.1.0"
