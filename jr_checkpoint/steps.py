"""The ``steps`` argument of ``execute_steps``, numbered as the seed's ``enumerate`` numbers it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any


class StepSequence:
    """The ``steps`` argument, numbered the way the seed's ``enumerate`` numbers it.

    A list or tuple is left as it is; an iterator (a generator) is passed on as a generator
    that remembers what it produced, so nothing is consumed ahead of the host.
    """

    def __init__(self, steps: Any):
        self.cursor = 0
        self.argument = steps
        self.exhausted = True
        if isinstance(steps, Iterator):
            # Single pass: hand the host a generator that remembers what it produced.
            self.items: list | Sequence = []
            self.total: int | None = None
            self.exhausted = False
            self.argument = self._remember(steps)
        elif isinstance(steps, Sequence):
            self.items, self.total = steps, len(steps)
        else:
            # Another re-iterable container (a set, a view): numbered in its iteration order.
            self.items = list(steps)
            self.total = len(self.items)

    def _remember(self, steps):
        for item in steps:
            self.items.append(item)
            yield item
        self.exhausted = True

    def locate(self, step: Any) -> int | None:
        """The position of ``step``: its next occurrence after the previous step's position.

        Identity first (the same step object may appear twice), then equality (a host that
        copies a step before running it). A step run again with no later occurrence is the
        previous one again (a host that retries a step in place).
        """
        items = self.items
        for i in range(self.cursor, len(items)):
            if items[i] is step:
                self.cursor = i + 1
                return i
        for i in range(self.cursor, len(items)):
            try:
                equal = bool(items[i] == step)
            except Exception:
                equal = False
            if equal:
                self.cursor = i + 1
                return i
        if self.cursor and items[self.cursor - 1] is step:
            return self.cursor - 1
        return None
