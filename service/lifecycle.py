"""Bundle lifecycle: load every arm's bundle, verify, warm up, then swap the arms in one step.

Loading runs in worker threads so the event loop keeps serving the current arms meanwhile. Arms
naming the same bundle directory share one loaded `Bundle`. Nothing is swapped until every arm
has verified and answered a warm-up query; any failure leaves the serving arms untouched. One
reload at a time per process: a second one is refused (409) rather than queued, so an operator
never wonders which of two reloads won (a reload announced by another worker, see `broadcast`,
waits its turn instead). SIGHUP runs the same reload as the admin endpoint.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service import metrics
from service.arms import Arm, ArmTable
from service.catalog.bundle import Bundle, load_bundle
from service.catalog.feeds import LiveFeeds
from service.catalog.retriever import DEFAULT_EXACT_MAX_ROWS, SearchSettings
from service.errors import BundleError, NotFoundError, RequestError
from service.experiments import (
    ArmConfig,
    ExperimentConfig,
    ExperimentConfigError,
    ExperimentRouter,
    UnknownArmError,
    load_experiment,
)
from service.pages import DEFAULT_PAGES, PageMemo
from service.policies import RankingPolicy, rank

log = logging.getLogger(__name__)
_WARM_UP_K = 10
Announce = Callable[[str | None, Path | None], Awaitable[None]]


class ReloadInProgressError(RequestError):
    status_code = 409
    code = "reload_in_progress"


class ReloadRejectedError(RequestError):
    """The new config or a bundle failed; the arms that were serving still are."""

    status_code = 422
    code = "reload_rejected"


def _has_manifest(path: Path) -> bool:
    """False too when the OS refuses the path (over PATH_MAX once joined to the base)."""
    try:
        return (path / "manifest.json").is_file()
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class ReloadOutcome:
    router: ExperimentRouter
    loaded: tuple[str, ...]
    """Bundle directories read from disk by this reload (shared or kept ones excluded)."""
    seconds: float


def search_settings(arm: ArmConfig, default_overfetch: float) -> SearchSettings:
    params = arm.params
    return SearchSettings(
        overfetch=params.overfetch if params.overfetch is not None else default_overfetch,
        ef_search=params.ef_search,
        nprobe=params.nprobe,
    )


def ranking_policy(arm: ArmConfig) -> RankingPolicy:
    params = arm.params
    policy = RankingPolicy(name=params.policy)
    if params.popularity_weight is not None:
        policy = dataclasses.replace(policy, popularity_weight=params.popularity_weight)
    if params.diversity is not None:
        policy = dataclasses.replace(policy, diversity=params.diversity)
    return policy


def warm_up(arm: Arm) -> None:
    """Run the arm's request path once (user tower, then its search) and check the output."""
    bundle = arm.bundle
    known_user = 1 if bundle.catalog.users else 0
    history = bundle.catalog.popularity_rows[:5].tolist()
    vectors = bundle.encoder.encode_many([0, known_user], [[], history])
    if vectors.shape != (2, bundle.encoder.dim) or not np.isfinite(vectors).all():
        raise BundleError(
            f"warm-up: user tower returned shape {vectors.shape} or non-finite values"
        )
    k = min(_WARM_UP_K, bundle.retriever.size)
    rows, scores = rank(
        bundle, arm.policy, arm.search, vectors[1], k, excluded=set(history), allowed=None
    )
    if len(rows) == 0 or not np.isfinite(scores).all():
        raise BundleError("warm-up: the index returned no items or non-finite scores")
    dual = bundle.complementary
    query = None if dual is None else dual.query(history)
    if dual is not None and query is not None:
        rows, scores = dual.retriever.search(query, k, excluded=set(history))
        if len(rows) == 0 or not np.isfinite(scores).all():
            raise BundleError("warm-up: the complementary index returned no items")


def _load(path: Path, exact_max_rows: int) -> Bundle:
    try:
        return load_bundle(path, exact_max_rows=exact_max_rows)
    except BundleError as error:
        raise BundleError(f"bundle {path}: {error.message}") from error


async def build_router(
    config: ExperimentConfig,
    *,
    default_overfetch: float,
    exact_max_rows: int = DEFAULT_EXACT_MAX_ROWS,
    keep: Mapping[Path, Bundle] | None = None,
    page_memo_size: int = DEFAULT_PAGES,
) -> tuple[ExperimentRouter, tuple[str, ...]]:
    """Load (or `keep`) each distinct bundle once, build and warm up every arm."""
    bundles = dict(keep or {})
    loaded = []
    for arm_config in config.arms:
        if arm_config.bundle not in bundles:
            bundles[arm_config.bundle] = await asyncio.to_thread(
                _load, arm_config.bundle, exact_max_rows
            )
            loaded.append(str(arm_config.bundle))
    arms = {
        arm.name: Arm(
            name=arm.name,
            bundle=bundles[arm.bundle],
            search=search_settings(arm, default_overfetch),
            policy=ranking_policy(arm),
            pages=PageMemo(page_memo_size),
            related=PageMemo(page_memo_size),
        )
        for arm in config.arms
    }
    for arm in arms.values():
        try:
            await asyncio.to_thread(warm_up, arm)
        except BundleError as error:
            raise BundleError(f"arm {arm.name!r}: {error.message}") from error
    return ExperimentRouter(config, arms), tuple(loaded)


def settle_heap() -> None:
    """Collect once, then keep what is loaded out of every later collection.

    A full collection walks every container object: ~26 ms for the demo bundle alone, a pause
    that blew the Redis deadline of every request in flight under load (and so opened the
    breaker on a healthy Redis). Loaded bundles never change, so freezing them is safe; each
    reload unfreezes first, so an old bundle's reference cycles are still collected.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class Reloader:
    """Builds the arms at startup and on reload, and swaps them into the `ArmTable`."""

    def __init__(
        self,
        table: ArmTable,
        *,
        experiments: Path | None,
        bundle: Path | None,
        default_overfetch: float,
        exact_max_rows: int = DEFAULT_EXACT_MAX_ROWS,
        feeds: LiveFeeds | None = None,
        page_memo_size: int = DEFAULT_PAGES,
    ) -> None:
        self._table = table
        self._page_memo_size = page_memo_size
        self._feeds = feeds
        """Each served bundle's live catalog: replayed before the swap, retired after it."""
        self._exact_max_rows = exact_max_rows
        self._experiments = experiments
        self._bundle = bundle
        self._overfetch = default_overfetch
        self.announce: Announce | None = None
        """Told about every reload this worker started (admin, SIGHUP) once it succeeded."""
        self._lock = asyncio.Lock()
        self.last_outcome: ReloadOutcome | None = None
        self.last_error: str | None = None

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def read_config(self) -> ExperimentConfig:
        if self._experiments is not None:
            return load_experiment(self._experiments)
        if self._bundle is not None:
            return ExperimentConfig.implicit(self._bundle.resolve())
        raise ExperimentConfigError("set DUET_EXPERIMENTS or DUET_BUNDLE")

    def _current(self) -> ExperimentRouter:
        router = self._table.current
        if not isinstance(router, ExperimentRouter):
            raise ReloadRejectedError("no arms are loaded yet: reload the whole config first")
        return router

    def _one_arm(
        self, arm: str | None, bundle: Path | None
    ) -> tuple[ExperimentConfig, dict[Path, Bundle]]:
        """The current config with one arm's bundle replaced; the other arms' bundles kept."""
        router = self._current()
        config = router.config
        if arm is None:
            if len(config.arms) != 1:
                raise ReloadRejectedError(
                    f"name the arm to reload; arms: {', '.join(config.arm_names)}", field="arm"
                )
            arm = config.arms[0].name
        if arm not in config.arm_names:
            raise UnknownArmError(arm, config.arm_names, field="arm")
        target = config.arm(arm)
        if bundle is not None:
            base = config.source.resolve().parent if config.source else Path.cwd()
            path = (bundle if bundle.is_absolute() else base / bundle).resolve()
            if not _has_manifest(path):  # nothing there: 404, not a rejection
                raise NotFoundError(f"bundle {path}: no manifest.json there", field="bundle")
            target = dataclasses.replace(target, bundle=path)
        arms = tuple(target if a.name == arm else a for a in config.arms)
        keep = {
            a.bundle: router.arms[a.name].bundle
            for a in config.arms
            if a.name != arm and a.bundle != target.bundle
        }
        return dataclasses.replace(config, arms=arms), keep

    async def reload(
        self,
        *,
        arm: str | None = None,
        bundle: Path | None = None,
        wait: bool = False,
        announce: bool = True,
    ) -> ReloadOutcome:
        """Re-read the config (no arguments) or replace one arm's bundle; swap only on success.

        Raises ReloadInProgressError while another reload runs (unless `wait`) and
        ReloadRejectedError when the config or a bundle is invalid; in both cases the serving
        arms are unchanged. `announce=False` for reloads another worker asked for.
        """
        if self._lock.locked() and not wait:
            raise ReloadInProgressError("a bundle reload is already running; retry when it ends")
        async with self._lock:
            outcome = await self._reload(arm, bundle)
        if announce and self.announce is not None:
            await self.announce(arm, bundle)
        return outcome

    async def _reload(self, arm: str | None, bundle: Path | None) -> ReloadOutcome:
        started = time.perf_counter()
        try:
            keep: dict[Path, Bundle] = {}
            if arm is None and bundle is None:
                config = self.read_config()
            else:
                config, keep = self._one_arm(arm, bundle)
            router, loaded = await build_router(
                config,
                default_overfetch=self._overfetch,
                exact_max_rows=self._exact_max_rows,
                keep=keep,
                page_memo_size=self._page_memo_size,
            )
        except (BundleError, ExperimentConfigError) as error:
            self.last_error = error.message
            metrics.BUNDLE_RELOADS.labels("rejected").inc()
            log.warning("reload rejected, current arms keep serving: %s", error.message)
            raise ReloadRejectedError(error.message) from error
        bundles = [a.bundle for a in router.arms.values()]
        if self._feeds is not None:
            await self._feeds.follow(bundles)
        self._table.swap(router)
        if self._feeds is not None:
            await self._feeds.retire(bundles)
        settle_heap()
        outcome = ReloadOutcome(router, loaded, time.perf_counter() - started)
        self.last_outcome, self.last_error = outcome, None
        metrics.BUNDLE_RELOADS.labels("swapped").inc()
        metrics.BUNDLE_INFO.clear()
        for name, serving in router.arms.items():
            metrics.BUNDLE_INFO.labels(name, serving.bundle.version).set(1)
        log.info(
            "arms swapped: %s in %.2fs",
            ", ".join(f"{a.name}={a.bundle.version}" for a in router.arms.values()),
            outcome.seconds,
        )
        return outcome

    async def reload_logged(self) -> None:
        """For SIGHUP: no caller to answer, so outcomes go to the log."""
        try:
            await self.reload()
        except RequestError as error:
            log.warning("SIGHUP reload not done: %s", error.message)


def install_sighup(reloader: Reloader) -> Callable[[], None]:
    """Reload on SIGHUP in the running loop; returns the function that uninstalls it.

    Signal handlers need the main thread: elsewhere (a test client's thread) this is a no-op.
    """
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def on_signal() -> None:
        task = loop.create_task(reloader.reload_logged())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def uninstall() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_signal)
    except (ValueError, RuntimeError, NotImplementedError) as error:
        log.info("SIGHUP reload not available here: %s", error)
        return lambda: None
    return uninstall
