"""Complementary items: an item's IN vector (or a basket's summed IN vectors) scored against
every item's OUT vector. Asymmetric by design: "what follows", not "what looks alike".

Takes verified arrays (the bundle checks sha256 first); knows nothing of HTTP or the store.
A row whose IN vector is all zeros has no dual embedding (e.g. a live-catalog item added
after the build): `has` says so, so callers can fall back to `similar` and say it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

FloatArray = npt.NDArray[np.float32]


class ComplementarySpec(BaseModel):
    """The manifest's optional `complementary` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    in_file: str
    out_file: str
    dim: int = Field(ge=1, le=4_096)
    dtype: Literal["float32"]
    method: str
    params: dict[str, Any] = Field(default_factory=dict)


class DualEmbeddings:
    def __init__(self, item_in: FloatArray, item_out: FloatArray, spec: ComplementarySpec) -> None:
        self._in = item_in
        self._out = item_out
        self.spec = spec

    def __len__(self) -> int:
        return len(self._in)

    def has(self, row: int) -> bool:
        """False for rows beyond the arrays or with an all-zero IN vector."""
        return 0 <= row < len(self._in) and bool(np.any(self._in[row]))

    def scores(self, rows: list[int]) -> FloatArray:
        """Sum of the rows' IN vectors against every OUT vector, [num_items]."""
        query = self._in[np.asarray(rows, dtype=np.int64)].sum(axis=0, dtype=np.float32)
        scored: FloatArray = self._out @ query
        return scored


def check_dual(
    item_in: npt.NDArray[Any], item_out: npt.NDArray[Any], spec: ComplementarySpec, num_items: int
) -> DualEmbeddings:
    """Refuse wrong dtype, shape or non-finite values; raises ValueError naming the problem."""
    for name, array in ((spec.in_file, item_in), (spec.out_file, item_out)):
        if array.dtype != np.float32 or array.shape != (num_items, spec.dim):
            raise ValueError(f"{name} must be float32 [num_items={num_items}, dim={spec.dim}]")
        if not all(np.isfinite(block).all() for block in np.array_split(array, 64)):
            raise ValueError(f"{name} holds NaN or infinite values")
    return DualEmbeddings(item_in, item_out, spec)
