"""Certified-accuracy metrics: functional (numpy) and torchmetrics `Metric` classes."""

from unicr_pl.metrics.functional import (
    average_certified_radius,
    certified_accuracy,
    certified_accuracy_curve,
    high_probability_certified_accuracy,
    robustness_score,
    top_radius_means,
)
from unicr_pl.metrics.modules import AverageCertifiedRadius, CertifiedAccuracy, RobustnessScore

__all__ = [
    "AverageCertifiedRadius",
    "CertifiedAccuracy",
    "RobustnessScore",
    "average_certified_radius",
    "certified_accuracy",
    "certified_accuracy_curve",
    "high_probability_certified_accuracy",
    "robustness_score",
    "top_radius_means",
]
