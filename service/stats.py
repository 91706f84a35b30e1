"""Statistics for the experiment report, in pure Python.

scipy is not a runtime dependency, so the normal tail comes from `math.erfc` and the chi-square
tail from the regularised upper incomplete gamma function (series below `a + 1`, Lentz's
continued fraction above, as in Numerical Recipes §6.2).

CTR is per exposure: the share of recommendation responses that got at least one attributed
click. That keeps it a proportion (a response with two clicks is one success), which the Wilson
interval and the z-test require.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Z_95 = 1.959963984540054
SRM_ALPHA = 0.001
_EPS = 1e-15
_TINY = 1e-300
_MAX_ITERATIONS = 10_000


def normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def _upper_gamma_q(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x) = Γ(a, x) / Γ(a)."""
    if x <= 0.0:
        return 1.0
    log_prefix = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        denominator = a
        for _ in range(_MAX_ITERATIONS):
            denominator += 1.0
            term *= x / denominator
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITERATIONS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return min(1.0, math.exp(log_prefix) * h)


def chi_square_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X ~ chi-square with `dof` degrees of freedom."""
    if dof < 1:
        raise ValueError("dof must be >= 1")
    return _upper_gamma_q(dof / 2.0, statistic / 2.0)


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval; (0, 1) when there is no data."""
    if not 0 <= successes <= trials:
        raise ValueError("need 0 <= successes <= trials")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    scale = 1.0 + z2 / trials
    centre = (p + z2 / (2 * trials)) / scale
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / scale
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class ZTest:
    z: float
    p_value: float


def two_proportion_z_test(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int
) -> ZTest | None:
    """Pooled two-proportion z-test of b against a; None without trials on both sides."""
    if trials_a == 0 or trials_b == 0:
        return None
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
    if se == 0.0:
        return ZTest(z=0.0, p_value=1.0)
    z = (successes_b / trials_b - successes_a / trials_a) / se
    return ZTest(z=z, p_value=normal_two_sided_p(z))


@dataclass(frozen=True)
class SrmCheck:
    """Sample-ratio mismatch: are assignment counts consistent with the configured weights?"""

    chi_square: float
    dof: int
    p_value: float
    mismatch: bool


def sample_ratio_check(
    observed: Sequence[int], weights: Sequence[float], alpha: float = SRM_ALPHA
) -> SrmCheck:
    """Chi-square goodness of fit of `observed` counts against `weights`."""
    if len(observed) != len(weights) or not observed:
        raise ValueError("need one positive weight per observed count")
    total = sum(observed)
    dof = len(observed) - 1
    if total == 0 or dof == 0:
        return SrmCheck(chi_square=0.0, dof=dof, p_value=1.0, mismatch=False)
    weight_sum = sum(weights)
    statistic = 0.0
    for count, weight in zip(observed, weights, strict=True):
        expected = total * weight / weight_sum
        statistic += (count - expected) ** 2 / expected
    p_value = chi_square_sf(statistic, dof)
    return SrmCheck(chi_square=statistic, dof=dof, p_value=p_value, mismatch=p_value < alpha)


@dataclass(frozen=True)
class ArmCounts:
    """What the exposure log counts per arm (see `service.exposures`)."""

    users: int = 0
    exposures: int = 0
    clicks: int = 0
    clicked_exposures: int = 0


@dataclass(frozen=True)
class ArmReport:
    arm: str
    weight: float
    is_control: bool
    users: int
    exposures: int
    clicks: int
    clicked_exposures: int
    ctr: float
    ctr_ci_low: float
    ctr_ci_high: float
    lift: float | None
    """Relative CTR change against the control; None for the control or a zero control CTR."""
    z: float | None
    p_value: float | None


@dataclass(frozen=True)
class ExperimentReport:
    experiment: str
    control: str
    arms: tuple[ArmReport, ...]
    srm: SrmCheck


def build_report(
    *,
    experiment: str,
    weights: Mapping[str, float],
    control: str,
    counts: Mapping[str, ArmCounts],
) -> ExperimentReport:
    """Per-arm CTR with Wilson interval, lift and z-test against `control`, and the SRM check."""
    if control not in weights:
        raise ValueError(f"control arm {control!r} is not among the arms")
    base = counts.get(control, ArmCounts())
    base_ctr = base.clicked_exposures / base.exposures if base.exposures else 0.0
    arms = []
    for name, weight in weights.items():
        arm = counts.get(name, ArmCounts())
        ctr = arm.clicked_exposures / arm.exposures if arm.exposures else 0.0
        low, high = wilson_interval(arm.clicked_exposures, arm.exposures)
        test = None
        lift = None
        if name != control:
            test = two_proportion_z_test(
                base.clicked_exposures, base.exposures, arm.clicked_exposures, arm.exposures
            )
            if base_ctr > 0 and arm.exposures:
                lift = (ctr - base_ctr) / base_ctr
        arms.append(
            ArmReport(
                arm=name,
                weight=weight,
                is_control=name == control,
                users=arm.users,
                exposures=arm.exposures,
                clicks=arm.clicks,
                clicked_exposures=arm.clicked_exposures,
                ctr=ctr,
                ctr_ci_low=low,
                ctr_ci_high=high,
                lift=lift,
                z=test.z if test else None,
                p_value=test.p_value if test else None,
            )
        )
    srm = sample_ratio_check(
        [counts.get(name, ArmCounts()).users for name in weights], list(weights.values())
    )
    return ExperimentReport(experiment=experiment, control=control, arms=tuple(arms), srm=srm)
