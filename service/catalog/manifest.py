"""The bundle manifest as strict pydantic models: the service's half of docs/bundle-format.md."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

VERSION_PATTERN = r"^[A-Za-z0-9._:+-]{1,128}$"


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
    recall_at_10: float | None = Field(default=None, ge=0, le=1)
    latency_ms_per_query: float | None = Field(default=None, ge=0)
    # user-tower queries the search knob was tuned on, and the held-out ones the recall is from
    recall_queries: dict[str, int] | None = None


class CatalogSpec(_Strict):
    genre_vocab: list[str] = Field(max_length=65_535)
    # written by `models compact` (docs/bundle-format.md, "Compacted bundles"): file names
    tower_rows: str | None = None
    """int64 [num_items]: each row's item-id row in the towers (`padding_idx` = none)."""
    hidden: str | None = None
    """int64 rows hidden (available=false) when compacted: served as live tombstones."""
    attributes: str | None = None
    """A string column of each row's attributes as a JSON object ("" = none)."""


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


class ComplementarySpec(_Strict):
    """The optional `complementary` section: dual IN/OUT item embeddings and the FAISS index
    over the OUT vectors that IN vectors query."""

    in_file: str
    out_file: str
    dim: int = Field(ge=1, le=4_096)
    dtype: Literal["float32"]
    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    index: IndexSpec


LOG_POSITION = r"^[0-9]{1,20}-[0-9]{1,20}$"


class CompactedFrom(_Strict):
    """Where a compacted bundle came from, and where its live catalog resumes."""

    bundle_version: str = Field(pattern=VERSION_PATTERN)
    change_log: str = Field(pattern=VERSION_PATTERN)
    """The change log this bundle continues (its lineage's first bundle version)."""
    position: str = Field(pattern=LOG_POSITION)
    """Last stream entry folded in: the service replays the log after it."""
    catalog_version: int = Field(ge=0)
    """The log's change count at `position`."""
    changes_folded: int = Field(ge=0)


class Manifest(_Strict):
    format_version: Literal[2]
    bundle_version: str = Field(pattern=VERSION_PATTERN)
    created_at: str
    dataset: str
    embedding_dim: int = Field(ge=1, le=4_096)
    metric: Literal["inner_product"]
    normalized: Literal[True]
    num_items: int = Field(ge=1)
    num_users: int = Field(ge=0)
    catalog: CatalogSpec
    index: IndexSpec
    user_tower: UserTowerSpec
    item_tower: ItemTowerSpec
    files: dict[str, FileEntry]
    complementary: ComplementarySpec | None = None
    compacted_from: CompactedFrom | None = None
    # provenance, shown by /admin/bundles but never acted on: free-form inside
    training_data: dict[str, Any]
    training: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def change_log(self) -> str:
        """The name of the live-catalog log this bundle follows: its own version, or the one
        its compaction continues, so every bundle of a lineage shares one ordered log."""
        return self.compacted_from.change_log if self.compacted_from else self.bundle_version
