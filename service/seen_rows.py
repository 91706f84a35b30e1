"""Catalog rows of users' seen sets, memoised while a set is unchanged.

A seen set holds up to `DUET_SEEN_MAX_ITEMS` ids (10,000 by default) and every searching
request excludes all of them. Turning ids into rows costs a hash lookup per id (~0.2 us here):
~45 us per request for a 200-item set, ~2 ms for a heavy user's 10,000, on every request that
misses the page memo. A seen set only changes at its end (the store appends the newest id and
drops the oldest past the cap), so its size and newest id identify it, as they do in the page
memo's key (service/pages.py); rows are computed once per change of the set.

Bounded by the rows held, not the entries, so heavy users cannot blow the memory up: at most
`max_rows` rows (a frozenset costs ~60 bytes per row: 60 MB at the default).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

MAX_ROWS = 1_000_000
MIN_SEEN = 32
"""Smaller sets are converted each time: cheaper than the memo's bookkeeping."""


class SeenRows:
    def __init__(self, *, max_rows: int = MAX_ROWS, min_seen: int = MIN_SEEN) -> None:
        self._max_rows = max_rows
        self._min_seen = min_seen
        self._entries: OrderedDict[tuple[str, str], tuple[int, str, frozenset[int]]] = OrderedDict()
        self._held = 0

    def rows(
        self,
        bundle_version: str,
        user_id: str,
        seen: tuple[str, ...],
        lookup: Callable[[Iterable[str]], list[int]],
    ) -> frozenset[int]:
        """Rows (by `lookup`, the bundle's id -> row) of the ids in `seen`, oldest first."""
        if len(seen) < self._min_seen:
            return frozenset(lookup(seen))
        key = (bundle_version, user_id)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == len(seen) and entry[1] == seen[-1]:
            self._entries.move_to_end(key)
            return entry[2]
        rows = frozenset(lookup(seen))
        if entry is not None:
            self._held -= len(entry[2])
        self._entries[key] = (len(seen), seen[-1], rows)
        self._entries.move_to_end(key)
        self._held += len(rows)
        while self._held > self._max_rows and self._entries:
            _, (_, _, dropped) = self._entries.popitem(last=False)
            self._held -= len(dropped)
        return rows

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def held(self) -> int:
        return self._held
