"""Report statistics against hand-computed values and against scipy (a dev-only dependency)."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from service.stats import (
    ArmCounts,
    build_report,
    chi_square_sf,
    normal_two_sided_p,
    sample_ratio_check,
    two_proportion_z_test,
    wilson_interval,
)


def test_normal_tail_hand_values() -> None:
    assert normal_two_sided_p(0.0) == pytest.approx(1.0)
    assert normal_two_sided_p(1.959963984540054) == pytest.approx(0.05, rel=1e-9)
    assert normal_two_sided_p(-2.5758293035489) == pytest.approx(0.01, rel=1e-9)


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 7, 15, 40])
@pytest.mark.parametrize("statistic", [0.0, 0.01, 0.5, 1.0, 3.84, 6.0, 10.0, 25.0, 60.0, 150.0])
def test_chi_square_tail_matches_scipy(dof: int, statistic: float) -> None:
    expected = float(scipy_stats.chi2.sf(statistic, dof))
    assert chi_square_sf(statistic, dof) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_chi_square_tail_closed_forms() -> None:
    # dof 1: P(X >= x) = erfc(sqrt(x / 2)); dof 2: exp(-x / 2)
    assert chi_square_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-9)
    assert chi_square_sf(4.0, 1) == pytest.approx(math.erfc(math.sqrt(2.0)), rel=1e-12)
    assert chi_square_sf(5.0, 2) == pytest.approx(math.exp(-2.5), rel=1e-12)
    with pytest.raises(ValueError, match="dof"):
        chi_square_sf(1.0, 0)


def test_wilson_interval_hand_computed() -> None:
    # 10 / 100: centre (0.1 + z²/200) / (1 + z²/100), half z·sqrt(0.0009 + z²/40000) / (1 + z²/100)
    low, high = wilson_interval(10, 100)
    assert low == pytest.approx(0.0552291, abs=1e-6)
    assert high == pytest.approx(0.1743657, abs=1e-6)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    zero_low, zero_high = wilson_interval(0, 50)
    assert zero_low == 0.0
    assert zero_high == pytest.approx(3.841458820694124 / (50 + 3.841458820694124), rel=1e-9)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 4)


def test_wilson_interval_matches_scipy() -> None:
    for successes, trials in [(1, 7), (37, 412), (999, 1000), (5000, 10000)]:
        result = scipy_stats.binomtest(successes, trials).proportion_ci(method="wilson")
        low, high = wilson_interval(successes, trials)
        assert low == pytest.approx(result.low, rel=1e-9)
        assert high == pytest.approx(result.high, rel=1e-9)


def test_two_proportion_z_test_hand_computed() -> None:
    # 100/1000 vs 130/1000: pooled 0.115, se = sqrt(0.115·0.885·0.002) = 0.0142671
    test = two_proportion_z_test(100, 1000, 130, 1000)
    assert test is not None
    assert test.z == pytest.approx(0.03 / math.sqrt(0.115 * 0.885 * 0.002), rel=1e-12)
    assert test.z == pytest.approx(2.10274, abs=1e-5)
    assert test.p_value == pytest.approx(0.035488, abs=1e-5)
    reverse = two_proportion_z_test(130, 1000, 100, 1000)
    assert reverse is not None
    assert reverse.z == pytest.approx(-test.z)
    assert reverse.p_value == pytest.approx(test.p_value)
    assert two_proportion_z_test(0, 0, 1, 10) is None
    flat = two_proportion_z_test(0, 10, 0, 20)
    assert flat is not None
    assert (flat.z, flat.p_value) == (0.0, 1.0)


def test_sample_ratio_check_hand_computed() -> None:
    # expected 5000 each: chi² = 2·100²/5000 = 4, p = erfc(sqrt(2))
    fine = sample_ratio_check([5100, 4900], [1, 1])
    assert fine.chi_square == pytest.approx(4.0)
    assert fine.dof == 1
    assert fine.p_value == pytest.approx(math.erfc(math.sqrt(2.0)))
    assert not fine.mismatch
    # 5300 / 4700: chi² = 36, p ≈ 1.97e-9 → mismatch
    broken = sample_ratio_check([5300, 4700], [1, 1])
    assert broken.chi_square == pytest.approx(36.0)
    assert broken.p_value == pytest.approx(math.erfc(math.sqrt(18.0)), rel=1e-9)
    assert broken.mismatch
    weighted = sample_ratio_check([2000, 1000, 1000], [2, 1, 1])
    assert weighted.chi_square == 0.0
    assert weighted.p_value == pytest.approx(1.0)
    expected = scipy_stats.chisquare([480, 260, 260], [500, 250, 250])
    three = sample_ratio_check([480, 260, 260], [0.5, 0.25, 0.25])
    assert three.chi_square == pytest.approx(expected.statistic)
    assert three.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert sample_ratio_check([0, 0], [1, 1]).p_value == 1.0
    assert sample_ratio_check([7], [1]).p_value == 1.0


def test_report_hand_computed() -> None:
    report = build_report(
        experiment="exp",
        weights={"control": 1.0, "treatment": 1.0},
        control="control",
        counts={
            "control": ArmCounts(users=510, exposures=1000, clicks=120, clicked_exposures=100),
            "treatment": ArmCounts(users=490, exposures=1000, clicks=150, clicked_exposures=130),
        },
    )
    control, treatment = report.arms
    assert report.control == "control"
    assert control.is_control
    assert control.ctr == pytest.approx(0.10)
    assert control.lift is None
    assert control.p_value is None
    assert treatment.ctr == pytest.approx(0.13)
    assert treatment.lift == pytest.approx(0.30)
    assert treatment.z == pytest.approx(2.10274, abs=1e-5)
    assert treatment.p_value == pytest.approx(0.035488, abs=1e-5)
    assert treatment.clicks == 150
    assert (control.ctr_ci_low, control.ctr_ci_high) == pytest.approx(wilson_interval(100, 1000))
    # users 510 / 490: chi² = 2·10²/500 = 0.4
    assert report.srm.chi_square == pytest.approx(0.4)
    assert not report.srm.mismatch


def test_report_without_traffic_or_control_clicks() -> None:
    report = build_report(
        experiment="exp",
        weights={"a": 1.0, "b": 3.0},
        control="b",
        counts={"a": ArmCounts(users=3, exposures=4, clicks=1, clicked_exposures=1)},
    )
    a, b = report.arms
    assert b.is_control
    assert (b.exposures, b.ctr, b.ctr_ci_low, b.ctr_ci_high) == (0, 0.0, 0.0, 1.0)
    assert a.lift is None
    assert a.p_value is None
    with pytest.raises(ValueError, match="control arm"):
        build_report(experiment="exp", weights={"a": 1.0}, control="z", counts={})
