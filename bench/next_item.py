"""Next-item Recall@20 on the TEST pairs with the SGNS defaults, and SGNS training time.

The README's "Next item given an item" rows without the two-tower column: IN.OUT, IN.IN,
co-occurrence (window 3) and popularity, exactly `models.complementary.evaluate_next_item`
(trained on `train_full`). Run it once the defaults are chosen (`python -m models tune-dual`
chooses them on validation pairs); it is not a tuning tool. `--time-config` also times
`train_dual` on `train_full` for another config (e.g. the previous defaults), one thread.

    python bench/next_item.py --dataset ml-1m --data-dir DIR [--json OUT]
    python bench/next_item.py --dataset ml-latest-small \
        --time-config "window=3,epochs=5,lr=0.01,ns_exponent=0.75,distance_power=0,\
lr_decay=false,optimizer=sparse_adam"
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from models.complementary import SGNSConfig, evaluate_next_item, next_pairs, train_dual
from models.datasets import DATASETS, load_dataset
from models.dual_tuning import parse_overrides
from models.pipeline import split_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--time-config", action="append", default=[], help="SGNS overrides")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    split = split_dataset(load_dataset(args.dataset, args.data_dir))
    config = SGNSConfig()
    figures: dict[str, object] = {
        "dataset": args.dataset,
        "test_pairs": len(next_pairs(split.test)[0]),
        "config": asdict(config),
    }
    timings = {}
    for label, timed in [("defaults", config)] + [
        (text, replace(config, **parse_overrides(text))) for text in args.time_config
    ]:
        started = time.perf_counter()
        train_dual(split.train_full, split.num_items, timed)
        timings[label] = round(time.perf_counter() - started, 1)
        print(f"train_dual {timings[label]:6.1f}s  {label}", flush=True)
    figures["train_seconds"] = timings
    found = evaluate_next_item(split.train_full, split.test, split.num_items, None, config=config)
    figures["next_item_recall@20"] = {name: asdict(r) for name, r in found.items()}
    for name, r in found.items():
        print(f"{name:14s} R@20 {r.recall:.4f}  asymmetry {r.asymmetry:.3f}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
