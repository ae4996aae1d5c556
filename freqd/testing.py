"""Test helpers a downstream distiller can import: the distiller contract, tiny fake backbones and
spectral oracles. Importing this module needs neither pytest nor a RecBole dataset on disk.

**Contract.** :func:`check_distiller_contract` runs every check on one :class:`~freqd.distillers.Distiller`
subclass (or registered name); each check is also a function of its own:

* :func:`check_loss_and_gradients`: a finite scalar loss whose gradients reach the student and the
  distiller's own parameters, never the teacher; the teacher is unchanged and its tables are not
  in the distiller's state;
* :func:`check_loss_decreases`: a few optimiser steps on a fixed batch lower the loss;
* :func:`check_forward_reads_only_its_tables`: ``forward`` reads the :class:`StepTables` it is given,
  never ``student.embeddings()``, and the distiller keeps no reference to the student.

A failed check raises :class:`ContractViolation` (an AssertionError) naming what broke.

**Fake backbones.** :class:`FakeDataset` has the attributes distillers and freqd's backbones read
from RecBole's training dataset (``inter_feat`` as a RecBole ``Interaction``, ``uid_field``,
``iid_field``, ``user_num``, ``item_num``, ``num(field)``); :class:`TinyEmbeddingModel` is a minimal
embedding model with RecBole's field names; :func:`fake_config` answers None for a missing key, as
RecBole's ``Config`` does, and holds the keys that build ``freqd.models.BPR``/``LightGCN`` on a
:class:`FakeDataset`.

**Spectral oracles.** Dense float64 references for small graphs: :func:`dense_normalized_adjacency`,
:func:`dense_bipartite_adjacency`, :func:`spectral_filter` (h(L) by eigendecomposition) and
:func:`exact_rayleigh_quotients`, built on :mod:`freqd.graph.spectral` (``laplacian_eigh``,
``per_frequency_losses``); :func:`random_pairs` and :func:`random_graph` make small test graphs.

**Process groups.** :func:`run_process_group` runs a function on several ``gloo`` ranks (spawned
processes on this machine), bounded in time, and returns each rank's result: how collectives are
tested on a CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from recbole.data.interaction import Interaction
from torch import Tensor, nn

from freqd.distillers import Distiller, StepTables, get_distiller, teacher_tables
from freqd.distillers.teacher import EmbeddingModel
from freqd.graph.spectral import laplacian_eigh, per_frequency_losses

__all__ = [
    "FAKE_DATA_SETTINGS",
    "ContractSetup",
    "ContractViolation",
    "FakeConfig",
    "FakeDataset",
    "TinyEmbeddingModel",
    "build_distiller",
    "check_distiller_contract",
    "check_forward_reads_only_its_tables",
    "check_loss_and_gradients",
    "check_loss_decreases",
    "contract_setup",
    "dense_bipartite_adjacency",
    "dense_normalized_adjacency",
    "exact_rayleigh_quotients",
    "fake_batch",
    "fake_config",
    "laplacian_eigh",
    "per_frequency_losses",
    "random_graph",
    "random_pairs",
    "run_process_group",
    "spectral_filter",
    "tiny_models",
]

USER_ID, ITEM_ID, NEG_ITEM_ID = "user_id", "item_id", "neg_item_id"

#: Settings of freqd's own distillers that fit :meth:`FakeDataset.random`'s default size (pools
#: below its 40 items, a short annealing schedule); the contract's default config.
FAKE_DATA_SETTINGS: dict[str, Any] = {
    "epochs": 5, "rrd_pool": 10, "rrd_interesting": 4, "rrd_uninteresting": 6, "dcd_pool": 12, "dcd_samples": 3,
    "cd_pool": 15, "cd_samples": 4, "unkd_groups": 2, "unkd_pool": 8, "kd_topk": 5, "pckd_topk": 8,
    "pckd_samples": 3, "de_experts": 2, "htd_groups": 2, "fitnet_sample": "batch",
}


# -- fake backbones --------------------------------------------------------------------------------
class FakeConfig(dict):
    """A config that, like RecBole's ``Config``, reads a missing key as None."""

    def __missing__(self, key: str) -> None:
        return None


def fake_config(settings: Mapping[str, Any] | None = None, **more: Any) -> FakeConfig:
    """A :class:`FakeConfig` with RecBole's field names and a CPU device, plus ``settings`` and ``more``.

    Enough to build ``freqd.models.BPR``/``LightGCN`` on a :class:`FakeDataset` (give
    ``embedding_size``; LightGCN also ``n_layers``) and any distiller (its own keys).
    """
    base = {"USER_ID_FIELD": USER_ID, "ITEM_ID_FIELD": ITEM_ID, "NEG_PREFIX": "neg_", "device": torch.device("cpu"),
            "seed": 0}
    return FakeConfig({**base, **(settings or {}), **more})


class FakeDataset:
    """A training dataset with the attributes distillers and freqd's backbones read from RecBole's.

    Ids are RecBole's internal ones: 1 … ``n_users`` − 1 and 1 … ``n_items`` − 1, with 0 the padding
    id of both (it has no interactions).
    """

    uid_field, iid_field = USER_ID, ITEM_ID

    def __init__(self, users: Sequence[int] | Tensor, items: Sequence[int] | Tensor, n_users: int, n_items: int):
        users, items = torch.as_tensor(users, dtype=torch.long), torch.as_tensor(items, dtype=torch.long)
        if users.shape != items.shape or users.dim() != 1:
            raise ValueError(f"users and items must be 1-d and of one length, got {tuple(users.shape)} and "
                             f"{tuple(items.shape)}")
        for name, ids, n in (("user", users, n_users), ("item", items, n_items)):
            if len(ids) and (int(ids.min()) < 1 or int(ids.max()) >= n):
                raise ValueError(f"{name} ids must lie in 1..{n - 1} (0 is padding)")
        self.user_num, self.item_num = int(n_users), int(n_items)
        self.inter_feat = Interaction({USER_ID: users, ITEM_ID: items})

    @classmethod
    def random(cls, n_users: int = 6, n_items: int = 40, per_user: int = 6, seed: int = 0) -> FakeDataset:
        """``per_user`` distinct random items for every real user."""
        g = torch.Generator().manual_seed(seed)
        items = torch.cat([torch.randperm(n_items - 1, generator=g)[:per_user] + 1 for _ in range(1, n_users)])
        users = torch.arange(1, n_users).repeat_interleave(min(per_user, n_items - 1))
        return cls(users, items, n_users, n_items)

    def num(self, field: str) -> int:
        """The number of ids of ``field`` (padding included), as RecBole's ``Dataset.num``."""
        if field == self.uid_field:
            return self.user_num
        if field == self.iid_field:
            return self.item_num
        raise ValueError(f"FakeDataset has no field {field!r}")

    def __len__(self) -> int:
        return len(self.inter_feat)


class TinyEmbeddingModel(nn.Module):
    """A minimal embedding backbone: ID tables and ``embeddings()`` with RecBole's field names.

    ``mixed=True`` makes the final (scoring) tables differ from the ID tables and mix rows (as
    LightGCN's do), so a distiller that reads the wrong ones is caught; ``frozen=True`` turns the
    tables' gradients off (a teacher).
    """

    USER_ID, ITEM_ID, NEG_ITEM_ID = USER_ID, ITEM_ID, NEG_ITEM_ID

    def __init__(self, users: Tensor, items: Tensor, *, frozen: bool = False, mixed: bool = False):
        super().__init__()
        self.n_users, self.embedding_size = users.shape
        self.n_items = items.shape[0]
        self.mixed = mixed
        self.user_embedding = nn.Embedding.from_pretrained(users.detach().clone(), freeze=frozen)
        self.item_embedding = nn.Embedding.from_pretrained(items.detach().clone(), freeze=frozen)

    @classmethod
    def random(cls, n_users: int, n_items: int, dim: int, seed: int = 0, **kwargs: bool) -> TinyEmbeddingModel:
        """Standard normal tables drawn with ``seed``."""
        g = torch.Generator().manual_seed(seed)
        return cls(torch.randn(n_users, dim, generator=g), torch.randn(n_items, dim, generator=g), **kwargs)

    def embeddings(self) -> tuple[Tensor, Tensor]:
        users, items = self.user_embedding.weight, self.item_embedding.weight
        if not self.mixed:
            return users, items
        return torch.tanh(users) + users, items + 0.5 * items.roll(1, 0)


def tiny_models(data: FakeDataset, teacher_dim: int = 6, student_dim: int = 3,
                seed: int = 0) -> tuple[TinyEmbeddingModel, TinyEmbeddingModel]:
    """A frozen random teacher and a trainable, ``mixed`` random student on ``data``'s ids."""
    teacher = TinyEmbeddingModel.random(data.user_num, data.item_num, teacher_dim, seed=seed + 1, frozen=True)
    student = TinyEmbeddingModel.random(data.user_num, data.item_num, student_dim, seed=seed + 2, mixed=True)
    return teacher, student


def fake_batch(data, n: int = 16, seed: int = 0) -> Interaction:
    """``n`` training pairs of ``data`` (a :class:`FakeDataset` or RecBole's training dataset) drawn with
    replacement, each with a uniform negative item (``neg_<item field>``, RecBole's default prefix)."""
    g = torch.Generator().manual_seed(seed)
    users, items = data.inter_feat[data.uid_field], data.inter_feat[data.iid_field]
    rows = torch.randint(0, len(users), (n,), generator=g)
    return Interaction({data.uid_field: users[rows], data.iid_field: items[rows],
                        f"neg_{data.iid_field}": torch.randint(1, data.item_num, (n,), generator=g)})


# -- the distiller contract ------------------------------------------------------------------------
class ContractViolation(AssertionError):
    """A distiller broke the contract of :class:`~freqd.distillers.Distiller`."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ContractViolation(message)


def _name(distiller: Distiller) -> str:
    return distiller.name or type(distiller).__name__


def build_distiller(distiller: type[Distiller] | str, config: Mapping[str, Any], teacher, student, data,
                    seed: int = 0) -> Distiller:
    """``distiller(config, teacher, student, data)`` in training mode after ``on_epoch_start(0, student)``,
    its initialisation seeded with ``seed``."""
    cls = get_distiller(distiller) if isinstance(distiller, str) else distiller
    torch.manual_seed(seed)
    built = cls(config, teacher, student, data)
    built.train()
    built.on_epoch_start(0, student)
    return built


class ContractSetup(NamedTuple):
    """A freshly built distiller with its teacher, student, training data and a fixed batch."""

    distiller: Distiller
    teacher: nn.Module
    student: nn.Module
    data: Any
    batch: Any


def contract_setup(distiller: type[Distiller] | str, config: Mapping[str, Any] | None = None, *, data=None,
                   models: Callable[[Any], tuple[nn.Module, nn.Module]] | None = None, batch=None,
                   seed: int = 0) -> ContractSetup:
    """Everything a contract check needs, on the fake backbones unless given.

    ``config``: a RecBole/freqd config, or the distiller's settings as a plain mapping, laid over
    :data:`FAKE_DATA_SETTINGS` in a :func:`fake_config`; ``data``: the training dataset (default
    :meth:`FakeDataset.random`); ``models(data)``: a fresh ``(teacher, student)`` pair (default
    :func:`tiny_models`); ``batch``: default :func:`fake_batch` of ``data``.
    """
    if config is None or not (hasattr(config, "final_config_dict") or isinstance(config, FakeConfig)):
        config = fake_config({**FAKE_DATA_SETTINGS, **(config or {})})
    data = FakeDataset.random() if data is None else data
    teacher, student = (models or tiny_models)(data)
    built = build_distiller(distiller, config, teacher, student, data, seed=seed)
    return ContractSetup(built, teacher, student, data, fake_batch(data, seed=seed) if batch is None else batch)


def _student_has_gradient(student: nn.Module) -> bool:
    return any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in student.parameters())


def check_loss_and_gradients(distiller: Distiller, teacher: nn.Module, student: nn.Module, batch) -> float:
    """One loss on ``batch``: a finite scalar whose gradient reaches the student and every trainable
    parameter of the distiller (projectors, experts), and never the teacher.

    The teacher's state is unchanged and neither of its final tables is in the distiller's
    ``state_dict`` (a checkpoint holds the student side only). Returns the loss.
    """
    name = _name(distiller)
    before = {key: value.clone() for key, value in teacher.state_dict().items()}
    loss = distiller(batch, StepTables.of(student))
    _require(isinstance(loss, Tensor) and loss.dim() == 0, f"{name}: the loss is not a scalar tensor")
    _require(bool(torch.isfinite(loss)), f"{name}: the loss is not finite ({float(loss.detach())})")
    loss.backward()
    _require(_student_has_gradient(student), f"{name}: no gradient reached the student")
    idle = [key for key, p in distiller.named_parameters() if p.requires_grad and p.grad is None]
    _require(not idle, f"{name}: no gradient reached the distiller's own parameters {idle}")
    reached = [key for key, p in teacher.named_parameters() if p.grad is not None]
    _require(not reached, f"{name}: gradients reached the teacher: {reached}")
    changed = [key for key, value in teacher.state_dict().items() if not torch.equal(before[key], value)]
    _require(not changed, f"{name}: the teacher changed: {changed}")
    tables = teacher_tables(cast(EmbeddingModel, teacher))  # a module with embeddings(), as every teacher
    for key, value in distiller.state_dict().items():
        for table in tables:
            _require(not (value.shape == table.shape and torch.equal(value, table.to(value.device))),
                     f"{name}: a teacher table is in the distiller's state_dict as {key!r}")
    return float(loss.detach())


def check_loss_decreases(distiller: Distiller, student: nn.Module, batch, steps: int = 40,
                         lr: float = 0.01) -> tuple[float, float]:
    """Adam on the student's and the distiller's parameters, ``steps`` times on one batch: the mean of
    the last five losses is below the mean of the first five. Returns both means."""
    optimizer = torch.optim.Adam([*student.parameters(), *distiller.parameters()], lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = distiller(batch, StepTables.of(student))
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    _require(all(math.isfinite(x) for x in losses), f"{_name(distiller)}: a loss was not finite: {losses}")
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    _require(last < first, f"{_name(distiller)}: {steps} steps did not lower the loss: {first:.6g} -> {last:.6g}")
    return first, last


@contextmanager
def _embeddings_forbidden(student: nn.Module) -> Iterator[None]:
    def forbidden(*args, **kwargs):
        raise ContractViolation("student.embeddings() was called inside the distiller's forward")

    setattr(student, "embeddings", forbidden)
    try:
        yield
    finally:
        del student.embeddings


def _shifted(tables: StepTables, shift: float) -> StepTables:
    def moved(table: Tensor | None, sign: float) -> Tensor | None:
        return None if table is None else table + sign * shift

    return StepTables(tables.users + shift, tables.items - shift, moved(tables.id_users, 1.0),
                      moved(tables.id_items, -1.0))


def check_forward_reads_only_its_tables(distiller: Distiller, student: nn.Module, batch) -> None:
    """``forward`` reads the :class:`StepTables` it is given and never ``student.embeddings()``.

    The distiller keeps no reference to the student (nor a bound method of it); other tables give
    another loss (same torch seed); the loss's gradient reaches the student through the tables;
    ``epoch_log`` is a dict.
    """
    name = _name(distiller)
    kept = any(value is student or getattr(value, "__self__", None) is student for value in vars(distiller).values())
    _require(not kept and not any(module is student for module in distiller.modules()),
             f"{name}: the distiller keeps the student")
    tables = StepTables.of(student)
    with _embeddings_forbidden(student):
        torch.manual_seed(1)
        loss = distiller(batch, tables)
        torch.manual_seed(1)
        moved = distiller(batch, _shifted(tables, 0.3))
    _require(loss.dim() == 0 and bool(torch.isfinite(loss)), f"{name}: the loss is not a finite scalar")
    a, b = float(loss.detach()), float(moved.detach())
    _require(not math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12),
             f"{name}: the loss ignores the tables it was given ({a:.6g} with both)")
    loss.backward()
    _require(_student_has_gradient(student), f"{name}: no gradient reached the student through the tables")
    _require(isinstance(distiller.epoch_log(student), dict), f"{name}: epoch_log() did not return a dict")


def check_distiller_contract(distiller: type[Distiller] | str, config: Mapping[str, Any] | None = None, *,
                             data=None, models: Callable[[Any], tuple[nn.Module, nn.Module]] | None = None,
                             batch=None, steps: int = 40, lr: float = 0.01) -> None:
    """Every contract check on ``distiller``, each on a fresh :func:`contract_setup` (same arguments)."""
    def fresh() -> ContractSetup:
        return contract_setup(distiller, config, data=data, models=models, batch=batch)

    s = fresh()
    check_loss_and_gradients(s.distiller, s.teacher, s.student, s.batch)
    s = fresh()
    check_loss_decreases(s.distiller, s.student, s.batch, steps=steps, lr=lr)
    s = fresh()
    check_forward_reads_only_its_tables(s.distiller, s.student, s.batch)


# -- spectral oracles ------------------------------------------------------------------------------
def dense_normalized_adjacency(weights: Tensor) -> Tensor:
    """D^{-1/2} W D^{-1/2} of a dense symmetric weight matrix, float64; an isolated node's row and column are 0."""
    w = torch.as_tensor(weights, dtype=torch.float64)
    degree = w.sum(1)
    inv = torch.where(degree > 0, degree.clamp_min(1e-300).pow(-0.5), torch.zeros_like(degree))
    return inv[:, None] * w * inv[None, :]


def dense_bipartite_adjacency(users, items, n_users: int, n_items: int) -> Tensor:
    """The normalised user–item adjacency as a dense float64 matrix; item j is node ``n_users + j``.

    R is 0/1 (a repeated pair is one edge): the dense twin of ``freqd.graph.normalized_adjacency``
    of ``bipartite_edge_index``.
    """
    r = torch.zeros(n_users, n_items, dtype=torch.float64)
    r[torch.as_tensor(users, dtype=torch.long), torch.as_tensor(items, dtype=torch.long)] = 1.0
    a = torch.zeros(n_users + n_items, n_users + n_items, dtype=torch.float64)
    a[:n_users, n_users:], a[n_users:, :n_users] = r, r.T
    return dense_normalized_adjacency(a)


def spectral_filter(adj: Tensor, x: Tensor, response: Callable[[Tensor], Tensor]) -> Tensor:
    """h(L) x = V diag(h(λ)) Vᵀ x by eigendecomposition of L = I − Â (float64; small graphs only).

    ``response`` maps the eigenvalues λ (a float64 tensor) to h(λ), e.g. ``PolynomialFilter.response``.
    """
    lam, vecs = laplacian_eigh(adj)
    h = torch.as_tensor(response(lam), dtype=torch.float64)
    x = torch.as_tensor(x).to(torch.float64)
    columns = x if x.dim() == 2 else x[:, None]
    out = vecs @ (h[:, None] * (vecs.T @ columns))
    return out if x.dim() == 2 else out[:, 0]


def exact_rayleigh_quotients(adj: Tensor, residual: Tensor, powers: Sequence[int] = (1, 2, 3, 4)) -> dict[int, float]:
    """Σ_k λ_k^p L_k / Σ_k L_k by eigendecomposition: the reference for ``freqd.graph.rayleigh_quotients``."""
    lam, losses = per_frequency_losses(adj, residual)
    total = float(losses.sum())
    return {int(p): float((lam**p * losses).sum()) / total if total > 0 else 0.0 for p in powers}


def random_pairs(seed: int, n_users: int, n_items: int, n_pairs: int) -> tuple[Tensor, Tensor]:
    """``n_pairs`` random (user, item) interactions, repeats possible; user 0 and item 0 are padding."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, n_users, (n_pairs,), generator=g), torch.randint(1, n_items, (n_pairs,), generator=g)


def random_graph(kind: str, seed: int) -> Tensor:
    """A normalised float64 CSR adjacency with 5–50 nodes: ``bipartite``, or the ``user`` or ``item``
    top-K co-occurrence graph (K in 1..3) of random interactions."""
    from freqd.graph import bipartite_edge_index, cooccurrence_adjacency, normalized_adjacency

    rng = np.random.default_rng(seed)
    n_users, n_items = int(rng.integers(4, 20)), int(rng.integers(4, 25))
    users, items = random_pairs(seed, n_users, n_items, int(rng.integers(8, 60)))
    if kind == "bipartite":
        edge_index = bipartite_edge_index(users, items, n_users)
        weight = torch.ones(edge_index.shape[1], dtype=torch.float64)
        return normalized_adjacency(edge_index, n_users + n_items, weight)
    if kind not in ("user", "item"):
        raise ValueError(f"kind must be 'bipartite', 'user' or 'item', got {kind!r}")
    k = int(rng.integers(1, 4))
    return cooccurrence_adjacency(users, items, n_users, n_items, k=k, side=kind, dtype=torch.float64)


def run_process_group(fn: Callable[..., Any], world: int = 2, args: tuple = (), timeout: float = 120.0) -> list[Any]:
    """``fn(*args)`` on ``world`` spawned ``gloo`` ranks of one default process group; the results by rank.

    ``fn`` must be importable (a module-level function) and its result picklable. A rank that
    fails, or a group still running after ``timeout`` seconds (then killed), raises RuntimeError
    naming the ranks (:func:`freqd.distributed.spawn_group`).
    """
    import tempfile
    from pathlib import Path

    from freqd.distributed import spawn_group

    with tempfile.TemporaryDirectory() as folder:
        results = spawn_group(fn, world, args, init_method=f"file://{Path(folder) / 'group'}", backend="gloo",
                              timeout=timeout)
    return [results[rank] for rank in range(world)]
