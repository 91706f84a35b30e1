"""Tiny synthetic data, made once per test session, shared by the offline-pipeline tests."""

from __future__ import annotations

import pytest

from models.datasets import synthesize
from models.split import chronological_split
from models.types import Dataset, Split


@pytest.fixture(scope="session")
def tiny_dataset() -> Dataset:
    """300 users × 200 items, ~25 interactions each: trains and evaluates in well under a second."""
    return synthesize(300, 200, seed=7, interactions_per_user=25, num_clusters=8)


@pytest.fixture(scope="session")
def tiny_split(tiny_dataset: Dataset) -> Split:
    return chronological_split(
        tiny_dataset.interactions, tiny_dataset.num_users, tiny_dataset.num_items
    )
