"""The two named evaluation protocols, on top of RecBole's own dataloaders and metrics.

``recbole``: RecBole 1.2.1 full ranking. At test time train *and* validation items are masked;
metrics are averaged over users that have targets in the split.

``reference``: the FreqD reference code (woriazzc/KDs). At test time only train items are masked
(validation items stay rankable); metrics are averaged over *all* users, a user without targets
counting 0. RecBole masks ``used_ids - positives`` of the loader's sampler, so the masking is done
by giving the test loader the train-phase sampler (``used_ids`` = training items); the averaging
by rescaling RecBole's per-user means with
(users with targets) / (all users), which is exact because every metric is a mean over users.
"""

from __future__ import annotations

from recbole.data import data_preparation
from recbole.data.dataloader import FullSortEvalDataLoader

from freqd.datasets.train_loader import FastTrainDataLoader, check_fast_sampler_config, train_sampler_choice

RESCALED_METRICS = ("recall", "ndcg", "hit", "mrr", "precision", "map")


def build_dataloaders(config, dataset):
    """RecBole's ``data_preparation``, with the test loader swapped for the reference protocol and
    the training loader for :class:`~freqd.datasets.train_loader.FastTrainDataLoader` when
    ``train_sampler: fast``."""
    fast = train_sampler_choice(config) == "fast"
    if fast:
        check_fast_sampler_config(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    if fast:
        train_data = FastTrainDataLoader(config, train_data._dataset, train_data._sampler)
    if config["protocol"] == "reference":
        if not isinstance(test_data, FullSortEvalDataLoader):
            raise ValueError("protocol=reference needs full-ranking evaluation (eval_args.mode: full)")
        if train_data._sampler is None:
            raise ValueError("protocol=reference needs RecBole's train sampler (train_neg_sample_args set)")
        test_data = FullSortEvalDataLoader(config, test_data._dataset, train_data._sampler, shuffle=False)
    return train_data, valid_data, test_data


def n_real_users(dataset) -> int:
    """Users of the dataset, without RecBole's padding id 0."""
    return dataset.user_num - 1


def rescale_to_all_users(result: dict, eval_data, n_users: int) -> dict:
    """Turn means over users-with-targets into means over ``n_users`` (targetless users = 0)."""
    with_targets = len(eval_data.uid_list)
    factor = with_targets / n_users
    return {
        key: (value * factor if key.split("@")[0] in RESCALED_METRICS else value)
        for key, value in result.items()
    }
