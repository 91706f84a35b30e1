"""The request path's side of experiments: exposures out, clicks in, reports, metrics by arm."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from service import metrics
from service.arms import ArmRouter
from service.errors import StoreUnavailableError
from service.experiments import ExperimentRouter
from service.exposures import Attribution, Click, Exposure, ExposureLog
from service.recommender import Event, Recommendation
from service.stats import ExperimentReport, build_report

log = logging.getLogger(__name__)

NOT_FEEDBACK = frozenset({"view"})
"""Event types that say an item was seen, not chosen: never attributed as clicks."""


def experiment_of(router: ArmRouter) -> str:
    return router.config.name if isinstance(router, ExperimentRouter) else router.default.name


class ExperimentTracker:
    """The request path's side of experiments: exposures out, clicks in, metrics by arm.

    Tracking never fails a request: the answer is already computed (recommend) or stored
    (events) when it runs, so a store outage is counted and logged, not raised. Exposures are
    buffered and written after the response, one script call per `linger_seconds` batch: per
    request, a write of its own cost more CPU in redis-py than the rest of a cached recommend.
    Clicks and reports first flush this worker's buffer, so a click is never attributed before
    its exposure exists. Past `max_pending` buffered exposures, `exposed` writes inline.
    """

    def __init__(
        self, exposures: ExposureLog, *, max_pending: int = 1_000, linger_seconds: float = 0.002
    ) -> None:
        self.exposures = exposures
        self._max_pending = max_pending
        self._linger = linger_seconds
        self._buffer: list[Exposure] = []
        self._flusher: asyncio.TimerHandle | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def exposed(self, router: ArmRouter, answers: Sequence[Recommendation]) -> None:
        """Count the assignments now; record the exposures in the background."""
        experiment = experiment_of(router)
        now = time.time()
        for answer in answers:
            self._buffer.append(
                Exposure(
                    request_id=answer.request_id,
                    user_id=answer.user_id,
                    experiment=experiment,
                    arm=answer.arm,
                    bundle_version=answer.model_version,
                    items=tuple(item.item_id for item in answer.items),
                    timestamp=now,
                )
            )
            metrics.EXPERIMENT_ASSIGNMENTS.labels(experiment, answer.arm).inc()
        if len(self._buffer) >= self._max_pending:  # the store is slow: push back on requests
            await self._record(self._take())
        elif self._flusher is None:
            self._flusher = asyncio.get_running_loop().call_later(self._linger, self._flush)

    def _flush(self) -> None:
        self._flusher = None
        batch = self._take()
        if batch:
            task = asyncio.get_running_loop().create_task(self._record(batch))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _take(self) -> list[Exposure]:
        batch, self._buffer = self._buffer, []
        return batch

    async def drain(self) -> None:
        """Write the buffered exposures and wait for the writes already in flight (clicks,
        reports, shutdown). Only those: waiting until nothing is pending never ends while
        recommends keep exposing (it stalled clicks for seconds in the soak run)."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        in_flight = list(self._pending)
        await self._record(self._take())
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _record(self, exposures: list[Exposure]) -> None:
        if not exposures:
            return
        try:
            await self.exposures.record(exposures)
        except StoreUnavailableError as error:
            metrics.EXPERIMENT_TRACKING_ERRORS.labels("exposure").inc(len(exposures))
            log.warning("exposures not recorded: %s", error.message)
            return
        for exposure in exposures:
            metrics.EXPERIMENT_EXPOSURES.labels(exposure.experiment, exposure.arm).inc()

    async def clicked(self, events: Sequence[Event]) -> list[Attribution | None]:
        """Attribute the feedback among `events` (None for views, which are not clicks)."""
        feedback = [i for i, event in enumerate(events) if event.type not in NOT_FEEDBACK]
        if not feedback:
            return [None] * len(events)
        found = await self._attribute([events[i] for i in feedback])
        attributions: list[Attribution | None] = [None] * len(events)
        for i, attribution in zip(feedback, found, strict=True):
            attributions[i] = attribution
        return attributions

    async def _attribute(self, events: Sequence[Event]) -> list[Attribution | None]:
        await self.drain()
        clicks = [Click(event.user_id, event.item_id, event.request_id) for event in events]
        try:
            attributions = await self.exposures.attribute(clicks)
        except StoreUnavailableError as error:
            metrics.EXPERIMENT_TRACKING_ERRORS.labels("click").inc(len(clicks))
            log.warning("clicks not attributed: %s", error.message)
            return [None] * len(clicks)
        for found in attributions:
            if found is not None and found.counted:
                metrics.EXPERIMENT_CLICKS.labels(found.experiment, found.arm).inc()
        return attributions

    async def report(self, router: ArmRouter) -> ExperimentReport:
        """The current experiment's report; its counts come from the (shared) log."""
        if isinstance(router, ExperimentRouter):
            config = router.config
            weights = {arm.name: arm.weight for arm in config.arms}
            name, control = config.name, config.control
        else:
            name = control = router.default.name
            weights = {name: 1.0}
        await self.drain()
        counts = await self.exposures.counts(name, weights)
        return build_report(experiment=name, weights=weights, control=control, counts=counts)
