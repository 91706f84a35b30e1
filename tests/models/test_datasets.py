"""Loaders on tiny files written in each original layout, the synthetic generator, bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.datasets import (
    DATASETS,
    DatasetError,
    fingerprint,
    load_dataset,
    synthesize,
    write_synthetic,
)
from models.types import Dataset, Interactions


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def _check_invariants(data: Dataset) -> None:
    inter = data.interactions
    assert len(data.items.ids) == len(data.items.titles) == len(data.items.genres)
    assert len(data.items.years) == data.num_items
    order = np.lexsort((inter.timestamp, inter.user))
    assert np.array_equal(order, np.arange(len(inter)))
    assert set(np.unique(inter.item)) == set(range(data.num_items))
    assert set(np.unique(inter.user)) == set(range(data.num_users))
    assert len(data.fingerprint) == 64


@pytest.fixture
def ml_latest(tmp_path: Path) -> Path:
    _write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n10,2,4.0,300\n2,1,3.5,200\n2,30,5.0,100\n10,1,1.0,50\n",
    )
    _write(
        tmp_path / "movies.csv",
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation\n"
        '2,"American President, The (1995)",Comedy|Drama|Romance\n'
        "30,Babylon 5,(no genres listed)\n"
        "99,Never Rated (2001),Drama\n",
    )
    return tmp_path


def test_ml_latest_small_layout(ml_latest: Path) -> None:
    data = load_dataset("ml-latest-small", ml_latest)
    _check_invariants(data)
    assert data.user_ids == ["2", "10"]  # numeric order, not lexicographic
    assert data.items.ids == ["1", "2", "30"]  # the unrated movie 99 is not in the catalog
    assert data.items.titles == ["Toy Story", "American President, The", "Babylon 5"]
    assert data.items.genres == [("Adventure", "Animation"), ("Comedy", "Drama", "Romance"), ()]
    assert data.items.years.tolist() == [1995, 1995, 0]
    inter = data.interactions
    assert inter.user.tolist() == [0, 0, 1, 1]
    assert inter.item.tolist() == [2, 0, 0, 1]
    assert inter.timestamp.tolist() == [100, 200, 50, 300]
    assert inter.weight.tolist() == [5.0, 3.5, 1.0, 4.0]
    assert data.user_features is None


def test_shipped_ml_latest_small_is_the_default() -> None:
    data = load_dataset("ml-latest-small")
    assert (data.num_users, data.num_items, len(data.interactions)) == (610, 9724, 100836)
    _check_invariants(data)


def test_ml_100k_layout(tmp_path: Path) -> None:
    _write(tmp_path / "u.data", "1\t2\t5\t881250949\n2\t1\t3\t881250950\n1\t1\t4\t881250948\n")
    genres = ["unknown", "Action", "Comedy"] + [f"G{i}" for i in range(16)]
    _write(tmp_path / "u.genre", "".join(f"{g}|{i}\n" for i, g in enumerate(genres)) + "\n")
    flags_1 = "|".join(["0", "1", "1"] + ["0"] * 16)
    flags_2 = "|".join(["1"] + ["0"] * 18)
    _write(
        tmp_path / "u.item",
        f"1|Café Society (1995)|01-Jan-1995||http://x|{flags_1}\n"
        f"2|Unknown Date (1997)|||http://y|{flags_2}\n",
        encoding="latin-1",
    )
    _write(tmp_path / "u.user", "1|24|M|technician|85711\n2|53|F|writer|94043\n")
    data = load_dataset("ml-100k", tmp_path)
    _check_invariants(data)
    assert data.items.titles == ["Café Society", "Unknown Date"]
    assert data.items.genres == [("Action", "Comedy"), ()]
    assert data.items.years.tolist() == [1995, 1997]
    assert data.interactions.item.tolist() == [0, 1, 0]
    features = data.user_features
    assert features is not None
    assert features.names == ["age", "gender", "occupation"]
    # 24 -> bucket "18-24" (2), 53 -> "50-55" (6); M=1, F=2; occupations in sorted order.
    assert features.values.tolist() == [[2, 1, 1], [6, 2, 2]]
    assert all(features.values[:, f].max() < c for f, c in enumerate(features.cardinalities))


def test_ml_1m_layout_gzipped_and_latin1(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat.gz").write_bytes(
        gzip.compress(b"1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978300000\n")
    )
    _write(
        tmp_path / "movies.dat",
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "5::Señor Peach (1999)::Comedy\n",
        encoding="latin-1",
    )
    _write(tmp_path / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    data = load_dataset("ml-1m", tmp_path)
    _check_invariants(data)
    assert data.items.ids == ["661", "1193"]
    assert data.items.genres[0] == ("Animation", "Children's", "Musical")
    assert data.items.years.tolist() == [1996, 1975]
    assert data.interactions.weight.tolist() == [5.0, 3.0, 4.0]
    assert data.user_features is not None
    assert data.user_features.values.tolist() == [[1, 2, 11], [7, 1, 17]]


def test_generic_csv_with_metadata_and_iso_dates(tmp_path: Path) -> None:
    _write(
        tmp_path / "interactions.csv",
        "user_id,item_id,timestamp\nu1,b,2024-01-02T00:00:00Z\nu1,a,2024-01-01T00:00:00Z\n",
    )
    _write(tmp_path / "items.csv", "item_id,title,genres,year\na,Alpha,X|Y,2001\nb,Beta,,\n")
    data = load_dataset("generic", tmp_path)
    _check_invariants(data)
    assert data.items.genres == [("X", "Y"), ()]
    assert data.items.years.tolist() == [2001, 0]
    assert data.interactions.item.tolist() == [0, 1]
    assert data.interactions.timestamp.tolist() == [1704067200, 1704153600]
    assert data.interactions.weight.tolist() == [1.0, 1.0]


def test_generic_parquet_with_weights(tmp_path: Path) -> None:
    pd.DataFrame(
        {"user_id": [7, 7, 3], "item_id": [1, 2, 1], "timestamp": [5, 4, 9], "weight": [2, 1, 3]}
    ).to_parquet(tmp_path / "interactions.parquet")
    data = load_dataset("generic", tmp_path)
    _check_invariants(data)
    assert data.user_ids == ["3", "7"]
    assert data.interactions.weight.tolist() == [3.0, 1.0, 2.0]
    assert data.items.titles == ["", ""]


def test_generic_parquet_datetimes_and_genre_lists(tmp_path: Path) -> None:
    stamps = pd.to_datetime(["2024-01-01T01:00:00+01:00", "2024-01-02T00:00:00Z"], utc=True)
    pd.DataFrame({"user_id": ["u", "u"], "item_id": ["b", "a"], "timestamp": stamps}).to_parquet(
        tmp_path / "interactions.parquet"
    )
    pd.DataFrame(
        {"item_id": ["a", "b"], "title": ["A", "B"], "genres": [["X", "Y"], []], "year": [1, 2]}
    ).to_parquet(tmp_path / "items.parquet")
    data = load_dataset("generic", tmp_path)
    assert data.interactions.timestamp.tolist() == [1704067200, 1704153600]
    assert data.interactions.item.tolist() == [1, 0]
    assert data.items.genres == [("X", "Y"), ()]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "interactions.csv: file not found"),
        ({"interactions.csv": "user_id,item_id,timestamp\n"}, "interactions.csv: no interactions"),
        ({"interactions.csv": "user_id,item_id\nu,i\n"}, "missing column(s) timestamp"),
        (
            {"interactions.csv": "user_id,item_id,timestamp\nu,i,1\nu,j,soon\n"},
            "interactions.csv: line 3: timestamp 'soon' is not an integer",
        ),
        (
            {"interactions.csv": "user_id,item_id,timestamp\nu,i,2024-01-01\nu,j,later\n"},
            "interactions.csv: line 3: timestamp 'later' is not an ISO 8601 date",
        ),
        (
            {"interactions.csv": "user_id,item_id,timestamp\nu,i,1\nu,j,2,3,4\n"},
            "interactions.csv: line 3: wrong number of fields",
        ),
        (
            {
                "interactions.csv": "user_id,item_id,timestamp\nu,i,1\nu,zz,2\n",
                "items.csv": "item_id,title\ni,I\n",
            },
            "items.csv: 1 interacted item(s) missing from the metadata, e.g. item_id 'zz'",
        ),
    ],
)
def test_generic_bad_input(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        _write(tmp_path / name, text)
    with pytest.raises(DatasetError) as caught:
        load_dataset("generic", tmp_path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_movielens_bad_input(tmp_path: Path, ml_latest: Path) -> None:
    with pytest.raises(DatasetError, match=r"u\.data: file not found"):
        load_dataset("ml-100k", tmp_path)
    (ml_latest / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,x,5\n")
    with pytest.raises(DatasetError, match=r"ratings\.csv: line 2: rating 'x' is not a number"):
        load_dataset("ml-latest-small", ml_latest)
    (ml_latest / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0\n")
    with pytest.raises(DatasetError, match=r"ratings\.csv: line 2: timestamp '' is not an int"):
        load_dataset("ml-latest-small", ml_latest)
    (ml_latest / "movies.csv").unlink()
    with pytest.raises(DatasetError, match=r"movies\.csv: file not found"):
        load_dataset("ml-latest-small", ml_latest)


def test_unknown_name_and_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'netflix'"):
        load_dataset("netflix", tmp_path)
    with pytest.raises(DatasetError, match="data directory not found"):
        load_dataset("ml-1m", tmp_path / "absent")
    with pytest.raises(DatasetError, match="needs --data-dir"):
        load_dataset("ml-100k")
    assert "synth" in DATASETS


def test_synthesize_is_seeded_and_structured() -> None:
    a = synthesize(200, 500, seed=3, interactions_per_user=20, num_clusters=5)
    b = synthesize(200, 500, seed=3, interactions_per_user=20, num_clusters=5)
    c = synthesize(200, 500, seed=4, interactions_per_user=20, num_clusters=5)
    order = np.lexsort((a.interactions.timestamp, a.interactions.user))
    assert np.array_equal(order, np.arange(len(a.interactions)))
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.num_users == 200 and a.num_items == 500
    inter = a.interactions
    assert np.unique(inter.user * 500 + inter.item).size == len(inter)  # no repeated pairs
    assert 15 < len(inter) / 200 < 40
    # Zipf: the 5% most popular items take a large share of the interactions.
    counts = np.sort(np.bincount(inter.item, minlength=500))[::-1]
    assert counts[:25].sum() > 0.3 * counts.sum()
    # Clusters: a user's items share genres far more often than random pairs of items do.
    genre_of = [frozenset(g) for g in a.items.genres]
    same_user = np.mean(
        [
            bool(genre_of[x] & genre_of[y])
            for x, y in zip(inter.item[:-1], inter.item[1:], strict=True)
        ]
    )
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, 500, (2000, 2))
    random_pairs = np.mean([bool(genre_of[x] & genre_of[y]) for x, y in pairs])
    assert same_user > random_pairs + 0.2


def test_synthesize_scales_to_large_catalogs() -> None:
    data = synthesize(2000, 300_000, seed=1, interactions_per_user=10)
    assert data.num_items == 300_000
    assert len(data.items.titles) == 300_000 and data.items.years.min() >= 1900


def test_write_synthetic_round_trip(tmp_path: Path) -> None:
    data = synthesize(50, 80, seed=2, interactions_per_user=10, num_clusters=4)
    write_synthetic(data, tmp_path / "synth")
    assert sorted(p.name for p in (tmp_path / "synth").iterdir()) == [
        "interactions.parquet",
        "items.parquet",
    ]
    loaded = load_dataset("synth", tmp_path / "synth")
    assert loaded.fingerprint == data.fingerprint
    assert (
        loaded.items.ids == data.items.ids
        and loaded.items.titles == data.items.titles
        and loaded.items.genres == data.items.genres
        and np.array_equal(loaded.items.years, data.items.years)
    )
    assert np.array_equal(loaded.interactions.item, data.interactions.item)
    assert np.array_equal(loaded.interactions.timestamp, data.interactions.timestamp)
    with pytest.raises(DatasetError, match="already exists"):
        write_synthetic(data, tmp_path / "synth")
    assert [p.name for p in tmp_path.iterdir()] == ["synth"]  # no temporary left behind


def test_fingerprint_tracks_the_rows() -> None:
    inter = Interactions(
        user=np.array([0, 0]),
        item=np.array([0, 1]),
        timestamp=np.array([1, 2]),
        weight=np.ones(2, dtype=np.float32),
    )
    base = fingerprint(["u"], ["a", "b"], inter)
    moved = Interactions(inter.user, inter.item, np.array([1, 3]), inter.weight)
    assert fingerprint(["u"], ["a", "b"], moved) != base
    assert fingerprint(["u"], ["a", "c"], inter) != base
    assert base == fingerprint(["u"], ["a", "b"], inter)
