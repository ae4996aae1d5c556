"""RecBole datasets as freqd loads them: named datasets prepared as atomic files, and the
fingerprint that ties a checkpoint to the training split it saw."""

from __future__ import annotations

import hashlib
from typing import Any


def dataset_fingerprint(train_dataset) -> str:
    """sha1 of the training (user, item) tokens: identifies the data a checkpoint was trained on."""
    inter = train_dataset.inter_feat
    users = train_dataset.id2token(train_dataset.uid_field, inter[train_dataset.uid_field].numpy())
    items = train_dataset.id2token(train_dataset.iid_field, inter[train_dataset.iid_field].numpy())
    pairs = sorted(zip(users.tolist(), items.tolist()))
    return hashlib.sha1(repr(pairs).encode()).hexdigest()


def dataset_config(dataset: str, config_dict: dict[str, Any]) -> dict[str, Any]:
    """Config entries that load ``dataset``: a named freqd dataset is prepared as atomic files; your own
    (or imported) atomic files are checked and, if needed, cleaned (:mod:`freqd.datasets.user_files`)."""
    if dataset == "ml-100k":  # bundled in the recbole wheel; RecBole redirects data_path itself
        return config_dict
    from freqd.datasets.registry import KNOWN_DATASETS, prepare_dataset
    from freqd.datasets.user_files import user_dataset_config

    if dataset in KNOWN_DATASETS:
        prepared = prepare_dataset(
            dataset,
            out_root=config_dict.get("data_path", "dataset"),
            seed=int(config_dict.get("split_seed", 2020)),
        )
        return {**prepared, **{k: v for k, v in config_dict.items() if k != "data_path"}}
    return user_dataset_config(dataset, config_dict)
