"""Verify a bundle directory, then load it into immutable serving objects.

Order matters: every file named in the manifest is read once into memory, its size and sha256
checked, and only those verified bytes are ever parsed (no second read that could differ). Then
the ONNX signature, the index dimension/count and the catalog's shape are checked against the
manifest. A bundle that fails anything raises `BundleError` and is never served.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from service.catalog.encoder import UserEncoder, check_signature, open_session
from service.catalog.filters import FilterMasks
from service.catalog.retriever import Retriever
from service.errors import BundleError

MAX_MANIFEST_BYTES = 1 << 20
_VERSION_PATTERN = r"^[A-Za-z0-9._:+-]{1,128}$"


class _Strict(BaseModel):
    """Unknown keys are refused: a typo in the contract must fail loudly, not be ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class IndexSpec(_Strict):
    file: str
    type: Literal["flat_ip", "hnsw", "ivf"]
    params: dict[str, Any] = Field(default_factory=dict)
    ntotal: int = Field(ge=1)
    recall_at_100: float | None = Field(default=None, ge=0, le=1)


class UserTowerSpec(_Strict):
    file: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]] = Field(min_length=1, max_length=1)
    history_length: int = Field(ge=1, le=10_000)
    padding_idx: int = Field(ge=0)
    user_vocab_size: int = Field(ge=1)
    user_features: dict[str, Any] | None = None


class ItemTowerSpec(_Strict):
    file: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]] = Field(min_length=1, max_length=1)
    genre_vocab: list[str]
    year_mean: float
    year_std: float
    title_hash_buckets: int = Field(ge=1)
    title_max_tokens: int = Field(ge=1)


class Manifest(_Strict):
    format_version: Literal[1]
    bundle_version: str = Field(pattern=_VERSION_PATTERN)
    created_at: str
    dataset: str
    embedding_dim: int = Field(ge=1, le=4_096)
    metric: Literal["inner_product"]
    normalized: Literal[True]
    num_items: int = Field(ge=1)
    num_users: int = Field(ge=0)
    index: IndexSpec
    user_tower: UserTowerSpec
    item_tower: ItemTowerSpec
    files: dict[str, FileEntry]
    # provenance, shown by /admin/bundles but never acted on: free-form inside
    training_data: dict[str, Any]
    training: dict[str, Any]
    metrics: dict[str, Any]


class ItemRecord(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    item_id: str = Field(min_length=1)
    title: str
    genres: list[str]
    year: int | None = None


class PopularityRecord(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    item_id: str
    score: float = Field(allow_inf_nan=False)


_ITEMS = TypeAdapter(list[ItemRecord])
_USERS = TypeAdapter(list[str])
_POPULARITY = TypeAdapter(list[PopularityRecord])


@dataclass(frozen=True, slots=True)
class Catalog:
    """Items and users of one bundle, by row; id -> row maps are read-only."""

    item_ids: tuple[str, ...]
    titles: tuple[str, ...]
    genres: tuple[tuple[str, ...], ...]
    years: npt.NDArray[np.int32]
    rows: Mapping[str, int]
    users: Mapping[str, int]
    popularity_rows: npt.NDArray[np.int64]
    popularity_scores: npt.NDArray[np.float32]
    masks: FilterMasks

    def __len__(self) -> int:
        return len(self.item_ids)


@dataclass(frozen=True, slots=True)
class Bundle:
    version: str
    path: Path
    manifest: Manifest
    catalog: Catalog
    encoder: UserEncoder
    retriever: Retriever


def _read_verified(root: Path, name: str, entry: FileEntry) -> bytes:
    path = root / name
    if Path(name).is_absolute() or not path.resolve().is_relative_to(root):
        raise BundleError(f"{name}: path leaves the bundle directory")
    if not path.is_file():
        raise BundleError(f"{name}: listed in the manifest but missing")
    data = path.read_bytes()
    if len(data) != entry.bytes:
        raise BundleError(f"{name}: {len(data)} bytes, manifest says {entry.bytes}")
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise BundleError(f"{name}: sha256 mismatch")
    return data


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


def verify_files(root: Path, manifest: Manifest) -> dict[str, bytes]:
    """Every listed file's verified bytes; the files the format requires must be listed."""
    required = {
        manifest.user_tower.file,
        manifest.item_tower.file,
        manifest.index.file,
        "item_embeddings.npy",
        "items.json",
        "users.json",
        "popularity.json",
    }
    if manifest.user_tower.user_features is not None:
        required.add("user_features.npy")
    missing = sorted(required - manifest.files.keys())
    if missing:
        raise BundleError(f"manifest.files does not list {missing}")
    return {name: _read_verified(root, name, entry) for name, entry in manifest.files.items()}


def _npy(data: bytes, name: str) -> npt.NDArray[Any]:
    try:
        array: npt.NDArray[Any] = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise BundleError(f"{name}: not a plain .npy array: {exc}") from exc
    return array


def _catalog(files: dict[str, bytes], manifest: Manifest) -> Catalog:
    try:
        items = _ITEMS.validate_json(files["items.json"])
        users = _USERS.validate_json(files["users.json"])
        popularity = _POPULARITY.validate_json(files["popularity.json"])
    except ValidationError as exc:
        raise BundleError(f"catalog file invalid: {exc}") from exc
    if len(items) != manifest.num_items or len(users) != manifest.num_users:
        raise BundleError("items.json / users.json sizes differ from the manifest")
    rows = {item.item_id: row for row, item in enumerate(items)}
    user_rows = {user: idx + 1 for idx, user in enumerate(users)}
    if len(rows) != len(items) or len(user_rows) != len(users):
        raise BundleError("duplicate item or user ids")
    vocab = tuple(sorted({g for item in items for g in item.genres}))
    column = {g: c for c, g in enumerate(vocab)}
    genre_matrix = np.zeros((len(items), len(vocab)), dtype=np.bool_)
    for row, item in enumerate(items):
        genre_matrix[row, [column[g] for g in item.genres]] = True
    years = np.array([item.year or 0 for item in items], dtype=np.int32)
    known = [(rows[p.item_id], p.score) for p in popularity if p.item_id in rows]
    pop_rows = np.array([r for r, _ in known], dtype=np.int64)
    pop_scores = np.array([s for _, s in known], dtype=np.float32)
    for array in (years, pop_rows, pop_scores):
        array.flags.writeable = False
    return Catalog(
        item_ids=tuple(item.item_id for item in items),
        titles=tuple(item.title for item in items),
        genres=tuple(tuple(item.genres) for item in items),
        years=years,
        rows=MappingProxyType(rows),
        users=MappingProxyType(user_rows),
        popularity_rows=pop_rows,
        popularity_scores=pop_scores,
        masks=FilterMasks(vocab, genre_matrix, years),
    )


def _index(data: bytes, manifest: Manifest) -> Any:
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as exc:
        raise BundleError(f"{manifest.index.file}: FAISS cannot read it: {exc}") from exc
    if index.d != manifest.embedding_dim:
        raise BundleError(f"index dimension {index.d} != embedding_dim {manifest.embedding_dim}")
    if index.ntotal != manifest.index.ntotal or index.ntotal != manifest.num_items:
        raise BundleError(f"index holds {index.ntotal} vectors, manifest {manifest.num_items}")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise BundleError("index metric is not inner product")
    return index


def _encoder(files: dict[str, bytes], manifest: Manifest) -> UserEncoder:
    tower = manifest.user_tower
    if tower.padding_idx != manifest.num_items:
        raise BundleError("user_tower.padding_idx must equal num_items")
    if tower.user_vocab_size != manifest.num_users + 1:
        raise BundleError("user_tower.user_vocab_size must equal num_users + 1")
    session = _session(files, tower.file)
    check_signature(session, tower.model_dump(), "user_tower")
    shapes = {d.get("name"): d.get("shape") for d in tower.inputs + tower.outputs}
    if shapes.get("history") != ["batch", tower.history_length]:
        raise BundleError("user_tower history shape differs from history_length")
    if shapes.get(tower.outputs[0].get("name")) != ["batch", manifest.embedding_dim]:
        raise BundleError("user_tower output shape differs from embedding_dim")
    features = None
    if tower.user_features is not None:
        features = _npy(files["user_features.npy"], "user_features.npy")
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
    )


def _session(files: dict[str, bytes], name: str) -> Any:
    """An ONNX session on verified bytes; a refusal names the file it came from."""
    try:
        return open_session(files[name])
    except BundleError as exc:
        raise BundleError(f"{name}: {exc.message}") from exc


def load_bundle(path: Path) -> Bundle:
    """Verify then load; raises BundleError with the first problem found."""
    root = path.resolve()
    if not root.is_dir():
        raise BundleError(f"{path}: not a directory")
    manifest = _read_manifest(root)
    files = verify_files(root, manifest)
    embeddings = _npy(files["item_embeddings.npy"], "item_embeddings.npy")
    if embeddings.dtype != np.float32 or embeddings.shape != (
        manifest.num_items,
        manifest.embedding_dim,
    ):
        raise BundleError("item_embeddings.npy must be float32 [num_items, embedding_dim]")
    if not np.isfinite(embeddings).all():
        raise BundleError("item_embeddings.npy holds NaN or infinite values")
    embeddings.flags.writeable = False
    catalog = _catalog(files, manifest)
    encoder = _encoder(files, manifest)
    index = _index(files[manifest.index.file], manifest)
    item_tower = _session(files, manifest.item_tower.file)
    check_signature(item_tower, manifest.item_tower.model_dump(), "item_tower")
    del item_tower  # verified only: serving needs the index, not the item tower
    return Bundle(
        version=manifest.bundle_version,
        path=root,
        manifest=manifest,
        catalog=catalog,
        encoder=encoder,
        retriever=Retriever(index, embeddings, manifest.index.type),
    )
