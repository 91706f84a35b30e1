"""In-process store: the embedded mode (no Redis), one process, bounded LRU dictionaries."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Sequence

from service.store.base import (
    EmbeddingWrite,
    Store,
    StoreHealth,
    UserState,
    pack_embedding,
    unpack_embedding,
)


class MemoryStore(Store):
    backend = "local"

    def __init__(
        self,
        *,
        history_length: int,
        cache_ttl_seconds: float,
        max_users: int = 1_000_000,
        max_embeddings: int = 100_000,
        seen_max_items: int = 10_000,
    ) -> None:
        self._seen_max = seen_max_items
        self._history_length = history_length
        self._ttl = cache_ttl_seconds
        self._max_users = max_users
        self._max_embeddings = max_embeddings
        self._users: OrderedDict[str, tuple[deque[str], int]] = OrderedDict()
        self._seen: dict[str, OrderedDict[str, None]] = {}
        self._embeddings: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()

    async def fetch(
        self, user_id: str, bundle_version: str, *, change_log: str | None = None
    ) -> UserState:
        entry = self._users.get(user_id)
        history, version = (tuple(entry[0]), entry[1]) if entry else ((), 0)
        cached = self._embeddings.get((bundle_version, user_id))
        embedding = None
        if cached is not None:
            expires, value = cached
            if expires > time.monotonic():
                embedding = unpack_embedding(value, version)
                self._embeddings.move_to_end((bundle_version, user_id))
            else:
                del self._embeddings[(bundle_version, user_id)]
        seen = self._seen.get(user_id)
        return UserState(
            history=history, version=version, embedding=embedding, seen=tuple(seen or ())
        )

    async def cache_embeddings(self, writes: Sequence[EmbeddingWrite]) -> None:
        if self._max_embeddings == 0:
            return
        expires = time.monotonic() + self._ttl
        for write in writes:
            key = (write.bundle_version, write.user_id)
            self._embeddings[key] = (expires, pack_embedding(write.version, write.embedding))
            self._embeddings.move_to_end(key)
        while len(self._embeddings) > self._max_embeddings:
            self._embeddings.popitem(last=False)

    async def append_events(
        self, events: Sequence[tuple[str, str]], *, negatives: Sequence[tuple[str, str]] = ()
    ) -> int:
        dropped = 0
        for positive, pairs in ((True, events), (False, negatives)):
            for user_id, item_id in pairs:
                entry = self._users.pop(user_id, None)
                history = entry[0] if entry else deque(maxlen=self._history_length)
                if positive:
                    history.append(item_id)
                self._users[user_id] = (history, (entry[1] if entry else 0) + 1)
                seen = self._seen.setdefault(user_id, OrderedDict())
                seen[item_id] = None
                seen.move_to_end(item_id)
                while len(seen) > self._seen_max:
                    seen.popitem(last=False)
                    dropped += 1
        while len(self._users) > self._max_users:
            self._seen.pop(self._users.popitem(last=False)[0], None)
        return dropped

    async def health(self) -> StoreHealth:
        return "up"
