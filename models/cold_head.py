"""The cold head: an item's embedding from its content alone, for items with no id row.

An item the model never trained on has no id embedding: the live catalog embeds it with the item
tower on the unknown-item id row (`num_items`, service/catalog/item_embedder.py). Without a cold
head that is `normalize(unknown row + content)`, where the content part was trained as a
complement of an id embedding, not to stand alone: docs/live-catalog.md ("Cold-start items,
measured") shows how little of an item's placement it carries. The cold head maps the raw content
(genre multi-hot, normalised year, hashed title tokens) to where the item's embedding would be. It
is fitted after training, by regression onto the trained items' own embeddings (cosine loss,
seeded minibatch Adam, its own tables; nothing else moves), and the tower sends the unknown-item
row through it in eval mode: the exported graph keeps its inputs and output, and no trained
item's embedding changes.

Items are drawn for the regression with probability proportional to the square root of their
training count. An item seen once has an embedding the training barely moved, and a user meets
items in proportion to their interactions: on ml-latest-small's cold table this took the
content-only Recall@20 from 0.031 (uniform draws) to 0.047 (docs/live-catalog.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

if TYPE_CHECKING:
    from models.features import ItemFeatures
    from models.towers import TwoTower

COLD_HEAD_STEPS = 1000
COLD_HEAD_BATCH = 512
COLD_HEAD_LR = 1e-2


class ColdHead(nn.Module):
    """Content -> an (unnormalised) item vector: genres and year through their own layers, the
    mean of the title tokens' own table (zeros until fitted: an unseen token adds nothing)."""

    def __init__(self, *, num_genres: int, title_buckets: int, dim: int) -> None:
        super().__init__()
        self.genres = nn.Linear(num_genres, dim)  # its bias is the intercept
        self.year = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, dim))
        self.title = nn.Embedding(title_buckets + 1, dim, padding_idx=0)
        nn.init.zeros_(self.title.weight)

    def forward(self, genres: Tensor, year: Tensor, title_tokens: Tensor) -> Tensor:
        present = (title_tokens > 0).float().unsqueeze(-1)
        title = (self.title(title_tokens) * present).sum(1) / present.sum(1).clamp(min=1.0)
        out: Tensor = self.genres(genres) + self.year(year.unsqueeze(-1)) + title
        return out


def fit_cold_head(
    model: TwoTower,
    features: ItemFeatures,
    counts: npt.NDArray[np.int64],
    *,
    steps: int = COLD_HEAD_STEPS,
    batch_size: int = COLD_HEAD_BATCH,
    seed: int = 0,
) -> float:
    """Fit `model.item.cold` so that its output points where the embeddings of the items with
    training interactions (`counts` per item row) point, each drawn with probability
    proportional to sqrt(count); returns the final mean cosine over them. Afterwards the tower
    serves the unknown-item row through it (`cold_fitted`)."""
    tower = model.item
    counts = np.asarray(counts[: features.num_items], dtype=np.float64)
    rows = np.flatnonzero(counts > 0)
    if steps <= 0 or rows.size == 0:
        return float("nan")
    cdf = torch.from_numpy(np.cumsum(np.sqrt(counts[rows])))
    genres = torch.from_numpy(features.genres)
    year = torch.from_numpy(features.year)
    title = torch.from_numpy(features.title_tokens)
    index = torch.from_numpy(rows.astype(np.int64))
    tower.cold_fitted = False
    model.eval()
    with torch.no_grad():
        targets = torch.cat(
            [
                tower(part, genres[part], year[part], title[part])
                for part in torch.split(index, 65_536)
            ]
        )
    head = tower.cold
    optimizer = torch.optim.Adam(head.parameters(), lr=COLD_HEAD_LR)
    generator = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(steps):
        drawn = torch.rand(batch_size, generator=generator, dtype=torch.float64) * cdf[-1]
        pick = torch.searchsorted(cdf, drawn, right=True).clamp(max=len(index) - 1)
        part = index[pick]
        out = head(genres[part], year[part], title[part])
        loss = 1.0 - F.cosine_similarity(out, targets[pick], dim=-1).mean()
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    head.eval()
    tower.cold_fitted = True
    with torch.no_grad():
        fitted = torch.cat(
            [
                F.cosine_similarity(head(genres[p], year[p], title[p]), targets[i], dim=-1)
                for p, i in zip(
                    torch.split(index, 65_536),
                    torch.split(torch.arange(len(index)), 65_536),
                    strict=True,
                )
            ]
        )
    return float(fitted.mean())
