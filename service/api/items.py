"""`POST /v1/retrieve`, `GET /v1/items/{item_id}/similar` and `.../complementary`: items near
an item, a basket, an embedding or a history; no user state beyond an optional seen set.

No store round trip of their own, so each first reads the bundle's catalog version (one GET,
with Redis) and catches up: a DELETE that returned 2xx is never retrieved afterwards."""

from __future__ import annotations

import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from service import metrics
from service.api.deps import ARM_HEADER_OPENAPI, arm_override, serving, tag_arm
from service.api.routing import BodyErrorsAreInput
from service.api.schemas import (
    COMMON_RESPONSES,
    MAX_K,
    ErrorResponse,
    Id,
    RetrieveRequest,
    RetrieveResponse,
)
from service.recommender import RelatedQuery, Retrieval

RETRIEVE_PATH = "/v1/retrieve"
SIMILAR_PATH = "/v1/items/{item_id}/similar"
COMPLEMENTARY_PATH = "/v1/items/{item_id}/complementary"
router = APIRouter(
    prefix="/v1", tags=["retrieve"], responses=COMMON_RESPONSES, route_class=BodyErrorsAreInput
)
_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorResponse, "description": "X-Duet-Arm names an unknown arm."},
    404: {"model": ErrorResponse, "description": "An item is not in the serving bundle."},
    503: {"model": ErrorResponse},
}
_SIMILAR = metrics.related_counter(SIMILAR_PATH, "similar")


def _json(content: object) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


@router.post(
    "/retrieve",
    response_model=RetrieveResponse,
    responses=_RESPONSES,
    openapi_extra=ARM_HEADER_OPENAPI,
)
async def retrieve(body: RetrieveRequest, request: Request) -> Response:
    return _json(await retrieve_one(request, body))


def _check_override(request: Request) -> None:
    """An `X-Duet-Arm` the experiment would refuse on recommend is refused here too, even by the
    queries that always use the default arm: the schema declares one header for all of them."""
    serving(request).router.choose("", arm_override(request))


async def retrieve_one(request: Request, body: RetrieveRequest) -> Retrieval:
    """The route's work, shared with the fast lane (`fastlane.py`) that serves it first."""
    ctx = serving(request)
    _check_override(request)
    service = ctx.recommender
    request_id = uuid.uuid4().hex
    if body.related:
        query = body.to_related()
        metrics.related_counter(RETRIEVE_PATH, query.relation).inc()
        return await _related(request, query, request_id)
    await service.catch_up(ctx.router.default.bundle)
    arm = ctx.router.default
    tag_arm(request, arm.name)
    if body.item_id is not None:
        metrics.related_counter(RETRIEVE_PATH, "similar").inc()
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


async def _related(request: Request, query: RelatedQuery, request_id: str) -> Retrieval:
    """A user's own arm when the query names a user (their experiment's bundle), else the
    default arm, as `similar`; caught up with the live catalog of that arm's bundle first."""
    ctx = serving(request)
    if query.user_id is None:
        arm = ctx.router.default
    else:
        arm = ctx.router.choose(query.user_id, arm_override(request))
    tag_arm(request, arm.name)
    await ctx.recommender.catch_up(arm.bundle)
    return await ctx.recommender.related(arm, query, request_id)


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
    _SIMILAR.inc()
    return ctx.recommender.similar(arm, item_id=item_id, k=k, request_id=uuid.uuid4().hex)


@router.get(
    "/items/{item_id}/complementary",
    response_model=RetrieveResponse,
    responses=_RESPONSES,
    openapi_extra=ARM_HEADER_OPENAPI,
)
async def complementary(
    item_id: Annotated[Id, Path()],
    request: Request,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    user_id: Annotated[
        Id | None, Query(description="Leave out what this user has seen (the store's seen set).")
    ] = None,
) -> Response:
    """What goes with the item (IN.OUT of the dual embeddings), never the item itself; without
    dual embeddings (for the bundle or the item), its similar items with `fallback` saying so."""
    return _json(await complementary_one(request, item_id, k, user_id))


async def complementary_one(
    request: Request, item_id: str, k: int, user_id: str | None
) -> Retrieval:
    _check_override(request)
    metrics.related_counter(COMPLEMENTARY_PATH, "complementary").inc()
    query = RelatedQuery(item_ids=(item_id,), k=k, relation="complementary", user_id=user_id)
    return await _related(request, query, uuid.uuid4().hex)
