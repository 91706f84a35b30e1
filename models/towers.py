"""The two towers: a user encoder over (user id, recent items, demographics) and an item encoder
over (item id, genres, year, title tokens). Both end in an L2 normalisation so that the inner
product the service computes is a cosine.

The user tower is causal over its history: `states()` returns one state per position, each seeing
only that position and older ones, so a single pass trains every "next item" of a sequence; the
served embedding is the state at the last (most recent) position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from models.cold_head import ColdHead

Pooling = Literal["attention", "mean", "gru"]
POOLINGS: tuple[Pooling, ...] = ("attention", "mean", "gru")


@dataclass(frozen=True)
class TowerConfig:
    dim: int = 64
    history_length: int = 50
    pooling: Pooling = "mean"
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.2
    user_id_dropout: float = 0.3
    item_id_dropout: float = 0.1
    share_item_embeddings: bool = True
    title_dim: int = 16


class ItemTower(nn.Module):
    """Item id embedding plus content; an unseen item (id row `num_items`) is placed by its
    content alone, through the cold head once it is fitted (models/cold_head.py)."""

    def __init__(
        self, *, num_items: int, num_genres: int, title_buckets: int, config: TowerConfig
    ) -> None:
        super().__init__()
        dim = config.dim
        self.num_items = num_items
        self.id_dropout = config.item_id_dropout
        # sparse: a batch's gradient touches its own rows, not a million (SparseAdam in train.py)
        self.id_embedding = nn.Embedding(num_items + 1, dim, sparse=True)
        self.genres = nn.Linear(num_genres, dim, bias=False)
        self.year = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, dim))
        # Narrow hashed-token table + projection: the table has 50k rows and is updated every step.
        self.title = nn.Embedding(title_buckets + 1, config.title_dim, padding_idx=0, sparse=True)
        self.title_proj = nn.Linear(config.title_dim, dim, bias=False)
        nn.init.normal_(self.id_embedding.weight, std=0.1)
        nn.init.normal_(self.title.weight, std=0.1)
        with torch.no_grad():
            self.title.weight[0].zero_()
        with torch.random.fork_rng(devices=[]):  # the global stream, so the rest, unchanged
            self.cold = ColdHead(num_genres=num_genres, title_buckets=title_buckets, dim=dim)
        self.cold_fitted = False  # until fit_cold_head: the unknown row plus content, as trained

    def content(self, genres: Tensor, year: Tensor, title_tokens: Tensor) -> Tensor:
        present = (title_tokens > 0).float().unsqueeze(-1)
        title = (self.title(title_tokens) * present).sum(1) / present.sum(1).clamp(min=1.0)
        out: Tensor = self.genres(genres) + self.year(year.unsqueeze(-1)) + self.title_proj(title)
        return out

    def forward(
        self, item_idx: Tensor, genres: Tensor, year: Tensor, title_tokens: Tensor
    ) -> Tensor:
        if self.training and self.id_dropout > 0:
            drop = torch.rand(item_idx.shape, device=item_idx.device) < self.id_dropout
            item_idx = torch.where(drop, torch.full_like(item_idx, self.num_items), item_idx)
        vector = self.id_embedding(item_idx) + self.content(genres, year, title_tokens)
        if self.cold_fitted and not self.training:
            unknown = (item_idx == self.num_items).unsqueeze(-1)
            vector = torch.where(unknown, self.cold(genres, year, title_tokens), vector)
        return F.normalize(vector, dim=-1)


class _CausalSelfAttention(nn.Module):
    """Pre-norm transformer block; written out so the ONNX export is plain matmuls."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        b, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        shape = (b, length, self.heads, dim // self.heads)
        q, k, v = (t.reshape(shape).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(dim // self.heads) + bias.unsqueeze(1)
        attended = (self.drop(scores.softmax(-1)) @ v).transpose(1, 2).reshape(b, length, dim)
        x = x + self.drop(self.proj(attended))
        out: Tensor = x + self.drop(self.ffn(self.norm2(x)))
        return out


class AttentionPooling(nn.Module):
    """Causal self-attention with learned positions (right-aligned: last column = most recent)."""

    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        self.position = nn.Embedding(config.history_length, config.dim)
        nn.init.normal_(self.position.weight, std=0.02)
        self.blocks = nn.ModuleList(
            _CausalSelfAttention(config.dim, config.num_heads, config.dropout)
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(config.dim)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        length = x.shape[1]
        positions = torch.arange(length, device=x.device)
        x = self.drop(x + self.position(positions).unsqueeze(0))
        causal = positions.unsqueeze(1) >= positions.unsqueeze(0)  # [query, key]
        allowed = causal.unsqueeze(0) & ~pad.unsqueeze(1)
        allowed = allowed | (positions.unsqueeze(1) == positions.unsqueeze(0)).unsqueeze(0)
        bias = torch.zeros(allowed.shape, device=x.device).masked_fill(~allowed, -1e9)
        for block in self.blocks:
            x = block(x, bias)
        out: Tensor = self.norm(x)
        return out


class RecencyMeanPooling(nn.Module):
    """Exponentially recency-weighted mean of the items so far, with a learned decay."""

    ages: Tensor

    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        self.log_rate = nn.Parameter(torch.tensor(math.log(0.1)))
        # ages counted back from the last position, a constant of the serving graph: ONNX
        # Runtime folds the decay weights at load instead of recomputing them on every request
        ages = torch.arange(config.history_length - 1, -1, -1, dtype=torch.float32)
        self.register_buffer("ages", ages, persistent=False)

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        length = x.shape[1]
        positions = torch.arange(length, device=x.device, dtype=x.dtype)
        age = positions.unsqueeze(1) - positions.unsqueeze(0)  # query - key
        weights = torch.exp(-self.log_rate.exp() * age.clamp(min=0.0)) * (age >= 0).to(x.dtype)
        weights = weights.unsqueeze(0) * (~pad).to(x.dtype).unsqueeze(1)
        return (weights @ x) / weights.sum(-1, keepdim=True).clamp(min=1e-6)

    def last(self, x: Tensor, valid: Tensor) -> Tensor:
        """`forward(x, valid == 0)[:, -1]` without the other positions: what serving asks for.
        `valid` is 1.0 at items and 0.0 at padding."""
        length = x.shape[1]
        ages = self.ages
        if length != ages.shape[0]:
            ages = torch.arange(length - 1, -1, -1, device=x.device, dtype=x.dtype)
        weights = torch.exp(-self.log_rate.exp() * ages).unsqueeze(0) * valid
        pooled = (weights.unsqueeze(1) @ x).squeeze(1)
        return pooled / weights.sum(-1, keepdim=True).clamp(min=1e-6)


class GRUPooling(nn.Module):
    """A one-layer GRU over the history; padding enters as zero vectors."""

    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        self.gru = nn.GRU(config.dim, config.dim, batch_first=True)

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        out: Tensor = self.gru(x * (~pad).to(x.dtype).unsqueeze(-1))[0]
        return out


def _make_pooling(config: TowerConfig) -> nn.Module:
    if config.pooling == "attention":
        return AttentionPooling(config)
    if config.pooling == "mean":
        return RecencyMeanPooling(config)
    if config.pooling == "gru":
        return GRUPooling(config)
    raise ValueError(f"unknown pooling {config.pooling!r}; choose one of {POOLINGS}")


class UserTower(nn.Module):
    """User id (0 = unknown) + order-aware pooled history (+ demographics) -> unit vector."""

    valid: Tensor

    def __init__(
        self,
        *,
        num_users: int,
        num_items: int,
        config: TowerConfig,
        item_embedding: nn.Embedding | None = None,
        feature_cardinalities: list[int] | None = None,
    ) -> None:
        super().__init__()
        dim = config.dim
        self.padding_idx = num_items
        self.id_dropout = config.user_id_dropout
        self.history_length = config.history_length
        self.user_embedding = nn.Embedding(num_users + 1, dim, sparse=True)
        nn.init.normal_(self.user_embedding.weight, std=0.02)
        if item_embedding is None:
            item_embedding = nn.Embedding(num_items + 1, dim, sparse=True)
            nn.init.normal_(item_embedding.weight, std=0.1)
        self.item_embedding = item_embedding
        self.features = nn.ModuleList(nn.Embedding(c, dim) for c in feature_cardinalities or [])
        self.pooling = _make_pooling(config)
        self.head = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.drop = nn.Dropout(config.dropout)
        # 1.0 for every item row, 0.0 for padding: one Gather in the serving graph where a
        # comparison, a negation and a cast stood
        valid = torch.ones(num_items + 1)
        valid[self.padding_idx] = 0.0
        self.register_buffer("valid", valid, persistent=False)

    def states(
        self, user_idx: Tensor, history: Tensor, user_features: Tensor | None = None
    ) -> Tensor:
        """Unnormalised user vector at every history position, `[batch, length, dim]`."""
        pad = history == self.padding_idx
        pooled = self.pooling(self.item_embedding(history), pad)
        static = self._static(user_idx, user_features)
        static = static.unsqueeze(1).expand(-1, pooled.shape[1], -1)
        out: Tensor = self.head(self.drop(torch.cat([pooled, static], dim=-1)))
        return out

    def _static(self, user_idx: Tensor, user_features: Tensor | None) -> Tensor:
        if self.training and self.id_dropout > 0:
            drop = torch.rand(user_idx.shape, device=user_idx.device) < self.id_dropout
            user_idx = torch.where(drop, torch.zeros_like(user_idx), user_idx)
        static: Tensor = self.user_embedding(user_idx)
        if user_features is not None:
            for column, table in enumerate(self.features):
                static = static + table(user_features[:, column])
        return static

    def forward(
        self, user_idx: Tensor, history: Tensor, user_features: Tensor | None = None
    ) -> Tensor:
        """The unit user vector after the whole history (the exported serving graph).

        Mean pooling computes the last position alone (1/history_length of the work of
        `states`, and a third of the ONNX nodes); the others need every position anyway.
        """
        if isinstance(self.pooling, RecencyMeanPooling):
            pooled = self.pooling.last(self.item_embedding(history), self.valid[history])
            static = self._static(user_idx, user_features)
            return _unit(self.head(self.drop(torch.cat([pooled, static], dim=-1))))
        return _unit(self.states(user_idx, history, user_features)[:, -1])


def _unit(x: Tensor) -> Tensor:
    """`F.normalize(x, dim=-1)` with broadcasting instead of an explicit expand: two ONNX nodes
    fewer on the request path, same values."""
    norm: Tensor = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x / norm.clamp(min=1e-12)


class TwoTower(nn.Module):
    """Both towers, built together so the user tower can share the item id embeddings."""

    def __init__(
        self,
        *,
        num_users: int,
        num_items: int,
        num_genres: int,
        title_buckets: int,
        config: TowerConfig,
        feature_cardinalities: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.item = ItemTower(
            num_items=num_items, num_genres=num_genres, title_buckets=title_buckets, config=config
        )
        shared = self.item.id_embedding if config.share_item_embeddings else None
        self.user = UserTower(
            num_users=num_users,
            num_items=num_items,
            config=config,
            item_embedding=shared,
            feature_cardinalities=feature_cardinalities,
        )
