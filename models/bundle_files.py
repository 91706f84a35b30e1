"""The torch-free half of writing a bundle: the atomic directory, file checksums, the version,
the index sections and the checks, shared by `export` (a trained model) and `compact` (a
bundle plus its live changes), so compacting never imports PyTorch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.index import BuiltIndex, IndexSpec, build_index

DUAL_INDEX_FILE = "complementary.faiss"
UNLEARNT_BIAS = -1e4
"""OUT bias of an item never seen in training: it ranks after every learnt item (a basket of
100 items scores within a few thousand of 0; float32 keeps 1e-3 steps at 1e4)."""


class ExportError(Exception):
    """The bundle could not be written; nothing was left at the destination."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_directory(out: Path) -> Iterator[Path]:
    """Yield a temp dir next to `out`; rename it to `out` on success, delete it on failure."""
    out = Path(out)
    if out.exists():
        raise ExportError(f"{out}: output directory already exists (refusing to overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        for path in tmp.iterdir():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(tmp)
        if out.exists():
            raise ExportError(f"{out}: output directory appeared during the build")
        tmp.rename(out)
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_entries(directory: Path) -> dict[str, dict[str, Any]]:
    """The manifest's `files`: sha256 and size of every file in `directory`."""
    return {
        p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size}
        for p in sorted(directory.iterdir())
    }


def bundle_version(dataset: str, now: datetime, files: dict[str, dict[str, Any]]) -> str:
    """`<dataset>-<UTC time>-<8 hex of the files' checksums>`: a new version for new content."""
    content = hashlib.sha256(
        "".join(f"{k}:{v['sha256']}" for k, v in sorted(files.items())).encode()
    ).hexdigest()
    return f"{dataset}-{now:%Y%m%dT%H%M%SZ}-{content[:8]}"


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def build_dual_index(
    item_in: np.ndarray,
    item_out: np.ndarray,
    spec: IndexSpec | None,
    *,
    queries: int = 1000,
    progress: bool = False,
) -> BuiltIndex:
    """Index of the OUT vectors, queried with IN vectors ("what goes with this item"), chosen
    like the main index (exact up to the threshold, ANN above) and tuned on a sample of IN rows
    that have a vector, so the manifest's recall is the one a request sees."""
    has = np.flatnonzero(np.any(item_in != 0, axis=1))
    rows = has if len(has) else np.arange(len(item_in))
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(rows, size=min(queries, len(rows)), replace=False))
    out = np.ascontiguousarray(item_out, dtype=np.float32)
    return build_index(out, np.asarray(item_in[sample], dtype=np.float32), spec, progress=progress)


def index_section(built: BuiltIndex, file: str) -> dict[str, Any]:
    return {
        "file": file,
        "type": built.kind,
        "params": built.params,
        "ntotal": int(built.index.ntotal),
        "recall_at_100": round(built.recall_at_100, 6),
        "recall_at_10": round(built.recall_at_10, 6),
        "latency_ms_per_query": round(built.latency_ms, 4),
        "recall_queries": built.queries,
    }


def verify_bundle(path: Path) -> dict[str, Any]:
    """Check every file listed in the manifest (size and sha256); returns the manifest."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    for name, entry in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise ExportError(f"{file}: listed in the manifest but missing")
        if file.stat().st_size != entry["bytes"] or _sha256(file) != entry["sha256"]:
            raise ExportError(f"{file}: checksum mismatch")
    return manifest
