"""Backbone recommenders (RecBole ``GeneralRecommender`` subclasses) and their name resolver."""

from __future__ import annotations

from recbole.model.abstract_recommender import GeneralRecommender

from freqd.models.adapter import adapt
from freqd.models.base import EmbeddingRecommender
from freqd.models.bpr import BPR
from freqd.models.lightgcn import LightGCN

MODELS: dict[str, type[EmbeddingRecommender]] = {"bpr": BPR, "lightgcn": LightGCN}


def _normalise(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def get_model(name: str | type) -> type[GeneralRecommender]:
    """Resolve a model name (case, '-' and '_' ignored) to a class; freqd's own models first.

    Other names fall back to RecBole's general recommenders (only names RecBole really has, so an
    unknown name is a ``ValueError`` here, not RecBole's ``ModuleNotFoundError: lightgbm``).
    """
    if isinstance(name, type):
        return name
    key = _normalise(name)
    if key in MODELS:
        return MODELS[key]
    import recbole.model.general_recommender as general

    for attr in dir(general):
        candidate = getattr(general, attr)
        if isinstance(candidate, type) and issubclass(candidate, GeneralRecommender):
            if _normalise(attr) == key:
                return candidate
    raise ValueError(
        f"unknown model {name!r}: freqd provides {sorted(c.__name__ for c in MODELS.values())}; "
        "RecBole general recommenders are accepted by their class name"
    )


__all__ = ["BPR", "LightGCN", "EmbeddingRecommender", "MODELS", "adapt", "get_model"]
