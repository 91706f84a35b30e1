"""Typed dependencies: the current arms (or 503 while not ready) and the recommender."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from service.arms import ArmRouter, ArmTable
from service.errors import NotReadyError
from service.exposures import ExperimentTracker
from service.recommender import Recommender


def current_router(request: Request) -> ArmRouter:
    """The arm set this request will finish on, read once."""
    table: ArmTable = request.app.state.arms
    router = table.current
    if router is None:
        raise NotReadyError(request.app.state.not_ready_reason)
    return router


def recommender(request: Request) -> Recommender:
    service: Recommender = request.app.state.recommender
    return service


def tracker(request: Request) -> ExperimentTracker:
    exposures: ExperimentTracker = request.app.state.tracker
    return exposures


RouterDep = Annotated[ArmRouter, Depends(current_router)]
RecommenderDep = Annotated[Recommender, Depends(recommender)]
TrackerDep = Annotated[ExperimentTracker, Depends(tracker)]
ArmOverride = Annotated[
    str | None,
    Header(
        alias="X-Duet-Arm",
        max_length=64,
        description="QA: serve this arm; honoured only when the experiment allows overrides.",
    ),
]


def tag_arm(request: Request, arm: str) -> None:
    """Label this request's metrics with the arm that served it."""
    request.scope["duet.arm"] = arm
