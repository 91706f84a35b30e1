"""`create_app(settings)`: the app factory, its lifespan, and the one error mapping.

The lifespan verifies and loads the bundle, opens the store and puts both on `app.state`; a
bundle that fails verification leaves the app alive but not ready (/readyz 503, a clear log
line), so an orchestrator never routes traffic to it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import faiss
import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service import metrics
from service.api import ROUTERS
from service.api.middleware import ServingMiddleware
from service.arms import DEFAULT_ARM, Arm, ArmTable, SingleArmRouter
from service.bundle import Bundle, load_bundle
from service.errors import BundleError, DuetError
from service.recommender import Recommender
from service.retriever import SearchSettings
from service.settings import Settings
from service.store import open_store

log = logging.getLogger("service")


def default_arm(bundle: Bundle, settings: Settings) -> Arm:
    return Arm(DEFAULT_ARM, bundle, SearchSettings(overfetch=settings.overfetch_factor))


def warm_up(arm: Arm) -> None:
    """One encode + search so the first real request does not pay ONNX/FAISS first-call costs."""
    vector = arm.bundle.encoder.encode(0, [0])
    arm.bundle.retriever.search(vector, 10)


async def _load(app: FastAPI, settings: Settings) -> None:
    if settings.bundle is None:
        app.state.not_ready_reason = "DUET_BUNDLE is not set"
        log.error("not ready: DUET_BUNDLE is not set")
        return
    try:
        bundle = await asyncio.to_thread(load_bundle, settings.bundle)
    except BundleError as exc:
        app.state.not_ready_reason = f"bundle rejected: {exc.message}"
        log.error("not ready: bundle %s rejected: %s", settings.bundle, exc.message)
        return
    arm = default_arm(bundle, settings)
    warm_up(arm)
    app.state.arms.swap(SingleArmRouter(arm))
    metrics.BUNDLE_INFO.labels(arm.name, bundle.version).set(1)
    log.info("ready: serving bundle %s as arm %s", bundle.version, arm.name)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        faiss.omp_set_num_threads(1)
        store = open_store(settings)
        app.state.settings = settings
        app.state.store = store
        app.state.recommender = Recommender(store)
        app.state.arms = ArmTable()
        app.state.not_ready_reason = "starting"
        await _load(app, settings)
        try:
            yield
        finally:
            await app.state.recommender.drain()
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
    app.add_exception_handler(DuetError, _duet_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_middleware(ServingMiddleware, max_body_bytes=settings.max_body_bytes)
    return app


async def _duet_error(request: Request, exc: DuetError) -> JSONResponse:
    """The one mapping from the exception tree to HTTP."""
    if exc.status_code >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc.message)
    error = {"code": exc.code, "message": exc.message, "field": exc.field}
    headers = {"Retry-After": "1"} if exc.status_code == 503 else None
    return JSONResponse({"error": error}, status_code=exc.status_code, headers=headers)


async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
    """422 naming the field; orjson because the offending input may be NaN or infinite."""
    details = [
        {"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")}
        for e in exc.errors()
    ]
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    field = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
    error = {"code": "invalid_input", "message": f"{field}: {first['msg']}", "field": field}
    body = orjson.dumps({"error": error, "detail": details})
    return Response(body, status_code=422, media_type="application/json")


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and worker processes: settings from DUET_* variables."""
    return create_app(Settings())
