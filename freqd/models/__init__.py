"""Backbone recommenders (RecBole ``GeneralRecommender`` subclasses) and their name resolver."""

from __future__ import annotations

from recbole.model.abstract_recommender import GeneralRecommender

from freqd.models.adapter import adapt
from freqd.models.base import EmbeddingRecommender
from freqd.models.bpr import BPR
from freqd.models.hash import Hash
from freqd.models.lightgcn import LightGCN
from freqd.resolver import Registry, normalise


def _recbole_general(name: str) -> type[GeneralRecommender] | None:
    """RecBole's general recommender of that class name (case, '-' and '_' ignored), None if it has none."""
    import recbole.model.general_recommender as general

    key = normalise(name)
    for attr in dir(general):
        candidate = getattr(general, attr)
        if isinstance(candidate, type) and issubclass(candidate, GeneralRecommender) and normalise(attr) == key:
            return candidate
    return None


#: freqd's own models; other names fall back to RecBole's general recommenders (only names RecBole
#: really has, so an unknown name is a ``ValueError`` here, not RecBole's ``ModuleNotFoundError: lightgbm``).
MODELS: Registry[type[GeneralRecommender]] = Registry(
    "model", fallback=_recbole_general, note="RecBole general recommenders are accepted by their class name")
MODELS.register("BPR", BPR)
MODELS.register("LightGCN", LightGCN)
MODELS.register("Hash", Hash)


def get_model(name: str | type) -> type[GeneralRecommender]:
    """Resolve a model name (case, '-' and '_' ignored) to a class, freqd's own models first; a class passes through."""
    return MODELS.resolve(name)


__all__ = ["BPR", "Hash", "LightGCN", "EmbeddingRecommender", "MODELS", "adapt", "get_model"]
