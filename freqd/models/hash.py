"""Hash: a binary-code student — b-bit codes h = sign(z) scored by ⟨h_u, h_i⟩ / b (docs/hashing.md).

The parameters are continuous tables z ∈ ℝ^b (``user_embedding``/``item_embedding``, as BPR-MF's,
so every distiller can read them). Training passes through the sign by a straight-through
estimator (forward sign, backward the identity clipped to |z| ≤ 1) or by the continuation
tanh(β z) with β following a schedule over epochs (the α-schedule kinds of FreqD's curriculum);
``identity`` skips the sign (the float student, the reference of the acceptance check). Evaluation
and serving use the exact codes, ranked by Hamming distance with a declared tie-break
(:mod:`freqd.codes`). The final tables the recommendation loss and response distillers (RRD)
read are the relaxed codes scaled by 1/√b; FreqD distils the continuous z (``distill_signal``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from freqd.codes import Backend, HammingIndex, check_bits, pack_codes
from freqd.graph import alpha_schedule
from freqd.models.base import EmbeddingRecommender


@lru_cache(maxsize=1)
def _defaults() -> dict:
    import yaml

    return yaml.safe_load((Path(__file__).resolve().parents[1] / "properties" / "model" / "Hash.yaml").read_text())


def _setting(config, key: str):
    """``config[key]``, or its default in ``properties/model/Hash.yaml`` (the one home of the defaults;
    freqd.Config layers that file, a bare mapping may not have)."""
    value = config[key]
    return _defaults()[key] if value is None else value


class _SignSTE(torch.autograd.Function):
    """sign(z) ∈ {−1, +1} (0 → +1) forward; the gradient passed where |z| ≤ 1, zero elsewhere."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        ctx.save_for_backward(z)
        return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (z,) = ctx.saved_tensors
        return grad * (z.abs() <= 1).to(grad.dtype)


def sign_codes(z: Tensor) -> Tensor:
    """Exact ±1 codes of ``z`` (0 → +1), without gradient."""
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def ste_sign(z: Tensor) -> Tensor:
    """Straight-through sign: exact codes forward, clipped identity backward."""
    return _SignSTE.apply(z)


def quantization_loss(z: Tensor) -> Tensor:
    """Mean over rows and bits of (z − sign(z))²: zero when z is already a code."""
    return (z - sign_codes(z)).pow(2).mean()


def bit_balance_loss(codes: Tensor) -> Tensor:
    """Mean over bits of (mean over rows of the bit)²: zero when every bit is +1 on half the rows."""
    return codes.mean(0).pow(2).mean()


def bit_decorrelation_loss(codes: Tensor) -> Tensor:
    """‖CᵀC/n − I‖²_F / b²: zero when the bits are pairwise uncorrelated with unit second moment."""
    n, b = codes.shape
    gram = codes.T @ codes / n
    return (gram - torch.eye(b, dtype=codes.dtype, device=codes.device)).pow(2).sum() / b**2


class Hash(EmbeddingRecommender):
    """Binary-code student (module docstring); ``hash_bits`` sets b, ``embedding_size`` is ignored."""

    #: FreqD distils the continuous z (the ID tables), not the codes.
    distill_signal = "raw"

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.bits = check_bits(int(_setting(config, "hash_bits")))
        self.mode = str(_setting(config, "hash_mode"))
        if self.mode not in ("ste", "tanh", "identity"):
            raise ValueError(f"hash_mode must be ste, tanh or identity, got {self.mode!r}")
        self.beta_schedule = (str(_setting(config, "hash_beta_schedule")), float(_setting(config, "hash_beta")),
                              float(_setting(config, "hash_beta_end")), int(_setting(config, "hash_beta_epochs")))
        self.beta = self.beta_schedule[1]
        self.weights = {name: float(_setting(config, f"hash_{name}_weight"))
                        for name in ("quantization", "balance", "decorrelation")}
        self.scale = float(_setting(config, "hash_score_scale"))
        self.ties = str(_setting(config, "hash_ties"))
        self.tie_seed = int(_setting(config, "hash_tie_seed"))
        self._index: HammingIndex | None = None
        self.reset_parameters(config["init_std"])

    @classmethod
    def table_width(cls, config) -> int:
        return check_bits(int(_setting(config, "hash_bits")))

    def on_epoch_start(self, epoch: int) -> None:
        """β of the tanh continuation for this epoch (from the epoch alone: a resumed run agrees)."""
        kind, start, end, length = self.beta_schedule
        self.beta = alpha_schedule(kind, epoch, start, end, length)

    def relaxed(self, z: Tensor) -> Tensor:
        """The training-time codes of ``z``: straight-through sign, tanh(β z) or z itself."""
        if self.mode == "ste":
            return ste_sign(z)
        if self.mode == "tanh":
            return torch.tanh(self.beta * z)
        return z

    def codes(self, z: Tensor) -> Tensor:
        """The codes served: sign(z) (z itself in ``identity`` mode)."""
        return z if self.mode == "identity" else sign_codes(z)

    @property
    def table_scale(self) -> float:
        """√(γ/b): each table's factor, so that the inner product of two rows is γ⟨h_u, h_i⟩ / b."""
        return math.sqrt(self.scale / self.bits)

    def compute_embeddings(self) -> tuple[Tensor, Tensor]:
        code = self.relaxed if self.training else self.codes
        return code(self.user_embedding.weight) * self.table_scale, code(self.item_embedding.weight) * self.table_scale

    def _rows(self, table: Tensor, ids: Tensor) -> Tensor:
        """Relaxed, scaled codes of ``ids`` only: the relaxation is elementwise, so relaxing the gathered
        rows equals gathering from relaxed tables, without a full-table pass per step."""
        return self.relaxed(F.embedding(ids, table)) * self.table_scale

    def calculate_loss(self, interaction) -> Tensor:
        self._cache = None
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        u = self._rows(self.user_embedding.weight, user)
        pos_emb, neg_emb = self._rows(self.item_embedding.weight, torch.cat([pos, neg])).split(len(pos))
        loss = self.loss((u * pos_emb).sum(1), (u * neg_emb).sum(1))
        if any(self.weights.values()):
            users = torch.unique(user)
            items = torch.unique(torch.cat([pos, neg.reshape(-1)]))
            for table, rows in ((self.user_embedding.weight, users), (self.item_embedding.weight, items)):
                z = table[rows]
                codes = self.relaxed(z)
                loss = loss + self.weights["quantization"] * quantization_loss(z) \
                    + self.weights["balance"] * bit_balance_loss(codes) \
                    + self.weights["decorrelation"] * bit_decorrelation_loss(codes)
        return loss

    # -- ranking with a declared tie-break ---------------------------------------------------------
    def train(self, mode: bool = True):
        self._index = None
        return super().train(mode)

    @torch.no_grad()
    def rank_scores(self, users: Tensor) -> Tensor:
        """``len(users) × n_items`` scores whose order is the Hamming ranking with the declared tie-break.

        The negated ranking keys of :class:`freqd.codes.HammingIndex` (distance · 2^m + tie key, or
        distance + the cosine term for ``score`` ties), float32 where they are exact in it, else float64;
        the index is built once per evaluation. ``identity`` mode: the float score γ⟨z_u, z_i⟩ / b.
        """
        if self.mode == "identity":
            user_all, item_all = self.cached_embeddings()
            return (user_all[users] @ item_all.T).double()
        if self._index is None:
            self._index = self.hamming_index()
        keys = torch.from_numpy(self._index.keys(users.cpu().numpy())).to(users.device)
        exact32 = keys.dtype == torch.int32 and self.bits.bit_length() + self._index.shift <= 24
        return -keys.to(torch.float32 if exact32 else torch.float64)

    def full_sort_predict(self, interaction) -> Tensor:
        return self.rank_scores(interaction[self.USER_ID]).view(-1)

    def hamming_index(self, exclude: tuple[np.ndarray, np.ndarray] | None = None, first_item: int = 0,
                      backend: Backend = "auto") -> HammingIndex:
        """The packed codes as a :class:`freqd.codes.HammingIndex` with this model's tie-break; items from
        ``first_item`` on (1 leaves out RecBole's padding item; item indices then start at it)."""
        z_users = self.user_embedding.weight.detach().cpu().numpy()
        z_items = self.item_embedding.weight.detach().cpu().numpy()[first_item:]
        return HammingIndex(pack_codes(z_users), pack_codes(z_items), ties=self.ties, seed=self.tie_seed,  # type: ignore[arg-type]
                            exclude=exclude, user_z=z_users, item_z=z_items, backend=backend)


def is_code_student(model) -> bool:
    """Whether ``model`` serves binary codes (a :class:`Hash` model outside ``identity`` mode)."""
    return isinstance(model, Hash) and model.mode != "identity"
