"""`POST /v1/recommend` and `/v1/recommend/batch`: thin wrappers over the recommender."""

from __future__ import annotations

import asyncio
import uuid

import orjson
from fastapi import APIRouter, Request, Response

from service.api.deps import ARM_HEADER_OPENAPI, arm_override, serving, tag_arm
from service.api.routing import BodyErrorsAreInput
from service.api.schemas import (
    COMMON_RESPONSES,
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    RecommendRequest,
    RecommendResponse,
)
from service.recommender import Recommendation

router = APIRouter(
    prefix="/v1", tags=["recommend"], responses=COMMON_RESPONSES, route_class=BodyErrorsAreInput
)
PATH = "/v1/recommend"
_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorResponse, "description": "X-Duet-Arm names an unknown arm."}
}


def _json(content: object) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


async def recommend_one(request: Request, body: RecommendRequest) -> Recommendation:
    """The route's work, shared with the fast lane (`fastlane.py`) that serves it first."""
    ctx = serving(request)
    arm = ctx.router.choose(body.user_id, arm_override(request))
    tag_arm(request, arm.name)
    result = await ctx.recommender.recommend(arm, body.to_query(), uuid.uuid4().hex)
    await ctx.tracker.exposed(ctx.router, [result])
    return result


@router.post(
    "/recommend",
    response_model=RecommendResponse,
    responses=_ERRORS,
    openapi_extra=ARM_HEADER_OPENAPI,
)
async def recommend(body: RecommendRequest, request: Request) -> Response:
    return _json(await recommend_one(request, body))


@router.post(
    "/recommend/batch",
    response_model=BatchResponse,
    responses=_ERRORS,
    openapi_extra=ARM_HEADER_OPENAPI,
)
async def recommend_batch(body: BatchRequest, request: Request) -> Response:
    ctx = serving(request)
    override = arm_override(request)
    chosen = [ctx.router.choose(r.user_id, override) for r in body.requests]
    tag_arm(request, chosen[0].name if len({a.name for a in chosen}) == 1 else "mixed")
    results = await asyncio.gather(
        *(
            ctx.recommender.recommend(arm, r.to_query(), uuid.uuid4().hex)
            for arm, r in zip(chosen, body.requests, strict=True)
        )
    )
    await ctx.tracker.exposed(ctx.router, results)
    return _json({"responses": results})
