"""The ONNX user tower: one single-threaded session per bundle, signature checked at load.

Sessions are built from verified files, with one intra-op thread: a request encodes one user,
and parallelism comes from workers, not threads. A tower whose weights live in an external data
file (large catalogs) is opened by path, so ONNX Runtime memory-maps those weights and every
worker shares them; the file must be one the manifest lists (service/catalog/onnx_guard.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.catalog.onnx_guard import check_external_data, external_files
from service.errors import BundleError

Vector = npt.NDArray[np.float32]
_ORT_DTYPES = {"int64": "tensor(int64)", "float32": "tensor(float)"}


def open_session(path: Path, listed: Collection[str] = ()) -> ort.InferenceSession:
    """A session on the model at `path`; external data only in files named in `listed`."""
    model = path.read_bytes()
    check_external_data(model, listed)
    source: str | bytes = str(path) if external_files(model) else model
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise BundleError(f"ONNX Runtime cannot load the model: {exc}") from exc


def check_signature(session: ort.InferenceSession, spec: Mapping[str, Any], what: str) -> None:
    """Names, dtypes and ranks of the session's inputs and outputs must match the manifest."""
    for kind, actual in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        declared = spec.get(kind)
        if not isinstance(declared, list):
            raise BundleError(f"manifest {what}.{kind} missing")
        got = {arg.name: arg for arg in actual}
        if sorted(got) != sorted(str(d.get("name")) for d in declared):
            raise BundleError(f"{what} {kind} {sorted(got)} differ from the manifest's")
        for d in declared:
            arg = got[str(d["name"])]
            if arg.type != _ORT_DTYPES.get(str(d.get("dtype"))):
                raise BundleError(f"{what} {d['name']}: dtype {arg.type}, manifest {d['dtype']}")
            if len(arg.shape) != len(d.get("shape", [])):
                raise BundleError(f"{what} {d['name']}: rank {len(arg.shape)} differs")
            for got_dim, want_dim in zip(arg.shape, d["shape"], strict=True):
                if isinstance(got_dim, int) and isinstance(want_dim, int) and got_dim != want_dim:
                    raise BundleError(f"{what} {d['name']}: shape {arg.shape} vs {d['shape']}")


def _towers(
    tower_rows: npt.NDArray[np.int64], rows: Sequence[int], padding: int
) -> npt.NDArray[np.int64]:
    """Catalog rows as the towers' item rows, those the towers never learnt dropped."""
    mapped = tower_rows[np.asarray(rows, dtype=np.int64)]
    result: npt.NDArray[np.int64] = mapped[mapped != padding]
    return result


class UserEncoder:
    """(user_idx, history rows) -> L2-normalised user embedding.

    `tower_rows` (compacted bundles) maps catalog rows to the towers' item rows; rows the towers
    never learnt (items added live, then compacted) map to `padding_idx` and are dropped, as the
    live path drops ids the bundle does not know."""

    def __init__(
        self,
        session: ort.InferenceSession,
        *,
        history_length: int,
        padding_idx: int,
        dim: int,
        output: str,
        user_features: npt.NDArray[np.int64] | None = None,
        tower_rows: npt.NDArray[np.int64] | None = None,
    ) -> None:
        self._session = session
        self._tower_rows = tower_rows
        self.history_length = history_length
        self._padding = padding_idx
        self.dim = dim
        self._outputs = [output]
        self._user_features = user_features

    def encode_many(
        self, user_idx: Sequence[int], histories: Sequence[Sequence[int]]
    ) -> npt.NDArray[np.float32]:
        batch = len(user_idx)
        length = self.history_length
        history = np.full((batch, length), self._padding, dtype=np.int64)
        tower_rows = self._tower_rows
        for row, rows in enumerate(histories):
            known = rows if tower_rows is None else _towers(tower_rows, rows, self._padding)
            recent = known[-length:]
            if len(recent):
                history[row, length - len(recent) :] = recent
        users = np.asarray(user_idx, dtype=np.int64)
        feeds: dict[str, npt.NDArray[np.int64]] = {"user_idx": users, "history": history}
        if self._user_features is not None:
            feeds["user_features"] = self._user_features[users]
        (out,) = self._session.run(self._outputs, feeds)
        result: npt.NDArray[np.float32] = np.ascontiguousarray(out, dtype=np.float32)
        return result

    def encode(self, user_idx: int, history: Sequence[int]) -> Vector:
        vector: Vector = self.encode_many([user_idx], [history])[0]
        return vector
