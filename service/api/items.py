"""`POST /v1/retrieve` and `GET /v1/items/{item_id}/similar`: nearest items, no user state.

No store round trip of their own, so each first reads the bundle's catalog version (one GET,
with Redis) and catches up: a DELETE that returned 2xx is never retrieved afterwards."""

from __future__ import annotations

import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from service.api.deps import serving, tag_arm
from service.api.routing import BodyErrorsAreInput
from service.api.schemas import (
    COMMON_RESPONSES,
    MAX_K,
    ErrorResponse,
    Id,
    RetrieveRequest,
    RetrieveResponse,
)
from service.recommender import Retrieval

RETRIEVE_PATH = "/v1/retrieve"
SIMILAR_PATH = "/v1/items/{item_id}/similar"
router = APIRouter(
    prefix="/v1", tags=["retrieve"], responses=COMMON_RESPONSES, route_class=BodyErrorsAreInput
)


def _json(content: object) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


@router.post(
    "/retrieve",
    response_model=RetrieveResponse,
    responses={404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
async def retrieve(body: RetrieveRequest, request: Request) -> Response:
    return _json(await retrieve_one(request, body))


async def retrieve_one(request: Request, body: RetrieveRequest) -> Retrieval:
    """The route's work, shared with the fast lane (`fastlane.py`) that serves it first."""
    ctx = serving(request)
    service, arm = ctx.recommender, ctx.router.default
    tag_arm(request, arm.name)
    await service.catch_up(arm.bundle)
    request_id = uuid.uuid4().hex
    if body.item_id is not None:
        result = service.similar(
            arm, item_id=body.item_id, k=body.k, request_id=request_id,
            item_filter=body.item_filter,
        )  # fmt: skip
    elif body.embedding is not None:
        result = service.retrieve_by_embedding(
            arm, embedding=body.embedding, k=body.k, request_id=request_id,
            item_filter=body.item_filter,
        )  # fmt: skip
    else:
        result = service.retrieve_by_history(
            arm, history=body.history or [], k=body.k, request_id=request_id,
            item_filter=body.item_filter,
        )  # fmt: skip
    return result


@router.get(
    "/items/{item_id}/similar",
    response_model=RetrieveResponse,
    responses={404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
async def similar(
    item_id: Annotated[Id, Path()],
    request: Request,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
) -> Response:
    return _json(await similar_one(request, item_id, k))


async def similar_one(request: Request, item_id: str, k: int) -> Retrieval:
    ctx = serving(request)
    arm = ctx.router.default
    tag_arm(request, arm.name)
    await ctx.recommender.catch_up(arm.bundle)
    return ctx.recommender.similar(arm, item_id=item_id, k=k, request_id=uuid.uuid4().hex)
