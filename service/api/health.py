"""Liveness, readiness and the Prometheus scrape endpoint (outside /v1: infrastructure)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service import metrics
from service.arms import ArmTable
from service.readiness import WorkerMarks
from service.store import Store

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """200 with a verified bundle, a store that answered once since start, and (several
    workers) every worker of the pod ready. A store outage after that is reported, not
    required: the service serves fallbacks through it."""
    table: ArmTable = request.app.state.arms
    store: Store = request.app.state.store
    store_state = {"backend": store.backend, "state": await store.health()}
    marks: WorkerMarks = request.app.state.worker_marks
    workers = {"ready": marks.ready(), "expected": marks.expected}
    router = table.current
    reason = None
    if router is None:
        reason = request.app.state.not_ready_reason
    elif not (store.reached and request.app.state.redis_reached):
        reason = "Redis has not answered since start"
    elif workers["ready"] < workers["expected"]:
        reason = f"{workers['ready']} of {workers['expected']} workers ready"
    if reason is not None or router is None:
        body = {"status": "not_ready", "reason": reason, "store": store_state}
        if marks.expected > 1:
            body["workers"] = workers
        return JSONResponse(body, status_code=503)
    arms = {name: arm.bundle.version for name, arm in router.arms.items()}
    body = {"status": "ready", "arms": arms, "store": store_state}
    if marks.expected > 1:
        body["workers"] = workers
    return JSONResponse(body)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
