"""Served strong generalization equals the offline figure: users the bundle never saw, over HTTP.

Holds out a seeded 15% of a dataset's users, trains and exports a bundle without them
(models/strong.py), and measures the offline Recall@20 of the two-tower on their futures. Then
it starts its own Redis and `python -m service` on the bundle (loopback), replays every held-out
user's context through `POST /v1/events` (in order, with its timestamps; ratings as `rating`
events with their value when low ratings are negatives, else as `view`), asks
`POST /v1/recommend` for k items and scores the answers the same way. It also counts served
items that were in the user's context (the seen set must exclude all of them).

    python bench/parity.py --dataset ml-1m --data-dir DIR [--low-ratings-negative]

Exit 0 when served and offline Recall@k agree within `--tolerance` (relative) and no seen item
came back, 1 otherwise; the figures are printed as one JSON object (and written with --json).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from processes import BenchError, free_port, start, start_redis, wait_http

from models.datasets import DATASETS, load_dataset
from models.export import BundleInputs, write_bundle
from models.features import user_sequences
from models.pipeline import strong_generalization, training_summary
from models.strong import HeldOut
from models.train import TrainConfig

MAX_EVENTS = 1_000  # the events body's limit
RATING_THRESHOLD = 3.5  # the service's DUET_RATING_THRESHOLD default


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-latest-small", choices=DATASETS)
    parser.add_argument("--data-dir", type=Path, help="dataset directory (default: shipped)")
    parser.add_argument("--low-ratings-negative", action="store_true")
    parser.add_argument("--rating-threshold", type=float, default=RATING_THRESHOLD)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--tolerance", type=float, default=0.01, help="relative")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny model (tests)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument(
        "--baselines", action="store_true", help="also popularity, ItemKNN, EASE offline"
    )
    return parser.parse_args(argv)


def _config(args: argparse.Namespace) -> TrainConfig:
    base = TrainConfig.tiny() if args.quick else TrainConfig.for_dataset(args.dataset)
    config = replace(base, seed=args.seed)
    return config if args.epochs is None else replace(config, max_epochs=args.epochs)


def _events(held: HeldOut, user: int, typed: bool) -> list[dict[str, Any]]:
    context = held.context
    rows = np.flatnonzero(context.user == user)
    items = held.train.items.ids
    out = []
    for row in rows:
        event: dict[str, Any] = {
            "user_id": held.user_ids[user],
            "item_id": items[int(context.item[row])],
            "type": "rating" if typed else "view",
            "timestamp": float(context.timestamp[row]),
        }
        if typed:
            event["value"] = float(context.weight[row])
        out.append(event)
    return out


def serve_and_measure(
    held: HeldOut, bundle: Path, *, k: int, threshold: float | None, log_dir: Path
) -> dict[str, Any]:
    """Replay contexts over HTTP on a fresh Redis and service; served Recall@k and seen leaks."""
    redis, redis_url = start_redis(log_dir)
    port = free_port()
    env = {
        "DUET_BUNDLE": str(bundle),
        "DUET_REDIS_URL": redis_url,
        "DUET_PORT": str(port),
        "DUET_HOST": "127.0.0.1",
        "DUET_REDIS_TIMEOUT_MS": "1000",
        "DUET_RATING_THRESHOLD": str(threshold if threshold is not None else RATING_THRESHOLD),
        "DUET_LOG_LEVEL": "warning",
    }
    service = start("service", [sys.executable, "-m", "service"], log_dir, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(service, f"{url}/readyz", timeout_s=120)
        targets = user_sequences(held.targets, held.num_users)
        contexts = user_sequences(held.context, held.num_users)
        items = held.train.items.ids
        recalls, leaks, fallbacks, longest = [], 0, 0, 0
        with httpx.Client(base_url=url, timeout=30) as client:
            for user in range(held.num_users):
                if len(targets[user]) == 0:
                    continue
                events = _events(held, user, typed=threshold is not None)
                longest = max(longest, len(events))
                for start_at in range(0, len(events), MAX_EVENTS):
                    chunk = events[start_at : start_at + MAX_EVENTS]
                    answer = client.post("/v1/events", json=chunk)
                    if answer.status_code != 202:
                        raise BenchError(f"events: {answer.status_code} {answer.text[:300]}")
                body = {"user_id": held.user_ids[user], "k": k}
                answer = client.post("/v1/recommend", json=body)
                if answer.status_code != 200:
                    raise BenchError(f"recommend: {answer.status_code} {answer.text[:300]}")
                page = answer.json()
                fallbacks += page["fallback"] is not None
                served = [i["item_id"] for i in page["items"]]
                wanted = {items[int(i)] for i in targets[user]}
                seen = {items[int(i)] for i in contexts[user]}
                leaks += len(seen.intersection(served))
                recalls.append(len(wanted.intersection(served)) / min(len(wanted), k))
        return {
            "served_recall": float(np.mean(recalls)) if recalls else 0.0,
            "users": len(recalls),
            "seen_items_served": leaks,
            "fallback_pages": fallbacks,
            "longest_context": longest,
        }
    finally:
        service.stop()
        redis.stop()


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    dataset = load_dataset(args.dataset, args.data_dir)
    threshold = args.rating_threshold if args.low_ratings_negative else None
    config = _config(args)
    started = time.perf_counter()
    found = strong_generalization(
        dataset,
        config=config,
        positive_threshold=threshold,
        with_baselines=args.baselines,
        progress=args.progress,
    )
    trained = time.perf_counter() - started
    bundle = work / "bundle"
    write_bundle(
        bundle,
        found.train.model,
        BundleInputs(
            dataset=found.held.train,
            train_full=found.split.train_full,
            item_features=found.train.item_features,
            training=training_summary(config, found.train),
            metrics={"strong_two_tower": found.metrics["two_tower"]},
        ),
    )
    served = serve_and_measure(found.held, bundle, k=args.k, threshold=threshold, log_dir=work)
    offline = found.metrics["two_tower"][f"recall@{args.k}"]
    relative = abs(served["served_recall"] - offline) / offline if offline > 0 else 0.0
    return {
        "dataset": dataset.name,
        "setting": "low ratings negative" if threshold is not None else "every rating positive",
        "k": args.k,
        "offline_recall": offline,
        **served,
        "relative_difference": relative,
        "tolerance": args.tolerance,
        "offline_users": int(np.unique(found.held.targets.user).size),
        "held_out_users": found.held.num_users,
        "train_seconds": round(trained, 1),
        "offline": found.metrics,
        "baseline_params": found.extra.get("baseline_params"),
        "config": asdict(config)["tower"],
    }


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    with tempfile.TemporaryDirectory(prefix="duet-parity-") as tmp:
        try:
            figures = run(args, Path(tmp))
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    ok = figures["relative_difference"] <= args.tolerance and figures["seen_items_served"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
