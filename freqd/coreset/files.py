"""Selection files: the users to keep, with the hashes of what chose them, and their use in a run.

A selection file is JSON (``format: freqd-coreset/1``): the dataset, the training split's
fingerprint, the kept user tokens, the solver and its settings, the objective, the time taken and
the teacher's sha256. Reading one never runs code from it, and it is checked against the run's
data: the same dataset and training split, every token known.

- ``coreset: FILE`` (``freqd train --coreset FILE``): the training split keeps only the selected
  users' interactions; validation and test, and their masks, are unchanged;
- ``kd_coreset: FILE`` (``freqd distill --kd_coreset FILE``): the distillation term is computed on
  the selected users' triples only, scaled by their share of the batch (a selected user's triple
  weighs what it weighs without a coreset); the recommendation loss still sees every triple.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from freqd.datasets.loading import check_same_split, dataset_fingerprint
from freqd.io import atomic_write_json, read_json_file, to_jsonable

FORMAT = "freqd-coreset/1"


def write_selection(path: str | Path, train_dataset, keep_ids: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
    """Write the selection of internal user ids ``keep_ids`` (real users) as tokens; return the record."""
    tokens = train_dataset.field2id_token[train_dataset.uid_field]
    record = {"format": FORMAT, "units": "users", "dataset": train_dataset.dataset_name,
              "data_fingerprint": dataset_fingerprint(train_dataset), "n_units": int(train_dataset.user_num - 1),
              "budget": int(len(keep_ids)), **meta, "keep": [str(tokens[i]) for i in np.asarray(keep_ids)]}
    atomic_write_json(Path(path), to_jsonable(record))
    return record


def read_selection(path: str | Path, train_dataset, key: str = "coreset") -> tuple[torch.Tensor, dict[str, Any]]:
    """(sorted internal ids of the kept users, the record) of a selection file checked against the data."""
    path = Path(path)
    record = read_json_file(path, key, "selection file")
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("keep"), list):
        raise ValueError(f"{key}: {path} is not a freqd selection file (format {FORMAT!r} with a 'keep' list)")
    check_same_split(record, train_dataset, key, path)
    index = train_dataset.field2token_id[train_dataset.uid_field]
    unknown = [token for token in record["keep"] if str(token) not in index]
    if unknown:
        raise ValueError(f"{key}: {path} keeps {len(unknown)} user(s) the dataset does not have, e.g. {unknown[0]!r}")
    ids = torch.tensor(sorted({int(index[str(token)]) for token in record["keep"]}), dtype=torch.long)
    return ids, record


def restrict_training(train_data, config, path: str | Path):
    """A training loader of the same kind over the selected users' training interactions only."""
    from recbole.data.dataloader import TrainDataLoader

    from freqd.datasets.train_loader import FastTrainDataLoader

    dataset = train_data._dataset
    keep, record = read_selection(path, dataset)
    users = dataset.inter_feat[dataset.uid_field]
    subset = dataset.copy(dataset.inter_feat[torch.isin(users, keep)])
    loader_cls = FastTrainDataLoader if isinstance(train_data, FastTrainDataLoader) else TrainDataLoader
    return loader_cls(config, subset, train_data._sampler, shuffle=True), record


def coreset_note(path: str | Path, record: dict[str, Any], n_interactions: int | None = None) -> dict[str, Any]:
    """What a run records of the selection it used."""
    from freqd.io import file_sha256

    note = {"file": str(path), "sha256": file_sha256(Path(path)), "users": record["budget"],
            "of_users": record["n_units"], "solver": record.get("solver")}
    if n_interactions is not None:
        note["interactions"] = int(n_interactions)
    return note
