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


def check_same_split(record: dict, train_dataset, key: str, path) -> None:
    """Refuse a file (``record``, read from ``path`` for setting ``key``) made on another dataset or split."""
    if record.get("dataset") != train_dataset.dataset_name:
        raise ValueError(f"{key}: {path} was made on dataset {record.get('dataset')!r}, the run's is "
                         f"{train_dataset.dataset_name!r}")
    if record.get("data_fingerprint") != dataset_fingerprint(train_dataset):
        raise ValueError(f"{key}: {path} was made on another training split (data_fingerprint "
                         f"{record.get('data_fingerprint')!r}); make it with the run's split settings")


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
