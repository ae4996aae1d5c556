"""Trust report of distilled students (docs/trust.md): membership inference, adversarial robustness and
fairness of the teacher, the scratch student and every distilled student of a comparison.

``trust_report(folder)`` / ``freqd trust FOLDER``. The pure parts (:mod:`privacy`, :mod:`robustness`,
:mod:`fairness`) take arrays and tables, so they serve any model or pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from freqd.trust.fairness import gini, item_fairness, lorenz, user_fairness
from freqd.trust.privacy import attack_metrics, membership_sample, signals_from_scores

if TYPE_CHECKING:
    from freqd.trust.runner import PARTS, TrustError, TrustOptions, trust_report


def __getattr__(name):
    """The runner (and the training stack it loads) on first use."""
    if name in ("PARTS", "TrustError", "TrustOptions", "trust_report"):
        from freqd.trust import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'freqd.trust' has no attribute {name!r}")


__all__ = ["PARTS", "TrustError", "TrustOptions", "attack_metrics", "gini", "item_fairness", "lorenz",
           "membership_sample", "signals_from_scores", "trust_report", "user_fairness"]
