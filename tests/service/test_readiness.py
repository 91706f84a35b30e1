"""With several workers, /readyz answers for the pod: 200 only while every worker is ready."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.readiness import WorkerMarks
from service.settings import Settings
from tests.service.conftest import serve


async def _status(
    client: httpx.AsyncClient, expected: int, reason: str | None = None, seconds: float = 10
) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while True:
        response = await client.get("/readyz")
        body = dict(response.json())
        if response.status_code == expected and (reason is None or body["reason"] == reason):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


@pytest.fixture
def other() -> Iterator[subprocess.Popen[bytes]]:
    """A live process standing in for the pod's second worker."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait(timeout=10)


async def test_the_pod_is_ready_only_while_every_worker_is(
    bundle_dir: Path, tmp_path: Path, other: subprocess.Popen[bytes]
) -> None:
    marks = tmp_path / "workers"
    settings = Settings(bundle=bundle_dir, workers=2, worker_state_dir=marks)
    async with serve(settings) as (_, client):
        body = await _status(client, 503, "1 of 2 workers ready")  # this one marked itself
        assert body["workers"] == {"ready": 1, "expected": 2}

        (marks / f"{other.pid}.ready").write_text("ready\n")
        body = await _status(client, 200)
        assert body["workers"] == {"ready": 2, "expected": 2}

        other.kill()  # a worker dies: its mark no longer counts
        other.wait(timeout=10)
        await _status(client, 503, "1 of 2 workers ready")
    assert [p.stem for p in marks.glob("*.ready")] == [str(other.pid)]  # ours went with us


def test_one_worker_needs_no_marks(tmp_path: Path) -> None:
    marks = WorkerMarks(tmp_path, expected=1)
    marks.mark_ready()
    assert marks.ready() == 1
    assert not any(tmp_path.iterdir())
