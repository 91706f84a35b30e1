"""The one store interface: recent history, cached user embeddings (and, later, exposures).

Two real implementations pass the same test suite: Redis (shared by workers and replicas) and
in-process (the demo, no Redis needed). A cached embedding is stored with the history version it
was computed from, so an event (which bumps the version) invalidates it in every bundle version
at once, with no race between a late cache write and a new event.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

StoreHealth = Literal["up", "down", "breaker_open"]
_VERSION = struct.Struct("<q")


@dataclass(frozen=True, slots=True)
class UserState:
    """What one round trip knows about a user: history oldest first, its version, embedding."""

    history: tuple[str, ...]
    version: int
    embedding: bytes | None
    layer: str = ""
    """Where the embedding came from ("local", "redis"); "" = the store's own backend."""
    seen: tuple[str, ...] = ()
    """Every item the user interacted with (bounded, oldest dropped): never recommended again.
    Apart from `history`, which is only the tower's recent window of positives."""
    catalog_version: int | None = None
    """The bundle's live-catalog version read in the same trip; None when no trip was made
    (the in-process store, or the local layer in front of Redis)."""


EMPTY_STATE = UserState(history=(), version=0, embedding=None)


@dataclass(frozen=True, slots=True)
class EmbeddingWrite:
    """A user embedding to cache, computed from history `version` by bundle `bundle_version`."""

    user_id: str
    bundle_version: str
    version: int
    embedding: bytes


def pack_embedding(version: int, embedding: bytes) -> bytes:
    return _VERSION.pack(version) + embedding


def unpack_embedding(value: bytes | None, version: int) -> bytes | None:
    """The embedding bytes if `value` was computed from history `version`, else None."""
    if value is None or len(value) <= _VERSION.size:
        return None
    if _VERSION.unpack_from(value)[0] != version:
        return None
    return value[_VERSION.size :]


class Store(ABC):
    backend: str
    """Cache layer name used in metrics: "redis" or "local"."""
    reached: bool = True
    """False until the backend first answered (Redis unreachable since start: not ready)."""

    @abstractmethod
    async def fetch(
        self, user_id: str, bundle_version: str, *, change_log: str | None = None
    ) -> UserState:
        """History, its version and the embedding cached for `bundle_version`, in one trip;
        with the counter of the catalog `change_log` (default: `bundle_version`'s) too."""

    @abstractmethod
    async def cache_embeddings(self, writes: Sequence[EmbeddingWrite]) -> None:
        """Cache several embeddings in one round trip (the request path batches its misses)."""

    async def cache_embedding(
        self, user_id: str, bundle_version: str, version: int, embedding: bytes
    ) -> None:
        await self.cache_embeddings([EmbeddingWrite(user_id, bundle_version, version, embedding)])

    @abstractmethod
    async def append_events(
        self, events: Sequence[tuple[str, str]], *, negatives: Sequence[tuple[str, str]] = ()
    ) -> int:
        """Append `(user_id, item_id)` pairs, in order, atomically; bump each user's version.

        `events` (positives) go to the history and the seen set; `negatives` (dislike, hide) to
        the seen set only, never to the tower. Returns how many seen items fell off the bound.
        """

    @abstractmethod
    async def health(self) -> StoreHealth: ...

    async def connect(self) -> bool:
        """First contact with the backend, bounded; True when it answered."""
        return True

    async def close(self) -> None:
        return None
