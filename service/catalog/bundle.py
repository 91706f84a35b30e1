"""Verify a bundle directory, then map it into immutable serving objects.

Order matters: every file named in the manifest is streamed once through sha256 and its size
checked; only then are the files opened. Large ones (the index, the embeddings, the catalog
columns) are memory-mapped read-only, so every worker on a machine shares one copy in the page
cache. This rests on one assumption, stated in docs/bundle-format.md: a bundle directory is
immutable once written (builds write a temp directory and rename it). Then the ONNX signature,
the index dimension/count and the catalog's shapes are checked against the manifest. A bundle
that fails anything raises `BundleError` naming the file, and is never served.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from service.catalog.complementary import DualEmbeddings, check_dual
from service.catalog.encoder import UserEncoder, check_signature, open_session
from service.catalog.item_embedder import ItemEmbedder
from service.catalog.items import CATALOG_FILES, Catalog, load_catalog
from service.catalog.live import LiveDelta
from service.catalog.manifest import FileEntry, Manifest
from service.catalog.retriever import DEFAULT_EXACT_MAX_ROWS, Retriever
from service.errors import BundleError

MAX_MANIFEST_BYTES = 1 << 20
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class Bundle:
    version: str
    path: Path
    manifest: Manifest
    catalog: Catalog
    encoder: UserEncoder
    retriever: Retriever
    items: ItemEmbedder
    """The item tower: embeds live items from their content (service/catalog/live_sync.py)."""
    live: LiveDelta
    """This bundle's live delta (empty until its change log is replayed): mutable, per process."""
    complementary: DualEmbeddings | None = None


def _verify_file(root: Path, name: str, entry: FileEntry) -> None:
    """Size, then sha256 streamed in blocks (hashlib releases the GIL on each block, so a
    worker verifying a 1 GB file still answers its supervisor's health checks)."""
    path = root / name
    if Path(name).is_absolute() or not path.resolve().is_relative_to(root):
        raise BundleError(f"{name}: path leaves the bundle directory")
    if not path.is_file():
        raise BundleError(f"{name}: listed in the manifest but missing")
    size = path.stat().st_size
    if size != entry.bytes:
        raise BundleError(f"{name}: {size} bytes, manifest says {entry.bytes}")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    if digest.hexdigest() != entry.sha256:
        raise BundleError(f"{name}: sha256 mismatch")


def _read_manifest(root: Path) -> Manifest:
    path = root / "manifest.json"
    if not path.is_file() or path.is_symlink():
        raise BundleError(f"{path}: no manifest.json (or a symlink)")
    raw = path.read_bytes()
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError("manifest.json is too large")
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise BundleError(f"manifest.json is invalid: {exc}") from exc


def verify_files(root: Path, manifest: Manifest) -> None:
    """Every listed file matches its size and sha256; the files the format requires are listed."""
    required = {
        manifest.user_tower.file,
        manifest.item_tower.file,
        manifest.index.file,
        "item_embeddings.npy",
        *CATALOG_FILES,
    }
    if manifest.user_tower.user_features is not None:
        required.add("user_features.npy")
    if manifest.complementary is not None:
        dual = manifest.complementary
        required |= {dual.in_file, dual.out_file, dual.index.file}
    required |= set(compacted_files(manifest))
    missing = sorted(required - manifest.files.keys())
    if missing:
        raise BundleError(f"manifest.files does not list {missing}")
    for name, entry in manifest.files.items():
        _verify_file(root, name, entry)


def _npy(root: Path, name: str) -> npt.NDArray[Any]:
    """A verified .npy, memory-mapped read-only (shared by every worker through the page cache)."""
    try:
        array: npt.NDArray[Any] = np.load(root / name, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise BundleError(f"{name}: not a plain .npy array: {exc}") from exc
    # A plain ndarray over the same mapping: np.memmap's Python-level __getitem__ and
    # __array_finalize__ cost ~3% of a searching recommend at 1M items (its rescoring gather).
    return array.view(np.ndarray)


def _index(root: Path, manifest: Manifest) -> Any:
    name = manifest.index.file
    index = _read_index(root, name)
    if index.d != manifest.embedding_dim:
        raise BundleError(
            f"{name}: index dimension {index.d} != embedding_dim {manifest.embedding_dim}"
        )
    if index.ntotal != manifest.index.ntotal or index.ntotal != manifest.num_items:
        raise BundleError(
            f"{name}: index holds {index.ntotal} vectors, manifest {manifest.num_items}"
        )
    return index


def _read_index(root: Path, name: str) -> Any:
    """A verified FAISS file, its flat codes, graph or lists memory-mapped; inner product only."""
    try:
        index = faiss.read_index(str(root / name), faiss.IO_FLAG_MMAP_IFC)
    except RuntimeError as exc:
        raise BundleError(f"{name}: FAISS cannot read it: {exc}") from exc
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise BundleError(f"{name}: index metric is not inner product")
    return index


def compacted_files(manifest: Manifest) -> list[str]:
    """The optional files a compacted bundle's catalog section names."""
    spec = manifest.catalog
    names = [spec.tower_rows, spec.hidden]
    if spec.attributes is not None:
        names += [f"{spec.attributes}.npy", f"{spec.attributes}.offsets.npy"]
    return [name for name in names if name is not None]


def _tower_rows(root: Path, manifest: Manifest) -> npt.NDArray[np.int64] | None:
    """Catalog row -> the towers' item row: identity (None) unless the bundle was compacted,
    when rows were removed or added after training and `padding_idx` is the towers' count."""
    name = manifest.catalog.tower_rows
    if name is None:
        if manifest.user_tower.padding_idx != manifest.num_items:
            raise BundleError("user_tower.padding_idx must equal num_items")
        return None
    rows = _npy(root, name)
    padding = manifest.user_tower.padding_idx
    if rows.dtype != np.int64 or rows.shape != (manifest.num_items,):
        raise BundleError(f"{name} must be int64 [num_items]")
    if len(rows) and (int(rows.min()) < 0 or int(rows.max()) > padding):
        raise BundleError(f"{name} holds rows outside the towers' [0, padding_idx]")
    return rows


def hidden_rows(root: Path, manifest: Manifest) -> npt.NDArray[np.int64]:
    """Rows compacted while hidden: the loader tombstones them in the bundle's live delta."""
    name = manifest.catalog.hidden
    if name is None:
        return np.zeros(0, dtype=np.int64)
    rows = _npy(root, name)
    if rows.dtype != np.int64 or rows.ndim != 1:
        raise BundleError(f"{name} must be an int64 vector")
    if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= manifest.num_items):
        raise BundleError(f"{name} holds rows outside [0, num_items)")
    return rows


def _encoder(root: Path, manifest: Manifest) -> UserEncoder:
    tower = manifest.user_tower
    tower_rows = _tower_rows(root, manifest)
    if tower.user_vocab_size != manifest.num_users + 1:
        raise BundleError("user_tower.user_vocab_size must equal num_users + 1")
    session = _session(root, tower.file, manifest.files.keys())
    check_signature(session, tower.model_dump(), "user_tower")
    shapes = {d.get("name"): d.get("shape") for d in tower.inputs + tower.outputs}
    if shapes.get("history") != ["batch", tower.history_length]:
        raise BundleError("user_tower history shape differs from history_length")
    if shapes.get(tower.outputs[0].get("name")) != ["batch", manifest.embedding_dim]:
        raise BundleError("user_tower output shape differs from embedding_dim")
    features = None
    if tower.user_features is not None:
        features = _npy(root, "user_features.npy")
        if (
            features.dtype != np.int64
            or features.ndim != 2
            or len(features) != tower.user_vocab_size
        ):
            raise BundleError("user_features.npy must be int64 [num_users + 1, F]")
    return UserEncoder(
        session,
        history_length=tower.history_length,
        padding_idx=tower.padding_idx,
        dim=manifest.embedding_dim,
        output=str(tower.outputs[0]["name"]),
        user_features=features,
        tower_rows=tower_rows,
    )


def _session(root: Path, name: str, listed: Collection[str]) -> Any:
    """An ONNX session on a verified file; a refusal names the file it came from."""
    try:
        return open_session(root / name, listed)
    except BundleError as exc:
        raise BundleError(f"{name}: {exc.message}") from exc


def load_bundle(path: Path, *, exact_max_rows: int = DEFAULT_EXACT_MAX_ROWS) -> Bundle:
    """Verify then map; raises BundleError with the first problem found."""
    root = path.resolve()
    if not root.is_dir():
        raise BundleError(f"{path}: not a directory")
    manifest = _read_manifest(root)
    verify_files(root, manifest)
    embeddings = _npy(root, "item_embeddings.npy")
    if embeddings.dtype != np.float32 or embeddings.shape != (
        manifest.num_items,
        manifest.embedding_dim,
    ):
        raise BundleError("item_embeddings.npy must be float32 [num_items, embedding_dim]")
    if not all(np.isfinite(block).all() for block in np.array_split(embeddings, 64)):
        raise BundleError("item_embeddings.npy holds NaN or infinite values")
    catalog = load_catalog(root, manifest, lambda name: _npy(root, name))
    encoder = _encoder(root, manifest)
    index = _index(root, manifest)
    item_tower = _session(root, manifest.item_tower.file, manifest.files.keys())
    check_signature(item_tower, manifest.item_tower.model_dump(), "item_tower")
    live = LiveDelta(catalog.rows, manifest.embedding_dim)
    for row in hidden_rows(root, manifest).tolist():  # a PATCH available=true shows them again
        live.set_available(catalog.item_ids[row], False)
    return Bundle(
        version=manifest.bundle_version,
        path=root,
        manifest=manifest,
        catalog=catalog,
        encoder=encoder,
        retriever=Retriever(index, embeddings, manifest.index.type, exact_max_rows=exact_max_rows),
        items=ItemEmbedder.for_manifest(item_tower, manifest),
        live=live,
        complementary=_dual(root, manifest, exact_max_rows),
    )


def _dual(root: Path, manifest: Manifest, exact_max_rows: int) -> DualEmbeddings | None:
    spec = manifest.complementary
    if spec is None:
        return None
    arrays = _npy(root, spec.in_file), _npy(root, spec.out_file)
    index = _read_index(root, spec.index.file)
    try:
        return check_dual(*arrays, index, spec, manifest.num_items, exact_max_rows=exact_max_rows)
    except ValueError as exc:
        raise BundleError(str(exc)) from exc
