"""The promotion rule: paired bootstrap of per-series Dice differences against known cases, and the decision."""

from __future__ import annotations

import numpy as np
import pytest

from sciatic.evaluation.promotion import PromotionRule, decide, paired_bootstrap


def _series(values: list[float]) -> dict[str, float]:
    return {str(i + 1): v for i, v in enumerate(values)}


def test_a_constant_difference_has_a_point_interval() -> None:
    interval = paired_bootstrap([0.8, 0.7, 0.9], [0.7, 0.6, 0.8])
    assert interval.n == 3 and interval.resamples == 2000 and interval.confidence == 0.95
    assert interval.mean == pytest.approx(0.1) and interval.low == pytest.approx(0.1)
    assert interval.high == pytest.approx(0.1)


def test_two_pairs_give_the_exact_percentiles() -> None:
    # differences 0 and 1: a resample's mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4
    interval = paired_bootstrap([0.5, 1.0], [0.5, 0.0], seed=3)
    assert (interval.mean, interval.low, interval.high) == (0.5, 0.0, 1.0)


def test_many_pairs_agree_with_the_normal_approximation() -> None:
    differences = np.random.default_rng(100).normal(0.05, 0.1, 200)
    interval = paired_bootstrap(list(differences), [0.0] * 200, seed=0)
    half_width = 1.96 * differences.std() / np.sqrt(differences.size)
    assert interval.mean == pytest.approx(differences.mean())
    assert interval.low == pytest.approx(differences.mean() - half_width, abs=0.002)
    assert interval.high == pytest.approx(differences.mean() + half_width, abs=0.002)


def test_seeded_and_antisymmetric() -> None:
    rng = np.random.default_rng(1)
    a, b = list(rng.uniform(0.5, 1.0, 30)), list(rng.uniform(0.5, 1.0, 30))
    assert paired_bootstrap(a, b, seed=5) == paired_bootstrap(a, b, seed=5)
    assert paired_bootstrap(a, b, seed=5) != paired_bootstrap(a, b, seed=6)
    forward, backward = paired_bootstrap(a, b, seed=5), paired_bootstrap(b, a, seed=5)
    assert backward.low == pytest.approx(-forward.high) and backward.high == pytest.approx(-forward.low)


@pytest.mark.parametrize(
    ("a", "b"), [([0.5], [0.5, 0.6]), ([], []), ([float("nan")], [0.5])], ids=["unpaired", "empty", "nan"]
)
def test_bad_input_is_refused(a: list[float], b: list[float]) -> None:
    with pytest.raises(ValueError):
        paired_bootstrap(a, b)


def test_a_clearly_better_challenger_clears_the_margin() -> None:
    challenger = _series([0.85, 0.9, 0.88, 0.92, 0.8])
    champion = _series([0.3, 0.5, 0.2, 0.4, 0.45])
    verdict = decide(PromotionRule(margin=0.01), challenger, champion)
    assert verdict.promote and verdict.interval is not None
    assert verdict.interval.low > 0.3 and "promoted" in verdict.detail and "95% CI" in verdict.detail


@pytest.mark.parametrize("margin", [0.0, 0.01])
def test_a_tie_does_not_clear_the_margin(margin: float) -> None:
    same = _series([0.85, 0.9, 0.88, 0.92, 0.8])
    verdict = decide(PromotionRule(margin=margin), same, dict(same))
    assert not verdict.promote and verdict.interval is not None
    assert verdict.interval.low == verdict.interval.high == 0.0
    assert "kept production" in verdict.detail and "too few" not in verdict.detail  # no gain to show


def test_a_better_mean_with_a_wide_interval_is_not_enough() -> None:
    # mean gain +0.02 beats a 0.01 margin, but the interval's lower bound is far below it
    champion = _series([0.6, 0.6, 0.6, 0.6, 0.6])
    challenger = _series([0.8, 0.45, 0.7, 0.5, 0.65])
    verdict = decide(PromotionRule(margin=0.01), challenger, champion)
    assert verdict.interval is not None and verdict.interval.mean == pytest.approx(0.02)
    assert verdict.interval.low < 0 and not verdict.promote
    assert "5 test series are too few to show it with 95% confidence: label more series" in verdict.detail


def test_more_failures_keep_production() -> None:
    champion = _series([0.5, 0.5, 0.5, 0.5, 0.1])
    challenger = _series([0.95, 0.95, 0.95, 0.95, 0.0])  # better by far, but one failed segmentation
    verdict = decide(PromotionRule(margin=0.01), challenger, champion)
    assert verdict.interval is not None and verdict.interval.low > 0.01
    assert not verdict.promote and "failure rate 20% vs 0% (worse)" in verdict.detail


def test_without_a_champion_the_minimum_dice_decides() -> None:
    assert decide(PromotionRule(min_dice=0.5), _series([0.6, 0.5]), None).promote
    verdict = decide(PromotionRule(min_dice=0.5), _series([0.6, 0.3]), None)
    assert not verdict.promote and verdict.interval is None and "no production model" in verdict.detail


def test_both_models_must_be_scored_on_the_same_series() -> None:
    with pytest.raises(ValueError, match="different series"):
        decide(PromotionRule(), {"1": 0.9, "2": 0.8}, {"1": 0.5, "3": 0.5})


def test_a_challenger_that_forgets_the_old_site_is_kept_out() -> None:
    challenger = _series([0.85, 0.9, 0.88, 0.92, 0.8])
    champion = _series([0.3, 0.5, 0.2, 0.4, 0.45])
    old_site = {"phantom 0": 0.9, "phantom 1": 0.9, "series 7": 0.86}
    forgot = {"phantom 0": 0.85, "phantom 1": 0.88, "series 7": 0.83}  # 0.033 below on average
    rule = PromotionRule(margin=0.01, max_forgetting=0.02)
    verdict = decide(rule, challenger, champion, (forgot, old_site))
    assert not verdict.promote and verdict.forgetting == pytest.approx(0.1 / 3)
    assert "on 3 reference series of the old site" in verdict.detail and "beyond the 0.02 allowed" in verdict.detail
    slight = {"phantom 0": 0.89, "phantom 1": 0.89, "series 7": 0.86}  # 0.0067 below: within the tolerance
    kept_in = decide(rule, challenger, champion, (slight, old_site))
    assert kept_in.promote and "within the 0.02 allowed" in kept_in.detail
    assert decide(PromotionRule(max_forgetting=0.05), challenger, champion, (forgot, old_site)).promote
    assert decide(rule, challenger, champion, None).forgetting is None


def test_reference_series_must_match_too() -> None:
    better, worse = _series([0.9, 0.9]), _series([0.1, 0.1])
    with pytest.raises(ValueError, match="different reference series"):
        decide(PromotionRule(), better, worse, ({"phantom 0": 0.9}, {"phantom 1": 0.9}))
