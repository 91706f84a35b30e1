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
    # provenance, shown by /admin/bundles but never acted on: free-form inside
    training_data: dict[str, Any]
    training: dict[str, Any]
    metrics: dict[str, Any]
