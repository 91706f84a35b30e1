"""`python -m models build|evaluate|synth|bench-index|compact|tune-dual`: the command names
are a contract."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from models.datasets import DATASETS, DatasetError, load_dataset, synthesize, write_synthetic
from models.losses import LOSS_NAMES, LossName
from models.towers import POOLINGS
from models.train import TrainConfig
from models.types import Dataset

EXIT_BAD_INPUT = 2


def _training_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    parser.add_argument("--data-dir", type=Path, help="dataset directory (original layout)")
    parser.add_argument("--epochs", type=int, help="maximum epochs (early stopping decides)")
    parser.add_argument(
        "--eval-users",
        type=int,
        default=2000,
        help="seeded user sample for valid/test metrics (0 = all users)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pooling", choices=POOLINGS, help="history pooling of the user tower")
    parser.add_argument(
        "--item-id-dropout",
        type=float,
        help="share of item-tower inputs trained on the unknown-item id row (content alone)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    parser.add_argument("--quick", action="store_true", help="tiny model, for smoke tests")
    parser.add_argument(
        "--low-ratings-negative",
        action="store_true",
        help="a rating below --rating-threshold is not a positive: trained on the others only",
    )
    parser.add_argument(
        "--rating-threshold",
        type=float,
        default=3.5,
        help="the service's DUET_RATING_THRESHOLD (default 3.5)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="train, evaluate and export a bundle")
    _training_args(build)
    build.add_argument("--out", type=Path, required=True, help="bundle directory (must not exist)")
    build.add_argument("--loss", choices=LOSS_NAMES, default="logq")
    build.add_argument(
        "--complementary",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also learn dual IN/OUT item embeddings (default: on up to 200,000 items)",
    )

    evaluate = commands.add_parser("evaluate", help="two-tower vs baselines table + JSON + PNG")
    _training_args(evaluate)
    evaluate.add_argument("--json", type=Path, help="write the report JSON (PNG next to it)")
    evaluate.add_argument(
        "--loss", choices=(*LOSS_NAMES, "all"), default="logq", help="'all' compares the three"
    )
    evaluate.add_argument(
        "--strong",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the strong-generalization table (15%% of users held out), both settings",
    )
    evaluate.add_argument(
        "--cold-start-items",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the cold-start items table (10%% of items held out, content-only embeddings)",
    )

    synth = commands.add_parser("synth", help="write a synthetic dataset (generic layout)")
    synth.add_argument("--items", type=int, required=True)
    synth.add_argument("--users", type=int, required=True)
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--interactions-per-user", type=int, default=30)

    bench = commands.add_parser("bench-index", help="build the large-catalog index, time it")
    bench.add_argument("--items", type=int, default=1_000_000)
    bench.add_argument("--dim", type=int, default=64)
    bench.add_argument("--queries", type=int, default=1000)
    bench.add_argument("--index", choices=("hnsw", "ivf"), default="ivf")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--json", type=Path, help="also write the figures as JSON")

    compact = commands.add_parser(
        "compact", help="fold the live catalog changes Redis holds for a bundle into a new one"
    )
    compact.add_argument("--bundle", type=Path, required=True, help="the bundle being served")
    compact.add_argument("--redis-url", required=True, help="the service's DUET_REDIS_URL")
    compact.add_argument("--out", type=Path, required=True, help="new bundle (must not exist)")
    compact.add_argument(
        "--timeout", type=float, default=5.0, help="seconds allowed for each Redis call"
    )
    compact.add_argument("--no-progress", action="store_true", help="no progress bars")

    tune = commands.add_parser("tune-dual", help="SGNS configs by validation next-item R@20")
    tune.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    tune.add_argument("--data-dir", type=Path, help="dataset directory (original layout)")
    tune.add_argument(
        "--config",
        action="append",
        default=[],
        help="SGNSConfig overrides, e.g. 'epochs=20,ns_exponent=0' (repeat; none = defaults)",
    )
    tune.add_argument("--json", type=Path, help="also write the rows as JSON")
    return parser


def _config(args: argparse.Namespace, loss: LossName) -> TrainConfig:
    base = TrainConfig.tiny() if args.quick else TrainConfig.for_dataset(args.dataset)
    config = replace(base, seed=args.seed, loss=loss, eval_users=args.eval_users)
    if args.epochs is not None:
        config = replace(config, max_epochs=args.epochs)
    if args.pooling is not None:
        config = replace(config, tower=replace(config.tower, pooling=args.pooling))
    if args.item_id_dropout is not None:
        if not 0.0 <= args.item_id_dropout < 1.0:
            raise ValueError("--item-id-dropout must lie in [0, 1)")
        config = replace(config, tower=replace(config.tower, item_id_dropout=args.item_id_dropout))
    return config


def _dataset(args: argparse.Namespace) -> Dataset:
    """The dataset, without its low ratings when they are not positives."""
    dataset = load_dataset(args.dataset, args.data_dir)
    from models.strong import positives_only  # noqa: PLC0415 - keeps `--help` free of torch

    return positives_only(dataset, args.rating_threshold if args.low_ratings_negative else None)


def _strong_settings(args: argparse.Namespace, dataset: Dataset) -> tuple[float | None, ...]:
    """Every interaction positive, and (when the weights are ratings on both sides of the
    threshold) low ratings negative; none without --strong."""
    if not args.strong:
        return ()
    weights = dataset.interactions.weight
    rated = len(weights) > 0 and weights.min() < args.rating_threshold <= weights.max()
    return (None, args.rating_threshold) if rated else (None,)


def _build(args: argparse.Namespace) -> int:
    from models.pipeline import build  # noqa: PLC0415 - keeps `--help` free of torch
    from models.report import plot_report, render_table, write_report  # noqa: PLC0415

    dataset = _dataset(args)
    result = build(
        dataset,
        args.out,
        config=_config(args, args.loss),
        with_baselines=not args.no_baselines,
        progress=not args.no_progress,
        complementary=args.complementary,
    )
    print(render_table(result.metrics))
    report = args.out.with_name(args.out.name + ".report.json")
    write_report(
        report,
        dataset=dataset.name,
        results=result.metrics,
        extra={
            "seconds": result.seconds,
            "curve": result.curve,
            "bundle_version": result.manifest["bundle_version"],
        },
    )
    plot_report(report.with_suffix(".png"), curve=result.curve, results=result.metrics)
    print(
        f"bundle {result.bundle} ({result.manifest['bundle_version']}) "
        f"in {result.seconds['total']:.1f}s; report {report}"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from models.pipeline import evaluate  # noqa: PLC0415
    from models.report import plot_report, render_table, write_report  # noqa: PLC0415

    dataset = load_dataset(args.dataset, args.data_dir)
    losses: tuple[LossName, ...] = LOSS_NAMES if args.loss == "all" else (args.loss,)
    result = evaluate(
        dataset,
        config=_config(args, losses[0]),
        losses=losses,
        with_baselines=not args.no_baselines,
        progress=not args.no_progress,
        strong=_strong_settings(args, dataset),
        positive_threshold=args.rating_threshold if args.low_ratings_negative else None,
        cold_items=args.cold_start_items,
    )
    print(render_table(result.metrics))
    for label, table in result.extra.get("strong_generalization", {}).items():
        print(f"\nstrong generalization ({label}: {table['held_out_users']} held-out users)")
        print(render_table(table["models"]))
    if "cold_start_items" in result.extra:
        from models.cold_items import render_cold_table  # noqa: PLC0415

        print("\n" + render_cold_table(result.extra["cold_start_items"]))
    for name, found in result.extra.get("next_item_recall@20", {}).items():
        print(f"next-item recall@20 {name:18s} {found['recall']:.4f} asym {found['asymmetry']:.3f}")
    if args.json is not None:
        write_report(
            args.json,
            dataset=dataset.name,
            results=result.metrics,
            extra={"seconds": result.seconds, "curves": result.curves, **result.extra},
        )
        plot_report(
            args.json.with_suffix(".png"), curve=result.curves["two_tower"], results=result.metrics
        )
    return 0


def _synth(args: argparse.Namespace) -> int:
    if args.out.exists():
        raise DatasetError(f"{args.out}: output directory already exists")
    dataset = synthesize(
        args.users, args.items, seed=args.seed, interactions_per_user=args.interactions_per_user
    )
    write_synthetic(dataset, args.out)
    print(
        f"wrote {args.out}: {dataset.num_users} users, {dataset.num_items} items, "
        f"{len(dataset.interactions)} interactions"
    )
    return 0


def _bench_index(args: argparse.Namespace) -> int:
    from models.bench_index import run  # noqa: PLC0415

    figures = run(
        items=args.items, dim=args.dim, queries=args.queries, kind=args.index, seed=args.seed
    )
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


def _tune_dual(args: argparse.Namespace) -> int:
    from models.dual_tuning import configs_from, tune, validation_reference  # noqa: PLC0415
    from models.pipeline import split_dataset  # noqa: PLC0415

    split = split_dataset(load_dataset(args.dataset, args.data_dir))
    configs = configs_from(args.config)
    reference = validation_reference(split)
    for name, recall in reference.items():
        print(f"{recall:.4f}  {name} (validation reference)", flush=True)
    rows = tune(split, configs, log=lambda line: print(line, flush=True))
    if args.json is not None:
        figures = {
            "dataset": args.dataset,
            "reference": reference,
            "rows": [
                {
                    "config": asdict(r.config),
                    "recall@20": r.recall,
                    "asymmetry": r.asymmetry,
                    "train_seconds": round(r.seconds, 2),
                }
                for r in rows
            ],
        }
        args.json.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    return 0


def _compact(args: argparse.Namespace) -> int:
    from models.compact import compact, describe  # noqa: PLC0415

    result = compact(
        args.bundle, args.redis_url, args.out, timeout_s=args.timeout, progress=not args.no_progress
    )
    print("\n".join(describe(result, args.out)))
    return 0


COMMANDS = {
    "build": _build,
    "evaluate": _evaluate,
    "synth": _synth,
    "bench-index": _bench_index,
    "compact": _compact,
    "tune-dual": _tune_dual,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from models.bundle_files import ExportError  # noqa: PLC0415

    try:
        return COMMANDS[args.command](args)
    except (DatasetError, ExportError, ValueError, OSError) as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
