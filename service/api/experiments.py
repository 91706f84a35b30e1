"""`GET /v1/experiments/{name}/report`: per-arm counts, CTR with intervals, lift, SRM check."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from service.api.deps import RouterDep
from service.api.schemas import ErrorResponse
from service.errors import NotFoundError
from service.stats import SRM_ALPHA, ExperimentReport
from service.tracking import ExperimentTracker, experiment_of

router = APIRouter(prefix="/v1", tags=["experiments"])


class ArmReportOut(BaseModel):
    arm: str
    weight: float
    is_control: bool
    users: int = Field(description="Distinct users who got an answer from this arm.")
    exposures: int = Field(description="Recommend answers recorded.")
    clicks: int = Field(description="Attributed events on exposed items (each item once).")
    clicked_exposures: int = Field(description="Exposures with at least one click.")
    ctr: float = Field(description="clicked_exposures / exposures.")
    ctr_ci_low: float = Field(description="95% Wilson interval.")
    ctr_ci_high: float
    lift: float | None = Field(description="Relative CTR change against the control.")
    z: float | None
    p_value: float | None = Field(description="Two-proportion z-test against the control.")


class SrmOut(BaseModel):
    chi_square: float
    dof: int
    p_value: float
    mismatch: bool = Field(description=f"p < {SRM_ALPHA}: assignment does not follow weights.")


class ExperimentReportOut(BaseModel):
    experiment: str
    control: str
    arms: list[ArmReportOut]
    srm: SrmOut


@router.get(
    "/experiments/{name}/report",
    response_model=ExperimentReportOut,
    responses={404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
async def experiment_report(name: str, request: Request, arms: RouterDep) -> ExperimentReport:
    """Counts are shared by every worker (Redis), so any worker gives the same report."""
    current = experiment_of(arms)
    if name != current:
        raise NotFoundError(
            f"experiment {name!r} is not running; the current one is {current!r}", field="name"
        )
    tracker: ExperimentTracker = request.app.state.tracker
    return await tracker.report(arms)
