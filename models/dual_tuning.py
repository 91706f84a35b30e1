"""`python -m models tune-dual`: choose SGNS settings on validation next-item pairs, never test.

Each config is trained on the split's `train` part and scored on the consecutive pairs of its
`valid` part, exactly as `evaluate_next_item` scores test pairs after training on `train_full`
(IN.OUT through `serving_tables`, the way the bundle serves it). The co-occurrence counts and
popularity on the same pairs are printed beside them as the bars to clear.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from models.complementary import (
    SGNSConfig,
    cooccurrence_scorer,
    dot_scorer,
    next_item_recall,
    next_pairs,
    popularity_scorer,
    serving_tables,
    train_dual,
)
from models.types import Split


@dataclass(frozen=True)
class TuningRow:
    config: SGNSConfig
    recall: float
    asymmetry: float
    seconds: float
    """Training time of this config (one thread when the caller set it so)."""


def parse_overrides(text: str) -> dict[str, Any]:
    """`"epochs=20,ns_exponent=0"` -> {"epochs": 20, "ns_exponent": 0.0}, typed as the field."""
    kinds = {f.name: f.type for f in fields(SGNSConfig)}
    found: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in kinds:
            raise ValueError(f"bad SGNS override {part!r}: expected one of {', '.join(kinds)}")
        kind = kinds[name]
        if kind == "bool":
            found[name] = value.lower() in {"1", "true", "yes"}
        elif kind == "str":
            found[name] = value
        else:
            found[name] = int(value) if kind == "int" else float(value)
    return found


def validation_reference(
    split: Split, *, windows: tuple[int, ...] = (1, 2, 3, 5), k: int = 20
) -> dict[str, float]:
    """Co-occurrence (within each of `windows`) and popularity on the validation pairs."""
    heads, tails = next_pairs(split.valid)
    found = {
        f"cooccurrence_w{w}": next_item_recall(
            cooccurrence_scorer(split.train, split.num_items, w), heads, tails, k
        ).recall
        for w in windows
    }
    found["popularity"] = next_item_recall(
        popularity_scorer(split.train, split.num_items), heads, tails, k
    ).recall
    return found


def tune(
    split: Split, configs: list[SGNSConfig], *, k: int = 20, log: Any = None
) -> list[TuningRow]:
    """Validation IN.OUT next-item Recall@k of each config, in the order given."""
    heads, tails = next_pairs(split.valid)
    rows = []
    for config in configs:
        started = time.perf_counter()
        learnt = train_dual(split.train, split.num_items, config)
        seconds = time.perf_counter() - started
        served = serving_tables(*learnt, split.train, config.window)
        found = next_item_recall(dot_scorer(*served), heads, tails, k)
        rows.append(TuningRow(config, found.recall, found.asymmetry, seconds))
        if log is not None:
            log(format_row(rows[-1]))
    return rows


def format_row(row: TuningRow) -> str:
    default = SGNSConfig()
    changed = {n: v for n, v in asdict(row.config).items() if getattr(default, n) != v}
    label = ",".join(f"{n}={v}" for n, v in changed.items()) or "defaults"
    return f"{row.recall:.4f}  asym {row.asymmetry:.3f}  {row.seconds:6.1f}s  {label}"


def configs_from(overrides: list[str]) -> list[SGNSConfig]:
    """One config per override string (of the defaults); the defaults alone when none."""
    base = SGNSConfig()
    return [replace(base, **parse_overrides(text)) for text in overrides] or [base]
