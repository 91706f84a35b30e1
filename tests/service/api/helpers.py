"""Small readers of the tiny bundle shared by the API tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from service.catalog.columns import read_strings


def items(bundle: Path) -> list[dict[str, Any]]:
    """The catalog as records, read from its columns."""
    vocab = json.loads((bundle / "manifest.json").read_text())["catalog"]["genre_vocab"]
    codes = np.load(bundle / "item_genres.npy")
    bounds = np.load(bundle / "item_genres.offsets.npy")
    years = np.load(bundle / "item_years.npy")
    titles = read_strings(bundle, "item_titles")
    return [
        {
            "item_id": item_id,
            "title": titles[row],
            "genres": [vocab[c] for c in codes[bounds[row] : bounds[row + 1]]],
            "year": int(years[row]) or None,
        }
        for row, item_id in enumerate(read_strings(bundle, "item_ids"))
    ]


def users(bundle: Path) -> list[str]:
    return read_strings(bundle, "user_ids")


def version(bundle: Path) -> str:
    return str(json.loads((bundle / "manifest.json").read_text())["bundle_version"])


def metric(text: str, name: str, **labels: str) -> float:
    """Value of one sample of a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return 0.0
