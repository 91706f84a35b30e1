"""Write a bundle exactly as docs/bundle-format.md specifies, atomically.

Everything goes into a temporary sibling of `out` which is fsynced and renamed into place only
when complete, so a failed build (parity, index, disk) never leaves a half bundle behind.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn
from tqdm import tqdm

from models.bundle_files import (
    DUAL_INDEX_FILE,
    ExportError,
    atomic_directory,
    build_dual_index,
    bundle_version,
    file_entries,
    index_section,
    verify_bundle,
    write_json,
)
from models.catalog_files import write_catalog
from models.features import ItemFeatures
from models.index import BuiltIndex, IndexSpec, build_index, query_sample
from models.towers import TwoTower, UserTower
from models.types import Dataset, Interactions

FORMAT_VERSION = 2
OPSET = 17
PARITY_TOLERANCE = 1e-5
POPULARITY_SIZE = 1000
EXTERNAL_DATA_BYTES = 1 << 20
__all__ = ["DUAL_INDEX_FILE", "BundleInputs", "ExportError", "verify_bundle", "write_bundle"]


@dataclass(frozen=True)
class BundleInputs:
    """What a bundle is made of, besides the trained towers."""

    dataset: Dataset
    train_full: Interactions
    item_features: ItemFeatures
    training: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    user_queries: np.ndarray | None = None  # user embeddings, to measure ANN recall on
    dual: tuple[np.ndarray, np.ndarray] | None = None  # (IN, OUT) for complementary items
    dual_params: dict[str, Any] | None = None


class _UserWithFeatures(nn.Module):
    def __init__(self, tower: UserTower) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, user_idx: Tensor, history: Tensor, user_features: Tensor) -> Tensor:
        out: Tensor = self.tower(user_idx, history, user_features)
        return out


def _onnx_bytes(
    module: nn.Module, args: tuple[Tensor, ...], inputs: list[str], output: str
) -> bytes:
    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in [*inputs, output]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            buffer,  # type: ignore[arg-type]  # file-like objects are accepted
            input_names=inputs,
            output_names=[output],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def write_onnx(
    directory: Path, name: str, model: bytes, *, threshold: int = EXTERNAL_DATA_BYTES
) -> None:
    """`NAME`, with tensors of at least `threshold` bytes in `NAME.data` beside it.

    ONNX Runtime memory-maps external data but copies inline weights into each process: at a
    million items the item-id table alone is 128 MB (dim 32) per tower per worker, shared once
    it lives in a file."""
    proto = onnx.load_from_string(model)
    if not any(len(t.raw_data) >= threshold for t in proto.graph.initializer):
        (directory / name).write_bytes(model)
        return
    onnx.save_model(
        proto,
        str(directory / name),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{name}.data",
        size_threshold=threshold,
    )


def _check_parity(
    onnx_model: bytes, module: nn.Module, feeds: dict[str, Tensor], name: str
) -> float:
    """Max abs difference between ONNX Runtime and PyTorch on `feeds`; raises above 1e-5."""
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    with torch.no_grad():
        expected = module(*feeds.values()).numpy()
    diff = float(np.abs(got - expected).max())
    if not diff <= PARITY_TOLERANCE:
        raise ExportError(f"{name}: ONNX/PyTorch parity {diff:.2e} exceeds {PARITY_TOLERANCE}")
    return diff


def _sample_rows(count: int, size: int, seed: int) -> Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, count, size=size, dtype=np.int64))


def export_towers(
    model: TwoTower, features: ItemFeatures, user_features: np.ndarray | None
) -> tuple[bytes, bytes, dict[str, float]]:
    """Both towers as ONNX (dynamic batch), each checked against PyTorch on a sample batch."""
    model.eval()
    num_items = features.num_items
    rows = torch.cat([_sample_rows(num_items, 31, 1), torch.tensor([num_items])])
    item_feeds = {
        "item_idx": rows,
        "genres": torch.from_numpy(features.genres)[rows],
        "year": torch.from_numpy(features.year)[rows],
        "title_tokens": torch.from_numpy(features.title_tokens)[rows],
    }
    item_onnx = _onnx_bytes(
        model.item, tuple(item_feeds.values()), list(item_feeds), "item_embedding"
    )
    item_diff = _check_parity(item_onnx, model.item, item_feeds, "item_tower.onnx")

    history_length = model.config.history_length
    num_users = model.user.user_embedding.num_embeddings - 1
    batch = 32
    history = _sample_rows(num_items + 1, batch * history_length, 2).reshape(batch, -1)
    history[: batch // 2, : history_length // 2] = num_items  # some left padding
    user_feeds = {"user_idx": _sample_rows(num_users + 1, batch, 3), "history": history}
    user_module: nn.Module = model.user
    if user_features is not None:
        user_feeds["user_features"] = torch.from_numpy(user_features)[user_feeds["user_idx"]]
        user_module = _UserWithFeatures(model.user).eval()
    user_onnx = _onnx_bytes(
        user_module, tuple(user_feeds.values()), list(user_feeds), "user_embedding"
    )
    user_diff = _check_parity(user_onnx, user_module, user_feeds, "user_tower.onnx")
    return user_onnx, item_onnx, {"user_tower": user_diff, "item_tower": item_diff}


def item_embeddings(
    model: TwoTower, features: ItemFeatures, *, batch: int = 65536, progress: bool = False
) -> np.ndarray:
    """Every item's embedding, in batches: one pass over 1M items would hold all activations."""
    model.eval()
    genres = torch.from_numpy(features.genres)
    year = torch.from_numpy(features.year)
    title = torch.from_numpy(features.title_tokens)
    parts = []
    with torch.no_grad():
        chunks = torch.split(torch.arange(features.num_items), batch)
        for rows in tqdm(chunks, desc="embed items", leave=False, disable=not progress):
            parts.append(model.item(rows, genres[rows], year[rows], title[rows]).numpy())
    return np.asarray(np.concatenate(parts), dtype=np.float32)


def _popularity(dataset: Dataset, train_full: Interactions) -> list[dict[str, Any]]:
    counts = np.bincount(train_full.item, minlength=dataset.num_items)
    total = max(int(counts.sum()), 1)
    top = np.argsort(-counts, kind="stable")[:POPULARITY_SIZE]
    return [
        {"item_id": dataset.items.ids[i], "score": round(float(counts[i]) / total, 8)}
        for i in top
        if counts[i] > 0
    ]


def _user_features_matrix(dataset: Dataset) -> np.ndarray | None:
    features = dataset.user_features
    if features is None:
        return None
    matrix = np.zeros((dataset.num_users + 1, len(features.names)), dtype=np.int64)
    matrix[1:] = features.values
    return matrix


def write_bundle(
    out: Path,
    model: TwoTower,
    inputs: BundleInputs,
    *,
    index_spec: IndexSpec | None = None,
    extra_files: dict[str, bytes] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Export towers, index and metadata into `out`; returns the manifest."""
    dataset, features = inputs.dataset, inputs.item_features
    if dataset.num_items != features.num_items:
        raise ExportError("item features do not match the dataset's catalog")
    user_features = _user_features_matrix(dataset)
    user_onnx, item_onnx, parity = export_towers(model, features, user_features)
    embeddings = item_embeddings(model, features, progress=progress)
    queries = query_sample(embeddings, inputs.user_queries, count=1000)
    built: BuiltIndex = build_index(embeddings, queries, index_spec, progress=progress)
    dual_index = None
    if inputs.dual is not None:
        dual_index = build_dual_index(*inputs.dual, index_spec, progress=progress)

    with atomic_directory(out) as tmp:
        write_onnx(tmp, "user_tower.onnx", user_onnx)
        write_onnx(tmp, "item_tower.onnx", item_onnx)
        faiss.write_index(built.index, str(tmp / "items.faiss"))
        np.save(tmp / "item_embeddings.npy", embeddings, allow_pickle=False)
        catalog = write_catalog(tmp, dataset)
        if user_features is not None:
            np.save(tmp / "user_features.npy", user_features, allow_pickle=False)
        write_json(tmp / "popularity.json", _popularity(dataset, inputs.train_full))
        if inputs.dual is not None:
            np.save(tmp / "item_in.npy", inputs.dual[0].astype(np.float32), allow_pickle=False)
            np.save(tmp / "item_out.npy", inputs.dual[1].astype(np.float32), allow_pickle=False)
        if dual_index is not None:
            faiss.write_index(dual_index.index, str(tmp / DUAL_INDEX_FILE))
        for name, payload in (extra_files or {}).items():
            (tmp / name).write_bytes(payload)
        files = file_entries(tmp)
        manifest = _manifest(
            model, inputs, built, files=files, parity=parity, catalog=catalog, dual=dual_index
        )
        write_json(tmp / "manifest.json", manifest)
    return manifest


def _dual_section(inputs: BundleInputs, built: BuiltIndex | None) -> dict[str, Any] | None:
    if inputs.dual is None or built is None:
        return None
    return {
        "in_file": "item_in.npy",
        "out_file": "item_out.npy",
        "dim": int(inputs.dual[0].shape[1]),
        "dtype": "float32",
        "method": "sgns",
        "params": inputs.dual_params or {},
        "index": index_section(built, DUAL_INDEX_FILE),
    }


def _manifest(
    model: TwoTower,
    inputs: BundleInputs,
    built: BuiltIndex,
    *,
    files: dict[str, dict[str, Any]],
    parity: dict[str, float],
    catalog: dict[str, Any],
    dual: BuiltIndex | None = None,
) -> dict[str, Any]:
    dataset, features = inputs.dataset, inputs.item_features
    dim = model.config.dim
    history_length = model.config.history_length
    now = datetime.now(UTC).replace(microsecond=0)
    user_inputs: list[dict[str, Any]] = [
        {"name": "user_idx", "dtype": "int64", "shape": ["batch"]},
        {"name": "history", "dtype": "int64", "shape": ["batch", history_length]},
    ]
    user_features = None
    if dataset.user_features is not None:
        names = dataset.user_features.names
        user_features = {"names": names, "cardinalities": dataset.user_features.cardinalities}
        user_inputs.append(
            {"name": "user_features", "dtype": "int64", "shape": ["batch", len(names)]}
        )
    return {
        "format_version": FORMAT_VERSION,
        "bundle_version": bundle_version(dataset.name, now, files),
        "created_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dataset": dataset.name,
        "embedding_dim": dim,
        "metric": "inner_product",
        "normalized": True,
        "num_items": dataset.num_items,
        "num_users": dataset.num_users,
        "catalog": catalog,
        "index": index_section(built, "items.faiss"),
        "user_tower": {
            "file": "user_tower.onnx",
            "inputs": user_inputs,
            "outputs": [{"name": "user_embedding", "dtype": "float32", "shape": ["batch", dim]}],
            "history_length": history_length,
            "padding_idx": dataset.num_items,
            "user_vocab_size": dataset.num_users + 1,
            "user_features": user_features,
        },
        "item_tower": {
            "file": "item_tower.onnx",
            "inputs": [
                {"name": "item_idx", "dtype": "int64", "shape": ["batch"]},
                {
                    "name": "genres",
                    "dtype": "float32",
                    "shape": ["batch", len(features.genre_vocab)],
                },
                {"name": "year", "dtype": "float32", "shape": ["batch"]},
                {
                    "name": "title_tokens",
                    "dtype": "int64",
                    "shape": ["batch", features.title_max_tokens],
                },
            ],
            "outputs": [{"name": "item_embedding", "dtype": "float32", "shape": ["batch", dim]}],
            "genre_vocab": features.genre_vocab,
            "year_mean": features.year_mean,
            "year_std": features.year_std,
            "title_hash_buckets": features.title_hash_buckets,
            "title_max_tokens": features.title_max_tokens,
        },
        "complementary": _dual_section(inputs, dual),
        "files": files,
        "training_data": {
            "fingerprint": dataset.fingerprint,
            "num_interactions": len(dataset.interactions),
        },
        "training": {**inputs.training, "onnx_parity_max_abs_diff": parity},
        "metrics": inputs.metrics,
    }
