"""Statistics the experiments share, in plain Python (no SciPy): a root finder and Student's t.

- :func:`bisect`: the root of a decreasing function (exercise 5.1's exact binomial intervals
  invert the binomial CDF with it, :func:`t_quantile` the t CDF);
- :func:`t_cdf`, :func:`t_quantile`: Student's t distribution, also for a fractional number of
  degrees of freedom (Welch's interval), for the training studies' intervals.
"""

from __future__ import annotations

import math


def bisect(f, lo: float = 0.0, hi: float = 1.0, iters: int = 60) -> float:
    """Root of a decreasing function ``f`` on [lo, hi] (60 halvings: 1e-18 of the interval)."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""

    def term(m: int) -> float:  # the fraction's m-th numerator: even and odd ones differ
        k = m // 2
        if m % 2:
            return -(a + k) * (a + b + k) * x / ((a + 2 * k) * (a + 2 * k + 1))
        return k * (b - k) * x / ((a + 2 * k - 1) * (a + 2 * k))

    tiny = 1e-300
    c, d = 1.0, 1.0 / _nonzero(1.0 - (a + b) * x / (a + 1.0), tiny)
    h = d
    for m in range(2, 4000):
        d = 1.0 / _nonzero(1.0 + term(m) * d, tiny)
        c = _nonzero(1.0 + term(m) / c, tiny)
        h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _nonzero(value: float, tiny: float) -> float:
    return value if abs(value) > tiny else tiny


def _regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for 0 <= x <= 1."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t distribution with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * _regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`)."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    high = 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    return bisect(lambda t: p - t_cdf(t, df), 0.0, high)
