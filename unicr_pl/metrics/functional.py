"""Certified-accuracy metrics on (radius, correct) pairs, as in Cohen et al.'s analyze.py.

`correct` means the smoothed prediction equals the label (an abstention is never correct);
`radius` is its certified radius (0 when abstaining). All functions take numpy arrays or
tensors and return floats or numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _arrays(radius, correct) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(radius.cpu() if hasattr(radius, "cpu") else radius, dtype=np.float64)
    c = np.asarray(correct.cpu() if hasattr(correct, "cpu") else correct).astype(bool)
    if r.shape != c.shape or r.ndim != 1:
        raise ValueError(f"radius and correct must be 1-D of one length, got {r.shape}, {c.shape}")
    if np.any(np.isnan(r)) or np.any(r < 0):
        raise ValueError("radii must be >= 0 and not NaN")
    return r, c


def certified_accuracy(radius, correct, r: float) -> float:
    """Fraction of samples predicted correctly with a certified radius >= r."""
    rad, cor = _arrays(radius, correct)
    return float(np.mean(cor & (rad >= r))) if rad.size else 0.0


def certified_accuracy_curve(radius, correct, radii: Sequence[float]) -> np.ndarray:
    """certified_accuracy at each radius of the grid."""
    rad, cor = _arrays(radius, correct)
    if rad.size == 0:
        return np.zeros(len(radii))
    return np.array([np.mean(cor & (rad >= r)) for r in radii])


def high_probability_certified_accuracy(
    radius, correct, r: float, alpha0: float = 0.001, rho: float = 0.001
) -> float:
    """Cohen et al.'s high-probability certified accuracy at r: with probability >= 1 - rho
    over the certification draws, the true certified accuracy is at least this, given that
    each certificate fails with probability <= alpha0 (a Bernstein-type bound)."""
    rad, cor = _arrays(radius, correct)
    m = rad.size
    mean = float(np.mean(cor & (rad >= r)))
    log_term = math.log(1 / rho)
    return mean - alpha0 - math.sqrt(alpha0 * (1 - alpha0) * log_term / m) - log_term / (3 * m)


def average_certified_radius(radius, correct) -> float:
    """Mean over samples of radius * correct (ACR); equals the area under the curve."""
    rad, cor = _arrays(radius, correct)
    return float(np.mean(rad * cor)) if rad.size else 0.0


def top_radius_means(
    radius, correct, fractions: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0)
) -> np.ndarray:
    """Table 3 of the paper: the mean of the largest q * N certified radii, for each q.

    A sample that is misclassified or abstains counts with radius 0, so the 100% column is the
    ACR. The top ceil(q * N) samples are averaged (at least one).
    """
    rad, cor = _arrays(radius, correct)
    if any(not 0.0 < q <= 1.0 for q in fractions):
        raise ValueError(f"fractions must lie in (0, 1], got {list(fractions)}")
    if rad.size == 0:
        return np.zeros(len(fractions))
    ranked = np.sort(rad * cor)[::-1]
    return np.array([ranked[: max(1, math.ceil(q * rad.size))].mean() for q in fractions])


def robustness_score(results: Sequence[tuple]) -> float:
    """Eq. (5): integral over R >= 0 of max over result sets of their certified accuracy.

    Args:
        results: one (radius, correct) pair per noise level sigma (same test set).

    The max of non-increasing step functions is one too, so the integral is exact: a sum over
    the intervals between consecutive distinct radii. With one result set it is the ACR.
    """
    if not results:
        raise ValueError("robustness_score needs at least one result set")
    pairs = [_arrays(r, c) for r, c in results]
    cuts = np.unique(np.concatenate([[0.0], *[r[c] for r, c in pairs]]))
    cuts = cuts[np.isfinite(cuts)]
    if cuts.size < 2:
        return 0.0
    # On (cuts[i], cuts[i+1]] each accuracy is the fraction with radius >= cuts[i+1].
    best = np.max([certified_accuracy_curve(r, c, cuts[1:]) for r, c in pairs], axis=0)
    return float(np.sum(best * np.diff(cuts)))
