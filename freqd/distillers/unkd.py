"""UnKD, unbiased knowledge distillation within popularity groups (Chen et al., WSDM 2023).

Items with training interactions are sorted by popularity and cut into G contiguous groups of
(as near as contiguous cuts allow) equal total interaction count; an item goes to the group
holding the midpoint of its share of the cumulative count (the reference's greedy cut can leave
an extra small group). Items never seen in training (and padding item 0) are in no group, as in
the reference code. Once, per user and group, the teacher ranks the group's unobserved items
(top ``unkd_pool`` kept, chunked scoring; not cached on disk, it is one scoring pass). Every epoch,
per user and group g, n_g ordered pairs (j⁺, j⁻) are drawn: two distinct ranks, each with
p(r) ∝ exp(−(r+1)/``unkd_decay``), the better-ranked one is j⁺. n_g splits ``unkd_pairs`` over the
groups with the reference's weights (equal for ``unkd_lambda`` = 0). On a batch of B triples with
users u_1..u_B (repeats kept, as in the reference code), P_u the user's pairs:

    L = −(1/B) Σ_b (1/|P_{u_b}|) Σ_{(j⁺,j⁻)∈P_{u_b}} log σ( s(u_b,j⁺) − s(u_b,j⁻) )

(the reference averages over a user's pairs; a group where the user has fewer than two unobserved
items contributes no pair; −log σ is computed stably, without the reference's 10⁻¹⁰).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor
from torch.nn import functional as F

from freqd.distillers.base import Distiller, DistillerSettings, StepTables
from freqd.distillers.rankings import training_csr
from freqd.distillers.sampling import CHUNK_SIZE, degrees, mask_training_, pair_scores, truncated_geometric
from freqd.settings import Float, Int


def popularity_groups(popularity: Tensor, n_groups: int) -> list[Tensor]:
    """Items with popularity > 0, most popular first, cut into contiguous groups of ~equal total popularity.

    An item joins group ⌊G · (mass before it + half its own) / total⌋; empty groups are dropped
    (an item heavier than a whole group's share). Returns one item-id tensor per group, most
    popular group first.
    """
    order = torch.argsort(popularity, descending=True, stable=True)
    order = order[popularity[order] > 0]
    counts = popularity[order].double()
    midpoint = counts.cumsum(0) - counts / 2
    group = torch.floor(n_groups * midpoint / counts.sum()).long().clamp(max=n_groups - 1)
    return [order[group == g] for g in range(n_groups) if bool((group == g).any())]


def pairs_per_group(groups: list[Tensor], popularity: Tensor, n_pairs: int, lam: float) -> list[int]:
    """The reference's split of a user's ``n_pairs`` over the groups.

    Groups are weighted by their inverted mean popularity (max + min − mean, normalised, rounded
    to 2 decimals, at least 0.1), raised to ``lam`` and normalised; group g gets round(w_g · n)
    pairs, and the first groups one more each while the total is below n.
    """
    means = [float(popularity[items].double().mean()) for items in groups]
    inverted = [max(means) + min(means) - m for m in means]
    weights = [max(round(w / sum(inverted), 2), 0.1) ** lam for w in inverted]
    weights = [w / sum(weights) for w in weights]
    counts = [round(w * n_pairs) for w in weights]
    short = n_pairs - sum(counts)
    return [c + (1 if g < short else 0) for g, c in enumerate(counts)]


@torch.no_grad()
def group_rankings(user_table: Tensor, item_table: Tensor, train: Tensor, groups: list[Tensor], pool: int,
                   chunk_size: int = CHUNK_SIZE) -> tuple[Tensor, Tensor]:
    """Per user and group, the group's unobserved items by descending score (top ``pool``).

    Returns ``ranked`` (n_users, G, P) int32 item ids, P = the largest group pool, and
    ``lengths`` (n_users, G): how many leading entries of ``ranked[u, g]`` are real (unobserved).
    """
    n_users, n_items, device = user_table.shape[0], item_table.shape[0], user_table.device
    group_of = torch.full((n_items,), -1, dtype=torch.long)
    for g, items in enumerate(groups):
        group_of[items.cpu()] = g
    users = torch.repeat_interleave(torch.arange(n_users), degrees(train))
    g_of_seen = group_of[train.col_indices()]
    keep = g_of_seen >= 0
    seen = torch.bincount(users[keep] * len(groups) + g_of_seen[keep], minlength=n_users * len(groups))
    sizes = torch.tensor([len(items) for items in groups])
    lengths = (sizes - seen.view(n_users, len(groups))).clamp(max=pool).to(device)
    widths = [min(pool, len(items)) for items in groups]
    ranked = torch.zeros(n_users, len(groups), max(widths), dtype=torch.int32, device=device)
    groups = [items.to(device) for items in groups]
    for start in range(0, n_users, chunk_size):
        stop = min(start + chunk_size, n_users)
        scores = mask_training_(user_table[start:stop] @ item_table.T, train, start, stop)
        for g, items in enumerate(groups):
            top = scores[:, items].topk(widths[g], dim=1).indices
            ranked[start:stop, g, :widths[g]] = items[top].int()
    return ranked, lengths


class UnKDSettings(DistillerSettings):
    """UnKD's config keys (CiteULike-t's reference values as defaults; Gowalla: 4 groups, 30 pairs)."""

    unkd_groups: Int = Field(2, ge=1, description="popularity groups G of equal total interaction count")
    unkd_pairs: Int = Field(2, ge=1, description="ordered pairs per user each epoch, split over the groups")
    unkd_lambda: Float = Field(0.0, description="exponent of the groups' inverted-popularity weights (0: equal)")
    unkd_decay: Float = Field(20.0, gt=0, description="rank decay of the pair draws, p(r) ∝ exp(−(r+1)/decay)")
    unkd_pool: Int = Field(1000, ge=2, description="the teacher's top ranks kept per user and group")


class UnKD(Distiller):
    """Pairwise distillation of the teacher's ranking within popularity groups (see the module docstring)."""

    name = "UnKD"
    settings_cls = UnKDSettings
    # Buffers (registered in __init__), declared for the type checker.
    ranked: Tensor
    lengths: Tensor
    pos: Tensor | None
    neg: Tensor | None
    valid: Tensor | None

    def __init__(self, config, teacher, student, train_dataset) -> None:
        super().__init__(config, teacher, student, train_dataset)
        s = self.settings
        train = training_csr(train_dataset)
        popularity = torch.bincount(train.col_indices(), minlength=train_dataset.item_num)
        self.groups = popularity_groups(popularity, s.unkd_groups)
        self.pair_counts = pairs_per_group(self.groups, popularity, s.unkd_pairs, s.unkd_lambda)
        ranked, lengths = group_rankings(self.t_users, self.t_items, train, self.groups, s.unkd_pool)
        self.register_buffer("ranked", ranked, persistent=False)
        self.register_buffer("lengths", lengths, persistent=False)
        for name in ("pos", "neg", "valid"):
            self.register_buffer(name, None, persistent=False)

    @torch.no_grad()
    def on_epoch_start(self, epoch: int, student) -> None:
        decay = self.settings.unkd_decay
        pos, neg, valid = [], [], []
        for g, n in enumerate(self.pair_counts):
            if n == 0:
                continue
            length = self.lengths[:, g]
            a, b = truncated_geometric(length, n, decay), truncated_geometric(length, n, decay)
            ok = (length >= 2).unsqueeze(1).expand(-1, n)
            # Redraw both ranks of tied pairs: pairs are conditioned on distinct ranks, as in the reference.
            while bool((tie := (a == b) & ok).any()):
                rows = tie.any(1).nonzero().squeeze(1)
                for ranks in (a, b):
                    ranks[rows] = torch.where(tie[rows], truncated_geometric(length[rows], n, decay), ranks[rows])
            ranked = self.ranked[:, g]
            pos.append(ranked.gather(1, torch.minimum(a, b)).long())
            neg.append(ranked.gather(1, torch.maximum(a, b)).long())
            valid.append(ok)
        self.pos, self.neg, self.valid = torch.cat(pos, 1), torch.cat(neg, 1), torch.cat(valid, 1)

    def forward(self, interaction, tables: StepTables) -> Tensor:
        if self.pos is None:
            raise RuntimeError("UnKD: call on_epoch_start(epoch, student) before the first batch")
        assert self.neg is not None and self.valid is not None  # set with pos
        users = interaction[self.USER_ID]
        rows = tables.users[users]
        margin = pair_scores(rows, tables.items, self.pos[users]) - pair_scores(rows, tables.items, self.neg[users])
        valid = self.valid[users].to(margin.dtype)
        per_user = (-F.logsigmoid(margin) * valid).sum(1) / valid.sum(1).clamp(min=1)
        return per_user.sum() / users.shape[0]
