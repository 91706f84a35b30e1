"""loadtest/traffic.py: the shape of the load, on a real (tiny) bundle."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from loadtest.traffic import (
    ArmStats,
    CatalogError,
    Shown,
    Traffic,
    ZipfSampler,
    load_catalog,
    threshold_violations,
)


@pytest.fixture(scope="module")
def traffic(bundle: Path) -> Traffic:
    return Traffic(load_catalog(bundle), zipf_s=1.1, new_user_share=0.1, seed=7)


def test_zipf_ranks_follow_the_power_law() -> None:
    draw = ZipfSampler(1000, 1.0, random.Random(0))
    counts = Counter(draw() for _ in range(50_000))
    assert set(counts) <= set(range(1000))
    # P(rank 0) / P(rank 1) = 2 and P(0) / P(9) = 10 for s = 1.
    assert 1.8 < counts[0] / counts[1] < 2.2
    assert 8 < counts[0] / counts[9] < 12


def test_zipf_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="n >= 1"):
        ZipfSampler(0, 1.0, random.Random(0))


def test_catalog_puts_popular_items_first(bundle: Path) -> None:
    catalog = load_catalog(bundle)
    assert len(catalog.user_ids) == 200 and len(catalog.item_ids) == 300
    assert len(set(catalog.item_ids)) == len(catalog.item_ids)
    assert catalog.genres and catalog.year_min <= catalog.year_max


def test_a_missing_bundle_says_which_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"manifest\.json: missing"):
        load_catalog(tmp_path)


def test_users_are_skewed_with_a_share_of_new_ones(traffic: Traffic) -> None:
    draws = [traffic.user() for _ in range(20_000)]
    new = [u for u, is_new in draws if is_new]
    assert 0.08 < len(new) / len(draws) < 0.12
    assert len(set(new)) == len(new), "new users are new"
    known = Counter(u for u, is_new in draws if not is_new)
    assert set(known) <= set(traffic.catalog.user_ids)
    top = known.most_common(10)
    assert sum(n for _, n in top) > 0.25 * sum(known.values()), "a few users come back a lot"


def test_recommend_bodies_fit_the_contract(traffic: Traffic) -> None:
    bodies = [traffic.recommend_body() for _ in range(2000)]
    allowed = {"user_id", "k", "filters", "exclude_item_ids", "history"}
    assert all(set(b) <= allowed and 1 <= b["k"] <= 500 for b in bodies)
    assert 0.15 < sum("filters" in b for b in bodies) / len(bodies) < 0.25
    filters = [b["filters"] for b in bodies if "filters" in b]
    assert all(set(f) <= {"genres_any", "genres_none", "year_min", "year_max"} for f in filters)
    histories = [b for b in bodies if "history" in b]
    assert histories and all(b["user_id"].startswith("new-") for b in histories)


def test_clicks_follow_what_was_shown(bundle: Path) -> None:
    traffic = Traffic(load_catalog(bundle), seed=1)
    traffic.remember("42", Shown("req-1", ("10", "11", "12")))
    events = [traffic.event_body() for _ in range(1000)]
    attributed = [e for e in events if e.get("request_id") == "req-1"]
    assert 0.6 < len(attributed) / len(events) < 0.8
    assert all(e["user_id"] == "42" and e["item_id"] in {"10", "11", "12"} for e in attributed)
    assert {e["type"] for e in events} == {"view", "click", "rating", "purchase"}


def test_remembered_recommendations_are_bounded(bundle: Path) -> None:
    traffic = Traffic(load_catalog(bundle), seed=1, remembered=3)
    for i in range(10):
        traffic.remember(str(i), Shown(f"r{i}", ("1",)))
    followed = {traffic.event_body().get("request_id") for _ in range(500)} - {None}
    assert followed == {"r7", "r8", "r9"}


def test_retrieve_bodies_name_exactly_one_query(traffic: Traffic) -> None:
    for _ in range(500):
        body = traffic.retrieve_body()
        assert len({"item_id", "history", "embedding"} & set(body)) == 1
        if "embedding" in body:
            assert len(body["embedding"]) == traffic.catalog.embedding_dim
            assert abs(sum(v * v for v in body["embedding"]) - 1.0) < 1e-6


def test_arm_stats_percentiles_per_arm_and_route() -> None:
    stats = ArmStats()
    for ms in range(1, 101):
        stats.record("a", "/v1/recommend", float(ms), ok=True)
    stats.record("b", "/v1/recommend", 5.0, ok=False)
    rows = {r["arm"]: r for r in stats.rows()}
    assert rows["a"]["requests"] == 100 and rows["a"]["failures"] == 0
    assert rows["a"]["p50_ms"] == 50 and rows["a"]["p99_ms"] == 99
    assert rows["b"]["failures"] == 1


def test_thresholds_name_every_violation() -> None:
    ok = threshold_violations(
        num_requests=10, fail_ratio=0.0, p99_ms=10, max_fail_ratio=0.0, max_p99_ms=50
    )
    assert ok == []
    bad = threshold_violations(
        num_requests=0, fail_ratio=0.5, p99_ms=80, max_fail_ratio=0.0, max_p99_ms=50
    )
    assert len(bad) == 3 and "p99 80 ms > allowed 50 ms" in bad
