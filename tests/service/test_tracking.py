"""The tracker: exposures buffered and written in batches, only feedback attributed."""

from __future__ import annotations

from pathlib import Path

from service.arms import Arm, SingleArmRouter
from service.catalog.bundle import load_bundle
from service.exposures import MemoryExposureLog
from service.recommender import Event, Recommendation, ScoredItem
from service.tracking import ExperimentTracker


def router(bundle_dir: Path) -> SingleArmRouter:
    return SingleArmRouter(Arm("default", load_bundle(bundle_dir)))


def answer(request_id: str, user_id: str, item_id: str = "10") -> Recommendation:
    item = ScoredItem(item_id, 1.0, "title", ("Drama",))
    return Recommendation(request_id, user_id, "v1", "default", [item], None)


async def test_exposures_are_batched_and_all_written(bundle_dir: Path) -> None:
    log = MemoryExposureLog(window_seconds=60, stream_maxlen=1_000)
    tracker = ExperimentTracker(log, linger_seconds=60)  # nothing flushes before drain
    arms = router(bundle_dir)
    for index in range(5):
        await tracker.exposed(arms, [answer(f"r{index}", f"u{index}")])
    assert await log.recent(10) == []  # buffered, off the request path
    await tracker.drain()
    assert [r["request_id"] for r in await log.recent(10)] == [f"r{i}" for i in range(4, -1, -1)]


async def test_a_full_buffer_writes_inline(bundle_dir: Path) -> None:
    log = MemoryExposureLog(window_seconds=60, stream_maxlen=1_000)
    tracker = ExperimentTracker(log, max_pending=3, linger_seconds=60)
    arms = router(bundle_dir)
    for index in range(3):
        await tracker.exposed(arms, [answer(f"r{index}", "u")])
    assert len(await log.recent(10)) == 3  # the third filled the buffer: written at once
    await tracker.drain()


async def test_views_are_not_clicks(bundle_dir: Path) -> None:
    log = MemoryExposureLog(window_seconds=60, stream_maxlen=1_000)
    tracker = ExperimentTracker(log)
    await tracker.exposed(router(bundle_dir), [answer("r1", "u1", "10")])
    found = await tracker.clicked(
        [
            Event("u1", "10", "view", request_id="r1"),
            Event("u1", "10", "click", request_id="r1"),
        ]
    )
    assert found[0] is None
    assert found[1] is not None and found[1].arm == "default" and found[1].counted
    counts = await log.counts("default", ["default"])
    assert counts["default"].clicks == 1
