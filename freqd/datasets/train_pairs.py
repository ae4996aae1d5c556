"""Training-pair files: train on a given set of (user, item) pairs instead of the split's training part.

A pairs file is JSON (``format: freqd-pairs/1``): the dataset, the training split's fingerprint, the
user and item tokens of each pair, and a note of what made it. It serves experiments on altered
training data — the shadow models of a membership attack (random halves of the training and test
pairs), dropped or added edges — while validation, test and their masks stay the split's. Reading
one never runs code from it, and it is checked against the run's data: the same dataset and split,
every token known, no pair twice.

``train_pairs: FILE`` (``freqd train|distill --train_pairs FILE``) needs ``train_sampler: fast``: its
negatives exclude the pairs of the file, where RecBole's sampler would exclude the split's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from freqd.datasets.loading import check_same_split, dataset_fingerprint
from freqd.io import atomic_write_json, read_json_file, to_jsonable

FORMAT = "freqd-pairs/1"


def write_pairs(path: str | Path, train_dataset, users: np.ndarray, items: np.ndarray,
                note: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write internal-id pairs (``users[k]``, ``items[k]``) of ``train_dataset``'s split as tokens; return the record."""
    users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
    if users.shape != items.shape or users.ndim != 1:
        raise ValueError(f"users {users.shape} and items {items.shape} must be vectors of one length")
    user_tokens = train_dataset.field2id_token[train_dataset.uid_field]
    item_tokens = train_dataset.field2id_token[train_dataset.iid_field]
    record = {"format": FORMAT, "dataset": train_dataset.dataset_name,
              "data_fingerprint": dataset_fingerprint(train_dataset), "n_pairs": int(len(users)), **(note or {}),
              "users": [str(user_tokens[u]) for u in users], "items": [str(item_tokens[i]) for i in items]}
    atomic_write_json(Path(path), to_jsonable(record))
    return record


def read_pairs(path: str | Path, train_dataset) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """(user ids, item ids, record) of a pairs file checked against the run's data."""
    path = Path(path)
    record = read_json_file(path, "train_pairs", "pairs file")
    if (not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("users"), list)
            or not isinstance(record.get("items"), list) or len(record["users"]) != len(record["items"])):
        raise ValueError(f"train_pairs: {path} is not a freqd pairs file (format {FORMAT!r} with 'users' and "
                         "'items' lists of one length)")
    check_same_split(record, train_dataset, "train_pairs", path)
    if not record["users"]:
        raise ValueError(f"train_pairs: {path} holds no pairs")
    ids = []
    for field, what in ((train_dataset.uid_field, "users"), (train_dataset.iid_field, "items")):
        index = train_dataset.field2token_id[field]
        unknown = next((t for t in record[what] if str(t) not in index or index[str(t)] == 0), None)
        if unknown is not None:
            raise ValueError(f"train_pairs: {path} names {what[:-1]} {unknown!r}, which the dataset does not have")
        ids.append(torch.tensor([index[str(t)] for t in record[what]], dtype=torch.long))
    keys = ids[0] * train_dataset.item_num + ids[1]
    if len(torch.unique(keys)) != len(keys):
        raise ValueError(f"train_pairs: {path} lists a (user, item) pair more than once")
    return ids[0], ids[1], record


def replace_training(train_data, config, path: str | Path):
    """A fast training loader over the file's pairs, and the record; the other columns of a row are zero."""
    from recbole.data.interaction import Interaction

    from freqd.datasets.train_loader import FastTrainDataLoader

    if not isinstance(train_data, FastTrainDataLoader):
        raise ValueError("train_pairs needs train_sampler: fast (its negatives exclude the file's pairs; RecBole's "
                         "sampler would exclude the split's)")
    dataset = train_data._dataset
    users, items, record = read_pairs(path, dataset)
    columns = {}
    for name in dataset.inter_feat.columns:
        column = dataset.inter_feat[name]
        columns[name] = torch.zeros((len(users), *column.shape[1:]), dtype=column.dtype)
    columns[dataset.uid_field], columns[dataset.iid_field] = users, items
    subset = dataset.copy(Interaction(columns))
    return FastTrainDataLoader(config, subset, train_data._sampler, shuffle=True), record
