"""The request path, free of HTTP: plain values in, plain values out.

recommend: history + cached embedding + catalog version (one store round trip) -> catch up with
the live catalog if this worker is behind that version -> user tower on a miss (cached in the
background) -> FAISS search excluding seen/excluded/filtered rows and live tombstones, merged
with the live delta's exact search -> items. A store failure degrades to the request's own
history instead of failing; an unknown user with no history gets the popularity list. Shared
by the HTTP routes, the batch endpoint and simulations. While a bundle has no live change, the
search path is exactly the bundle's (`LiveDelta.is_empty`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from service import metrics
from service.arms import Arm
from service.catalog.bundle import Bundle
from service.catalog.feeds import LiveFeeds
from service.catalog.filters import Allowed, ItemFilter
from service.catalog.items import Catalog
from service.catalog.live import merge
from service.catalog.retriever import Retriever, SearchSettings
from service.errors import InvalidInputError, NotFoundError, StoreUnavailableError
from service.policies import SCORE, RankingPolicy, rank
from service.seen_rows import SeenRows
from service.store import EMPTY_STATE, Store
from service.store.base import EmbeddingWrite

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecommendQuery:
    user_id: str
    k: int = 10
    exclude_item_ids: tuple[str, ...] = ()
    item_filter: ItemFilter | None = None
    history: tuple[str, ...] | None = None
    """Item ids supplied with the request (anonymous or session users), oldest first."""


Relation = Literal["similar", "complementary"]
NO_DUAL_BUNDLE = "no_dual_embeddings"
"""Fallback: the bundle was built without dual embeddings; the items are `similar` ones."""
NO_DUAL_ITEM = "item_without_dual_embedding"
"""Fallback: no item of the query has an IN vector (e.g. added after the build): `similar`."""


@dataclass(frozen=True, slots=True)
class RelatedQuery:
    """Items related to one item or a basket: `similar` (two-tower cosine) or `complementary`
    (summed IN vectors against OUT vectors), never the items themselves, nor what `user_id`
    has seen, nor what the filter refuses."""

    item_ids: tuple[str, ...]
    k: int = 10
    relation: Relation = "complementary"
    item_filter: ItemFilter | None = None
    user_id: str | None = None
    field: str = "item_id"
    """The request field an unknown item is reported under."""


@dataclass(frozen=True, slots=True)
class ScoredItem:
    item_id: str
    score: float
    title: str
    genres: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Recommendation:
    """Field order is the response's: orjson serialises this dataclass as is."""

    request_id: str
    user_id: str
    model_version: str
    arm: str
    items: list[ScoredItem]
    fallback: str | None


@dataclass(frozen=True, slots=True)
class Retrieval:
    request_id: str
    model_version: str
    arm: str
    items: list[ScoredItem]
    fallback: str | None


@dataclass(frozen=True, slots=True)
class Event:
    user_id: str
    item_id: str
    type: str
    timestamp: float | None = None
    request_id: str | None = None
    value: float | None = None


NEGATIVE_EVENT_TYPES = frozenset({"dislike", "hide"})
RATING_THRESHOLD = 3.5


def is_positive(
    event: Event,
    negative_types: frozenset[str] = NEGATIVE_EVENT_TYPES,
    rating_threshold: float = RATING_THRESHOLD,
) -> bool:
    """Positives feed the tower's history and the seen set; negatives only the seen set."""
    if event.type in negative_types:
        return False
    return not (event.type == "rating" and (event.value or 0.0) < rating_threshold)


def _known_rows(catalog: Catalog, ids: Iterable[str]) -> list[int]:
    return catalog.rows.rows(ids)


def _live_excluded(bundle: Bundle, *groups: Sequence[str]) -> Iterable[str]:
    """Ids the live side must skip (history, exclusions, seen): only when there is a delta."""
    if bundle.live.is_empty():
        return ()
    return [item_id for group in groups for item_id in group]


def _count_unknown(kind: str, total: int, known: int) -> None:
    if total > known:
        metrics.UNKNOWN_IDS.labels(kind).inc(total - known)


def _items(catalog: Catalog, rows: list[int], scores: list[float]) -> list[ScoredItem]:
    describe = catalog.describe
    items = []
    for row, score in zip(rows, scores, strict=True):
        item_id, title, genres = describe(row)
        items.append(ScoredItem(item_id, score, title, genres))
    return items


def _popular(
    bundle: Bundle, k: int, excluded: set[int], allowed: Allowed | None
) -> list[ScoredItem]:
    catalog = bundle.catalog
    if not bundle.live.is_empty():
        excluded = excluded | bundle.live.tombstoned_rows()
    rows = catalog.popularity_rows
    keep = np.ones(len(rows), dtype=np.bool_) if allowed is None else allowed.includes(rows)
    if excluded:
        keep &= ~np.isin(rows, list(excluded))
    chosen = np.flatnonzero(keep)[:k]
    return _items(catalog, rows[chosen].tolist(), catalog.popularity_scores[chosen].tolist())


def search_items(
    bundle: Bundle,
    policy: RankingPolicy,
    settings: SearchSettings,
    vector: npt.NDArray[np.float32],
    k: int,
    *,
    excluded: set[int],
    allowed: Allowed | None,
    item_filter: ItemFilter | None,
    excluded_ids: Iterable[str] = (),
) -> list[ScoredItem]:
    """The arm's top-`k` over the bundle and its live delta, best first.

    Bundle side: the policy's ranking minus the tombstoned rows (deleted, hidden, superseded by
    an update), so no item comes back twice. Live side: the delta's exact top-`k` with the same
    filter and exclusions (by id: live items have no bundle row), scored on the policy's scale
    (`popularity_blend` gives a live item no popularity). Joined by score to exactly `k`
    whenever `k` qualify.
    """
    live = bundle.live
    if live.is_empty():
        rows, scores = rank(bundle, policy, settings, vector, k, excluded=excluded, allowed=allowed)
        return _items(bundle.catalog, rows, scores)
    excluded = excluded | live.tombstoned_rows()
    rows, scores = rank(bundle, policy, settings, vector, k, excluded=excluded, allowed=allowed)
    held = _items(bundle.catalog, rows, scores)
    scale = 1.0 - policy.popularity_weight if policy.name == "popularity_blend" else 1.0
    fresh = []
    for item_id, score in live.search_delta(vector, k, item_filter, set(excluded_ids)):
        item = live.item(item_id)
        if item is not None:
            fresh.append(ScoredItem(item_id, score * scale, item.title, item.genres))
    by_id = {item.item_id: item for item in (*held, *fresh)}
    pairs = merge([(i.item_id, i.score) for i in held], [(i.item_id, i.score) for i in fresh], k)
    return [by_id[item_id] for item_id, _ in pairs]


def _relation_query(
    arm: Arm, rows: list[int], relation: Relation
) -> tuple[Retriever, SearchSettings, npt.NDArray[np.float32], str | None]:
    """The index to search, its settings, the query vector and the fallback reason, if any.

    Complementary searches the bundle's OUT index with the summed IN vectors, at the arm's
    over-fetch but the OUT index's own tuned efSearch / nprobe (the arm's are the main index's)."""
    bundle = arm.bundle
    reason = None
    if relation == "complementary":
        dual = bundle.complementary
        query = None if dual is None else dual.query(rows)
        if dual is not None and query is not None:
            search = arm.search
            if search.ef_search is not None or search.nprobe is not None:
                search = SearchSettings(overfetch=search.overfetch)
            return dual.retriever, search, query, None
        reason = NO_DUAL_BUNDLE if dual is None else NO_DUAL_ITEM
    retriever = bundle.retriever
    if len(rows) == 1:
        return retriever, arm.search, retriever.item_vector(rows[0]), reason
    summed = np.sum([retriever.item_vector(row) for row in rows], axis=0, dtype=np.float32)
    norm = float(np.linalg.norm(summed))
    vector = summed / norm if norm > 0 else summed
    return retriever, arm.search, np.ascontiguousarray(vector, dtype=np.float32), reason


class _RelatedMemo:
    """An item-to-item answer is the same for every user: the arm keeps it per (items, k) while
    the filter and the live catalog (`applied`, which moves with every change: an upsert, a
    delete, a hide) are unchanged. A popular item's similar page then costs no search."""

    __slots__ = ("_arm", "_inputs", "_k", "_key")

    def __init__(self, arm: Arm, key: str, k: int, item_filter: ItemFilter | None) -> None:
        self._arm, self._key, self._k = arm, key, k
        self._inputs = (item_filter, arm.bundle.live.applied)

    def get(self, request_id: str) -> Retrieval | None:
        hit = self._arm.related.get(self._key, self._k, self._inputs, b"")
        if hit is None:
            return None
        metrics.RELATED_MEMO_HITS.inc()
        items, fallback = hit
        if fallback is not None:
            metrics.FALLBACKS.labels(fallback).inc()
        return Retrieval(request_id, self._arm.bundle.version, self._arm.name, items, fallback)

    def put(self, result: Retrieval) -> Retrieval:
        page = (result.items, result.fallback)
        self._arm.related.put(self._key, self._k, self._inputs, b"", page)
        return result


class Recommender:
    """The request path. At most `concurrency` recommends (store to search) and event writes run
    at once.

    Why a gate: the Redis deadline is wall time, and a saturated event loop delays reading a
    reply that arrived long ago (32 concurrent requests of ~1 ms CPU each made a healthy Redis
    "time out" and trip the breaker in the load test). With the gate, most of that wait happens
    before the round trip, where it costs latency but not a false failure.
    """

    def __init__(
        self,
        store: Store,
        *,
        concurrency: int = 8,
        negative_types: frozenset[str] = NEGATIVE_EVENT_TYPES,
        rating_threshold: float = RATING_THRESHOLD,
        feeds: LiveFeeds | None = None,
    ) -> None:
        self.store = store
        self.feeds = feeds
        self._negative_types = negative_types
        self._rating_threshold = rating_threshold
        self._pending: set[asyncio.Task[None]] = set()
        self._writes: list[EmbeddingWrite] = []
        self._gate = asyncio.Semaphore(concurrency)
        self._seen_rows = SeenRows()

    async def recommend(self, arm: Arm, query: RecommendQuery, request_id: str) -> Recommendation:
        async with self._gate:
            return await self._recommend(arm, query, request_id)

    async def catch_up(self, bundle: Bundle, version: int | None = None) -> None:
        """Apply the live catalog up to `version` (read from the shared log when None), so a
        change that returned 2xx anywhere is seen by this request. A log Redis refuses leaves
        the delta as it is (the tail retries); the request is not failed for it."""
        sync = self.feeds.sync(bundle) if self.feeds is not None else None
        if sync is None:
            return
        if version is None:
            version = await self.feeds.version(bundle) if self.feeds is not None else None
            if version is None:
                return
        if version <= sync.version:
            return
        try:
            await sync.catch_up(version)
        except StoreUnavailableError:
            metrics.CATALOG_CATCH_UP_FAILED.inc()

    async def _recommend(self, arm: Arm, query: RecommendQuery, request_id: str) -> Recommendation:
        bundle = arm.bundle
        catalog = bundle.catalog
        layer = self.store.backend
        started = time.perf_counter()
        degraded = False
        try:
            state = await self.store.fetch(
                query.user_id, bundle.version, change_log=bundle.manifest.change_log
            )
        except StoreUnavailableError:
            state, degraded = EMPTY_STATE, True
            metrics.cache_counter(layer, "error").inc()
        if not degraded:
            await self.catch_up(bundle, state.catalog_version)
        fetched = time.perf_counter()
        metrics.STAGE_HISTORY.observe(fetched - started)

        history_ids = state.history + query.history if query.history else state.history
        history = _known_rows(catalog, history_ids)
        _count_unknown("history_item", len(history_ids), len(history))
        excluded_known = _known_rows(catalog, query.exclude_item_ids)
        _count_unknown("exclude_item", len(query.exclude_item_ids), len(excluded_known))

        def exclusions() -> set[int]:
            """History, request exclusions and the seen set (every item ever interacted with,
            not just the tower's window): built only past the page memo, whose key carries the
            seen set's size and newest item, so a memo hit pays nothing per seen item."""
            excluded = set(history)
            excluded.update(excluded_known)
            if state.seen:
                seen = self._seen_rows.rows(
                    bundle.version, query.user_id, state.seen, catalog.rows.rows
                )
                excluded.update(seen)
            return excluded

        allowed = catalog.masks.allowed(query.item_filter)
        filtered = time.perf_counter()
        metrics.STAGE_FILTER.observe(filtered - fetched)

        user_idx = catalog.users.get(query.user_id, 0)
        fallback = "store_unavailable" if degraded else None
        if degraded:
            metrics.FALLBACKS.labels("store_unavailable").inc()
        if user_idx == 0 and not history:
            metrics.FALLBACKS.labels("cold_start").inc()
            items = _popular(bundle, query.k, exclusions(), allowed)
            metrics.STAGE_SEARCH.observe(time.perf_counter() - filtered)
            return Recommendation(
                request_id, query.user_id, bundle.version, arm.name, items, "cold_start"
            )

        encoder = bundle.encoder
        vector = None
        cached = None
        cacheable = not degraded and not query.history
        # a plain page (no exclusions or filters) is a pure function of its inputs: memoised
        plain = cacheable and not query.exclude_item_ids and query.item_filter is None
        memo_inputs = (
            state.history,
            state.version,
            len(state.seen),
            state.seen[-1:],
            bundle.live.applied,
        )
        if cacheable:
            cached = state.embedding
            if cached is not None and len(cached) == encoder.dim * 4:
                metrics.cache_counter(state.layer or layer, "hit").inc()
                if plain and (page := arm.pages.get(query.user_id, query.k, memo_inputs, cached)):
                    metrics.PAGE_MEMO_HITS.inc()
                    return Recommendation(
                        request_id, query.user_id, bundle.version, arm.name, page, None
                    )
                vector = np.frombuffer(cached, dtype=np.float32)
            else:
                cached = None
                metrics.cache_counter(layer, "miss").inc()
        looked_up = time.perf_counter()
        metrics.STAGE_CACHE.observe(looked_up - filtered)
        if vector is None:
            vector = encoder.encode(user_idx, history)
            encoded = time.perf_counter()
            metrics.STAGE_ENCODE.observe(encoded - looked_up)
            looked_up = encoded
            if cacheable:
                cached = vector.tobytes()
                self._cache_later(
                    EmbeddingWrite(query.user_id, bundle.version, state.version, cached)
                )
        items = search_items(
            bundle, arm.policy, arm.search, vector, query.k,
            excluded=exclusions(), allowed=allowed, item_filter=query.item_filter,
            excluded_ids=_live_excluded(bundle, history_ids, query.exclude_item_ids, state.seen),
        )  # fmt: skip
        metrics.STAGE_SEARCH.observe(time.perf_counter() - looked_up)
        if plain and cached is not None:
            arm.pages.put(query.user_id, query.k, memo_inputs, cached, items)
        return Recommendation(request_id, query.user_id, bundle.version, arm.name, items, fallback)

    def _cache_later(self, write: EmbeddingWrite) -> None:
        """Write the embedding after the response, batched: the client does not wait for the
        cache, and the misses of one loop iteration share one round trip and one task (a task
        per miss cost ~10 us of the miss path, measured with bench/miss_path.py)."""
        if not self._writes:
            asyncio.get_running_loop().call_soon(self._flush)
        self._writes.append(write)

    def _flush(self) -> None:
        writes, self._writes = self._writes, []
        if writes:
            task = asyncio.get_running_loop().create_task(self._cache(writes))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _cache(self, writes: list[EmbeddingWrite]) -> None:
        try:
            await self.store.cache_embeddings(writes)
        except StoreUnavailableError:
            metrics.cache_counter(self.store.backend, "error").inc(len(writes))

    async def drain(self) -> None:
        """Wait for background cache writes (shutdown, tests)."""
        self._flush()
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def similar(
        self,
        arm: Arm,
        *,
        item_id: str,
        k: int,
        request_id: str,
        item_filter: ItemFilter | None = None,
    ) -> Retrieval:
        bundle = arm.bundle
        memo = _RelatedMemo(arm, f"similar\x1f{item_id}", k, item_filter)
        if (hit := memo.get(request_id)) is not None:
            return hit
        live_vector = bundle.live.vector(item_id)
        row = bundle.catalog.rows.get(item_id)
        if live_vector is None and (row is None or bundle.live.deleted(item_id)):
            metrics.UNKNOWN_IDS.labels("similar_item").inc()
            message = f"item {item_id!r} is not in bundle {bundle.version} nor live"
            raise NotFoundError(message, field="item_id")
        vector = live_vector if live_vector is not None else bundle.retriever.item_vector(row)
        excluded = set() if row is None else {row}
        return memo.put(
            self._search(
                arm, vector, k=k, excluded=excluded, item_filter=item_filter,
                request_id=request_id, excluded_ids=(item_id,),
            )
        )  # fmt: skip

    async def related(self, arm: Arm, query: RelatedQuery, request_id: str) -> Retrieval:
        """Complementary (or similar) items of one item or a basket. Falls back to `similar`
        and says so in `fallback` when the bundle or the items have no dual embedding."""
        bundle = arm.bundle
        catalog = bundle.catalog
        memo = None
        if query.user_id is None:  # a user's seen set makes the answer theirs: not memoised
            # not `similar`'s key: this path serves bundle items only, without the live delta
            key = "\x1f".join(("related", query.relation, *query.item_ids))
            memo = _RelatedMemo(arm, key, query.k, query.item_filter)
            if (hit := memo.get(request_id)) is not None:
                return hit
        rows = []
        for item_id in query.item_ids:
            row = catalog.rows.get(item_id)
            if row is None or bundle.live.deleted(item_id):
                metrics.UNKNOWN_IDS.labels(f"{query.relation}_item").inc()
                message = f"item {item_id!r} is not in bundle {bundle.version}"
                raise NotFoundError(message, field=query.field)
            rows.append(row)
        excluded = set(rows)
        if not bundle.live.is_empty():  # deleted, hidden or superseded rows are never served
            excluded |= bundle.live.tombstoned_rows()
        fallback = None
        if query.user_id is not None:
            seen, fallback = await self._seen(query.user_id, bundle)
            excluded.update(_known_rows(catalog, seen))
        retriever, settings, vector, reason = _relation_query(arm, rows, query.relation)
        if reason is not None:
            metrics.FALLBACKS.labels(reason).inc()
            fallback = reason
        allowed = catalog.masks.allowed(query.item_filter)
        started = time.perf_counter()
        found, scores = retriever.search(
            vector, query.k, excluded=excluded, allowed=allowed, settings=settings
        )
        metrics.STAGE_SEARCH.observe(time.perf_counter() - started)
        items = _items(catalog, found, scores)
        result = Retrieval(request_id, bundle.version, arm.name, items, fallback)
        return result if memo is None else memo.put(result)

    async def _seen(self, user_id: str, bundle: Bundle) -> tuple[tuple[str, ...], str | None]:
        """What the user has seen (history and seen set), in the one fetch round trip; without
        the store, nothing, and the fallback that says the exclusion could not be applied."""
        try:
            async with self._gate:
                state = await self.store.fetch(
                    user_id, bundle.version, change_log=bundle.manifest.change_log
                )
        except StoreUnavailableError:
            metrics.cache_counter(self.store.backend, "error").inc()
            metrics.FALLBACKS.labels("store_unavailable").inc()
            return (), "store_unavailable"
        return state.history + state.seen, None

    def retrieve_by_embedding(
        self,
        arm: Arm,
        *,
        embedding: Sequence[float],
        k: int,
        request_id: str,
        item_filter: ItemFilter | None = None,
    ) -> Retrieval:
        dim = arm.bundle.encoder.dim
        with np.errstate(over="ignore"):  # 1e300 becomes inf, refused just below
            vector = np.asarray(embedding, dtype=np.float32)
        if vector.shape != (dim,):
            message = f"embedding must have {dim} values, got {len(vector)}"
            raise InvalidInputError(message, field="embedding")
        if not np.isfinite(vector).all():
            raise InvalidInputError("embedding holds NaN or infinite values", field="embedding")
        # Scored as a direction, like every query the towers make (unit length): the ranking is
        # the same, and finite float32 values near 3e38 no longer overflow the inner products
        # to inf or NaN (the fuzzer's finding: a 200 whose scores were null).
        norm = float(np.linalg.norm(vector.astype(np.float64)))
        if norm > 0:
            vector = (vector.astype(np.float64) / norm).astype(np.float32)
        return self._search(
            arm, vector, k=k, excluded=set(), item_filter=item_filter, request_id=request_id
        )

    def retrieve_by_history(
        self,
        arm: Arm,
        *,
        history: Sequence[str],
        k: int,
        request_id: str,
        item_filter: ItemFilter | None = None,
    ) -> Retrieval:
        catalog = arm.bundle.catalog
        rows = _known_rows(catalog, history)
        _count_unknown("history_item", len(history), len(rows))
        excluded = set(rows)
        if not rows:
            metrics.FALLBACKS.labels("cold_start").inc()
            items = _popular(arm.bundle, k, excluded, catalog.masks.allowed(item_filter))
            return Retrieval(request_id, arm.bundle.version, arm.name, items, "cold_start")
        vector = arm.bundle.encoder.encode(0, rows)
        return self._search(
            arm, vector, k=k, excluded=excluded, item_filter=item_filter, request_id=request_id,
            excluded_ids=history,
        )  # fmt: skip

    def _search(
        self,
        arm: Arm,
        vector: npt.NDArray[np.float32],
        *,
        k: int,
        excluded: set[int],
        item_filter: ItemFilter | None,
        request_id: str,
        excluded_ids: Iterable[str] = (),
    ) -> Retrieval:
        bundle = arm.bundle
        allowed = bundle.catalog.masks.allowed(item_filter)
        started = time.perf_counter()
        items = search_items(
            bundle, SCORE, arm.search, vector, k, excluded=excluded, allowed=allowed,
            item_filter=item_filter, excluded_ids=excluded_ids,
        )  # fmt: skip
        metrics.STAGE_SEARCH.observe(time.perf_counter() - started)
        return Retrieval(request_id, bundle.version, arm.name, items, None)

    async def ingest(self, events: Sequence[Event], catalog: Catalog | None) -> None:
        """Append events to histories in timestamp order; StoreUnavailableError means none was."""
        now = time.time()
        ordered = sorted(events, key=lambda e: now if e.timestamp is None else e.timestamp)
        if catalog is not None:
            unknown = sum(1 for e in ordered if e.item_id not in catalog.rows)
            _count_unknown("event_item", unknown, 0)
        try:
            async with self._gate:  # same reason as recommend: keep loop lag out of the deadline
                dropped = await self.store.append_events(
                    [(e.user_id, e.item_id) for e in ordered if self._positive(e)],
                    negatives=[(e.user_id, e.item_id) for e in ordered if not self._positive(e)],
                )
        except StoreUnavailableError:
            metrics.EVENTS_REJECTED.labels("store_unavailable").inc(len(events))
            raise
        if dropped:
            metrics.SEEN_DROPPED.inc(dropped)
        for event in ordered:
            metrics.EVENTS_INGESTED.labels(event.type).inc()

    def _positive(self, event: Event) -> bool:
        return is_positive(event, self._negative_types, self._rating_threshold)
