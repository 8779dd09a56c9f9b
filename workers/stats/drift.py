"""Drift of each feature between a baseline (a dataset version's profile) and current values, and of the dataset.

Methods, chosen per feature as Evidently's data drift preset chooses them by default ("auto"), where the reference
size is the baseline's non-missing count and a numeric feature with at most 5 distinct values (baseline and current
together) counts as categorical:

- numeric, reference <= 1000: "ks", the two-sample Kolmogorov–Smirnov test (scipy.stats.ks_2samp's statistic and
  p-value); drifted when p <= threshold (0.05).
- numeric, reference > 1000: "wasserstein", the first Wasserstein distance divided by the baseline's population
  standard deviation (at least 0.001); drifted when >= threshold (0.1).
- categorical, reference <= 1000: "chisquare", scipy.stats.chisquare of the current counts against the baseline's
  shares times the current count (p < threshold, 0.05); with at most 2 categories "z", the two-proportion z-test.
- categorical, reference > 1000: "jensenshannon", scipy.spatial.distance.jensenshannon of the two shares with
  natural logarithms (so at most sqrt(ln 2) ~ 0.833); drifted when >= threshold (0.1).
- "psi", the population stability index, for any feature: numeric features on the baseline's deciles, categorical
  on their values, an empty bin's share replaced by 0.0001 (as Evidently); drifted when >= threshold (0.1).

A numeric distribution here is a set of point masses (exact sketches: each value with its count) and of bins whose
values are taken as spread evenly (binned sketches, or a profile's histogram when it has no sketch). Statistics of
exact distributions equal SciPy's on the rows; those of binned ones are within a bin's width.

The dataset is drifted when the share of drifted features among those judged reaches `share` (0.5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from workers.stats.sketch import NumericSketch

SMALL_REFERENCE = 1000  # Evidently's boundary between small and large references
FEW_VALUES = 5  # a numeric feature with at most this many distinct values is compared as categorical
PSI_BINS = 10
PAGE_BINS = 20  # the page's numeric histograms
PAGE_VALUES = 20  # the page's categorical bars
JS_MAX = math.sqrt(math.log(2))  # the largest Jensen–Shannon distance with natural logarithms
# A KS p-value is exact (scipy's method="exact") while both sides have at most this many values, as in ks_2samp.
KS_EXACT_MAX = 10_000
OTHER = "(other)"
# The shares of a profile's quantiles (workers.datasets.QUANTILES), used when a column has no sketch.
QUANTILE_SHARES = {"p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.50, "p75": 0.75, "p95": 0.95, "p99": 0.99}

P_VALUE_METHODS = frozenset({"ks", "chisquare", "z"})
NUMERIC_METHODS = ("ks", "wasserstein", "jensenshannon", "psi")
CATEGORICAL_METHODS = ("chisquare", "z", "jensenshannon", "psi")
METHODS = ("ks", "wasserstein", "chisquare", "z", "jensenshannon", "psi")
DEFAULT_THRESHOLDS = {"ks": 0.05, "chisquare": 0.05, "z": 0.05, "wasserstein": 0.1, "jensenshannon": 0.1, "psi": 0.1}
METHOD_NAMES = {
    "ks": "Kolmogorov–Smirnov p-value",
    "wasserstein": "Wasserstein distance (normed)",
    "chisquare": "chi-square p-value",
    "z": "two-proportion z-test p-value",
    "jensenshannon": "Jensen–Shannon distance",
    "psi": "PSI",
}
DEFAULT_SHARE = 0.5


# ---------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class MethodChoice:
    method: str = "auto"
    threshold: float | None = None  # None: the method's default


@dataclass(frozen=True)
class DriftConfig:
    """An environment's drift settings; `DriftConfig.from_json` refuses what `validate_drift_config` refuses."""

    numeric: MethodChoice = MethodChoice()
    categorical: MethodChoice = MethodChoice()
    features: Mapping[str, MethodChoice] = field(default_factory=dict)
    share: float = DEFAULT_SHARE

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> DriftConfig:
        errors = validate_drift_config(data)
        if errors:
            raise DriftConfigError(errors)
        data = data or {}
        return cls(
            numeric=_choice(data.get("numeric")),
            categorical=_choice(data.get("categorical")),
            features={str(name): _choice(entry) for name, entry in (data.get("features") or {}).items()},
            share=float(data.get("share", DEFAULT_SHARE)),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"features": {name: asdict(choice) for name, choice in self.features.items()}}

    def choice_for(self, feature: str, kind: str) -> MethodChoice:
        if feature in self.features:
            return self.features[feature]
        return self.numeric if kind == "numeric" else self.categorical


class DriftConfigError(ValueError):
    """The drift settings are invalid; `errors` maps each field path to what was expected."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{path}: {message}" for path, message in errors.items()))
        self.errors = errors


def _choice(entry: Mapping[str, Any] | None) -> MethodChoice:
    entry = entry or {}
    threshold = entry.get("threshold")
    return MethodChoice(str(entry.get("method", "auto")), None if threshold is None else float(threshold))


def validate_drift_config(data: Any) -> dict[str, str]:
    """What is wrong with an environment's drift settings, by field path ("numeric.threshold"); empty when valid.

    `{"numeric": {"method": "psi", "threshold": 0.2}, "categorical": {...}, "features": {"age": {"method": "ks",
    "threshold": 0.01}}, "share": 0.5}`; every part is optional, a method defaults to "auto" (chosen by the
    baseline's size), a threshold to the method's default.
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        return {"drift": "expected an object with numeric, categorical, features and share"}
    errors: dict[str, str] = {}
    known = ("numeric", "categorical", "features", "share")
    for key in data:
        if key not in known:
            errors[str(key)] = f"unknown setting; expected one of {', '.join(known)}"
    for kind, allowed in (("numeric", NUMERIC_METHODS), ("categorical", CATEGORICAL_METHODS)):
        if data.get(kind) is not None:
            errors.update(_validate_choice(data[kind], kind, allowed))
    features = data.get("features")
    if features is not None:
        if not isinstance(features, Mapping):
            errors["features"] = "expected an object mapping feature names to {method, threshold}"
        else:
            for name, entry in features.items():
                errors.update(_validate_choice(entry, f"features.{name}", METHODS))
    if "share" in data:
        share = data["share"]
        if not _is_number(share) or not 0 < share <= 1:
            errors["share"] = (
                f"expected the share of drifted features that makes the dataset drifted, in (0, 1]; got {share!r}"
            )
    return errors


def _validate_choice(entry: Any, path: str, allowed: tuple[str, ...]) -> dict[str, str]:
    if not isinstance(entry, Mapping):
        return {path: "expected an object with method and threshold"}
    errors: dict[str, str] = {}
    for key in entry:
        if key not in ("method", "threshold"):
            errors[f"{path}.{key}"] = "unknown setting; expected method or threshold"
    method = entry.get("method", "auto")
    if method != "auto" and method not in allowed:
        errors[f"{path}.method"] = f"unknown method {method!r}; expected auto or one of {', '.join(allowed)}"
        return errors
    if "threshold" not in entry or entry["threshold"] is None:
        return errors
    threshold = entry["threshold"]
    if method == "auto":
        errors[f"{path}.threshold"] = (
            "a threshold needs a method: with auto the method, and so what the threshold means, depends on the "
            "baseline's size"
        )
    elif not _is_number(threshold):
        errors[f"{path}.threshold"] = f"expected a number; got {threshold!r}"
    else:
        problem = threshold_problem(method, float(threshold))
        if problem:
            errors[f"{path}.threshold"] = problem
    return errors


def threshold_problem(method: str, threshold: float) -> str | None:
    """Why `threshold` cannot be `method`'s threshold, or None when it can."""
    if method in P_VALUE_METHODS:
        if not 0 < threshold < 1:
            return f"{method} compares a p-value: expected a threshold strictly between 0 and 1; got {threshold!r}"
    elif method == "jensenshannon":
        if not 0 < threshold <= JS_MAX:
            return (
                f"jensenshannon is a distance between 0 and sqrt(ln 2) ~ {JS_MAX:.4f}: expected a threshold above 0 "
                f"and at most that; got {threshold!r}"
            )
    elif not 0 < threshold < math.inf:
        return f"{method} is a distance: expected a threshold above 0; got {threshold!r}"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------------------------------------------------
# Numeric distributions


class Distribution:
    """A numeric distribution: point masses at `atoms` and evenly filled bins [lo, hi), all with counts."""

    def __init__(
        self,
        *,
        atoms: np.ndarray,
        atom_counts: np.ndarray,
        lo: np.ndarray | None = None,
        hi: np.ndarray | None = None,
        bin_counts: np.ndarray | None = None,
        std: float | None = None,
    ) -> None:
        self.atoms = np.asarray(atoms, dtype=np.float64)
        self.atom_counts = np.asarray(atom_counts, dtype=np.float64)
        self.lo = np.zeros(0) if lo is None else np.asarray(lo, dtype=np.float64)
        self.hi = np.zeros(0) if hi is None else np.asarray(hi, dtype=np.float64)
        self.bin_counts = np.zeros(0) if bin_counts is None else np.asarray(bin_counts, dtype=np.float64)
        self.n = float(self.atom_counts.sum() + self.bin_counts.sum())
        self._atom_cumulative = np.cumsum(self.atom_counts)
        self._bin_cumulative = np.concatenate([[0.0], np.cumsum(self.bin_counts)])
        self._std = std

    @property
    def exact(self) -> bool:
        return self.bin_counts.size == 0

    @classmethod
    def from_sketch(cls, sketch: NumericSketch) -> Distribution:
        if sketch.values is not None:
            return cls(atoms=sketch.values, atom_counts=sketch.counts, std=sketch.std())
        edges = sketch.edges()
        lo, hi, counts = edges[:-1], edges[1:], sketch.counts.astype(np.float64)
        point = (hi <= lo) & (counts > 0)  # a bin clipped to nothing at min or max holds values equal to it
        keep = (hi > lo) & (counts > 0)
        return cls(
            atoms=lo[point],
            atom_counts=counts[point],
            lo=lo[keep],
            hi=hi[keep],
            bin_counts=counts[keep],
            std=sketch.std(),
        )

    @classmethod
    def from_profile_column(cls, column: Mapping[str, Any]) -> Distribution:
        """A profile's numeric column: its sketch when it has one, else its histogram (coarser)."""
        if column.get("sketch"):
            return cls.from_sketch(NumericSketch.from_json(column["sketch"]))
        n = int(column.get("count") or 0)
        std = column.get("std")
        population_std = float(std) * math.sqrt((n - 1) / n) if std is not None and n > 1 else (0.0 if n else None)
        histogram = column.get("histogram") or {}
        edges = np.asarray(histogram.get("edges") or [], dtype=np.float64)
        counts = np.asarray(histogram.get("counts") or [], dtype=np.float64)
        low, high = column.get("min"), column.get("max")
        if n == 0 or edges.size < 2 or low is None or high is None:
            return cls(atoms=np.zeros(0), atom_counts=np.zeros(0), std=population_std)
        if low == high:
            return cls(atoms=np.array([low]), atom_counts=np.array([counts.sum()]), std=0.0)
        widths = np.diff(edges)
        if column.get("type") == "integer" and np.allclose(widths, 1.0) and edges[0] + 0.5 == low:
            # The profiler's one bin per whole number, centred on it: each bin is that number's count.
            keep = counts > 0
            return cls(atoms=(edges[:-1] + 0.5)[keep], atom_counts=counts[keep], std=population_std)
        # The CDF is known at the histogram's edges and, nearly, at the profile's quantiles: linear between them.
        xs = np.clip(edges, low, high)
        shares = np.concatenate([[0.0], np.cumsum(counts)]) / max(counts.sum(), 1.0)
        quantiles = [
            (float(value), QUANTILE_SHARES[key])
            for key, value in (column.get("quantiles") or {}).items()
            if key in QUANTILE_SHARES and value is not None and low < value < high
        ]
        if quantiles:
            xs = np.concatenate([xs, [x for x, _ in quantiles]])
            shares = np.concatenate([shares, [share for _, share in quantiles]])
        order = np.lexsort((shares, xs))
        xs, shares = xs[order], np.maximum.accumulate(shares[order])
        mass = np.diff(shares) * n
        keep = (mass > 0) & (np.diff(xs) > 0)
        return cls(
            atoms=np.zeros(0),
            atom_counts=np.zeros(0),
            lo=xs[:-1][keep],
            hi=xs[1:][keep],
            bin_counts=mass[keep],
            std=population_std,
        )

    def std(self) -> float | None:
        return self._std

    def distinct(self) -> np.ndarray | None:
        """The distinct values when every value is a point mass, else None (then there are many)."""
        return self.atoms if self.exact else None

    def breakpoints(self) -> np.ndarray:
        return np.unique(np.concatenate([self.atoms, self.lo, self.hi]))

    def cdf(self, x: np.ndarray, *, left: bool = False) -> np.ndarray:
        """The count of values <= x (or < x when `left`), as shares of n."""
        x = np.asarray(x, dtype=np.float64)
        if self.n == 0:
            return np.zeros(x.shape)
        total = np.zeros(x.shape)
        if self.atoms.size:
            below = np.searchsorted(self.atoms, x, side="left" if left else "right")
            total += np.where(below > 0, self._atom_cumulative[np.maximum(below - 1, 0)], 0.0)
        if self.lo.size:
            # Bins are sorted and do not overlap; past a bin's end (a gap, or beyond the last) its count is all in.
            found = np.searchsorted(self.lo, x, side="right") - 1
            index = np.maximum(found, 0)
            lo, hi = self.lo[index], self.hi[index]
            fraction = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
            total += np.where(found >= 0, self._bin_cumulative[index] + fraction * self.bin_counts[index], 0.0)
        return total / self.n

    def quantiles(self, qs: np.ndarray) -> np.ndarray:
        """The inverse of the CDF: the smallest x whose share of values <= x reaches q (interpolated in bins)."""
        points = self.breakpoints()
        xs = np.repeat(points, 2)
        shares = np.empty(xs.size)
        shares[0::2] = self.cdf(points, left=True)
        shares[1::2] = self.cdf(points)
        index = np.clip(np.searchsorted(shares, qs, side="left"), 1, xs.size - 1)
        s0, s1, x0, x1 = shares[index - 1], shares[index], xs[index - 1], xs[index]
        step = np.where(s1 > s0, (np.asarray(qs) - s0) / np.where(s1 > s0, s1 - s0, 1.0), 1.0)
        return x0 + np.clip(step, 0.0, 1.0) * (x1 - x0)


def ks_statistic(a: Distribution, b: Distribution) -> float:
    """sup |F_a - F_b|: at a breakpoint, from either side (piecewise-linear CDFs reach their extremes there)."""
    points = np.unique(np.concatenate([a.breakpoints(), b.breakpoints()]))
    right = np.abs(a.cdf(points) - b.cdf(points))
    left = np.abs(a.cdf(points, left=True) - b.cdf(points, left=True))
    return float(max(right.max(initial=0.0), left.max(initial=0.0)))


def ks_test(a: Distribution, b: Distribution) -> tuple[float, float]:
    """The two-sided two-sample KS statistic and p-value, as scipy.stats.ks_2samp(method="auto") gives them."""
    from scipy import stats

    n1, n2 = int(a.n), int(b.n)
    if a.exact and b.exact and max(n1, n2) <= KS_EXACT_MAX:
        # Small samples: rebuild them from their value counts and let SciPy do exactly what it does with rows.
        result = stats.ks_2samp(
            np.repeat(a.atoms, a.atom_counts.astype(np.int64)), np.repeat(b.atoms, b.atom_counts.astype(np.int64))
        )
        return float(result.statistic), float(result.pvalue)
    d = ks_statistic(a, b)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    # ks_2samp's asymptotic two-sided p-value (its choice once either side has more than 10,000 values)
    return d, float(np.clip(stats.kstwo.sf(d, np.round(m * n / (m + n))), 0.0, 1.0))


def wasserstein_distance(a: Distribution, b: Distribution) -> float:
    """The first Wasserstein distance, the integral of |F_a - F_b|, exact for point masses and evenly filled bins."""
    points = np.unique(np.concatenate([a.breakpoints(), b.breakpoints()]))
    if points.size < 2:
        return 0.0
    start = (a.cdf(points) - b.cdf(points))[:-1]  # just right of each breakpoint
    end = (a.cdf(points, left=True) - b.cdf(points, left=True))[1:]  # just left of the next one
    width = np.diff(points)
    same_sign = start * end >= 0
    magnitude = np.abs(start) + np.abs(end)
    # |a linear function| integrated over the interval: a trapezoid, or two triangles when it crosses zero.
    crossing = np.where(magnitude > 0, (start * start + end * end) / np.where(magnitude > 0, magnitude, 1.0), 0.0)
    return float(np.sum(width * np.where(same_sign, magnitude, crossing) / 2))


def wasserstein_normed(a: Distribution, b: Distribution) -> float:
    """Wasserstein distance over the baseline's (`a`) population standard deviation, which counts as 0.001 at least."""
    return wasserstein_distance(a, b) / max(a.std() or 0.0, 0.001)


def shares_on_edges(a: Distribution, edges: np.ndarray) -> np.ndarray:
    """Shares of `a` in (-inf, e1], (e1, e2], ..., (e_k, inf)."""
    cumulative = np.concatenate([[0.0], a.cdf(edges), [1.0]])
    return np.diff(cumulative)


def decile_edges(a: Distribution) -> np.ndarray:
    return np.unique(a.quantiles(np.arange(1, PSI_BINS) / PSI_BINS))


# ---------------------------------------------------------------------------------------------------------------------
# Shares, categories and the statistics on them


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two share vectors; an empty share becomes 0.0001 (or a millionth of the smallest
    non-empty one when that is below 0.0001), as Evidently fills them."""
    r, c = _fill_zeroes(reference), _fill_zeroes(current)
    return float(np.sum((r - c) * np.log(r / c)))


def _fill_zeroes(shares: np.ndarray) -> np.ndarray:
    shares = np.asarray(shares, dtype=np.float64).copy()
    nonzero = shares[shares != 0]
    if nonzero.size and nonzero.size < shares.size:
        smallest = float(nonzero.min())
        shares[shares == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return shares


def jensenshannon(reference: np.ndarray, current: np.ndarray) -> float:
    """scipy.spatial.distance.jensenshannon with natural logarithms (SciPy's and Evidently's default base)."""
    from scipy.spatial import distance

    return float(distance.jensenshannon(reference, current))


def chisquare(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """scipy.stats.chisquare of the current counts against the reference's shares scaled to the current total."""
    from scipy import stats

    reference_counts = np.asarray(reference_counts, dtype=np.float64)
    current_counts = np.asarray(current_counts, dtype=np.float64)
    expected = reference_counts * (current_counts.sum() / reference_counts.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        result = stats.chisquare(current_counts, expected)
    return float(result.statistic), float(result.pvalue)


def z_test(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """The two-proportion z-test on the share of the first category, two-sided (Evidently's "z")."""
    from scipy import stats

    r_total, c_total = float(np.sum(reference_counts)), float(np.sum(current_counts))
    if (
        len(reference_counts) < 2
        or (reference_counts[1] == 0 and current_counts[1] == 0)
        or (reference_counts[0] == 0 and current_counts[0] == 0)
    ):
        return 0.0, 1.0  # one value on both sides: nothing moved
    p1 = float(reference_counts[1:].sum()) / r_total
    p2 = float(current_counts[1:].sum()) / c_total
    pooled = (p1 * r_total + p2 * c_total) / (r_total + c_total)
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / r_total + 1 / c_total))
    return z, float(2 * (1 - stats.norm.cdf(abs(z))))


@dataclass
class Categories:
    """A categorical feature's counts per value; `rest` counts values not kept (a profile keeps its top values)."""

    counts: dict[str, int]
    rest: int = 0
    complete: bool = True  # every value is in `counts` (a profile's column that kept all its values)

    @property
    def total(self) -> int:
        return sum(self.counts.values()) + self.rest

    @classmethod
    def from_profile_column(cls, column: Mapping[str, Any]) -> Categories:
        top = {str(entry["value"]): int(entry["count"]) for entry in column.get("top") or []}
        count = int(column.get("count") or 0)
        rest = max(count - sum(top.values()), 0)
        complete = rest == 0 and not column.get("distinct_capped")
        return cls(top, rest, complete)


def aligned_counts(reference: Categories, current: Categories) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Both sides' counts on the same values: the union when the baseline kept every value; otherwise the
    baseline's kept values plus one (other) for the rest on both sides."""
    if reference.complete:
        values = sorted(set(reference.counts) | set(current.counts), key=lambda v: (-reference.counts.get(v, 0), v))
        r = np.array([reference.counts.get(v, 0) for v in values], dtype=np.float64)
        c = np.array([current.counts.get(v, 0) for v in values], dtype=np.float64)
        if current.rest:
            values.append(OTHER)
            r, c = np.append(r, 0.0), np.append(c, float(current.rest))
        return values, r, c
    values = sorted(reference.counts, key=lambda v: (-reference.counts[v], v))
    r = np.array([reference.counts[v] for v in values] + [reference.rest], dtype=np.float64)
    kept = [current.counts.get(v, 0) for v in values]
    c = np.array(kept + [current.total - sum(kept)], dtype=np.float64)
    return [*values, OTHER], r, c


# ---------------------------------------------------------------------------------------------------------------------
# One feature, and the dataset


@dataclass
class FeatureDrift:
    """One feature's drift: `drifted` is None (and `note` says why) when there is no verdict."""

    feature: str
    kind: str  # "numeric" or "categorical" (a numeric feature with few values is compared as categorical)
    method: str | None
    statistic: float | None
    p_value: float | None  # for ks, chisquare and z; None for distances
    score: float | None  # what the threshold is compared with: the p-value, or the distance
    threshold: float | None
    drifted: bool | None
    baseline_rows: int
    current_rows: int
    # shares (each side's sum is 1): {"edges", "baseline", "current"} on common bins, or {"values", ...}
    histogram: dict[str, Any] | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {key: _json_number(value) for key, value in asdict(self).items()}


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def numeric_feature_drift(
    name: str, baseline: Distribution, current: Distribution, choice: MethodChoice
) -> FeatureDrift:
    """Drift of a numeric feature; compared as categorical when both sides have at most 5 distinct values together."""
    base = FeatureDrift(name, "numeric", None, None, None, None, None, None, int(baseline.n), int(current.n))
    if baseline.n == 0 or current.n == 0:
        base.note = "no baseline values" if baseline.n == 0 else "no current values in the window"
        return base
    few = _few_values(baseline, current)
    if few is not None and choice.method not in ("ks", "wasserstein"):
        # As Evidently: few distinct numbers are categories (unless a numeric method is configured for the feature).
        def categories(side: Distribution) -> Categories:
            return Categories({_number_text(v): int(c) for v, c in zip(side.atoms, side.atom_counts, strict=True)})

        return categorical_feature_drift(name, categories(baseline), categories(current), choice)
    method = choice.method
    if method == "auto":
        method = "ks" if baseline.n <= SMALL_REFERENCE else "wasserstein"
    if method not in NUMERIC_METHODS:
        base.note = f"{method} does not apply to a numeric feature; expected one of {', '.join(NUMERIC_METHODS)}"
        return base
    threshold = DEFAULT_THRESHOLDS[method] if choice.threshold is None else choice.threshold
    p_value: float | None = None
    if method == "ks":
        statistic, p_value = ks_test(baseline, current)
    elif method == "wasserstein":
        statistic = wasserstein_normed(baseline, current)
    else:
        edges = decile_edges(baseline)
        r, c = shares_on_edges(baseline, edges), shares_on_edges(current, edges)
        statistic = psi(r, c) if method == "psi" else jensenshannon(r, c)
    score = p_value if p_value is not None else statistic
    base.method, base.statistic, base.p_value, base.score, base.threshold = method, statistic, p_value, score, threshold
    base.drifted = _verdict(method, score, threshold)
    base.histogram = numeric_histogram(baseline, current)
    return base


def categorical_feature_drift(
    name: str, baseline: Categories, current: Categories, choice: MethodChoice
) -> FeatureDrift:
    base = FeatureDrift(name, "categorical", None, None, None, None, None, None, baseline.total, current.total)
    if baseline.total == 0 or current.total == 0:
        base.note = "no baseline values" if baseline.total == 0 else "no current values in the window"
        return base
    values, r, c = aligned_counts(baseline, current)
    method = choice.method
    if method == "auto":
        if baseline.total <= SMALL_REFERENCE:
            method = "chisquare" if len(values) > 2 else "z"
        else:
            method = "jensenshannon"
    if method not in CATEGORICAL_METHODS:
        base.note = (
            f"{method} does not apply to a categorical feature; expected one of {', '.join(CATEGORICAL_METHODS)}"
        )
        return base
    threshold = DEFAULT_THRESHOLDS[method] if choice.threshold is None else choice.threshold
    p_value: float | None = None
    if method == "chisquare":
        statistic, p_value = chisquare(r, c)
    elif method == "z":
        statistic, p_value = z_test(r, c)
    elif method == "jensenshannon":
        statistic = jensenshannon(r / r.sum(), c / c.sum())
    else:
        statistic = psi(r / r.sum(), c / c.sum())
    score = p_value if p_value is not None else statistic
    base.method, base.statistic, base.p_value, base.score, base.threshold = method, statistic, p_value, score, threshold
    base.drifted = _verdict(method, score, threshold)
    shown = min(len(values), PAGE_VALUES)
    base.histogram = {
        "values": values[:shown],
        "baseline": (r[:shown] / r.sum()).tolist(),
        "current": (c[:shown] / c.sum()).tolist(),
    }
    return base


def _few_values(baseline: Distribution, current: Distribution) -> np.ndarray | None:
    a, b = baseline.distinct(), current.distinct()
    if a is None or b is None:
        return None
    both = np.union1d(a, b)
    return both if both.size <= FEW_VALUES else None


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


def _verdict(method: str, score: float, threshold: float) -> bool:
    if method == "ks":
        return bool(score <= threshold)  # ks_2samp p-value at or below the level, as Evidently
    if method in P_VALUE_METHODS:
        return bool(score < threshold)
    return bool(score >= threshold)


def numeric_histogram(baseline: Distribution, current: Distribution) -> dict[str, Any]:
    """Both sides' shares on PAGE_BINS equal bins over both sides' range together."""
    points = np.concatenate([baseline.breakpoints(), current.breakpoints()])
    low, high = float(points.min()), float(points.max())
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, PAGE_BINS + 1)
    inner = edges[1:-1]
    return {
        "edges": edges.tolist(),
        "baseline": shares_on_edges(baseline, inner).tolist(),
        "current": shares_on_edges(current, inner).tolist(),
    }


def dataset_verdict(features: list[FeatureDrift], share: float) -> tuple[float, bool]:
    """The share of drifted features among those with a verdict, and whether it reaches `share`."""
    judged = [feature for feature in features if feature.drifted is not None]
    if not judged:
        return 0.0, False
    drifted_share = sum(1 for feature in judged if feature.drifted) / len(judged)
    return drifted_share, drifted_share >= share
