"""bench/live_drill.py end to end, briefly: two workers, its own Redis, the targets checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.ops.conftest import REPO


def test_a_short_drill_sees_every_upsert_at_once_and_no_deleted_item(
    bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "drill.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "live_drill.py"), "--bundle", str(bundle),
         "--upserts", "6", "--deletes", "3", "--delete-requests", "90", "--load-threads", "2",
         "--max-seconds", "120", "--json", str(out)],
        capture_output=True, text=True, timeout=240, check=False, cwd=REPO,
    )  # fmt: skip
    print(done.stdout, done.stderr)
    assert done.returncode == 0
    result = json.loads(out.read_text())
    assert result["workers_answering"] == 2
    upserts = result["upsert_to_retrievable"]
    assert upserts["count"] == 6 and upserts["seen_by_the_first_batch_after_2xx"] == 6
    deletes = result["delete_to_never_served"]
    assert deletes["count"] == 3 and deletes["requests_after_2xx"] >= 90
    assert deletes["appearances"] == 0
    assert result["recommend_load"]["requests"] > 0 and result["recommend_load"]["failed"] == 0
