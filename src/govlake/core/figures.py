"""Figures of reports and records that are sums over their parts."""

from __future__ import annotations

from operator import attrgetter
from typing import overload


class Summed:
    """A report's read-only figure: `figure` (a dotted attribute path; by default the name the
    figure is given in its class) summed over the items of the attribute `over`."""

    def __init__(self, over: str, figure: str | None = None) -> None:
        self.over = over
        self.figure = figure

    def __set_name__(self, _owner: type, name: str) -> None:
        self.figure = self.figure or name

    @overload
    def __get__(self, instance: None, _owner: type | None = None) -> Summed: ...
    @overload
    def __get__(self, instance: object, _owner: type | None = None) -> int: ...
    def __get__(self, instance: object | None, _owner: type | None = None) -> Summed | int:
        if instance is None:
            return self
        value = attrgetter(self.figure or "")
        return sum(value(item) for item in getattr(instance, self.over))
