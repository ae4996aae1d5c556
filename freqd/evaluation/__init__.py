"""Evaluation protocols: how test items are masked and how users are averaged."""

from freqd.evaluation.protocol import build_dataloaders, rescale_to_all_users

__all__ = ["build_dataloaders", "rescale_to_all_users"]
