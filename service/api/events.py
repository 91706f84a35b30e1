"""`POST /v1/events`: one event or a list; 202 only once the store has them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request, Response, status

from service.api.routing import BodyErrorsAreInput
from service.api.schemas import COMMON_RESPONSES, ErrorResponse, EventsAccepted, EventsBody
from service.arms import ArmTable

router = APIRouter(
    prefix="/v1", tags=["events"], responses=COMMON_RESPONSES, route_class=BodyErrorsAreInput
)


@router.post(
    "/events",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EventsAccepted,
    responses={503: {"model": ErrorResponse, "description": "Store unavailable: retry."}},
)
async def ingest_events(request: Request, body: Annotated[EventsBody, Body()]) -> Response:
    # app.state read directly, not through Depends: see deps.py for what each dependency costs
    state = request.app.state
    events = [e.to_domain() for e in (body if isinstance(body, list) else [body])]
    table: ArmTable = state.arms
    router = table.current
    await state.recommender.ingest(events, router.default.bundle.catalog if router else None)
    await state.tracker.clicked(events)
    return Response(
        b'{"accepted":%d}' % len(events),
        status_code=status.HTTP_202_ACCEPTED,
        media_type="application/json",
    )
