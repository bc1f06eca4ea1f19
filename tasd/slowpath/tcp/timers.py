"""Keyed deadlines: at most one deadline per key, the earliest first.

A heap with lazy deletion: re-arming or cancelling a key leaves its old heap
entry behind, recognised as stale when it surfaces (its generation differs)."""

from __future__ import annotations

import heapq
import itertools
from typing import Hashable


class Timers:
    def __init__(self) -> None:
        self._armed: dict[Hashable, tuple[float, int]] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._gen = itertools.count()

    def __len__(self) -> int:
        return len(self._armed)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._armed

    def get(self, key: Hashable) -> float | None:
        entry = self._armed.get(key)
        return entry[0] if entry else None

    def set(self, key: Hashable, when: float | None) -> None:
        """Arm `key` for `when`, replacing its deadline; None cancels."""
        if when is None:
            self._armed.pop(key, None)
            return
        current = self._armed.get(key)
        if current is not None and current[0] == when:
            return
        gen = next(self._gen)
        self._armed[key] = (when, gen)
        heapq.heappush(self._heap, (when, gen, key))
        if len(self._heap) > 2 * len(self._armed) + 64:
            self._compact()

    def cancel(self, key: Hashable) -> None:
        self._armed.pop(key, None)

    def next_deadline(self) -> float | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> Hashable | None:
        """The key with the earliest deadline ≤ now, disarmed; or None."""
        self._drop_stale()
        if not self._heap or self._heap[0][0] > now:
            return None
        _, _, key = heapq.heappop(self._heap)
        del self._armed[key]
        return key

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap and self._armed.get(heap[0][2], (None, None))[1] != heap[0][1]:
            heapq.heappop(heap)

    def _compact(self) -> None:
        self._heap = [(when, gen, key) for key, (when, gen) in self._armed.items()]
        heapq.heapify(self._heap)
