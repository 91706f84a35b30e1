"""The evaluation report: a side-by-side table, a JSON file and a PNG chart.

Every row is a model (`two_tower`, variants such as `two_tower_dexml`, and the baselines);
each non-baseline row is also given as a ratio to the best baseline of the same run, per
metric, since the target is stated that way (≥ 1.10× on Recall@20 and NDCG@20).
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
BASELINES = ("popularity", "itemknn", "ials", "ease")

Results = Mapping[str, Mapping[str, float]]


def best_baseline(results: Results) -> dict[str, float]:
    """Per metric, the best value among the baselines present (empty when there are none)."""
    rows = [results[name] for name in BASELINES if name in results]
    return {
        m: max(row[m] for row in rows if m in row) for m in METRICS if any(m in r for r in rows)
    }


def ratios(results: Results) -> dict[str, dict[str, float]]:
    """Each non-baseline model divided by the best baseline, per metric."""
    best = best_baseline(results)
    return {
        name: {m: row[m] / best[m] for m in METRICS if m in row and best.get(m, 0) > 0}
        for name, row in results.items()
        if name not in BASELINES and best
    }


def render_table(results: Results) -> str:
    """A plain-text table: rows = models, columns = the four metrics, then the ratios."""
    ratio_rows = {f"{name} / best baseline": row for name, row in ratios(results).items()}
    width = max(len(label) for label in ["model", *results, *ratio_rows]) + 2
    header = "model".ljust(width) + "".join(m.rjust(11) for m in METRICS)
    lines = [header, "-" * len(header)]
    for name, row in results.items():
        lines.append(name.ljust(width) + "".join(_cell(row.get(m), "{:.4f}") for m in METRICS))
    for label, row in ratio_rows.items():
        lines.append(label.ljust(width) + "".join(_cell(row.get(m), "{:.2f}x") for m in METRICS))
    return "\n".join(lines)


def _cell(value: float | None, pattern: str) -> str:
    return ("—" if value is None or not math.isfinite(value) else pattern.format(value)).rjust(11)


def write_report(
    path: Path, *, dataset: str, results: Results, extra: Mapping[str, object]
) -> None:
    """JSON `{"dataset", "models", "ratio_to_best_baseline", **extra}`, written atomically."""
    reserved = {"dataset", "models", "ratio_to_best_baseline"} & set(extra)
    if reserved:
        raise ValueError(f"extra may not override {sorted(reserved)}")
    document = {
        "dataset": dataset,
        "models": {name: {k: float(v) for k, v in row.items()} for name, row in results.items()},
        "ratio_to_best_baseline": ratios(results),
        **extra,
    }
    text = json.dumps(_finite(document), indent=2, allow_nan=False, default=_plain)
    _atomic_write(Path(path), (text + "\n").encode())


def plot_report(
    path: Path,
    *,
    curve: Sequence[Mapping[str, float]],
    results: Results,
    title: str | None = None,
) -> None:
    """PNG: left, training loss and validation Recall@20 per epoch; right, metric bars."""
    figure = Figure(figsize=(12, 4.5), dpi=100, layout="constrained")
    if title:
        figure.suptitle(title)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2, width_ratios=(1, 1.4))
    epochs = [point.get("epoch", i + 1) for i, point in enumerate(curve)]
    if curve:
        left.plot(epochs, [p.get("loss", math.nan) for p in curve], "o-", color="tab:blue")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss", color="tab:blue")
    left.set_title("two-tower training")
    recall = [p.get("valid_recall@20", math.nan) for p in curve]
    if any(math.isfinite(r) for r in recall):
        twin = left.twinx()
        twin.plot(epochs, recall, "s-", color="tab:orange")
        twin.set_ylabel("validation recall@20", color="tab:orange")
    names = list(results)
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(METRICS))]
        values = [results[name].get(m, 0.0) for m in METRICS]
        bars = right.bar(xs, values, width, label=name, color=_colour(name, i))
        right.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
    right.set_xticks(range(len(METRICS)), METRICS)
    right.set_ylabel("test metric (full ranking)")
    right.set_title("two-tower vs baselines")
    right.margins(y=0.15)
    right.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    _atomic_write(Path(path), buffer.getvalue())


def _colour(name: str, index: int) -> str:
    fixed = {"popularity": "#9e9e9e", "itemknn": "#8c6d31", "ials": "#6b6ecf", "ease": "#637939"}
    others = ("#d62728", "#ff7f0e", "#2ca02c", "#17becf")
    return fixed.get(name, others[index % len(others)])


def _finite(value: object) -> object:
    """NaN/inf become null: strict JSON readers reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _plain(value: object) -> object:
    """numpy scalars and arrays, Paths: what json cannot serialise by itself."""
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} in the report")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
