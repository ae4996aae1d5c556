"""FreqD: feature distillation with graph-frequency reweighting (docs/method.md).

Loss on a batch of (user, positive, negative) triples, with B_U, B_+, B_− the unique users,
positives and negatives:

    L = [ ℓ_U(B_U) + ½ (ℓ_I(B_+) + ℓ_I(B_−)) ] / B,   ℓ(S) = Σ_{e∈S} dist([H·P(S)]_e, [H·T]_e)

with H = h(L) a polynomial filter on the chosen graph, P the projector (one shared, or one for
users and one for items: ``projector_per_entity``) and T the frozen teacher's final tables. With
``freqd_filter_first`` the student is filtered before it is projected, dist([P(H·S)]_e, [H·T]_e),
as the paper-era reference does; for a nonlinear or biased P that is a different loss, for which
the spectral identity below no longer holds. Dividing the reference's sum by the number of triples B keeps reference
``kd_weight`` values valid next to RecBole's mean BPR loss. For squared L2 over all rows this is
Σ_k h(λ_k)² ‖u_kᵀ(P(S) − T)‖² (tested against eigendecompositions), so α = 0 is plain feature
distillation.

Only the batch rows and their K-hop neighbourhoods are touched per step (``filter_rows``); with
a bias-free linear projector the filter runs in the student's d_S dimensions (H·P(S) = P(H·S))
and the batch rows are never projected at all: with y = [H·S]_b, z = [H·T]_b and P(y) = Wy,
‖Wy − z‖² = yᵀ(WᵀW)y − 2 yᵀ(Wᵀz) + ‖z‖² and cos(Wy, z) = yᵀ(Wᵀz) / (√(yᵀWᵀWy)‖z‖), so a step
costs one (rows × d_T) · (d_T × d_S) product instead of forming and differentiating rows × d_T
residuals (exact; tested against the direct form). With ``freqd_filter_first`` any projector
runs on the batch rows only; otherwise (H·P(S)) it runs once on the K-hop node set.

Two options trade exactness for speed, each measured before use (``benchmarks/RESULTS.md``):
``freqd_neighbors`` = m replaces Â on the student side by a fixed-width sample drawn once per epoch
(at most m neighbours per node, unbiased; :mod:`freqd.graph.sampled`), so a step gathers m rows per
batch row instead of the whole 1-hop neighbourhood (it needs the student filtered in d_S);
``freqd_teacher_rank`` = r makes the projector map into the top-r principal subspace V of the
filtered teacher, P = V·M: the targets become the r coordinates Z·V (precomputed), ‖z‖ stays
exact, and since P's output then has no component outside V, the cosine and squared L2 are exact
for that constrained projector. A 20-d student fills
at most 20 directions of the teacher space, so r of a few dozen loses little. On several ranks V
is computed by rank 0 and broadcast, so every rank's projector maps into the same basis (an
eigenbasis's signs may differ between machines). ``freqd_kd_rows``
caps the rows a step distils (a uniform, reweighted subsample: the expected loss is unchanged).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal, get_args

import torch
from pydantic import Field, model_validator
from torch import Tensor
from torch.nn import functional as F

from freqd.distillers.base import Distiller, StepTables, id_tables
from freqd.distillers.projectors import ProjectorSettings, build_projector
from freqd.distributed import computed_once, current_shard
from freqd.graph import (
    NeighborTable,
    PolynomialFilter,
    alpha_schedule,
    bipartite_edge_index,
    cooccurrence_adjacency,
    filter_rows,
    normalized_adjacency,
    rayleigh_quotients,
    sample_neighbors,
    sampled_filter_rows,
    unique_ids,
)
from freqd.settings import Float, Int

Graph = Literal["bipartite", "cooccurrence"]
Distance = Literal["mse", "cosine"]
Schedule = Literal["const", "cos", "linear", "reverse"]  # freqd.graph.alpha_schedule's kinds (SCHEDULES)
GRAPHS, DISTANCES = get_args(Graph), get_args(Distance)
#: Defaults of ``freqd_neighbors`` / ``freqd_teacher_rank`` where they apply: on ml-100k (3 seeds) as
#: accurate as the exact loss, at about a third of its cost (benchmarks/RESULTS.md §6).
DEFAULT_NEIGHBORS = 4
DEFAULT_TEACHER_RANK = 64
_EPS = 1e-12
#: The range of α (docs/method.md §2): on [0, 1] |h| ≤ 1 over [0, 2]; negative α is PolynomialFilter's
#: high-boost ablation, bounded like the positive side.
_ALPHA = ("α of h(λ) = 1 − αλ on λ ∈ [0, 2]: in [0, 1] H = (1 − α)I + αÂ weighs no frequency above λ = 0 "
          "(0 = plain FD, ≤ ½ monotone low-pass); [−1, 0) boosts high frequencies; above 1, λ = 2 would outweigh λ = 0")


class FreqDSettings(ProjectorSettings):
    """FreqD's config keys (flat, RecBole-style), with their defaults, ranges and cross-key rules.

    ``freqd_neighbors`` and ``freqd_teacher_rank`` unset are 4 and 64 when the student is filtered
    before projection (``freqd_filter_first`` or the bias-free linear projector) and there is no
    edge dropout (64 only for teachers wider than 64), else 0; set explicitly, a value the
    configuration cannot use is an error. The projector defaults (a per-entity MLP of hidden width
    (d_S + d_T)/2 after the filter) beat the shared bias-free linear map on citeulike-t and lose to
    it slightly on ml-100k (benchmarks/RESULTS.md §7).
    """

    freqd_graph: Graph = Field(
        "bipartite", description="bipartite user–item graph (paper-era) or top-k cooccurrence user–user and "
                                 "item–item graphs (current reference)")
    freqd_alpha: Float = Field(0.5, ge=-1, le=1, description=_ALPHA)
    freqd_order: Int = Field(1, ge=1, le=2, description="1: h(λ) = 1 − αλ; 2: h(λ) = (1 − αλ)²")
    freqd_coefficients: tuple[Float, ...] | None = Field(
        None, min_length=2, max_length=3,
        description="[a0, a1] or [a0, a1, a2]: h(λ) = a0 + a1 λ + a2 λ², overriding freqd_alpha and freqd_order")
    freqd_schedule: Schedule = Field(
        "const", description="α over epochs, from freqd_alpha to freqd_alpha_end: const, cos, linear, reverse")
    freqd_alpha_end: Float = Field(0.0, ge=-1, le=1, description="the schedule's other end; " + _ALPHA)
    freqd_schedule_epochs: Int = Field(50, ge=1, description="epochs the α schedule takes (held after)")
    freqd_topk: Int = Field(5, ge=1, description="neighbours per node of the cooccurrence graphs")
    freqd_keep_prob: Float = Field(1.0, gt=0, le=1, description="edge keep probability; < 1 is edge dropout "
                                                                "redrawn every step")
    freqd_distance: Distance = Field(
        "cosine", description="cosine (the reference's; scale-free) or mse (squared L2: the spectral identity "
                              "holds exactly)")
    freqd_student_signal: Literal["auto", "final", "raw"] = Field(
        "auto", description="the student's scoring tables (propagated for LightGCN), its raw ID tables, or auto: "
                            "the student's own choice (raw for the Hash student's continuous z), else final")
    freqd_spectral_log_every: Int = Field(
        10, ge=0, description="log the residual's Rayleigh quotients tr(Rᵀ L^k R)/tr(Rᵀ R), k = 1..4, every n "
                              "epochs (0: never)")
    freqd_neighbors: Int | None = Field(
        None, ge=0, description="0: exact neighbourhoods; m: at most m neighbours per node sampled each epoch; "
                                "unset: 4 where it applies")
    freqd_teacher_rank: Int | None = Field(
        None, ge=0, description="0: the full teacher space; r: project into the filtered teacher's top-r "
                                "principal subspace; unset: 64 where it applies")
    freqd_kd_rows: Int = Field(0, ge=0, description="0: every unique batch row; R: a reweighted uniform sample of "
                                                    "at most R rows per step")
    projector_hidden: Int | None = Field(
        None, ge=1, description="hidden width of the mlp/experts projectors; unset: (d_S + d_T) // 2 for mlp, d_T "
                                "for experts")
    projector_per_entity: bool = Field(True, description="one projector for users and one for items instead of "
                                                         "one shared")
    freqd_filter_first: bool = Field(
        True, description="compare P(H·S) with H·T (paper-era) instead of H·P(S); the same for a bias-free linear P")

    @model_validator(mode="after")
    def _fast_options_fit(self) -> FreqDSettings:
        if (self.freqd_neighbors or self.freqd_teacher_rank) and self.freqd_keep_prob != 1.0:
            raise ValueError(
                f"freqd_neighbors={self.freqd_neighbors} and freqd_teacher_rank={self.freqd_teacher_rank} need "
                f"freqd_keep_prob: 1.0 (no edge dropout), got freqd_keep_prob={self.freqd_keep_prob}")
        if self.freqd_neighbors and not self.filters_in_student_space:
            raise ValueError(
                f"freqd_neighbors={self.freqd_neighbors} needs the student filtered before projection: "
                "freqd_filter_first: True, or the bias-free linear projector (projector: linear, projector_bias: "
                f"False); got projector={self.projector!r}, projector_bias={self.projector_bias}, "
                f"freqd_filter_first={self.freqd_filter_first}")
        return self

    @property
    def implicit_linear(self) -> bool:
        """A bias-free linear projector: it commutes with H and is applied implicitly (module docstring)."""
        return self.projector == "linear" and not self.projector_bias

    @property
    def filters_in_student_space(self) -> bool:
        """The student is filtered in its own d_S dimensions and only batch rows are projected."""
        return self.freqd_filter_first or self.implicit_linear

    @property
    def fast_options_apply(self) -> bool:
        """The fast options' defaults apply with the student filtered in d_S and no edge dropout."""
        return self.filters_in_student_space and self.freqd_keep_prob == 1.0

    def neighbors(self) -> int:
        """``freqd_neighbors``, or by default 4 where it applies (else 0: exact neighbourhoods)."""
        if self.freqd_neighbors is not None:
            return self.freqd_neighbors
        return DEFAULT_NEIGHBORS if self.fast_options_apply else 0

    def teacher_rank(self, d_teacher: int) -> int:
        """``freqd_teacher_rank``, or by default 64 where it applies and the teacher is wider (else 0: full)."""
        if self.freqd_teacher_rank is not None:
            return self.freqd_teacher_rank
        return DEFAULT_TEACHER_RANK if self.fast_options_apply and d_teacher > DEFAULT_TEACHER_RANK else 0

    def filter_at(self, epoch: int) -> tuple[PolynomialFilter, float]:
        """The filter for this epoch and its α (NaN for explicit coefficients)."""
        if self.freqd_coefficients is not None:
            return PolynomialFilter(self.freqd_coefficients), float("nan")
        alpha = alpha_schedule(self.freqd_schedule, epoch, self.freqd_alpha, self.freqd_alpha_end,
                               self.freqd_schedule_epochs)
        make = PolynomialFilter.first_order if self.freqd_order == 1 else PolynomialFilter.second_order
        return make(alpha), alpha


class FreqD(Distiller):
    """FreqD distiller for freqd's embedding backbones (see the module docstring)."""

    name = "FreqD"
    settings_cls = FreqDSettings
    # Buffers (registered in __init__), declared for the type checker.
    t_all: Tensor | None  # bipartite graph only; None without edge dropout
    adj: Tensor  # bipartite graph only
    user_adj: Tensor  # cooccurrence graphs only
    item_adj: Tensor  # cooccurrence graphs only
    teacher_basis: Tensor | None

    def __init__(self, config, teacher, student, train_dataset) -> None:
        super().__init__(config, teacher, student, train_dataset)
        s = self.settings
        self.signal = s.freqd_student_signal
        if self.signal == "auto":
            self.signal = getattr(student, "distill_signal", "final")
        if self.signal == "raw" and id_tables(student) is None:
            raise ValueError(f"freqd_student_signal='raw' needs the student's ID tables (user_embedding, "
                             f"item_embedding), which {type(student).__name__} has not; use 'final'")
        t_users, t_items = self.t_users, self.t_items
        self.n_users, self.n_items = student.n_users, student.n_items
        inter = train_dataset.inter_feat
        users, items = inter[train_dataset.uid_field], inter[train_dataset.iid_field]
        if s.freqd_graph == "bipartite":
            # One [users; items] teacher table, kept only when edge dropout needs it every step.
            t_all = torch.cat([t_users, t_items]) if s.freqd_keep_prob < 1.0 else None
            self.register_buffer("t_all", t_all, persistent=False)
            adj = normalized_adjacency(bipartite_edge_index(users, items, self.n_users), self.n_users + self.n_items)
            self.register_buffer("adj", adj, persistent=False)
        else:
            k = s.freqd_topk
            self.register_buffer("user_adj", cooccurrence_adjacency(users, items, self.n_users, self.n_items, k, "user"),
                                 persistent=False)
            self.register_buffer("item_adj", cooccurrence_adjacency(users, items, self.n_users, self.n_items, k, "item"),
                                 persistent=False)
        self.filter, self.alpha = s.filter_at(0)
        self.epoch = 0
        self.seed = int(config["seed"] or 0)
        self._filtered_teacher: tuple[tuple[Tensor, Tensor], ...] | None = None
        self._neighbors: list[list[NeighborTable]] | None = None
        d_teacher = t_users.shape[1]
        self.n_neighbors, self.rank = s.neighbors(), s.teacher_rank(d_teacher)
        if self.rank > d_teacher:
            raise ValueError(f"freqd_teacher_rank={self.rank} exceeds the teacher's size {d_teacher}")
        basis = None
        if self.rank:  # on several ranks: computed by rank 0, broadcast (every rank projects into one basis)
            basis = computed_once(partial(self._principal_basis, self.rank), t_users, (d_teacher, self.rank),
                                  current_shard())
        # Persistent: a resumed run keeps the basis its projector was trained in.
        self.register_buffer("teacher_basis", basis)
        d_out = self.rank or d_teacher

        # An MLP's hidden width defaults to (d_S + d_T) / 2, as the paper-era official projector.
        hidden = s.projector_hidden
        if hidden is None and s.projector == "mlp":
            hidden = (student.embedding_size + d_teacher) // 2

        def projector():
            return build_projector(s.projector, student.embedding_size, d_out, hidden,
                                   s.projector_experts, s.projector_dropout, s.projector_bias)

        # ``projector`` maps users (and items when shared); ``item_projector`` items when per entity.
        self.projector = projector()
        self.item_projector = projector() if s.projector_per_entity else None
        # Filter in d_S and project the batch rows only: P(H·S) (for a bias-free linear P, = H·P(S)).
        self.filter_first = s.filters_in_student_space
        # A bias-free linear P is applied implicitly through WᵀW and zW (module docstring).
        self.implicit_linear = s.implicit_linear

    # -- schedule and teacher side -----------------------------------------------------------------
    def on_epoch_start(self, epoch: int, student) -> None:
        self.epoch = epoch
        filt, self.alpha = self.settings.filter_at(epoch)
        if filt != self.filter:  # H·T is recomputed only when the schedule changes the filter
            self._filtered_teacher = None
        self.filter = filt
        if self.n_neighbors:
            self._neighbors = self._draw_neighbors(epoch)

    @torch.no_grad()
    def _principal_basis(self, rank: int) -> Tensor:
        """Top-``rank`` eigenvectors of Σ ZᵀZ over the first epoch's filtered teacher tables Z (d_T × rank)."""
        d = self.t_users.shape[1]
        gram = torch.zeros(d, d, dtype=torch.float64, device=self.t_users.device)
        for adj, table, _ in self._graphs():
            for rows in self.filter.apply(adj, table).split(8192):  # float64 Gram, chunked: no N × d_T copy
                gram += rows.double().T @ rows.double()
        _, vectors = torch.linalg.eigh(gram)
        return vectors[:, -rank:].flip(1).to(self.t_users.dtype).contiguous()

    @torch.no_grad()
    def _draw_neighbors(self, epoch: int) -> list[list[NeighborTable]]:
        """Per graph, the neighbour table of each side, drawn from (seed, epoch) so a resumed run redraws it."""
        generator = torch.Generator(device=self.t_users.device).manual_seed(self.seed * 1_000_003 + epoch)
        width = self.n_neighbors
        if self.settings.freqd_graph == "bipartite":
            table = sample_neighbors(self.adj, width, generator)
            n, total = self.n_users, self.adj.shape[0]
            return [[table.split(0, n, n), table.split(n, total, 0)]]
        return [[sample_neighbors(self.user_adj, width, generator)], [sample_neighbors(self.item_adj, width, generator)]]

    def _graphs(self) -> list[tuple[Tensor, Tensor, int]]:
        """(adjacency, teacher table, node offset of items) per graph."""
        if self.settings.freqd_graph == "bipartite":
            t_all = self.t_all if self.t_all is not None else torch.cat([self.t_users, self.t_items])
            return [(self.adj, t_all, self.n_users)]
        return [(self.user_adj, self.t_users, 0), (self.item_adj, self.t_items, 0)]

    @torch.no_grad()
    def _teacher_filtered(self) -> tuple[tuple[Tensor, Tensor], ...]:
        """H·T for every graph (in the principal coordinates when ranked) and its row norms², kept while the filter holds."""
        if self._filtered_teacher is None:
            tables = (self.filter.apply(adj, table) for adj, table, _ in self._graphs())
            basis = self.teacher_basis
            self._filtered_teacher = tuple(
                (t if basis is None else t @ basis, t.pow(2).sum(1)) for t in tables
            )
        return self._filtered_teacher

    def projector_of(self, side: int):
        """The projector of users (side 0) or items (side 1)."""
        return self.item_projector if side == 1 and self.item_projector is not None else self.projector

    def _to_teacher_space(self, x: Tensor, side: int) -> Tensor:
        """P(x) in the teacher's coordinates (mapped back from the principal subspace when ranked)."""
        out = self.projector_of(side)(x)
        return out if self.teacher_basis is None else out @ self.teacher_basis.T

    # -- loss --------------------------------------------------------------------------------------
    def _student_tables(self, tables: StepTables) -> tuple[Tensor, Tensor]:
        """The distilled student tables: the final ones, or the ID tables (``freqd_student_signal: raw``)."""
        if self.signal == "raw":
            assert tables.id_users is not None and tables.id_items is not None  # __init__ checked the student has them
            return tables.id_users, tables.id_items
        return tables.users, tables.items

    def _distance(self, a: Tensor, z: Tensor, z_norm2: Tensor | None, side: int) -> Tensor:
        """dist(P(a), z) per row when the student was filtered in d_S (``filter_first``), else dist(a, z).

        ``z_norm2``: the teacher rows' full squared norms when known (precomputed for the filtered
        teacher; needed when ``z`` holds principal coordinates).
        """
        if self.filter_first and self.implicit_linear:
            return self._linear_distance(a, z, z_norm2, self.projector_of(side).linear.weight)
        if self.filter_first:
            a = self.projector_of(side)(a)
        if z_norm2 is None or self.teacher_basis is None:
            if self.settings.freqd_distance == "mse":
                return (a - z).pow(2).sum(1)
            return 1.0 - F.cosine_similarity(a, z, dim=1, eps=_EPS)
        cross = (a * z).sum(1)
        norm2 = a.pow(2).sum(1)
        if self.settings.freqd_distance == "mse":
            return norm2 - 2.0 * cross + z_norm2
        return 1.0 - cross / (norm2 * z_norm2).clamp_min(_EPS * _EPS).sqrt()

    def _linear_distance(self, y: Tensor, z: Tensor, z_norm2: Tensor | None, weight: Tensor) -> Tensor:
        """dist(Wy, z) per row from WᵀW and zW: no rows × d_T residual is formed (module docstring)."""
        cross = (y * (z @ weight)).sum(1)
        norm2 = (y * (y @ (weight.T @ weight))).sum(1)
        if z_norm2 is None:
            with torch.no_grad():
                z_norm2 = z.pow(2).sum(1)
        if self.settings.freqd_distance == "mse":
            return norm2 - 2.0 * cross + z_norm2
        return 1.0 - cross / (norm2 * z_norm2).clamp_min(_EPS * _EPS).sqrt()

    def _filtered_pair(self, adj: Tensor, s_rows: Callable[[Tensor], Tensor], t_table: Tensor | None,
                       t_filtered: tuple[Tensor, Tensor], rows: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """([H·X]_rows, [H·T]_rows, their squared norms or None) on one graph, K-hop set only.

        ``s_rows(ids)`` gathers the student's rows X: raw with ``filter_first`` (then
        :meth:`_distance` projects), else already projected.
        """
        s = self.settings
        if s.freqd_keep_prob == 1.0:
            target, norm2 = (t.index_select(0, rows) for t in t_filtered)
            return filter_rows(adj, self.filter, rows, s_rows), target, norm2
        # Edge dropout: one draw of Â_drop per step, shared by the student and the teacher side.
        assert t_table is not None  # the teacher table is passed whenever edge dropout is on
        seed = int(torch.randint(0, 2**62, (1,)))
        generators = [torch.Generator(device=rows.device).manual_seed(seed) for _ in range(2)]
        keep = s.freqd_keep_prob
        target = filter_rows(adj, self.filter, rows, t_table, keep_prob=keep, generator=generators[0])
        student = filter_rows(adj, self.filter, rows, s_rows, keep_prob=keep, generator=generators[1])
        return student, target, None

    def _rows_of(self, table: Tensor, side: int) -> Callable[[Tensor], Tensor]:
        """A gather of ``table`` rows, projected unless the student is filtered first."""
        if self.filter_first:
            return partial(table.index_select, 0)
        project = self.projector_of(side)
        return lambda ids: project(table.index_select(0, ids))

    def _side_distances(self, pair: tuple[Tensor, Tensor, Tensor | None], n_users: int) -> Tensor:
        """Distances of rows whose first ``n_users`` are users and the rest items."""
        student, target, norm2 = pair
        parts = [(student[:n_users], target[:n_users], None if norm2 is None else norm2[:n_users], 0),
                 (student[n_users:], target[n_users:], None if norm2 is None else norm2[n_users:], 1)]
        return torch.cat([self._distance(*part) for part in parts])

    def forward(self, interaction, tables: StepTables) -> Tensor:
        user = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        n_triples = user.shape[0]
        s_users, s_items = self._student_tables(tables)
        groups = [unique_ids(user, self.n_users), unique_ids(pos, self.n_items),
                  unique_ids(neg.reshape(-1), self.n_items)]
        groups, weights = self._row_budget(groups, [1.0, 0.5, 0.5])
        filtered = self._teacher_filtered()
        if self.n_neighbors and self._neighbors is None:
            self._neighbors = self._draw_neighbors(self.epoch)
        if self._neighbors is not None:
            dist = self._sampled_distances(groups, s_users, s_items, filtered)
        elif self.settings.freqd_graph == "bipartite":
            rows = torch.cat([groups[0], groups[1] + self.n_users, groups[2] + self.n_users])
            n_users = self.n_users
            user_rows, item_rows = self._rows_of(s_users, 0), self._rows_of(s_items, 1)

            def s_rows(ids: Tensor) -> Tensor:  # rows of [S_users; S_items] without concatenating the tables
                split = int(torch.searchsorted(ids, n_users))
                return torch.cat([user_rows(ids[:split]), item_rows(ids[split:] - n_users)])

            t_all = self.t_all if self.settings.freqd_keep_prob < 1.0 else None
            pair = self._filtered_pair(self.adj, s_rows, t_all, filtered[0], rows)
            dist = self._side_distances(pair, len(groups[0]))
        else:
            user_side = self._filtered_pair(self.user_adj, self._rows_of(s_users, 0), self.t_users,
                                            filtered[0], groups[0])
            items = torch.cat(groups[1:])
            item_side = self._filtered_pair(self.item_adj, self._rows_of(s_items, 1), self.t_items,
                                            filtered[1], items)
            dist = torch.cat([self._distance(*user_side, 0), self._distance(*item_side, 1)])
        scale = torch.cat([dist.new_full((len(g),), w) for g, w in zip(groups, weights)])
        return (dist * scale).sum() / n_triples

    def _row_budget(self, groups: list[Tensor], weights: list[float]) -> tuple[list[Tensor], list[float]]:
        """At most ``freqd_kd_rows`` rows, each group subsampled in proportion and reweighted (unbiased)."""
        budget = self.settings.freqd_kd_rows
        total = sum(len(g) for g in groups)
        if not budget or total <= budget:
            return groups, weights
        kept, scaled = [], []
        for group, weight in zip(groups, weights):
            k = max(1, round(budget * len(group) / total))
            if k < len(group):
                pick = torch.randperm(len(group), device=group.device)[:k].sort().values
                weight, group = weight * len(group) / k, group.index_select(0, pick)
            kept.append(group)
            scaled.append(weight)
        return kept, scaled

    def _sampled_distances(self, groups: list[Tensor], s_users: Tensor, s_items: Tensor,
                           filtered: tuple[tuple[Tensor, Tensor], ...]) -> Tensor:
        """Row distances of users, positives, negatives (in that order) with the sampled neighbour tables."""
        users, items = groups[0], torch.cat(groups[1:])
        assert self._neighbors is not None  # forward calls this only with neighbour tables drawn
        if self.settings.freqd_graph == "bipartite":
            (target, norm2), = filtered
            tables, neighbors = [s_users, s_items], self._neighbors[0]
            y_users = sampled_filter_rows(self.filter, users, tables, neighbors, side=0, flip=True)
            y_items = sampled_filter_rows(self.filter, items, tables, neighbors, side=1, flip=True)
            item_rows = items + self.n_users
            z = [(target.index_select(0, users), norm2.index_select(0, users)),
                 (target.index_select(0, item_rows), norm2.index_select(0, item_rows))]
        else:
            y_users = sampled_filter_rows(self.filter, users, [s_users], self._neighbors[0])
            y_items = sampled_filter_rows(self.filter, items, [s_items], self._neighbors[1])
            z = [(t.index_select(0, rows), n.index_select(0, rows)) for (t, n), rows in zip(filtered, (users, items))]
        return torch.cat([self._distance(y_users, *z[0], 0), self._distance(y_items, *z[1], 1)])

    # -- per-epoch spectral log --------------------------------------------------------------------
    @torch.no_grad()
    def spectral_energy(self, student) -> dict[str, float]:
        """Rayleigh quotients tr(Rᵀ L^k R)/tr(Rᵀ R), k = 1..4, of the residual R = P(S) − T."""
        was_training = self.training
        self.eval()
        s_users, s_items = self._student_tables(StepTables.of(student))
        out: dict[str, float] = {}
        if self.settings.freqd_graph == "bipartite":
            projected = torch.cat([self._to_teacher_space(s_users, 0), self._to_teacher_space(s_items, 1)])
            residual = projected - torch.cat([self.t_users, self.t_items])
            out.update({f"rayleigh_{k}": v for k, v in rayleigh_quotients(self.adj, residual).items()})
        else:
            for side, adj, s_table, t_table in (("user", self.user_adj, s_users, self.t_users),
                                                ("item", self.item_adj, s_items, self.t_items)):
                quotients = rayleigh_quotients(adj, self._to_teacher_space(s_table, int(side == "item")) - t_table)
                out.update({f"{side}_rayleigh_{k}": v for k, v in quotients.items()})
        self.train(was_training)
        return out

    def epoch_log(self, student) -> dict[str, Any]:
        log: dict[str, Any] = {"freqd_alpha": self.alpha}
        every = self.settings.freqd_spectral_log_every
        if every and self.epoch % every == 0:
            log.update(self.spectral_energy(student))
        return log
