"""The live catalog over HTTP: `/admin/items` (bearer token) and the public `GET /v1/items/{id}`.

Thin routes over `service/catalog/editor.py`. A change is logged for every bundle being served
and has been applied by this worker when the route answers 2xx; every other worker applies it
before its next request (see the editor's docstring).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Request

from service.api.admin import require_admin
from service.api.deps import RouterDep
from service.api.routing import BodyErrorsAreInput
from service.api.schemas import COMMON_RESPONSES, Availability, ErrorResponse, Id, ItemsBody
from service.arms import ArmRouter
from service.catalog.bundle import Bundle
from service.catalog.editor import Applied, CatalogEditor, held
from service.errors import NotFoundError
from service.recommender import Recommender

_ERRORS: dict[int | str, dict[str, Any]] = {
    **COMMON_RESPONSES,
    404: {"model": ErrorResponse, "description": "No served bundle holds this item."},
}
admin_router = APIRouter(
    route_class=BodyErrorsAreInput,
    prefix="/admin",
    tags=["catalog"],
    dependencies=[Depends(require_admin)],
    responses={**_ERRORS, 401: {"model": ErrorResponse}},
)
public_router = APIRouter(prefix="/v1", tags=["catalog"], responses=_ERRORS)


def _editor(request: Request) -> CatalogEditor:
    return CatalogEditor(request.app.state.feeds)


def _bundles(router: ArmRouter) -> list[Bundle]:
    return [arm.bundle for arm in router.arms.values()]


def _answer(applied: Applied, **extra: Any) -> dict[str, Any]:
    return {**extra, "catalog_versions": applied.versions}


@admin_router.post("/items")
async def upsert_items(
    request: Request, router: RouterDep, body: Annotated[ItemsBody, Body()]
) -> dict[str, Any]:
    """Upsert one item or a list of them (≤ 1,000): new ids are added, known ones replaced."""
    items = [body] if not isinstance(body, list) else body
    applied = await _editor(request).upsert(_bundles(router), [i.to_domain() for i in items])
    return _answer(applied, upserted=applied.count, unknown_genres=list(applied.unknown_genres))


@admin_router.delete("/items/{item_id}")
async def delete_item(
    request: Request, router: RouterDep, item_id: Annotated[Id, Path()]
) -> dict[str, Any]:
    """Never served again (an upsert of the same id brings it back)."""
    applied = await _editor(request).delete(_bundles(router), item_id)
    return _answer(applied, deleted=item_id)


@admin_router.patch("/items/{item_id}")
async def set_availability(
    request: Request, router: RouterDep, item_id: Annotated[Id, Path()], body: Availability
) -> dict[str, Any]:
    """Hide (`false`, e.g. out of stock) or show (`true`) an item."""
    applied = await _editor(request).set_available(_bundles(router), item_id, body.available)
    return _answer(applied, item_id=item_id, available=body.available)


async def _held(request: Request, router: ArmRouter, item_id: str) -> tuple[Bundle, Any]:
    bundle = router.default.bundle
    recommender: Recommender = request.app.state.recommender
    await recommender.catch_up(bundle)
    item = held(bundle, item_id)
    if item is None:
        raise NotFoundError(f"item {item_id!r} is not in the catalog", field="item_id")
    return bundle, item


@admin_router.get("/items/{item_id}")
async def admin_item(
    request: Request, router: RouterDep, item_id: Annotated[Id, Path()]
) -> dict[str, Any]:
    """What the control arm's bundle holds for the item, and where from (bundle or live)."""
    bundle, item = await _held(request, router, item_id)
    sync = request.app.state.feeds.sync(bundle)
    return {
        **asdict(item),
        "bundle_version": bundle.version,
        "catalog_version": sync.version if sync is not None else 0,
    }


@public_router.get("/items/{item_id}")
async def item(
    request: Request, router: RouterDep, item_id: Annotated[Id, Path()]
) -> dict[str, Any]:
    """The item's metadata, or 404 (unknown or deleted)."""
    _, found = await _held(request, router, item_id)
    out = asdict(found)
    del out["source"]
    return out
