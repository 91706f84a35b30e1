"""Search cost with a live delta on top of a bundle vs the bundle alone, in one run.

    python -m bench.live_delta --bundle DIR [--live 10000] [--queries 2000]

Encodes `--queries` users' vectors from the bundle's own item embeddings (a random item each),
then times `Retriever.search` alone and `search_with_delta` with `--live` content-embedded
items, interleaved in rounds so a shared machine's noise hits both. In-process only: this is
the search stage, not HTTP throughput.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from service.catalog.bundle import load_bundle
from service.catalog.item_embedder import ItemEmbedder
from service.catalog.live import LiveDelta, LiveItem, search_with_delta


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--live", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()

    bundle = load_bundle(args.bundle)
    catalog, retriever = bundle.catalog, bundle.retriever
    embedder = ItemEmbedder.for_bundle(bundle)
    vocab = bundle.manifest.item_tower.genre_vocab
    rng = np.random.default_rng(0)
    items = [
        LiveItem(f"live-{n}", f"Live film {n} (2030)", (vocab[n % len(vocab)],), 2030)
        for n in range(args.live)
    ]
    delta = LiveDelta(catalog.rows, bundle.manifest.embedding_dim)
    started = time.perf_counter()
    vectors = np.concatenate(
        [embedder.embed(items[i : i + 1_000]) for i in range(0, len(items), 1_000)]
    )
    embed_s = time.perf_counter() - started
    for item, vector in zip(items, vectors, strict=True):
        delta.upsert(item, vector)
    rows = rng.integers(0, retriever.size, size=args.queries)
    queries = [retriever.item_vector(int(r)).copy() for r in rows]

    def plain() -> None:
        for q in queries:
            retriever.search(q, args.k)

    def live() -> None:
        for q in queries:
            search_with_delta(retriever, catalog.item_ids, delta, q, args.k)

    times: dict[str, list[float]] = {"bundle": [], "bundle+live": []}
    for _ in range(args.rounds):
        for name, fn in (("bundle", plain), ("bundle+live", live)):
            t = time.perf_counter()
            fn()
            times[name].append(args.queries / (time.perf_counter() - t))
    base, withlive = (statistics.median(times[n]) for n in ("bundle", "bundle+live"))
    print(f"bundle items {retriever.size}, live items {len(delta)}, k {args.k}")
    print(f"embedding {args.live} items: {embed_s:.2f} s")
    print(
        f"median searches/s: bundle {base:.0f}, bundle+live {withlive:.0f}, "
        f"ratio {withlive / base:.2f}"
    )


if __name__ == "__main__":
    main()
