"""Interaction logs -> `Dataset`: MovieLens in its original layouts, a generic CSV/Parquet layout.

Every loader ends in `_assemble`, so all datasets share one convention: ids become strings,
users and items are numbered in natural id order (numeric when every id is an integer), the
catalog holds only the items that occur in the interactions, and interactions are sorted by
(user row, timestamp, file order). Any problem with the input is a `DatasetError` whose message
is one line naming the file.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models import synth
from models.types import Dataset, IntArray, Interactions, Items, UserFeatures

__all__ = [
    "DATASETS",
    "DatasetError",
    "fingerprint",
    "load_dataset",
    "synthesize",
    "write_synthetic",
]

DATASETS = ("ml-latest-small", "ml-100k", "ml-1m", "generic", "synth")
SHIPPED = Path(__file__).parent / "data" / "ml-latest-small"

_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})(?:\s*[-–]\s*(?:\d{4})?)?\)\s*$")
# ML-1M age codes, reused as the buckets for ML-100K's exact ages.
_AGE_CODES = (1, 18, 25, 35, 45, 50, 56)


class DatasetError(Exception):
    """A dataset that cannot be loaded; the message is one line naming the file."""


def load_dataset(name: str, data_dir: Path | None = None) -> Dataset:
    """Load `name` (one of `DATASETS`) from `data_dir` (default: the shipped ml-latest-small).

    `synth` reads the generic layout that `write_synthetic` writes, but keeps its whole catalog
    (cold items included), so a written synthetic dataset loads back identical.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    if data_dir is None:
        if name != "ml-latest-small":
            raise DatasetError(f"dataset {name!r} needs --data-dir")
        data_dir = SHIPPED
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: data directory not found")
    if name == "ml-latest-small":
        return _load_ml_latest(data_dir, name)
    if name == "ml-100k":
        return _load_ml_100k(data_dir, name)
    if name == "ml-1m":
        return _load_ml_1m(data_dir, name)
    return _load_generic(data_dir, name)


def synthesize(
    num_users: int,
    num_items: int,
    *,
    seed: int = 0,
    interactions_per_user: int = 30,
    num_clusters: int = 20,
    zipf_a: float = 1.1,
) -> Dataset:
    """A seeded synthetic dataset with cluster structure and Zipf popularity (see `synth`)."""
    data = synth.generate(
        num_users,
        num_items,
        seed=seed,
        interactions_per_user=interactions_per_user,
        num_clusters=num_clusters,
        zipf_a=zipf_a,
    )
    return replace(data, fingerprint=fingerprint(data.user_ids, data.items.ids, data.interactions))


def fingerprint(user_ids: list[str], item_ids: list[str], interactions: Interactions) -> str:
    """sha256 over the canonical `user_id<TAB>item_id<TAB>timestamp` rows, in stored order."""
    users = np.asarray(user_ids, dtype=object)[interactions.user]
    items = np.asarray(item_ids, dtype=object)[interactions.item]
    digest = hashlib.sha256()
    chunk = 200_000
    for start in range(0, len(interactions), chunk):
        stop = start + chunk
        rows = zip(
            users[start:stop],
            items[start:stop],
            interactions.timestamp[start:stop].tolist(),
            strict=True,
        )
        digest.update("".join(f"{u}\t{i}\t{t}\n" for u, i, t in rows).encode())
    return digest.hexdigest()


def write_synthetic(dataset: Dataset, out: Path) -> None:
    """Write `dataset` in the generic layout (interactions.parquet + items.parquet), atomically."""
    out = Path(out)
    if out.exists():
        raise DatasetError(f"{out}: output directory already exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    inter = dataset.interactions
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary directory
        users = pa.array(dataset.user_ids, pa.string())
        items = pa.array(dataset.items.ids, pa.string())
        pq.write_table(
            pa.table(
                {
                    "user_id": users.take(pa.array(inter.user)),
                    "item_id": items.take(pa.array(inter.item)),
                    "timestamp": pa.array(inter.timestamp, pa.int64()),
                    "weight": pa.array(inter.weight, pa.float32()),
                }
            ),
            tmp / "interactions.parquet",
        )
        pq.write_table(
            pa.table(
                {
                    "item_id": items,
                    "title": pa.array(dataset.items.titles, pa.string()),
                    "genres": pa.array(["|".join(g) for g in dataset.items.genres], pa.string()),
                    "year": pa.array(dataset.items.years, pa.int64()),
                }
            ),
            tmp / "items.parquet",
        )
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- reading ----------------------------------------------------------------------------------


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    return path


def _read_text(path: Path, encoding: str = "utf-8") -> str:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return raw.decode(encoding)
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None


def _read_table(
    path: Path, names: list[str], *, sep: str, header: bool, encoding: str = "utf-8"
) -> pd.DataFrame:
    """All columns as strings; a row with a wrong field count is an error naming its line."""
    text = _read_text(path, encoding)
    if len(sep) > 1:
        text = text.replace(sep, "\t")
        sep = "\t"
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            header=0 if header else None,
            names=None if header else names,
            dtype=str,
            keep_default_na=False,
            quotechar='"' if sep == "," else "\x00",
            engine="c",
            skip_blank_lines=True,
        )
    except pd.errors.ParserError as exc:
        line = re.search(r"line (\d+)", str(exc))
        where = f"line {line.group(1)}" if line else "malformed"
        raise DatasetError(f"{path}: {where}: wrong number of fields") from None
    if header:
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame[names]


def _line_of(row: int, header: bool) -> int:
    """1-based file line of data row `row` (blank lines are assumed absent)."""
    return int(row) + 1 + int(header)


def _as_int(frame: pd.DataFrame, column: str, path: Path, *, header: bool) -> IntArray:
    values = pd.to_numeric(frame[column].str.strip(), errors="coerce")
    if pd.api.types.is_integer_dtype(values):
        return values.to_numpy(dtype=np.int64)
    floats = values.to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(floats)
    bad[~bad] = floats[~bad] % 1 != 0
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        line = _line_of(row, header)
        raise DatasetError(
            f"{path}: line {line}: {column} {frame[column].iloc[row]!r} is not an integer"
        )
    return floats.astype(np.int64)


def _as_float(frame: pd.DataFrame, column: str, path: Path, *, header: bool) -> np.ndarray:
    values = pd.to_numeric(frame[column].str.strip(), errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        line = _line_of(row, header)
        raise DatasetError(
            f"{path}: line {line}: {column} {frame[column].iloc[row]!r} is not a number"
        )
    return values


def _split_title(title: str) -> tuple[str, int]:
    """'Heat (1995)' -> ('Heat', 1995); a title without a year keeps year 0."""
    match = _TITLE_YEAR.match(title)
    if match is None:
        return title.strip(), 0
    return match.group(1).strip(), int(match.group(2))


# --- assembling -------------------------------------------------------------------------------


def _natural_order(ids: np.ndarray) -> np.ndarray:
    """Unique ids, numeric order when all are integers, else lexicographic."""
    unique = pd.unique(ids)
    numeric = pd.to_numeric(pd.Series(unique), errors="coerce")
    if not numeric.isna().any() and (numeric % 1 == 0).all():
        return np.asarray(unique[np.argsort(numeric.to_numpy(), kind="stable")], dtype=object)
    return np.asarray(np.sort(unique.astype(str)), dtype=object)


def _assemble(
    name: str,
    *,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    timestamps: IntArray,
    weights: np.ndarray,
    source: Path,
    meta: pd.DataFrame | None = None,
    meta_source: Path | None = None,
    user_meta: dict[str, np.ndarray] | None = None,
    user_meta_ids: np.ndarray | None = None,
    cardinalities: list[int] | None = None,
    full_catalog: bool = False,
) -> Dataset:
    """Number users/items, sort the log, attach metadata (item_id-indexed `meta`).

    With `full_catalog`, every item of `meta` is in the catalog, interacted or not (synthetic
    catalogs are mostly cold items; a scale test needs all of them).
    """
    if len(user_ids) == 0:
        raise DatasetError(f"{source}: no interactions")
    user_ids = np.asarray(user_ids, dtype=str).astype(object)
    item_ids = np.asarray(item_ids, dtype=str).astype(object)
    users = _natural_order(user_ids)
    items = _natural_order(item_ids)
    if full_catalog and meta is not None:
        items = _natural_order(np.concatenate([items, meta.index.to_numpy(dtype=object)]))
    user_row = pd.Index(users).get_indexer(user_ids).astype(np.int64)
    item_row = pd.Index(items).get_indexer(item_ids).astype(np.int64)
    order = np.lexsort((np.arange(len(user_row)), timestamps, user_row))
    interactions = Interactions(
        user=user_row[order],
        item=item_row[order],
        timestamp=np.asarray(timestamps, dtype=np.int64)[order],
        weight=np.asarray(weights, dtype=np.float32)[order],
    )
    item_list = [str(i) for i in items]
    user_list = [str(u) for u in users]
    if meta is None:
        catalog = Items(
            ids=item_list,
            titles=[""] * len(items),
            genres=[()] * len(items),
            years=np.zeros(len(items), dtype=np.int64),
        )
    else:
        meta = meta[~meta.index.duplicated(keep="first")]
        where = pd.Index(meta.index, dtype=object).get_indexer(pd.Index(items, dtype=object))
        if (where < 0).any():
            absent = np.flatnonzero(where < 0)
            raise DatasetError(
                f"{meta_source}: {absent.size} interacted item(s) missing from the "
                f"metadata, e.g. item_id {items[absent[0]]!r}"
            )
        rows = meta.iloc[where]
        catalog = Items(
            ids=item_list,
            titles=rows["title"].to_numpy(dtype=object).astype(str).tolist(),
            genres=list(rows["genres"]),
            years=rows["year"].to_numpy(dtype=np.int64),
        )
    features = None
    if user_meta is not None and user_meta_ids is not None and cardinalities is not None:
        where = pd.Index(np.asarray(user_meta_ids, dtype=str)).get_indexer(users)
        values = np.zeros((len(users), len(user_meta)), dtype=np.int64)
        known = where >= 0
        for col, column in enumerate(user_meta.values()):
            values[known, col] = column[where[known]]
        features = UserFeatures(
            names=list(user_meta), cardinalities=list(cardinalities), values=values
        )
    return Dataset(
        name=name,
        user_ids=user_list,
        items=catalog,
        interactions=interactions,
        user_features=features,
        fingerprint=fingerprint(user_list, item_list, interactions),
    )


def _meta_frame(
    ids: np.ndarray, titles: list[str], genres: list[tuple[str, ...]], years: np.ndarray
) -> pd.DataFrame:
    return pd.DataFrame(
        {"title": titles, "genres": genres, "year": np.asarray(years, dtype=np.int64)},
        index=pd.Index(np.asarray(ids, dtype=str).astype(object), name="item_id", dtype=object),
    )


def _genre_tuple(text: str) -> tuple[str, ...]:
    if not text or text == "(no genres listed)":
        return ()
    return tuple(g for g in text.split("|") if g)


def _genre_tuples(texts: pd.Series) -> list[tuple[str, ...]]:
    """'A|B' strings -> tuples, parsing each distinct string once (catalogs repeat them)."""
    codes, uniques = pd.factorize(texts.to_numpy(dtype=object))
    parsed = np.empty(len(uniques) + 1, dtype=object)
    parsed[:-1] = [_genre_tuple(str(u)) for u in uniques]
    parsed[-1] = ()  # code -1: missing
    result: list[tuple[str, ...]] = parsed[codes].tolist()
    return result


def _movie_meta(ids: np.ndarray, raw_titles: pd.Series, raw_genres: pd.Series) -> pd.DataFrame:
    split = [_split_title(t) for t in raw_titles]
    return _meta_frame(
        ids,
        [t for t, _ in split],
        _genre_tuples(raw_genres),
        np.array([y for _, y in split], dtype=np.int64),
    )


# --- MovieLens --------------------------------------------------------------------------------


def _load_ml_latest(data_dir: Path, name: str) -> Dataset:
    path = _require(data_dir / "ratings.csv")
    cols = ["userId", "movieId", "rating", "timestamp"]
    ratings = _read_table(path, cols, sep=",", header=True)
    movies_path = _require(data_dir / "movies.csv")
    movies = _read_table(movies_path, ["movieId", "title", "genres"], sep=",", header=True)
    _check_ids(ratings, ["userId", "movieId"], path, header=True)
    return _assemble(
        name,
        user_ids=ratings["userId"].to_numpy(),
        item_ids=ratings["movieId"].to_numpy(),
        timestamps=_as_int(ratings, "timestamp", path, header=True),
        weights=_as_float(ratings, "rating", path, header=True),
        source=path,
        meta=_movie_meta(movies["movieId"].to_numpy(), movies["title"], movies["genres"]),
        meta_source=movies_path,
    )


def _load_ml_100k(data_dir: Path, name: str) -> Dataset:
    path = _require(data_dir / "u.data")
    ratings = _read_table(path, ["user", "item", "rating", "ts"], sep="\t", header=False)
    _check_ids(ratings, ["user", "item"], path, header=False)
    item_path = _require(data_dir / "u.item")
    genre_names = _ml_100k_genres(data_dir)
    cols = ["id", "title", "release", "video", "url", *genre_names]
    raw = _read_table(item_path, cols, sep="|", header=False, encoding="latin-1")
    flags = raw[genre_names].to_numpy() == "1"
    split = [_split_title(t) for t in raw["title"]]
    release = pd.to_datetime(raw["release"], format="%d-%b-%Y", errors="coerce")
    years = np.where(release.isna(), 0, release.dt.year.fillna(0)).astype(np.int64)
    years = np.where(years == 0, [y for _, y in split], years)
    genres = [
        tuple(g for g, on in zip(genre_names, row, strict=True) if on and g != "unknown")
        for row in flags
    ]
    meta = _meta_frame(raw["id"].to_numpy(), [t for t, _ in split], genres, years)
    user_path = _require(data_dir / "u.user")
    users = _read_table(user_path, ["id", "age", "gender", "job", "zip"], sep="|", header=False)
    ages = _as_int(users, "age", user_path, header=False)
    age = np.searchsorted(np.array(_AGE_CODES), ages, side="right").astype(np.int64)
    gender = np.select([users["gender"] == "M", users["gender"] == "F"], [1, 2], 0)
    jobs = sorted(set(users["job"]))
    job = np.array([jobs.index(j) + 1 for j in users["job"]], dtype=np.int64)
    return _assemble(
        name,
        user_ids=ratings["user"].to_numpy(),
        item_ids=ratings["item"].to_numpy(),
        timestamps=_as_int(ratings, "ts", path, header=False),
        weights=_as_float(ratings, "rating", path, header=False),
        source=path,
        meta=meta,
        meta_source=item_path,
        user_meta={"age": age, "gender": gender.astype(np.int64), "occupation": job},
        user_meta_ids=users["id"].to_numpy(),
        cardinalities=[len(_AGE_CODES) + 1, 3, len(jobs) + 1],
    )


def _ml_100k_genres(data_dir: Path) -> list[str]:
    path = data_dir / "u.genre"
    if not path.is_file():
        return [f"genre{i}" for i in range(19)]
    frame = _read_table(path, ["name", "index"], sep="|", header=False)
    return list(frame["name"])


def _load_ml_1m(data_dir: Path, name: str) -> Dataset:
    path = data_dir / "ratings.dat"
    if not path.is_file() and (data_dir / "ratings.dat.gz").is_file():
        path = data_dir / "ratings.dat.gz"
    _require(path)
    ratings = _read_table(path, ["user", "item", "rating", "ts"], sep="::", header=False)
    _check_ids(ratings, ["user", "item"], path, header=False)
    movies_path = _require(data_dir / "movies.dat")
    movies = _read_table(
        movies_path, ["id", "title", "genres"], sep="::", header=False, encoding="latin-1"
    )
    user_meta = None
    user_ids = None
    cards = None
    users_path = data_dir / "users.dat"
    if users_path.is_file():
        users = _read_table(
            users_path, ["id", "gender", "age", "job", "zip"], sep="::", header=False
        )
        age_code = _as_int(users, "age", users_path, header=False)
        age = np.searchsorted(np.array(_AGE_CODES), age_code, side="right").astype(np.int64)
        gender = np.select([users["gender"] == "M", users["gender"] == "F"], [1, 2], 0)
        job = _as_int(users, "job", users_path, header=False)
        user_meta = {
            "age": age,
            "gender": gender.astype(np.int64),
            "occupation": np.clip(job, 0, 20) + 1,
        }
        user_ids = users["id"].to_numpy()
        cards = [len(_AGE_CODES) + 1, 3, 22]
    return _assemble(
        name,
        user_ids=ratings["user"].to_numpy(),
        item_ids=ratings["item"].to_numpy(),
        timestamps=_as_int(ratings, "ts", path, header=False),
        weights=_as_float(ratings, "rating", path, header=False),
        source=path,
        meta=_movie_meta(movies["id"].to_numpy(), movies["title"], movies["genres"]),
        meta_source=movies_path,
        user_meta=user_meta,
        user_meta_ids=user_ids,
        cardinalities=cards,
    )


def _check_ids(frame: pd.DataFrame, columns: list[str], path: Path, *, header: bool) -> None:
    for column in columns:
        empty = (frame[column].str.strip() == "").to_numpy()
        if empty.any():
            line = _line_of(int(np.flatnonzero(empty)[0]), header)
            raise DatasetError(f"{path}: line {line}: empty {column}")


# --- generic ----------------------------------------------------------------------------------


def _find(data_dir: Path, stem: str) -> Path | None:
    for suffix in (".parquet", ".csv"):
        if (data_dir / f"{stem}{suffix}").is_file():
            return data_dir / f"{stem}{suffix}"
    return None


def _read_any(path: Path, columns: list[str], optional: list[str]) -> pd.DataFrame:
    """CSV or Parquet as a frame of strings (parquet timestamps become epoch seconds)."""
    if path.suffix == ".csv":
        head = next(csv.reader([_read_text(path).split("\n", 1)[0].strip()]), [])
        present = [c for c in optional if c in head]
        return _read_table(path, columns + present, sep=",", header=True)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"{path}: cannot read parquet ({exc})") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
    table = table.select(columns + [c for c in optional if c in table.column_names])
    out = {}
    for column in table.column_names:
        values = table[column]
        if pa.types.is_timestamp(values.type):
            values = pc.cast(pc.cast(values, pa.timestamp("s", tz="UTC")), pa.int64())
        elif pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            values = pc.binary_join(values, "|")
        values = pc.fill_null(pc.cast(values, pa.string()), "")
        out[column] = values.to_numpy(zero_copy_only=False).astype(object)
    return pd.DataFrame(out, dtype=object)


def _timestamps(frame: pd.DataFrame, path: Path) -> IntArray:
    """Integer epoch seconds, or ISO 8601 dates (decided by the first row) converted to them."""
    column = frame["timestamp"].str.strip()
    if pd.notna(pd.to_numeric(column.iloc[:1], errors="coerce")).all():
        return _as_int(frame, "timestamp", path, header=True)
    dates = pd.to_datetime(column, errors="coerce", utc=True, format="ISO8601")
    bad = dates.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetError(
            f"{path}: line {row + 2}: timestamp {column.iloc[row]!r} is not an ISO 8601 date"
        )
    seconds = dates.astype("datetime64[s, UTC]").astype(np.int64).to_numpy()
    return np.asarray(seconds, dtype=np.int64)


def _load_generic(data_dir: Path, name: str) -> Dataset:
    path = _find(data_dir, "interactions")
    if path is None:
        raise DatasetError(f"{data_dir / 'interactions.csv'}: file not found (nor .parquet)")
    frame = _read_any(path, ["user_id", "item_id", "timestamp"], ["weight"])
    if len(frame) == 0:
        raise DatasetError(f"{path}: no interactions")
    _check_ids(frame, ["user_id", "item_id"], path, header=True)
    weights = (
        _as_float(frame, "weight", path, header=True)
        if "weight" in frame.columns
        else np.ones(len(frame))
    )
    meta = None
    meta_path = _find(data_dir, "items")
    if meta_path is not None:
        raw = _read_any(meta_path, ["item_id"], ["title", "genres", "year"])
        titles = list(raw["title"]) if "title" in raw.columns else [""] * len(raw)
        genres = _genre_tuples(raw["genres"]) if "genres" in raw.columns else None
        years = np.zeros(len(raw), dtype=np.int64)
        if "year" in raw.columns:
            parsed = pd.to_numeric(raw["year"].str.strip(), errors="coerce")
            years = parsed.fillna(0).to_numpy(dtype=np.int64)
        meta = _meta_frame(raw["item_id"].to_numpy(), titles, genres or [()] * len(raw), years)
    return _assemble(
        name,
        user_ids=frame["user_id"].to_numpy(),
        item_ids=frame["item_id"].to_numpy(),
        timestamps=_timestamps(frame, path),
        weights=weights,
        source=path,
        meta=meta,
        meta_source=meta_path,
        full_catalog=name == "synth",
    )
