"""Baselines only (no PyTorch): load, split, tune and test popularity / ItemKNN / iALS.

    python scripts/run_baselines.py --dataset ml-100k --data-dir ../shared/data/ml-100k

Prints the table, the chosen hyper-parameters and the timings; a quick check of the
evaluation protocol without training the two-tower model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from models.baselines import run_baselines
from models.datasets import DATASETS, DatasetError, load_dataset
from models.report import render_table
from models.split import chronological_split


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=DATASETS, required=True)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        dataset = load_dataset(args.dataset, args.data_dir)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    split = chronological_split(dataset.interactions, dataset.num_users, dataset.num_items)
    loaded = time.perf_counter() - started
    details: dict[str, dict[str, float]] = {}
    results = run_baselines(split, seed=args.seed, details=details)
    print(render_table(results))
    print(json.dumps(details, indent=1))
    print(
        f"{dataset.name}: {dataset.num_users} users, {dataset.num_items} items, "
        f"{len(dataset.interactions)} interactions; load+split {loaded:.1f}s, "
        f"baselines {time.perf_counter() - started - loaded:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
