"""Whether a variant converts better than the control: each variant's conversion with its
Wilson interval, a two-proportion z-test against the control, and Newcombe's interval on
the difference. Every number is finite or None, so the result is valid JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import NormalDist

from pydantic import BaseModel, Field

from recsys.experiments.definitions import Experiment
from recsys.experiments.ledger import VariantCounts


class Interval(BaseModel):
    lower: float
    upper: float

    def excludes_zero(self) -> bool:
        return self.lower > 0 or self.upper < 0


class VariantResult(BaseModel):
    name: str
    share: float
    impressions: int
    conversions: int = Field(description="impressions after which a shown article was bought")
    purchases: int = Field(description="every purchase credited to the variant")
    customers: int = Field(description="distinct customers shown it (HyperLogLog, ~0.8%)")
    conversion: float | None = Field(description="conversions / impressions")
    conversion_interval: Interval | None = Field(description="Wilson score interval")
    purchases_per_impression: float | None
    # Against the control; None for the control itself and where a count makes it undefined.
    difference: float | None = Field(default=None, description="conversion minus the control's")
    difference_interval: Interval | None = Field(
        default=None, description="Newcombe's hybrid score interval"
    )
    relative_lift: float | None = Field(
        default=None, description="difference / the control's conversion"
    )
    z: float | None = Field(default=None, description="two-proportion z statistic (pooled)")
    p_value: float | None = Field(default=None, description="two-sided, of the z-test")
    significant: bool = Field(
        default=False, description="p_value below alpha / comparisons (Bonferroni)"
    )


class ExperimentResult(BaseModel):
    """What GET /experiments/{name} answers."""

    experiment: str
    description: str
    enabled: bool
    control: str
    confidence: float = Field(description="level of every interval")
    alpha: float = Field(description="1 - confidence, split over the comparisons")
    comparisons: int = Field(description="variants tested against the control")
    winner: str | None = Field(
        description="the best variant significantly better than the control, or the control "
        "when every other variant is significantly worse; None while undecided"
    )
    variants: list[VariantResult]


def wilson(successes: int, trials: int, z: float) -> Interval | None:
    """Wilson's score interval of a proportion: inside [0, 1] and sensible at 0 or n
    successes, where the Wald interval collapses to a point."""
    if trials <= 0:
        return None
    p = _clamp(successes, trials) / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z / (1 + z2 / trials) * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    return Interval(lower=max(0.0, centre - half), upper=min(1.0, centre + half))


def newcombe(
    x_control: int, n_control: int, x_variant: int, n_variant: int, z: float
) -> Interval | None:
    """Newcombe's hybrid score interval (his method 10) on p_variant - p_control, built from
    the two Wilson intervals: good coverage at small or zero counts, unlike Wald's."""
    control, variant = wilson(x_control, n_control, z), wilson(x_variant, n_variant, z)
    if control is None or variant is None:
        return None
    p1, p2 = _clamp(x_control, n_control) / n_control, _clamp(x_variant, n_variant) / n_variant
    d = p2 - p1
    return Interval(
        lower=d - math.hypot(p2 - variant.lower, control.upper - p1),
        upper=d + math.hypot(variant.upper - p2, p1 - control.lower),
    )


def z_test(
    x_control: int, n_control: int, x_variant: int, n_variant: int
) -> tuple[float, float] | None:
    """(z, two-sided p) of the pooled two-proportion z-test; None where it is undefined
    (an arm without impressions, or no arm with a conversion, or all converting)."""
    if n_control <= 0 or n_variant <= 0:
        return None
    x_control, x_variant = _clamp(x_control, n_control), _clamp(x_variant, n_variant)
    pooled = (x_control + x_variant) / (n_control + n_variant)
    variance = pooled * (1 - pooled) * (1 / n_control + 1 / n_variant)
    if variance <= 0:
        return None
    z = (x_variant / n_variant - x_control / n_control) / math.sqrt(variance)
    # erfc keeps its precision far in the tail, where 1 - cdf would round to 0.
    return z, min(1.0, math.erfc(abs(z) / math.sqrt(2)))


def report(
    experiment: Experiment, counts: Mapping[str, VariantCounts], confidence: float = 0.95
) -> ExperimentResult:
    """Every variant against the first (the control). `significant` divides alpha by the
    number of comparisons, so three variants do not find a winner by chance three times
    as often as two."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    z_crit = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    alpha = round(1 - confidence, 12)  # 0.05, not 0.050000000000000044
    comparisons = len(experiment.variants) - 1
    control = counts.get(experiment.control.name, VariantCounts())
    results = [_result(experiment.control.name, experiment.control.share, control, z_crit)]
    for variant in experiment.variants[1:]:
        mine = counts.get(variant.name, VariantCounts())
        result = _result(variant.name, variant.share, mine, z_crit)
        test = z_test(control.conversions, control.impressions, mine.conversions, mine.impressions)
        base = results[0].conversion
        difference = None if result.conversion is None or base is None else result.conversion - base
        results.append(
            result.model_copy(
                update={
                    "difference": difference,
                    "difference_interval": newcombe(
                        control.conversions,
                        control.impressions,
                        mine.conversions,
                        mine.impressions,
                        z_crit,
                    ),
                    "relative_lift": difference / base if difference is not None and base else None,
                    "z": None if test is None else test[0],
                    "p_value": None if test is None else test[1],
                    "significant": test is not None and test[1] < alpha / comparisons,
                }
            )
        )
    return ExperimentResult(
        experiment=experiment.name,
        description=experiment.description,
        enabled=experiment.enabled,
        control=experiment.control.name,
        confidence=confidence,
        alpha=alpha,
        comparisons=comparisons,
        winner=_winner(results),
        variants=results,
    )


def _result(name: str, share: float, counts: VariantCounts, z: float) -> VariantResult:
    """A variant on its own, with nothing compared yet."""
    return VariantResult(
        name=name,
        share=share,
        impressions=counts.impressions,
        conversions=counts.conversions,
        purchases=counts.purchases,
        customers=counts.customers,
        conversion=_rate(counts.conversions, counts.impressions),
        conversion_interval=wilson(counts.conversions, counts.impressions, z),
        purchases_per_impression=_rate(counts.purchases, counts.impressions),
    )


def _clamp(successes: int, trials: int) -> int:
    # The counters are written by separate commands: never more successes than trials.
    return min(max(successes, 0), trials)


def _rate(successes: int, trials: int) -> float | None:
    return _clamp(successes, trials) / trials if trials > 0 else None


def _winner(results: list[VariantResult]) -> str | None:
    control, others = results[0], results[1:]
    better = [r for r in others if r.significant and (r.difference or 0) > 0]
    if better:
        return max(better, key=lambda r: r.conversion or 0.0).name
    if all(r.significant and (r.difference or 0) < 0 for r in others):
        return control.name
    return None
