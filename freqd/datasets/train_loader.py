"""``FastTrainDataLoader``: RecBole's pairwise training loader, with a whole epoch drawn at once.

It exists because RecBole's ``TrainDataLoader`` samples negatives batch by batch (a Python loop
over per-user sets) and builds every batch by indexing and joining the dataset, which on CPU costs
as much as a small model's training step or more (``benchmarks/bench_sampler.py``). Here an epoch is one seeded permutation of the training
interactions plus one vectorised rejection draw of all its negatives; batches are slices.

The batches match RecBole's pairwise ones: the dataset's interaction fields and ``neg_<item>``,
``train_batch_size // k * k`` rows, the ``step`` positives of a batch repeated ``k`` times and
row ``j * step + i`` holding the ``j``-th negative of positive ``i`` (``sample_num: k``). Negatives
are uniform over the real items 1..n_items-1 and never a training positive of the user.
The draw of epoch ``e`` depends only on (``seed``, ``e``), so a resumed run sees the same epochs
as an uninterrupted one. In a ``torch.distributed`` process group every rank draws the same epoch
and takes its part of each batch's positives (:func:`freqd.distributed.batch_part`), so the ranks
together see exactly the one-process batches.
"""

from __future__ import annotations

import math
from typing import Iterator, Literal, get_args

import numpy as np
import torch
from recbole.data.interaction import Interaction
from recbole.utils import InputType, ModelType

from freqd.distributed import batch_part, current_shard

TrainSampler = Literal["recbole", "fast"]
TRAIN_SAMPLERS: tuple[TrainSampler, ...] = get_args(TrainSampler)


def train_sampler_choice(config) -> str:
    """The ``train_sampler`` setting (``recbole`` when absent); ValueError for an unknown value."""
    value = config["train_sampler"]
    value = "recbole" if value is None else value
    if value not in TRAIN_SAMPLERS:
        raise ValueError(f"train_sampler: unknown value {value!r}; expected one of {list(TRAIN_SAMPLERS)}")
    return value


def check_fast_sampler_config(config) -> int:
    """Refuse settings the fast loader does not reproduce; return the negatives per positive ``k``."""
    args = config["train_neg_sample_args"] or {}
    distribution = args.get("distribution", "none")
    if distribution != "uniform":
        raise ValueError(
            f"train_sampler=fast: train_neg_sample_args.distribution={distribution!r} is not supported "
            f"(only 'uniform'); use train_sampler=recbole"
        )
    if args.get("dynamic", False):
        raise ValueError(
            f"train_sampler=fast: train_neg_sample_args.dynamic={args['dynamic']!r} is not supported "
            f"(model-scored negatives); use train_sampler=recbole"
        )
    sample_num = args.get("sample_num")
    if isinstance(sample_num, bool) or not isinstance(sample_num, int) or sample_num < 1:
        raise ValueError(f"train_sampler=fast: train_neg_sample_args.sample_num={sample_num!r} must be an integer >= 1")
    if config["MODEL_INPUT_TYPE"] != InputType.PAIRWISE:
        raise ValueError(
            f"train_sampler=fast: model {config['model']} takes MODEL_INPUT_TYPE={config['MODEL_INPUT_TYPE']}; "
            f"only pairwise models are supported"
        )
    if config["MODEL_TYPE"] != ModelType.GENERAL:
        raise ValueError(f"train_sampler=fast: MODEL_TYPE={config['MODEL_TYPE']} is not supported (only general models)")
    if config["transform"] is not None:
        raise ValueError(f"train_sampler=fast: transform={config['transform']!r} is not supported")
    if not config["single_spec"]:
        raise ValueError("train_sampler=fast: distributed training (single_spec=False) is not supported")
    return sample_num


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A torch generator whose state is a function of (``seed``, ``epoch``) alone."""
    state = np.random.SeedSequence([int(seed) % 2**64, int(epoch)]).generate_state(1, dtype=np.uint64)
    generator = torch.Generator()
    generator.manual_seed(int(state[0]))
    return generator


def pair_keys(users: torch.Tensor, items: torch.Tensor, n_items: int) -> torch.Tensor:
    """One int64 key per (user, item): ``user * n_items + item``."""
    return users.long() * n_items + items.long()


def member_positions(keys: torch.Tensor, sorted_keys: torch.Tensor) -> torch.Tensor:
    """Positions in ``keys`` of the keys present in ``sorted_keys`` (ascending), by binary search.

    The queries are sorted first: neighbouring searches then touch the same memory, which makes
    the search about twice as fast on large tables, sort included.
    """
    if len(sorted_keys) == 0:
        return torch.zeros(0, dtype=torch.long)
    queries, order = torch.sort(keys)
    index = torch.searchsorted(sorted_keys, queries).clamp_(max=len(sorted_keys) - 1)
    return order[sorted_keys.index_select(0, index) == queries]


def draw_negatives(users: torch.Tensor, forbidden: torch.Tensor, n_items: int, num: int,
                   generator: torch.Generator) -> torch.Tensor:
    """``num`` negatives per user as a [num, len(users)] tensor, uniform over 1..n_items-1 minus the user's forbidden items.

    ``forbidden`` holds the sorted keys (:func:`pair_keys`) of the pairs never to draw; only the
    rejected draws are redrawn. Every user must have at least one allowed item.
    """
    repeated = users.long().repeat(num)
    negatives = torch.randint(1, n_items, (len(repeated),), generator=generator)
    rejected = member_positions(pair_keys(repeated, negatives, n_items), forbidden)
    while len(rejected):
        negatives[rejected] = torch.randint(1, n_items, (len(rejected),), generator=generator)
        keys = pair_keys(repeated[rejected], negatives[rejected], n_items)
        rejected = rejected[member_positions(keys, forbidden)]
    return negatives.view(num, len(users))


def _tile(values: torch.Tensor, times: int) -> torch.Tensor:
    """``values`` stacked ``times`` times along the first axis (``Interaction.repeat``'s layout)."""
    return values if times == 1 else values.repeat(times, *([1] * (values.dim() - 1)))


class FastTrainDataLoader:
    """Drop-in for RecBole's ``TrainDataLoader`` (pairwise models, uniform negatives), epoch-vectorised.

    Build it from the training split and the train-phase sampler of ``data_preparation``; the
    sampler is only kept (as ``_sampler``) for code that reads its ``used_ids``. The epoch drawn by
    the next iteration is :attr:`epoch` (``set_epoch`` sets it; each iteration advances it by one).
    """

    def __init__(self, config, dataset, sampler=None, shuffle: bool | None = None):
        self.neg_sample_num = check_fast_sampler_config(config)
        if dataset.user_feat is not None or dataset.item_feat is not None:
            raise ValueError(
                "train_sampler=fast: the dataset loads user or item features (load_col), which the fast "
                "loader does not join into batches; use train_sampler=recbole"
            )
        self.config = config
        self._dataset = dataset
        self._sampler = sampler
        self.shuffle = bool(config["shuffle"]) if shuffle is None else bool(shuffle)
        self.seed = int(config["seed"])
        self.epoch = 0
        self.uid_field, self.iid_field = dataset.uid_field, dataset.iid_field
        self.neg_item_id = config["NEG_PREFIX"] + self.iid_field
        self.step = max(int(config["train_batch_size"]) // self.neg_sample_num, 1)
        self._batch_size = self.step * self.neg_sample_num
        self.n_items = dataset.item_num
        self._fields = {name: dataset.inter_feat[name] for name in dataset.inter_feat.columns}
        self._users = self._fields[self.uid_field].long()
        keys = pair_keys(self._users, self._fields[self.iid_field], self.n_items)
        self._forbidden = torch.unique(keys)
        per_user = torch.bincount(self._forbidden // self.n_items, minlength=dataset.user_num)
        if (per_user >= self.n_items - 1).any():
            user = int(torch.nonzero(per_user >= self.n_items - 1)[0])
            raise ValueError(f"train_sampler=fast: user id {user} has interacted with every item; no negative exists")
        dataset.copy_field_property(self.neg_item_id, self.iid_field)

    @property
    def dataset(self):
        """The training dataset (RecBole's loaders answer ``dataset`` with it too)."""
        return self._dataset

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration draw epoch ``epoch``."""
        self.epoch = int(epoch)

    def draw_epoch(self, epoch: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Epoch ``epoch``'s interaction columns in visiting order and its [k, n] negatives."""
        generator = epoch_generator(self.seed, epoch)
        n = len(self._users)
        if self.shuffle:
            order = torch.randperm(n, generator=generator)
            columns = {name: values.index_select(0, order) for name, values in self._fields.items()}
        else:
            columns = dict(self._fields)
        negatives = draw_negatives(columns[self.uid_field], self._forbidden, self.n_items, self.neg_sample_num,
                                   generator)
        return columns, negatives

    def __len__(self) -> int:
        return math.ceil(len(self._users) / self.step)

    def __iter__(self) -> Iterator[Interaction]:
        epoch = self.epoch
        self.epoch += 1
        columns, negatives = self.draw_epoch(epoch)
        k = self.neg_sample_num
        shard = current_shard()
        for start in range(0, len(self._users), self.step):
            lo, hi = batch_part(start, min(start + self.step, len(self._users)), shard)
            batch = {name: _tile(values[lo:hi], k) for name, values in columns.items()}
            batch[self.neg_item_id] = negatives[:, lo:hi].reshape(-1)
            yield Interaction(batch)
