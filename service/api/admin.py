"""`/admin`: list the loaded arms and reload bundles, behind a bearer token.

The token (`DUET_ADMIN_TOKEN`) is compared in constant time, and the check is a dependency of
the whole router so no admin route can forget it. Without a token the admin API is closed.
Reloads act on the worker that answers; with several workers, send SIGHUP to uvicorn's parent
process instead (it restarts the workers one by one, each loading the config at startup).
"""

from __future__ import annotations

import hmac
import random
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from service.api.routing import BodyErrorsAreInput
from service.api.schemas import COMMON_RESPONSES, ErrorResponse
from service.arms import ArmRouter, ArmTable
from service.catalog.sampling import MAX_SAMPLE, sample_ids
from service.errors import InvalidInputError, NotReadyError, RequestError
from service.experiments import ExperimentRouter
from service.lifecycle import Reloader
from service.settings import Settings


class UnauthorizedError(RequestError):
    status_code = 401
    code = "unauthorized"


def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    settings: Settings = request.app.state.settings
    expected = settings.admin_token.get_secret_value().encode() if settings.admin_token else b""
    if not expected.strip():  # an empty token must never match an empty bearer
        raise UnauthorizedError("the admin API is disabled: DUET_ADMIN_TOKEN is not set")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise UnauthorizedError("missing or wrong bearer token", field="Authorization")


router = APIRouter(
    route_class=BodyErrorsAreInput,
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses={**COMMON_RESPONSES, 401: {"model": ErrorResponse}},
)


# no NUL byte, no path component longer than 255 characters
PATH_PATTERN = r"^(?:[^/\x00]{0,255}/)*[^/\x00]{0,255}$"


class ReloadRequest(BaseModel):
    """Empty: re-read the experiment config. `arm` and/or `bundle`: replace one arm's bundle."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    arm: str | None = Field(default=None, min_length=1, max_length=64)
    bundle: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="Bundle directory; relative to the experiment config's directory.",
        # documented here, checked by admin_path (which names the rule broken)
        json_schema_extra={"pattern": PATH_PATTERN},
    )


MAX_PATH_CHARS = 4096


def admin_path(value: str | None, field: str, root: Path | None) -> Path | None:
    """A path from the admin API, refused (422 naming `field`) before any file call sees it.

    NUL bytes make `os` calls raise ValueError deep in a reload (a 500); over-long paths and
    paths resolving outside `root` (when set) are refused the same way.
    """
    if value is None:
        return None
    if "\x00" in value:
        raise InvalidInputError(f"{field}: must not contain NUL bytes", field=field)
    if len(value) > MAX_PATH_CHARS or any(len(part) > 255 for part in Path(value).parts):
        raise InvalidInputError(
            f"{field}: longer than {MAX_PATH_CHARS} characters or a 255-character name",
            field=field,
        )
    path = Path(value)
    if root is not None:
        resolved_root = root.resolve()
        target = (path if path.is_absolute() else resolved_root / path).resolve()
        if not target.is_relative_to(resolved_root):
            raise InvalidInputError(f"{field}: outside the allowed bundle root", field=field)
    return path


def describe(router: ArmRouter | None) -> dict[str, Any]:
    if router is None:
        return {"experiment": None, "arms": []}
    config = router.config if isinstance(router, ExperimentRouter) else None
    arms = []
    for name, arm in router.arms.items():
        arm_config = config.arm(name) if config else None
        arms.append(
            {
                "name": name,
                "weight": arm_config.weight if arm_config else 1.0,
                "control": arm is router.default,
                "bundle_version": arm.bundle.version,
                "bundle_path": str(arm.bundle.path),
                "policy": arm.policy.name,
                "popularity_weight": arm.policy.popularity_weight,
                "diversity": arm.policy.diversity,
                "overfetch": arm.search.overfetch,
                "nprobe": arm.search.nprobe,
                "ef_search": arm.search.ef_search,
            }
        )
    return {
        "experiment": config.name if config else router.default.name,
        "allow_override": config.allow_override if config else False,
        "config": str(config.source) if config and config.source else None,
        "arms": arms,
    }


def _reloader(request: Request) -> Reloader:
    reloader: Reloader = request.app.state.reloader
    return reloader


@router.get("/bundles")
async def list_bundles(request: Request) -> dict[str, Any]:
    table: ArmTable = request.app.state.arms
    reloader = _reloader(request)
    last = reloader.last_outcome
    return {
        **describe(table.current),
        "reload": {
            "running": reloader.busy,
            "last_error": reloader.last_error,
            "last_seconds": round(last.seconds, 3) if last else None,
        },
    }


@router.post(
    "/bundles/reload",
    responses={
        400: {"model": ErrorResponse, "description": "`arm` names no loaded arm."},
        404: {"model": ErrorResponse, "description": "`bundle` names no bundle directory."},
        409: {"model": ErrorResponse, "description": "Another reload is running."},
        422: {"model": ErrorResponse, "description": "Rejected; the old arms keep serving."},
    },
)
async def reload_bundles(
    request: Request, body: Annotated[ReloadRequest | None, Body()] = None
) -> dict[str, Any]:
    body = body or ReloadRequest()
    settings: Settings = request.app.state.settings
    bundle = admin_path(body.bundle, "bundle", settings.admin_bundle_root)
    outcome = await _reloader(request).reload(arm=body.arm, bundle=bundle)
    return {
        "status": "reloaded",
        "loaded": list(outcome.loaded),
        "seconds": round(outcome.seconds, 3),
        **describe(outcome.router),
    }


class IdSampleResponse(BaseModel):
    bundle_version: str
    arm: str
    user_ids: list[str]
    item_ids: list[str] = Field(description="Most popular first, then random items.")
    genres: list[str]
    year_min: int
    year_max: int
    embedding_dim: int


@router.get("/sample-ids", responses={503: {"model": ErrorResponse}})
async def sample_bundle_ids(
    request: Request,
    users: Annotated[int, Query(ge=0, le=MAX_SAMPLE)] = 1_000,
    items: Annotated[int, Query(ge=0, le=MAX_SAMPLE)] = 1_000,
) -> IdSampleResponse:
    """Known ids of the control arm's bundle, so a load test needs no copy of the bundle."""
    table: ArmTable = request.app.state.arms
    if table.current is None:
        raise NotReadyError("no verified bundle is loaded yet")
    arm = table.current.default
    sample = sample_ids(arm.bundle.catalog, users=users, items=items, rng=random.Random())  # noqa: S311 - load-test ids, not secrets
    return IdSampleResponse(
        bundle_version=arm.bundle.version,
        arm=arm.name,
        user_ids=list(sample.user_ids),
        item_ids=list(sample.item_ids),
        genres=list(sample.genres),
        year_min=sample.year_min,
        year_max=sample.year_max,
        embedding_dim=arm.bundle.manifest.embedding_dim,
    )
