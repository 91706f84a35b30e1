"""Memoised pages: the last answer per (user, k) of one arm, reused while its inputs are equal.

A plain recommend is a pure function of the arm, the user, `k`, the user's history and the user
embedding, and the user's seen set (excluded). When a repeat request (a refresh, a second widget)
brings the same inputs (history, version, seen-set size and newest item) and the same cached
embedding bytes, the page it gets is the one already computed, so the FAISS search
and the ranking policy (more than half of a cached recommend's CPU on the demo bundle) are
skipped. Entries are checked against the inputs themselves, not a version number, so an event,
a re-encoded embedding or a Redis flush can never serve a stale page. Each arm owns its memo,
so a bundle swap drops it with the old arm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_PAGES = 4_096


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    inputs: object
    embedding: bytes
    page: T


class PageMemo(Generic[T]):
    """Bounded, first-in first-out: cheaper than LRU bookkeeping on every hit, and a page that
    falls out is recomputed from the cached embedding at the cost of one search."""

    def __init__(self, capacity: int = DEFAULT_PAGES) -> None:
        self._capacity = capacity
        self._entries: dict[tuple[str, int], _Entry[T]] = {}

    def get(self, user_id: str, k: int, inputs: object, embedding: bytes) -> T | None:
        entry = self._entries.get((user_id, k))
        if entry is None or entry.embedding != embedding or entry.inputs != inputs:
            return None
        return entry.page

    def put(self, user_id: str, k: int, inputs: object, embedding: bytes, page: T) -> None:
        if self._capacity <= 0:
            return
        key = (user_id, k)
        if key not in self._entries and len(self._entries) >= self._capacity:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = _Entry(inputs, embedding, page)

    def __len__(self) -> int:
        return len(self._entries)
