"""Typed dependencies: the current arms (or 503 while not ready) and the recommender.

All `async def`: FastAPI runs plain `def` dependencies in a thread pool, which costs more than
everything these functions do (measured: the thread hops dominated a cached recommend).

The hot routes (recommend, retrieve, similar) call `serving(request)` instead: measured with
FastAPI 0.165, each resolved dependency costs ~30 µs per request and a `Header` parameter
~60 µs, i.e. more than the whole FAISS search; `serving` does the same work in ~1 µs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from service.arms import ArmRouter, ArmTable
from service.errors import InvalidInputError, NotReadyError
from service.recommender import Recommender
from service.tracking import ExperimentTracker


async def current_router(request: Request) -> ArmRouter:
    """The arm set this request will finish on, read once."""
    table: ArmTable = request.app.state.arms
    router = table.current
    if router is None:
        raise NotReadyError(request.app.state.not_ready_reason)
    return router


RouterDep = Annotated[ArmRouter, Depends(current_router)]


def tag_arm(request: Request, arm: str) -> None:
    """Label this request's metrics with the arm that served it."""
    request.scope["duet.arm"] = arm


@dataclass(frozen=True, slots=True)
class Serving:
    """What a request is served with, read from `app.state` once at its start."""

    router: ArmRouter
    recommender: Recommender
    tracker: ExperimentTracker


def serving(request: Request) -> Serving:
    """The dependencies of a hot route, without FastAPI's per-dependency cost."""
    state = request.app.state
    router = state.arms.current
    if router is None:
        raise NotReadyError(state.not_ready_reason)
    return Serving(router, state.recommender, state.tracker)


ARM_HEADER = "X-Duet-Arm"
ARM_HEADER_MAX = 64
ARM_HEADER_OPENAPI: dict[str, Any] = {
    "parameters": [
        {
            "name": ARM_HEADER,
            "in": "header",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": ARM_HEADER_MAX},
            "description": "QA: serve this arm; honoured only when the experiment allows it.",
        }
    ]
}


def arm_override(request: Request) -> str | None:
    """The `X-Duet-Arm` header, validated like the `ArmOverride` parameter would be."""
    value: str | None = request.headers.get(ARM_HEADER)
    if value is not None and not 0 < len(value) <= ARM_HEADER_MAX:
        message = f"must name an arm: 1 to {ARM_HEADER_MAX} characters"
        raise InvalidInputError(message, field=ARM_HEADER)
    return value
