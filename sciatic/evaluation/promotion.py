"""Champion or challenger: a paired bootstrap of the per-series Dice difference, and the promotion rule.

Both models are scored on the same test series. The difference
(challenger - champion) is taken series by series; resampling the series with
replacement (seeded) gives a percentile confidence interval of its mean. The
challenger is promoted only when the interval's lower bound exceeds the margin
and its failure rate is not worse. With no champion, its mean Dice must reach
a minimum instead.

Where the champion's old site is known (reference series: the test series of
the runs behind it, or phantom studies like those it learnt on), both models
are scored on them too, and a challenger whose mean Dice there falls more than
``max_forgetting`` below the champion's is kept out however good it is on the
new test series: it has forgotten the old site.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sciatic.evaluation.thresholds import FAILURE_DICE

__all__ = ["DiceInterval", "PromotionRule", "Verdict", "decide", "forgetting", "paired_bootstrap"]


@dataclass(frozen=True)
class DiceInterval:
    """Mean of the paired differences and its bootstrap percentile interval."""

    mean: float
    low: float
    high: float
    confidence: float
    resamples: int
    n: int  # paired series

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_bootstrap(
    challenger: Sequence[float],
    champion: Sequence[float],
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> DiceInterval:
    """Percentile interval of mean(challenger - champion), resampling the pairs with replacement."""
    a, b = np.asarray(challenger, np.float64), np.asarray(champion, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("paired_bootstrap needs two equally long, non-empty sequences")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired_bootstrap needs finite values")
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError("resamples must be >= 1 and confidence in (0, 1)")
    difference = a - b
    picks = np.random.default_rng(seed).integers(0, difference.size, size=(resamples, difference.size))
    means = difference[picks].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return DiceInterval(
        mean=float(difference.mean()),
        low=float(low),
        high=float(high),
        confidence=confidence,
        resamples=resamples,
        n=int(difference.size),
    )


@dataclass(frozen=True)
class PromotionRule:
    """The settings of the rule (``SCIATIC_PROMOTE_*``)."""

    margin: float = 0.01  # the interval's lower bound must exceed this
    min_dice: float = 0.5  # with no champion: the challenger's mean Dice must reach this
    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0
    failure_dice: float = FAILURE_DICE  # Dice below this is a failed segmentation
    max_forgetting: float = 0.02  # on reference series: the most the mean Dice may fall below the champion's


@dataclass(frozen=True)
class Verdict:
    promote: bool
    detail: str  # one sentence: the numbers and the reason
    interval: DiceInterval | None  # None when there was no champion
    forgetting: float | None = None  # champion - challenger mean Dice on the reference series; None: none scored


def _failure_rate(dice: Sequence[float], failure_dice: float) -> float:
    return sum(d < failure_dice for d in dice) / len(dice)


def _mean(values: Mapping[str, float]) -> float:
    return math.fsum(values.values()) / len(values)


def forgetting(challenger: Mapping[str, float], champion: Mapping[str, float]) -> float:
    """How far the challenger's mean Dice on the reference series falls below the champion's (negative: above)."""
    if not challenger or sorted(challenger) != sorted(champion):
        raise ValueError("challenger and champion were scored on different reference series")
    return _mean(champion) - _mean(challenger)


def decide(
    rule: PromotionRule,
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    reference: tuple[Mapping[str, float], Mapping[str, float]] | None = None,
) -> Verdict:
    """Promote or keep, from each model's Dice per test series (the same series for both).

    ``reference`` is (challenger, champion) Dice per reference series: the
    champion's old site, where known; ignored with no champion.
    """
    if not challenger:
        raise ValueError("no test series")
    names = sorted(challenger)
    new = [challenger[n] for n in names]
    mean = math.fsum(new) / len(new)
    if champion is None:
        promote = mean >= rule.min_dice
        detail = (
            f"no production model; challenger mean Dice {mean:.3f} "
            f"{'>=' if promote else '<'} the minimum {rule.min_dice}: {'promoted' if promote else 'not promoted'}"
        )
        return Verdict(promote, detail, None)
    if sorted(champion) != names:
        raise ValueError("challenger and champion were scored on different series")
    old = [champion[n] for n in names]
    interval = paired_bootstrap(new, old, rule.resamples, rule.confidence, rule.seed)
    better = interval.low > rule.margin
    new_failures, old_failures = _failure_rate(new, rule.failure_dice), _failure_rate(old, rule.failure_dice)
    safe = new_failures <= old_failures
    lost = forgetting(*reference) if reference is not None and reference[0] else None
    remembers = lost is None or lost <= rule.max_forgetting
    promote = better and safe and remembers
    old_site = ""
    if lost is not None:
        old_site = (
            f"; on {len(reference[0]) if reference else 0} reference series of the old site the challenger's "
            f"mean Dice is {-lost:+.3f} against production's ({'within' if remembers else 'beyond'} "
            f"the {rule.max_forgetting} allowed)"
        )
    unsettled = ""
    if not better and interval.mean > rule.margin:  # a gain on average that these few series cannot show
        unsettled = (
            f" (the mean gain clears it, but {interval.n} test series are too few to show it with "
            f"{rule.confidence:.0%} confidence: label more series of this site)"
        )
    detail = (
        f"Dice challenger - production {interval.mean:+.3f}, {rule.confidence:.0%} CI "
        f"[{interval.low:+.3f}, {interval.high:+.3f}] over {interval.n} test series "
        f"(paired bootstrap, {rule.resamples} resamples, seed {rule.seed}); lower bound "
        f"{'>' if better else '<='} margin {rule.margin}{unsettled}; failure rate {new_failures:.0%} vs "
        f"{old_failures:.0%}{'' if safe else ' (worse)'}{old_site}: {'promoted' if promote else 'kept production'}"
    )
    return Verdict(promote, detail, interval, lost)
