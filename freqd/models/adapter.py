"""Any RecBole ``GeneralRecommender`` as a freqd student or teacher: the ``embeddings()`` interface.

freqd's distillers read a model's final user and item tables through ``embeddings()`` and its
width through ``embedding_size``. freqd's BPR and LightGCN define both; :func:`adapt` gives them to
another model instance: by default its ``user_embedding`` / ``item_embedding`` tables (stock
RecBole BPR, for example), or what a ``tables`` function returns (stock RecBole LightGCN:
``tables=lambda model: model.forward()``). The model's own loss, scoring and checkpoints are
unchanged.
"""

from __future__ import annotations

import types
from collections.abc import Callable

from torch import Tensor, nn


def adapt(model: nn.Module, tables: Callable[[nn.Module], tuple[Tensor, Tensor]] | None = None) -> nn.Module:
    """``model`` with ``embeddings()`` and ``embedding_size`` (unchanged if it has both already)."""
    if tables is None and hasattr(model, "embeddings") and hasattr(model, "embedding_size"):
        return model
    if tables is None:
        missing = [name for name in ("user_embedding", "item_embedding") if not isinstance(
            getattr(model, name, None), nn.Embedding)]
        if missing:
            raise ValueError(
                f"{type(model).__name__} has no {' / '.join(missing)} table: pass tables=<function returning the "
                "final (user, item) tables> to freqd.models.adapt")

        def tables(m):
            return m.user_embedding.weight, m.item_embedding.weight

    # setattr: nn.Module's typed __setattr__ admits only tensors and modules.
    embeddings = types.MethodType(lambda self: tables(self), model)
    setattr(model, "embeddings", embeddings)
    users, _ = embeddings()
    setattr(model, "embedding_size", int(users.shape[1]))
    return model
