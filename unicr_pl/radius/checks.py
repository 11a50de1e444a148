"""Argument checks shared by the radius functions: clear ValueErrors, never deep tracebacks."""

from __future__ import annotations

import math


def check_probabilities(p_a: float, p_b: float | None) -> tuple[float, float]:
    """Validates (p_A, p_B); p_B = None means the binary case p_B = 1 - p_A.

    Raises ValueError naming the argument when it is not finite, outside [0, 1], or p_B > p_A
    in the multi-class case. p_A <= 1/2 is not an error: the radius is 0 (abstain).
    """
    for name, value in (("p_a", p_a), ("p_b", p_b)):
        if value is None:
            continue
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number in [0, 1], got {value!r}")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    p_a = float(p_a)
    if p_b is None:
        return p_a, 1.0 - p_a
    p_b = float(p_b)
    if p_b > p_a:
        raise ValueError(f"p_b must not exceed p_a, got p_a={p_a}, p_b={p_b}")
    if p_a + p_b > 1.0 + 1e-12:
        raise ValueError(f"p_a + p_b must be <= 1, got p_a={p_a}, p_b={p_b}")
    return p_a, p_b


def check_norm(p: float | str) -> float:
    """Parses an l_p order: a number in (0, inf] or 'inf'. Returns a float (math.inf for inf)."""
    if isinstance(p, str):
        text = p.strip().lower()
        if text in ("inf", "linf", "infinity"):
            return math.inf
        try:
            p = float(text.removeprefix("l"))
        except ValueError:
            raise ValueError(f"norm must be a number in (0, inf] or 'inf', got {p!r}") from None
    p = float(p)
    if math.isnan(p) or p <= 0:
        raise ValueError(f"norm p must be in (0, inf], got {p}")
    return p


def norm_label(p: float) -> str:
    """The one spelling of an l_p order in names, columns and tables: 'l1', 'l2', 'l1.5',
    'linf'."""
    return "linf" if math.isinf(p) else f"l{p:g}"


def check_dim(dim: int) -> int:
    """The input dimension d: an integer >= 1."""
    if isinstance(dim, bool) or not isinstance(dim, int | float) or dim != int(dim) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    return int(dim)


def lp_norm_of_structured(a: float, k: int, p: float) -> float:
    """l_p norm of (a, ..., a, 0, ..., 0) with k copies of a: a k^(1/p)."""
    return abs(a) if math.isinf(p) else abs(a) * k ** (1.0 / p)
