"""`create_app(settings)`: the app factory, its lifespan, and the one error mapping.

The lifespan verifies and loads the bundle, opens the store and the catalog change log (Redis,
or in-process without it) and puts them on `app.state`; each served bundle's live catalog is
replayed after it loads and tailed until it retires (`service/catalog/feeds.py`). A
bundle that fails verification leaves the app alive but not ready (/readyz 503, a clear log
line), so an orchestrator never routes traffic to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import faiss
import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service import metrics
from service.api import ROUTERS, openapi
from service.api.fastlane import FastLane
from service.api.middleware import ServingMiddleware
from service.api.responses import error_response
from service.api.routing import allow_every_method_of_a_path
from service.api.shedding import SHEDDER_STATE, Shedder
from service.arms import ArmTable
from service.broadcast import ReloadFanout
from service.catalog.feeds import LiveFeeds, open_change_log
from service.errors import DuetError
from service.exposures import ExposureLog, open_exposure_log
from service.lifecycle import Reloader, ReloadRejectedError, install_sighup
from service.readiness import WorkerMarks
from service.recommender import Recommender
from service.settings import Settings
from service.store import Store, open_store
from service.store.clients import check_mode
from service.tracking import ExperimentTracker

log = logging.getLogger("service")


async def _load(app: FastAPI, settings: Settings) -> None:
    """Verify, warm up and install the arms (the experiment's, or "default" on DUET_BUNDLE)."""
    if settings.bundle is None and settings.experiments is None:
        app.state.not_ready_reason = "DUET_BUNDLE is not set"
        log.error("not ready: DUET_BUNDLE is not set")
        return
    try:
        outcome = await app.state.reloader.reload()
    except ReloadRejectedError as exc:
        if settings.workers > 1:
            # A failed startup makes uvicorn's rolling restart (SIGHUP) keep the old worker,
            # which still serves; a worker alive but not ready would replace it and answer 503.
            raise
        app.state.not_ready_reason = f"bundle rejected: {exc.message}"
        log.error("not ready: %s", exc.message)
        return
    for arm in outcome.router.arms.values():
        log.info("ready: arm %s serves bundle %s", arm.name, arm.bundle.version)


async def _mark_when_ready(
    app: FastAPI, store: Store, exposures: ExposureLog, marks: WorkerMarks
) -> None:
    """Until this worker serves a bundle and its Redis answered (the store, and the exposure
    log's cluster discovery): probe every 0.25 s, then mark it ready and stop."""
    while True:
        if not app.state.redis_reached:
            if not store.reached:
                await store.health()
            app.state.redis_reached = store.reached and await exposures.connect()
        if app.state.redis_reached and app.state.arms.current is not None:
            marks.mark_ready()
            return
        await asyncio.sleep(0.25)


def create_app(settings: Settings) -> FastAPI:
    shedder = Shedder(max_inflight=settings.max_inflight, max_queue_ms=settings.max_queue_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        faiss.omp_set_num_threads(1)
        await asyncio.to_thread(check_mode, settings)  # RedisModeError: one line, no start
        store = open_store(settings)
        feeds = LiveFeeds(
            open_change_log(settings), request_timeout_s=settings.redis_timeout_ms / 1000
        )
        app.state.settings = settings
        app.state.store = store
        app.state.feeds = feeds
        app.state.recommender = Recommender(
            store,
            concurrency=settings.request_concurrency,
            rating_threshold=settings.rating_threshold,
            feeds=feeds,
        )
        app.state.arms = ArmTable()
        app.state.reloader = Reloader(
            app.state.arms,
            experiments=settings.experiments,
            bundle=settings.bundle,
            default_overfetch=settings.overfetch_factor,
            exact_max_rows=settings.exact_scan_max_rows,
            feeds=feeds,
            page_memo_size=settings.page_memo_size,
        )
        exposures = open_exposure_log(settings)
        app.state.tracker = ExperimentTracker(exposures)
        app.state.not_ready_reason = "starting"
        await _load(app, settings)
        uninstall_sighup = install_sighup(app.state.reloader)
        fanout = None
        if settings.uses_redis:
            fanout = ReloadFanout(settings, app.state.reloader, timeout_seconds=1.0)
            fanout.start()
        app.state.fanout = fanout
        marks = app.state.worker_marks = WorkerMarks(settings.worker_state_dir, settings.workers)
        app.state.redis_reached = not settings.uses_redis
        if settings.uses_redis:  # a first contact of a few seconds at most; none = not ready
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3.0):
                    app.state.redis_reached = await store.connect() and await exposures.connect()
        watcher = asyncio.get_running_loop().create_task(
            _mark_when_ready(app, store, exposures, marks)
        )
        try:
            yield {SHEDDER_STATE: shedder}  # lifespan state: the HTTP protocol sheds with it
        finally:
            watcher.cancel()
            marks.clear()
            uninstall_sighup()
            if fanout is not None:
                await fanout.stop()
            await app.state.recommender.drain()
            await feeds.close()
            await app.state.tracker.drain()
            await exposures.close()
            await store.close()
            metrics.mark_process_dead(os.getpid())

    docs = settings.docs_enabled
    app = FastAPI(
        title="Duet",
        summary="Two-tower recommendations: ONNX towers, FAISS retrieval, Redis.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    for router in ROUTERS:
        app.include_router(router)
    allow_every_method_of_a_path(app, ROUTERS)
    openapi.install(app)
    app.add_exception_handler(DuetError, _duet_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_middleware(FastLane)  # inside ServingMiddleware: limits and metrics apply
    app.add_middleware(ServingMiddleware, max_body_bytes=settings.max_body_bytes, shedder=shedder)
    return app


async def _duet_error(request: Request, exc: DuetError) -> JSONResponse:
    return error_response(exc, request.method, request.url.path)


def _field_name(loc: Sequence[str | int], error_type: str) -> str:
    """`body.filters.year_min` -> `filters.year_min`; union tags (`EventIn`) are not fields."""
    if error_type == "json_invalid":
        return "body"
    parts = [str(p) for p in loc[1:] if not (isinstance(p, str) and (p[:1].isupper() or "[" in p))]
    return ".".join(parts) or "body"


async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
    """422 naming the field; orjson because the offending input may be NaN or infinite."""
    details = [
        {"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")}
        for e in exc.errors()
    ]
    # a list of events over the limit also fails the one-event branch of the union; the limit
    # is the error worth naming
    errors = exc.errors()
    first = next((e for e in errors if e.get("type") == "too_long"), errors[0] if errors else {})
    field = _field_name(first.get("loc", ("body",)), first.get("type", ""))
    message = f"{field}: {first.get('msg', 'invalid request')}"
    error = {"code": "invalid_input", "message": message, "field": field}
    body = orjson.dumps({"error": error, "detail": details})
    return Response(body, status_code=422, media_type="application/json")


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and worker processes: settings from DUET_* variables."""
    return create_app(Settings())
