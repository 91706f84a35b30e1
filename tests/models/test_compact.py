"""`python -m models compact` against a real Redis: the fold, the manifest, the refusal.

Changes are logged with the service's own `RedisChangeLog` (the keys and script the admin API
uses) on the session's tiny bundle; the new bundle is read back with the service's loader.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from models.__main__ import main
from models.export import verify_bundle
from service.catalog.bundle import Bundle, load_bundle
from service.catalog.changes import Change, RedisChangeLog
from service.catalog.editor import held
from service.catalog.live import LiveItem

NEW = {"title": "Brand New Film (2031)", "genres": ["Drama", "Space Opera"], "year": 2031}


def log(redis_url: str, name: str, changes: Sequence[Change]) -> int:
    async def append() -> int:
        changelog = RedisChangeLog(redis_url, timeout_s=2.0)
        try:
            return await changelog.append(name, changes)
        finally:
            await changelog.close()

    return asyncio.run(append())


def upsert(item_id: str, **body: object) -> Change:
    return Change("upsert", item_id, {**NEW, "attributes": {}, **body})


def compact(bundle: Path, redis_url: str, out: Path) -> int:
    args = ["compact", "--bundle", str(bundle), "--redis-url", redis_url, "--out", str(out)]
    return main([*args, "--no-progress"])


@pytest.fixture(scope="module")
def source(bundle_dir: Path) -> Bundle:
    return load_bundle(bundle_dir)


def test_compaction_folds_upserts_deletes_and_hides(
    bundle_dir: Path, source: Bundle, redis_url: str, tmp_path: Path
) -> None:
    ids = [source.catalog.item_ids[row] for row in range(len(source.catalog))]
    doomed, hidden, updated = ids[0], ids[1], ids[2]
    changes = [
        upsert("new-1", attributes={"colour": "red"}),
        upsert("new-2", title="Second Film", genres=["Comedy"], year=None),
        upsert(updated, title="Renamed"),
        Change("delete", doomed, {}),
        Change("available", hidden, {"available": False}),
        upsert("gone", title="Added then deleted"),
        Change("delete", "gone", {}),
    ]
    assert log(redis_url, source.version, changes) == len(changes)

    assert compact(bundle_dir, redis_url, tmp_path / "c1") == 0
    manifest = verify_bundle(tmp_path / "c1")
    new = load_bundle(tmp_path / "c1")
    origin = manifest["compacted_from"]
    assert origin["bundle_version"] == origin["change_log"] == source.version
    assert (origin["catalog_version"], origin["changes_folded"]) == (7, 7)
    assert new.version != source.version and new.manifest.change_log == source.version
    assert len(new.catalog) == len(source.catalog) - 1 + 2
    assert doomed not in new.catalog.rows and "gone" not in new.catalog.rows
    popular = json.loads((tmp_path / "c1" / "popularity.json").read_text())
    assert doomed not in {r["item_id"] for r in popular}

    # the new items: metadata, attributes, and the service's own content-only embedding
    first = held(new, "new-1")
    assert first is not None and first.source == "bundle" and first.attributes == {"colour": "red"}
    assert first.genres == ("Drama", "Space Opera") and first.year == 2031
    row = new.catalog.rows["new-1"]
    expected = source.items.embed([LiveItem("new-1", NEW["title"], ("Drama", "Space Opera"), 2031)])
    np.testing.assert_allclose(new.retriever.item_vector(row), expected[0], atol=1e-6)
    found, _ = new.retriever.search(expected[0], 1)
    assert list(found) == [row]
    renamed = held(new, updated)
    assert renamed is not None and renamed.title == "Renamed"
    assert new.live.item("new-1") is None  # folded: the delta does not hold it

    # hidden: in the catalog, never searched, and shown again by a later change
    state = held(new, hidden)
    assert state is not None and not state.available
    assert new.catalog.rows[hidden] in new.live.tombstoned_rows()
    new.live.set_available(hidden, True)
    assert new.live.is_empty()

    # kept rows keep their learnt tower rows: same user embedding for the same history
    history = [ids[5], ids[9], "new-1", ids[7]]
    old_rows = [source.catalog.rows[i] for i in history if i in source.catalog.rows]
    new_rows = [new.catalog.rows[i] for i in history]
    np.testing.assert_allclose(
        new.encoder.encode(1, new_rows), source.encoder.encode(1, old_rows), atol=1e-6
    )
    # dual tables: new items have none (their complementary answer falls back)
    assert new.complementary is not None and new.complementary.query([row]) is None
    assert new.complementary.query([new.catalog.rows[ids[5]]]) is not None

    # a second compaction continues the same log from the recorded position
    log(redis_url, source.version, [Change("delete", "new-2", {})])
    assert compact(tmp_path / "c1", redis_url, tmp_path / "c2") == 0
    again = load_bundle(tmp_path / "c2")
    chained = again.manifest.compacted_from
    assert chained is not None and chained.bundle_version == new.version
    assert (chained.change_log, chained.catalog_version, chained.changes_folded) == (
        source.version, 8, 1,
    )  # fmt: skip
    assert "new-2" not in again.catalog.rows and "new-1" in again.catalog.rows
    assert not again.live.item(hidden) and again.live.hidden(hidden)


def test_compaction_refuses_a_redis_holding_another_bundles_changes(
    bundle_dir: Path, source: Bundle, redis_url: str, tmp_path: Path
) -> None:
    log(redis_url, "other-bundle-v9", [upsert("x")])
    out = tmp_path / "refused"
    args = ["--bundle", str(bundle_dir), "--redis-url", redis_url, "--out", str(out)]
    done = subprocess.run(  # the real CLI, as an operator runs it
        [sys.executable, "-m", "models", "compact", *args, "--no-progress"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0 and not out.exists()
    assert "other-bundle-v9" in done.stderr and source.version in done.stderr
    assert "refusing to compact" in done.stderr
