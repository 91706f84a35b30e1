"""The million-item path at 50k items: a real build (the default large index, IVF with 8-bit
codes), mapped loading, ANN within its measured recall, exact pages under selective filters,
and workers that survive a long load.

The figures at 1M items are benchmarks (`make bench-scale`), not assertions here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.catalog.bundle import Bundle, load_bundle
from service.catalog.filters import ItemFilter
from tests.service.redis_server import free_port

NUM_USERS, NUM_ITEMS = 2_000, 50_000


@pytest.fixture(scope="session")
def scale_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.datasets import synthesize
    from models.index import IndexSpec
    from models.pipeline import build
    from models.train import TrainConfig

    out = tmp_path_factory.mktemp("scale") / "b50k"
    build(
        synthesize(NUM_USERS, NUM_ITEMS, seed=1),
        out,
        config=TrainConfig.tiny(max_epochs=1),
        with_baselines=False,
        progress=False,
        index_spec=IndexSpec(exact_threshold=10_000),
    )
    return out


@pytest.fixture(scope="module")
def scale(scale_dir: Path) -> Bundle:
    return load_bundle(scale_dir)


def _queries(bundle: Bundle, count: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    users = rng.integers(1, NUM_USERS + 1, size=count).tolist()
    histories = [rng.choice(NUM_ITEMS, size=20, replace=False).tolist() for _ in range(count)]
    return bundle.encoder.encode_many(users, histories)


def test_large_files_are_mapped_not_copied(scale: Bundle, scale_dir: Path) -> None:
    """Mapped files are shared by every worker through the page cache."""
    maps = Path(f"/proc/{os.getpid()}/maps").read_text()
    for name in ("items.faiss", "item_embeddings.npy", "item_ids.npy", "item_titles.npy"):
        assert str(scale_dir.resolve() / name) in maps, name
    assert scale.manifest.index.type == "ivf" and len(scale.catalog) == NUM_ITEMS
    assert scale.manifest.index.params["codes"] == "sq8"


def test_ann_answers_match_exact_search_within_the_measured_recall(scale: Bundle) -> None:
    queries = _queries(scale, 100)
    embeddings = np.load(scale.path / "item_embeddings.npy")
    recalls = []
    for query in queries:
        rows, _ = scale.retriever.search(query, 100)
        truth = np.argsort(-(embeddings @ query))[:100]
        recalls.append(len(set(rows) & set(truth.tolist())) / 100)
    measured = scale.manifest.index.recall_at_100
    assert measured is not None and measured >= 0.95
    assert np.mean(recalls) >= measured - 0.03


@pytest.mark.parametrize("year", [1950, 2024])
def test_a_selective_filter_returns_exactly_k_of_the_exact_answer(scale: Bundle, year: int) -> None:
    embeddings = np.load(scale.path / "item_embeddings.npy")
    allowed = scale.catalog.masks.allowed(ItemFilter(year_min=year, year_max=year))
    assert allowed is not None and 20 < allowed.count < NUM_ITEMS // 50
    rows_allowed = allowed.rows()
    excluded = set(rows_allowed[:3].tolist())
    for query in _queries(scale, 10):
        rows, scores = scale.retriever.search(query, 20, excluded=excluded, allowed=allowed)
        candidates = np.setdiff1d(rows_allowed, list(excluded))
        truth = candidates[np.argsort(-(embeddings[candidates] @ query))[:20]]
        assert rows == truth.tolist()
        assert scores == sorted(scores, reverse=True)


def test_a_filter_on_an_unknown_genre_is_an_empty_page(scale: Bundle) -> None:
    allowed = scale.catalog.masks.allowed(ItemFilter(genres_any=frozenset({"no-such-genre"})))
    assert allowed is not None and allowed.count == 0
    assert scale.retriever.search(_queries(scale, 1)[0], 10, allowed=allowed) == ([], [])


def test_workers_loading_longer_than_the_health_check_are_not_restarted(
    scale_dir: Path, tmp_path: Path
) -> None:
    """uvicorn's supervisor kills a worker that misses a ping: a worker must keep answering
    while it loads. Sixteen arms on sixteen copies (hard links: distinct bundles, one page cache)
    take several health-check timeouts to load."""
    arms = []
    copies = 16  # the most arms an experiment may have
    for i in range(copies):
        shutil.copytree(scale_dir, tmp_path / f"b{i}", copy_function=os.link)
        arms.append(f'[[arms]]\nname = "a{i}"\nweight = 1\nbundle = "b{i}"\n')
    experiment = tmp_path / "experiment.toml"
    experiment.write_text('name = "long-load"\nsalt = "s"\n' + "\n".join(arms))
    started = time.perf_counter()
    for i in range(copies):
        load_bundle(tmp_path / f"b{i}")
    load_seconds = time.perf_counter() - started
    healthcheck = 0.15
    assert load_seconds > 3 * healthcheck  # the premise of the test
    port = free_port()
    env = {
        **os.environ,
        "DUET_EXPERIMENTS": str(experiment),
        "DUET_WORKERS": "2",
        "DUET_WORKER_HEALTHCHECK_SECONDS": str(healthcheck),
        "DUET_PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "service"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        ready = 0
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code
            except httpx.TransportError:
                ready = 0
            if ready == 200:
                break
            time.sleep(0.2)
        # both workers up: keep asking until each pid answered once
        time.sleep(2 * load_seconds)
    finally:
        process.terminate()
        _, log = process.communicate(timeout=30)
    assert ready == 200, log[-3000:]
    starts = re.findall(r"Started server process \[(\d+)\]", log)
    assert "died" not in log, log[-2000:]
    assert len(starts) == 2, log[-2000:]
