"""Exposure log and click attribution: the same tests for Redis (a real single node and a real
3-master cluster) and in-process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.cluster import RedisCluster as RedisClusterSync

from service.errors import StoreUnavailableError
from service.exposures import (
    Click,
    Exposure,
    ExposureLog,
    MemoryExposureLog,
    RedisExposureLog,
)
from service.settings import Settings
from service.stats import ArmCounts, build_report
from service.store import keys
from service.store.breaker import CircuitBreaker
from service.store.clients import RedisClient, open_client
from tests.service.redis_server import free_port

MakeLog = Callable[..., ExposureLog]


def client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)


@pytest.fixture(params=["memory", "redis", "cluster"])
async def make_log(request: pytest.FixtureRequest) -> AsyncIterator[MakeLog]:
    """Builds logs sharing one backend (one prefix on one Redis): several 'workers'."""
    clients: list[RedisClient] = []
    if request.param == "memory":
        shared: dict[float, MemoryExposureLog] = {}

        def make(
            window_seconds: float = 60.0, stream_maxlen: int = 1000, shards: int = 16
        ) -> ExposureLog:
            return shared.setdefault(
                window_seconds,
                MemoryExposureLog(window_seconds=window_seconds, stream_maxlen=stream_maxlen),
            )

        yield make
        return
    cluster = request.param == "cluster"
    url = request.getfixturevalue("cluster_url" if cluster else "redis_url")
    settings = Settings(redis_url=url, redis_mode="cluster" if cluster else "single")
    prefix = f"test:{uuid.uuid4().hex}:"
    for _ in range(2):  # two clients: two "workers"
        clients.append(open_client(settings, connect_timeout=1.0, max_connections=16))
        if isinstance(clients[-1], RedisCluster):
            await clients[-1].initialize()  # the service discovers in the background
    made = 0

    def make_redis(
        window_seconds: float = 60.0, stream_maxlen: int = 1000, shards: int = 16
    ) -> ExposureLog:
        nonlocal made
        made += 1
        return RedisExposureLog(
            clients[made % 2],
            timeout_seconds=1.0,
            breaker=CircuitBreaker(failures=3, cooldown_seconds=60),
            window_seconds=window_seconds,
            stream_maxlen=stream_maxlen,
            prefix=prefix,
            shards=shards,
        )

    yield make_redis
    for opened in clients:
        await opened.aclose()


def exposure(
    request_id: str,
    user_id: str = "u1",
    arm: str = "a",
    items: tuple[str, ...] = ("10", "20", "30"),
    experiment: str = "exp",
) -> Exposure:
    return Exposure(
        request_id=request_id,
        user_id=user_id,
        experiment=experiment,
        arm=arm,
        bundle_version="bundle-v1",
        items=items,
        timestamp=1_700_000_000.5,
    )


async def test_exposure_record_shape_and_counts(make_log: MakeLog) -> None:
    log = make_log()
    await log.record([exposure("r1")])
    await log.record([exposure("r2", items=("40",))])

    records = await log.recent(10)
    assert [record["request_id"] for record in records] == ["r2", "r1"]
    assert records[1] == {
        "request_id": "r1",
        "user_id": "u1",
        "experiment": "exp",
        "arm": "a",
        "bundle_version": "bundle-v1",
        "items": [
            {"item_id": "10", "position": 1},
            {"item_id": "20", "position": 2},
            {"item_id": "30", "position": 3},
        ],
        "timestamp": 1_700_000_000.5,
    }
    counts = await log.counts("exp", ["a", "b"])
    assert counts == {"a": ArmCounts(users=1, exposures=2), "b": ArmCounts()}


async def test_click_with_request_id_goes_to_that_exposure(make_log: MakeLog) -> None:
    log = make_log()
    await log.record([exposure("r1", arm="a")])
    await log.record([exposure("r2", arm="a", items=("99",))])

    first, again, second = await log.attribute(
        [Click("u1", "20", "r1"), Click("u1", "20", "r1"), Click("u1", "30", "r1")]
    )
    assert first is not None
    assert (first.experiment, first.arm, first.request_id, first.position) == ("exp", "a", "r1", 2)
    assert first.counted
    assert again is not None
    assert not again.counted
    assert second is not None
    assert second.position == 3
    assert second.counted
    counts = await log.counts("exp", ["a"])
    assert counts["a"] == ArmCounts(users=1, exposures=2, clicks=2, clicked_exposures=1)


async def test_clicks_that_match_no_exposure_are_not_attributed(make_log: MakeLog) -> None:
    log = make_log()
    await log.record([exposure("r1", user_id="u1")])
    results = await log.attribute(
        [
            Click("u1", "77", "r1"),  # item not exposed in r1
            Click("u2", "10", "r1"),  # another user's request id
            Click("u1", "10", "missing"),  # unknown request id
            Click("u3", "10"),  # user never exposed
        ]
    )
    assert results == [None, None, None, None]
    assert await log.attribute([]) == []
    assert (await log.counts("exp", ["a"]))["a"] == ArmCounts(users=1, exposures=1)


async def test_click_without_request_id_uses_last_exposure_in_window(make_log: MakeLog) -> None:
    log = make_log()
    await log.record([exposure("r1", user_id="u1", arm="a", items=("10", "20"))])
    await log.record([exposure("r2", user_id="u1", arm="b", items=("30", "40"))])

    in_last, in_older = await log.attribute([Click("u1", "40"), Click("u1", "10")])
    assert in_last is not None
    assert (in_last.arm, in_last.request_id, in_last.position) == ("b", "r2", 2)
    assert in_older is None
    counts = await log.counts("exp", ["a", "b"])
    assert counts["a"] == ArmCounts(users=1, exposures=1)
    assert counts["b"] == ArmCounts(users=1, exposures=1, clicks=1, clicked_exposures=1)


async def test_attribution_window_expires(make_log: MakeLog) -> None:
    log = make_log(window_seconds=0.25)
    await log.record([exposure("r1")])
    assert (await log.attribute([Click("u1", "10")]))[0] is not None
    await asyncio.sleep(0.4)
    assert await log.attribute([Click("u1", "20"), Click("u1", "30", "r1")]) == [None, None]
    assert (await log.counts("exp", ["a"]))["a"].clicks == 1


async def test_workers_share_counts(make_log: MakeLog) -> None:
    worker_1, worker_2 = make_log(), make_log()
    await worker_1.record([exposure("r1", user_id="u1", arm="a")])
    await worker_2.record([exposure("r2", user_id="u2", arm="b")])
    await worker_2.record([exposure("r3", user_id="u1", arm="a", experiment="other")])
    await worker_2.attribute([Click("u1", "10", "r1")])
    await worker_1.attribute([Click("u2", "30")])

    for worker in (worker_1, worker_2):
        assert await worker.counts("exp", ["a", "b"]) == {
            "a": ArmCounts(users=1, exposures=1, clicks=1, clicked_exposures=1),
            "b": ArmCounts(users=1, exposures=1, clicks=1, clicked_exposures=1),
        }
        assert (await worker.counts("other", ["a"]))["a"] == ArmCounts(users=1, exposures=1)


async def test_report_from_logged_traffic(make_log: MakeLog) -> None:
    """20 exposures per arm; arm a clicked on 4, arm b on 10; hand-computed statistics."""
    log = make_log()
    for index in range(20):
        await log.record([exposure(f"a{index}", user_id=f"ua{index % 10}", arm="a")])
        await log.record([exposure(f"b{index}", user_id=f"ub{index}", arm="b")])
    await log.attribute([Click(f"ua{index % 10}", "10", f"a{index}") for index in range(4)])
    await log.attribute([Click(f"ub{index}", "20", f"b{index}") for index in range(10)])
    counts = await log.counts("exp", ["a", "b"])
    report = build_report(
        experiment="exp", weights={"a": 1.0, "b": 1.0}, control="a", counts=counts
    )
    a, b = report.arms
    assert (a.users, a.exposures, a.clicks, a.ctr) == (10, 20, 4, 0.2)
    assert (b.users, b.exposures, b.clicks, b.ctr) == (20, 20, 10, 0.5)
    assert b.lift == pytest.approx(1.5)
    # pooled p = 14/40, se = sqrt(0.35·0.65·0.1) = 0.150831, z = 0.3 / se = 1.98898
    assert b.z == pytest.approx(1.98898, abs=1e-5)
    assert b.p_value == pytest.approx(0.046706, abs=1e-5)
    # users 10 vs 20 at 50/50: chi² = 2·5²/15 = 3.3333
    assert report.srm.chi_square == pytest.approx(10 / 3)


async def test_stream_is_bounded(make_log: MakeLog) -> None:
    log = make_log(stream_maxlen=50, shards=2)  # 25 a shard, trimmed ~ (whole stream nodes)
    await log.record([exposure(f"r{index}", user_id=str(index)) for index in range(600)])
    kept = await log.recent(10_000)
    assert 50 <= len(kept) < 600
    # newest first in each shard; across shards by stream id (ms), so within one ms any shard's
    assert {kept[0]["request_id"], kept[1]["request_id"]} <= {f"r{n}" for n in range(590, 600)}
    assert (await log.counts("exp", ["a"]))["a"] == ArmCounts(users=600, exposures=600)
    assert (await log.attribute([Click("599", "30")]))[0] is not None


async def test_one_experiment_spreads_over_shards_and_the_report_sums_them(
    make_log: MakeLog, request: pytest.FixtureRequest
) -> None:
    log = make_log(shards=8)
    users = [f"user-{n}" for n in range(64)]
    await log.record([exposure(f"r{n}", user_id=u, arm="ab"[n % 2]) for n, u in enumerate(users)])
    clicks = [Click(u, "10") for u in users[:10]] + [Click(users[0], "20", "r0")]
    attributed = await log.attribute(clicks)
    assert [a.request_id if a else None for a in attributed] == [
        *(f"r{n}" for n in range(10)), "r0",
    ]  # fmt: skip
    assert await log.counts("exp", ["a", "b"]) == {
        "a": ArmCounts(users=32, exposures=32, clicks=6, clicked_exposures=5),
        "b": ArmCounts(users=32, exposures=32, clicks=5, clicked_exposures=5),
    }
    assert {r["request_id"] for r in await log.recent(100)} == {f"r{n}" for n in range(64)}
    shards = {keys.shard_of(u, 8) for u in users}
    assert len(shards) == 8  # every shard took writes
    if "cluster" in request.node.callspec.id:  # and the shards sit on more than one master
        cluster = request.getfixturevalue("redis_cluster")
        with RedisClusterSync.from_url(cluster.url) as sync:
            nodes = {sync.get_node_from_key(f"{keys.shard_tag(s)}exposures").name for s in shards}
        assert len(nodes) >= 2


async def test_redis_down_is_a_store_error_and_opens_the_breaker() -> None:
    dead = aioredis.Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2, socket_connect_timeout=0.2
    )
    breaker = CircuitBreaker(failures=2, cooldown_seconds=60)
    log = RedisExposureLog(dead, timeout_seconds=0.5, breaker=breaker)
    for _ in range(2):
        with pytest.raises(StoreUnavailableError, match="exposure write"):
            await log.record([exposure("r1")])
    assert breaker.state == "open"
    with pytest.raises(StoreUnavailableError, match="breaker open"):
        await log.attribute([Click("u1", "10")])
    await dead.aclose()
