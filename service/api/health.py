"""Liveness, readiness and the Prometheus scrape endpoint (outside /v1: infrastructure)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service import metrics
from service.arms import ArmTable
from service.store import Store

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """200 only with a verified bundle; the store's state is reported, not required."""
    table: ArmTable = request.app.state.arms
    store: Store = request.app.state.store
    store_state = {"backend": store.backend, "state": await store.health()}
    router = table.current
    if router is None:
        body = {"status": "not_ready", "reason": request.app.state.not_ready_reason}
        return JSONResponse({**body, "store": store_state}, status_code=503)
    arms = {name: arm.bundle.version for name, arm in router.arms.items()}
    return JSONResponse({"status": "ready", "arms": arms, "store": store_state})


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
