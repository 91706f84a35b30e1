"""`python -m models compact`: fold a bundle's live catalog into a new, immutable bundle.

The live changes are replayed with the service's own code (`LiveSync.apply` into the bundle's
`LiveDelta`, embedding with its `ItemEmbedder`), so the new bundle holds exactly what the
service served: upserted items with the item tower's content-only embeddings, deleted items
gone, hidden ones kept but listed in `item_hidden.npy` (the service loads them as tombstones,
so a later PATCH available=true shows them again). Rows change, the towers do not: kept rows
keep their learnt item-id rows, new ones map to the towers' unknown row (`item_tower_rows.npy`,
docs/bundle-format.md, "Compacted bundles"). The index is rebuilt with `models/index.py`'s
policy, the dual (IN/OUT) tables keep their rows and give new items none, and
`compacted_from` records the change log, position and catalog version folded in: the service
replays that log after it, so no change made meanwhile is lost (docs/live-catalog.md).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from models.bundle_files import (
    DUAL_INDEX_FILE,
    UNLEARNT_BIAS,
    ExportError,
    atomic_directory,
    build_dual_index,
    bundle_version,
    file_entries,
    index_section,
    verify_bundle,
    write_json,
)
from models.catalog_files import write_item_columns, write_strings
from models.change_log import LogSlice, read_slice
from models.index import IndexSpec, build_index, query_sample
from service.catalog.bundle import Bundle, load_bundle
from service.catalog.changes import MemoryChangeLog, RedisChangeLog
from service.catalog.live_sync import LiveSync
from service.catalog.manifest import IndexSpec as ServedIndex
from service.errors import BundleError, StoreUnavailableError

TOWER_ROWS_FILE = "item_tower_rows.npy"
HIDDEN_FILE = "item_hidden.npy"
ATTRIBUTES = "item_attributes"
_APPLY_BATCH = 1_000


@dataclass(frozen=True)
class Compacted:
    manifest: dict[str, Any]
    folded: LogSlice
    seconds: float


@dataclass
class _Rows:
    """The new catalog in row order; `source[i]` is the old row, -1 for an item added live."""

    ids: list[str]
    titles: list[str]
    genres: list[tuple[str, ...]]
    years: list[int]
    attributes: list[str]
    source: np.ndarray
    live: np.ndarray
    """Rows whose metadata and embedding come from the live delta (new or updated)."""


async def _read_log(redis_url: str, bundle: Bundle, timeout_s: float) -> LogSlice:
    changes = RedisChangeLog(redis_url, timeout_s=timeout_s)
    try:
        return await read_slice(changes, bundle.manifest)
    except StoreUnavailableError as exc:
        raise ExportError(f"the change log in Redis (--redis-url): {exc.message}") from exc
    finally:
        await changes.close()


def _fold(bundle: Bundle, folded: LogSlice) -> None:
    """Apply the slice to the bundle's delta exactly as a serving worker does."""
    unread = MemoryChangeLog()  # `apply` reads no log: it is handed the changes read above
    sync = LiveSync(folded.name, bundle.live, bundle.items, unread, version=folded.base_version)
    for start in range(0, len(folded.changes), _APPLY_BATCH):
        sync.apply(folded.changes[start : start + _APPLY_BATCH])


def _rows(bundle: Bundle) -> _Rows:
    catalog, delta = bundle.catalog, bundle.live
    kept: list[int] = []
    ids: list[str] = []
    titles: list[str] = []
    genres: list[tuple[str, ...]] = []
    years: list[int] = []
    attributes: list[str] = []
    live: list[bool] = []
    for row in range(len(catalog)):
        item_id = catalog.item_ids[row]
        if delta.deleted(item_id):
            continue
        item = delta.item(item_id)
        kept.append(row)
        ids.append(item_id)
        live.append(item is not None)
        if item is None:
            titles.append(catalog.titles[row])
            genres.append(catalog.genres[row])
            years.append(int(catalog.years[row]))
            attributes.append(_json(catalog.attributes(row)))
        else:
            titles.append(item.title)
            genres.append(item.genres)
            years.append(item.year or 0)
            attributes.append(_json(dict(item.attributes)))
    for item in delta.live_items():
        if item.item_id in catalog.rows:
            continue
        kept.append(-1)
        ids.append(item.item_id)
        titles.append(item.title)
        genres.append(item.genres)
        years.append(item.year or 0)
        attributes.append(_json(dict(item.attributes)))
        live.append(True)
    source = np.asarray(kept, dtype=np.int64)
    return _Rows(ids, titles, genres, years, attributes, source, np.asarray(live, dtype=np.bool_))


def _json(value: dict[str, object]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False) if value else ""


def _embeddings(bundle: Bundle, rows: _Rows) -> np.ndarray:
    old = np.load(bundle.path / "item_embeddings.npy", mmap_mode="r", allow_pickle=False)
    out = np.zeros((len(rows.ids), bundle.manifest.embedding_dim), dtype=np.float32)
    from_bundle = ~rows.live
    out[from_bundle] = old[rows.source[from_bundle]]
    for row in np.flatnonzero(rows.live).tolist():
        vector = bundle.live.vector(rows.ids[row])
        if vector is None:
            raise ExportError(f"{rows.ids[row]}: a live item without an embedding")
        out[row] = vector
    return out


def _tower_rows(bundle: Bundle, rows: _Rows) -> np.ndarray:
    padding = bundle.manifest.user_tower.padding_idx
    name = bundle.manifest.catalog.tower_rows
    old = (
        np.arange(bundle.manifest.num_items, dtype=np.int64)
        if name is None
        else np.load(bundle.path / name, allow_pickle=False)
    )
    out = np.full(len(rows.ids), padding, dtype=np.int64)
    known = rows.source >= 0
    out[known] = old[rows.source[known]]
    return out


def _spec(served: ServedIndex) -> IndexSpec:
    """models/index.py's policy (exact up to its threshold), the bundle's family above it."""
    large = served.type if served.type != "flat_ip" else "ivf"
    params = served.params
    return IndexSpec(
        large=large,
        hnsw_m=int(params.get("M", 32)),
        hnsw_ef_construction=int(params.get("efConstruction", 64)),
        ivf_codes="sq8" if params.get("codes") == "sq8" else "flat",
    )


def _dual(bundle: Bundle, rows: _Rows) -> tuple[np.ndarray, np.ndarray] | None:
    """IN/OUT rows follow their items; items added live get none (IN all zero, OUT the
    unlearnt bias), so their complementary answer falls back as it did live."""
    spec = bundle.manifest.complementary
    if spec is None:
        return None
    old_in = np.load(bundle.path / spec.in_file, mmap_mode="r", allow_pickle=False)
    old_out = np.load(bundle.path / spec.out_file, mmap_mode="r", allow_pickle=False)
    item_in = np.zeros((len(rows.ids), spec.dim), dtype=np.float32)
    item_out = np.zeros((len(rows.ids), spec.dim), dtype=np.float32)
    item_out[:, -1] = UNLEARNT_BIAS
    known = rows.source >= 0
    item_in[known] = old_in[rows.source[known]]
    item_out[known] = old_out[rows.source[known]]
    return item_in, item_out


def _popularity(bundle: Bundle, kept: set[str]) -> list[Any]:
    records = json.loads((bundle.path / "popularity.json").read_text(encoding="utf-8"))
    return [r for r in records if isinstance(r, dict) and r.get("item_id") in kept]


def _copy_unchanged(bundle: Bundle, tmp: Path) -> None:
    """Towers (with their external data), user ids and features: byte for byte."""
    towers = (bundle.manifest.user_tower.file, bundle.manifest.item_tower.file)
    for name in bundle.manifest.files:
        if (
            any(name == t or name.startswith(f"{t}.") for t in towers)
            or name.startswith("user_ids")
            or name == "user_features.npy"
        ):
            shutil.copyfile(bundle.path / name, tmp / name)


def _write(
    bundle: Bundle, rows: _Rows, folded: LogSlice, tmp: Path, *, progress: bool
) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(
        (bundle.path / "manifest.json").read_text(encoding="utf-8")
    )
    _copy_unchanged(bundle, tmp)
    catalog: dict[str, Any] = write_item_columns(
        tmp, rows.ids, rows.titles, rows.genres, rows.years
    )
    catalog["tower_rows"] = TOWER_ROWS_FILE
    np.save(tmp / TOWER_ROWS_FILE, _tower_rows(bundle, rows), allow_pickle=False)
    hidden = [row for row, item_id in enumerate(rows.ids) if bundle.live.hidden(item_id)]
    if hidden:
        catalog["hidden"] = HIDDEN_FILE
        np.save(tmp / HIDDEN_FILE, np.asarray(hidden, dtype=np.int64), allow_pickle=False)
    if any(rows.attributes):
        catalog["attributes"] = ATTRIBUTES
        write_strings(tmp, ATTRIBUTES, rows.attributes)

    embeddings = _embeddings(bundle, rows)
    np.save(tmp / "item_embeddings.npy", embeddings, allow_pickle=False)
    queries = query_sample(embeddings, None, count=1000)
    built = build_index(embeddings, queries, _spec(bundle.manifest.index), progress=progress)
    faiss.write_index(built.index, str(tmp / "items.faiss"))
    write_json(tmp / "popularity.json", _popularity(bundle, set(rows.ids)))
    dual = _dual(bundle, rows)
    spec = bundle.manifest.complementary
    if dual is not None and spec is not None:
        np.save(tmp / spec.in_file, dual[0], allow_pickle=False)
        np.save(tmp / spec.out_file, dual[1], allow_pickle=False)
        dual_built = build_dual_index(*dual, _spec(spec.index), progress=progress)
        faiss.write_index(dual_built.index, str(tmp / DUAL_INDEX_FILE))
        manifest["complementary"]["index"] = index_section(dual_built, DUAL_INDEX_FILE)

    files = file_entries(tmp)
    now = datetime.now(UTC).replace(microsecond=0)
    version = bundle_version(str(manifest["dataset"]), now, files)
    if version == bundle.version:
        raise ExportError(f"nothing new to fold into {bundle.version} (the same version again)")
    manifest.update(
        bundle_version=version,
        created_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        num_items=len(rows.ids),
        catalog=catalog,
        index=index_section(built, "items.faiss"),
        files=files,
        compacted_from={
            "bundle_version": bundle.version,
            "change_log": folded.name,
            "position": folded.position,
            "catalog_version": folded.version,
            "changes_folded": len(folded.changes),
        },
    )
    write_json(tmp / "manifest.json", manifest)
    return manifest


def compact(
    source: Path,
    redis_url: str,
    out: Path,
    *,
    timeout_s: float = 5.0,
    progress: bool = False,
) -> Compacted:
    """Fold the changes Redis logged for `source` into a new bundle at `out` (must not exist);
    the new bundle is verified by the service's own loader before it is renamed into place."""
    started = time.perf_counter()
    if out.exists():
        raise ExportError(f"{out}: output directory already exists (refusing to overwrite)")
    bundle = _load(source)
    folded = asyncio.run(_read_log(redis_url, bundle, timeout_s))
    _fold(bundle, folded)
    rows = _rows(bundle)
    if not rows.ids:
        raise ExportError("every item was deleted: a bundle needs at least one")
    with atomic_directory(out) as tmp:
        manifest = _write(bundle, rows, folded, tmp, progress=progress)
        verify_bundle(tmp)
        _load(tmp)  # the service accepts it, or nothing is left at `out`
    return Compacted(manifest, folded, time.perf_counter() - started)


def _load(path: Path) -> Bundle:
    try:
        return load_bundle(path)
    except BundleError as exc:
        raise ExportError(f"{path}: {exc.message}") from exc


def describe(result: Compacted, out: Path) -> Sequence[str]:
    folded, manifest = result.folded, result.manifest
    return (
        f"compacted {manifest['compacted_from']['bundle_version']} + {len(folded.changes)} "
        f"changes (log {folded.name} up to {folded.position}, catalog version {folded.version})",
        f"bundle {out} ({manifest['bundle_version']}, {manifest['num_items']} items) "
        f"in {result.seconds:.1f}s",
    )
