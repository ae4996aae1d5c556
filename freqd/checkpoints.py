"""Reading checkpoints: without running code from them, and checked against the data they meet.

RecBole pickles its ``Config`` (protocol 4) into checkpoints, which torch's ``weights_only``
loader cannot read, and a plain ``torch.load`` executes whatever a pickle names: teachers are
files users receive from other teams and tools, so every checkpoint freqd reads goes through
:func:`load_checkpoint`'s allowlist, and a teacher is checked against the student's data by
:func:`load_teacher` before any training.
"""

from __future__ import annotations

import copyreg
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from freqd.datasets.loading import dataset_fingerprint
from freqd.io import file_sha256, state_digest
from freqd.models import EmbeddingRecommender, get_model

logger = logging.getLogger(__name__)


class UnsafeCheckpointError(ValueError):
    """A checkpoint whose pickle references something that is not checkpoint data (it could run code)."""


class _SymbolMeta(type):
    """Metaclass of :class:`CheckpointSymbol` classes; they pickle back as the global they stand for."""

    qualified_name: str


class CheckpointSymbol(metaclass=_SymbolMeta):
    """A class a checkpoint names as a value (the config's ``model_class``, ``yaml_loader``), not imported.

    Calling it builds an inert object, so a pickle that calls it runs nothing.
    """

    qualified_name = ""

    def __init__(self, *args, **kwargs) -> None:
        self.args = args


def _symbol(module: str, name: str) -> type:
    return _SymbolMeta(name, (CheckpointSymbol,), {"qualified_name": f"{module}.{name}", "__module__": __name__})


def _resolve_global(module: str, name: str) -> Any:
    """The real ``module.name`` (what a re-saved symbol means to plain pickle; freqd's loader maps it to a symbol)."""
    import importlib

    return getattr(importlib.import_module(module), name)


copyreg.pickle(_SymbolMeta, lambda cls: (_resolve_global, tuple(cls.qualified_name.rsplit(".", 1))))


def _safe_globals() -> dict[tuple[str, str], Any]:
    """What a RecBole/freqd checkpoint's pickle may name: tensors, containers, enums, numpy scalars, configs."""
    import collections
    import importlib
    import pathlib

    from recbole.config import Config as RecBoleConfig
    from recbole.utils import enum_type

    from freqd.config import Config as FreqdConfig

    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "slice"): slice,
        ("torch", "device"): torch.device, ("torch", "Size"): torch.Size,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch", "float32"): torch.float32, ("torch", "int64"): torch.int64,
        **{(module, name): getattr(pathlib, name) for module in ("pathlib", "pathlib._local")
           for name in ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath")},
        ("recbole.config.configurator", "Config"): RecBoleConfig,
        ("freqd.config", "Config"): FreqdConfig,
    }
    multiarray = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray")
    for core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(core, "scalar")] = multiarray.scalar
        allowed[(core, "_reconstruct")] = multiarray._reconstruct
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("numpy", "ndarray")] = np.ndarray
    for name in dir(enum_type):
        value = getattr(enum_type, name)
        if isinstance(value, type) and issubclass(value, __import__("enum").Enum):
            allowed[("recbole.utils.enum_type", name)] = value
    return allowed


def _restricted_pickle_module(path: Path, known: frozenset[tuple[str, str]] = frozenset()):
    """A pickle module for ``torch.load`` whose unpickler resolves only :func:`_safe_globals`.

    Model and YAML-loader classes that RecBole stores as config values become inert
    :class:`CheckpointSymbol` classes; any other global (``exec``, ``os.system``, ...) is an
    :class:`UnsafeCheckpointError` naming it, before anything is called. RecBole's ``Config``
    classes may be rebuilt (``__new__`` plus their ``__dict__``) but never called, so their
    constructor (which reads files) cannot run. It is pickle's pure-Python unpickler with those
    two checks: a checkpoint's pickle holds only the small objects around the tensors' storages.
    """
    import pickle
    import types

    allowed = _safe_globals()
    no_call = {allowed[("recbole.config.configurator", "Config")], allowed[("freqd.config", "Config")]}
    symbols = ("freqd.models", "recbole.model", "yaml.loader", "yaml")

    enums = {value for value in allowed.values() if isinstance(value, type) and issubclass(value, __import__("enum").Enum)}

    def enum_member(owner, name):
        """``getattr`` as Python >= 3.12 pickles enum members, for the allowlisted enums only."""
        if owner not in enums or not isinstance(name, str) or name.startswith("_"):
            raise UnsafeCheckpointError(f"refusing to load {path}: its pickle calls getattr({owner!r}, {name!r}), "
                                        "which is not an enum member checkpoints hold")
        return getattr(owner, name)

    def refuse_call(target) -> None:
        if target in no_call:
            raise UnsafeCheckpointError(f"refusing to load {path}: its pickle calls {target.__module__}."
                                        f"{target.__qualname__}(...), which checkpoints never do")

    class RestrictedUnpickler(pickle._Unpickler):
        dispatch = dict(pickle._Unpickler.dispatch)

        def find_class(self, module: str, name: str) -> Any:
            if (module, name) in allowed:
                return allowed[(module, name)]
            if (module, name) == (__name__, "_resolve_global"):  # a re-saved symbol: stays a symbol
                return _symbol
            if (module, name) == ("builtins", "getattr"):
                return enum_member
            if module == "numpy.dtypes" and name.endswith("DType"):
                return getattr(np.dtypes, name)
            if any(module == root or module.startswith(root + ".") for root in symbols) and name[:1].isupper():
                return _symbol(module, name)
            if (module, name) in known:  # the caller's own model class: an inert symbol too
                return _symbol(module, name)
            raise UnsafeCheckpointError(
                f"refusing to load {path}: its pickle references {module}.{name}, which is not checkpoint data "
                "(loading it could run code); re-save the model's state_dict from code you trust")

        def load_reduce(self) -> None:
            stack = self.stack  # type: ignore[attr-defined]  # pickle._Unpickler's internals have no stubs
            args = stack.pop()
            refuse_call(stack[-1])
            stack[-1] = stack[-1](*args)

        def _instantiate(self, klass, args) -> None:
            refuse_call(klass)
            super()._instantiate(klass, args)  # type: ignore[misc]  # pickle._Unpickler's internals have no stubs

        dispatch[pickle.REDUCE[0]] = load_reduce  # type: ignore[assignment]  # a subclass method in the table

    module = types.ModuleType("freqd_restricted_pickle")
    setattr(module, "Unpickler", RestrictedUnpickler)
    setattr(module, "load", lambda file, **kwargs: RestrictedUnpickler(file, **kwargs).load())
    module.__name__ = "freqd_restricted_pickle"
    return module


#: Set to 1 (``--trust-checkpoint``) to load checkpoints with plain pickle: runs any code a file names.
TRUST_ENV = "FREQD_TRUST_CHECKPOINTS"


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", known_classes: tuple[type, ...] = ()) -> dict:
    """Load a RecBole/freqd checkpoint dict without running code from it.

    ``known_classes`` are classes the caller runs anyway (a trainer's own model, which may live in the
    user's package): the config's references to them load as inert symbols, like freqd's and
    RecBole's model classes, instead of being refused.

    RecBole pickles its Config (protocol 4) into checkpoints, which torch's ``weights_only``
    loader cannot read; a plain ``torch.load`` would execute whatever the pickle names. This
    loader unpickles with an allowlist instead (:func:`_restricted_pickle_module`): tensors,
    containers, numpy scalars, RecBole's enums and Config (rebuilt without running its
    constructor). A file that names anything else is an :class:`UnsafeCheckpointError`, unless
    ``$FREQD_TRUST_CHECKPOINTS`` is 1 (``--trust-checkpoint``): then plain pickle loads it.
    """
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"cannot read checkpoint {path}: not a torch zip checkpoint (torch.save's format since 1.6)")
    trusted = os.environ.get(TRUST_ENV) == "1"
    if trusted:
        warnings.warn(f"loading {path} with plain pickle (--trust-checkpoint): it can run code", stacklevel=2)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False,
                                **({} if trusted else {"pickle_module": _restricted_pickle_module(
                                    path, frozenset((c.__module__, c.__qualname__) for c in known_classes))}))
    except UnsafeCheckpointError:
        raise
    except Exception as exc:  # corrupt or non-torch file: name it
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a RecBole/freqd checkpoint (no 'state_dict' entry)")
    return checkpoint


def weights_digest(path: str | os.PathLike) -> str:
    """:func:`freqd.io.state_digest` of a checkpoint's ``state_dict``.

    Unlike the file's hash it leaves out what a rebuild changes without changing the model (the
    saved config's paths and times, the optimizer state): a teacher retrained bit for bit from the
    same command has the same digest.
    """
    state = load_checkpoint(path)["state_dict"]  # its errors name the file already
    try:
        return state_digest(state)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


#: Config keys that decide which interactions a model is trained on and how they are split: a teacher
#: without freqd's training-data fingerprint (a stock RecBole checkpoint) must carry the student's values.
#: ``load_col``/``unused_col`` are left out: they change which columns are read, not which rows.
SPLIT_KEYS = ("benchmark_filename", "user_inter_num_interval", "item_inter_num_interval", "val_interval", "threshold",
              "rm_dup_inter", "filter_inter_by_user_or_item", "USER_ID_FIELD", "ITEM_ID_FIELD", "RATING_FIELD",
              "TIME_FIELD")
#: The parts of ``eval_args`` that decide the split (``mode`` only decides how it is evaluated).
EVAL_ARGS_SPLIT_KEYS = ("split", "order", "group_by")


def _comparable(key: str, value: Any) -> Any:
    """``value`` in a form where equal settings compare equal: lists for tuples, split ratios summing
    to 1 (RecBole normalises them), strings without blanks (``"[0, inf)"`` is ``"[0,inf)"``)."""
    if isinstance(value, dict):
        if key == "eval_args.split":
            return {name: ([round(float(r) / sum(map(float, ratios)), 12) for r in ratios]
                           if isinstance(ratios, (list, tuple)) and ratios and sum(map(float, ratios)) else ratios)
                    for name, ratios in value.items()}
        return {str(k): _comparable(f"{key}.{k}", v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_comparable(key, v) for v in value]
    if isinstance(value, str):
        return "".join(value.split())
    return value


def _split_seed(config) -> tuple[str, Any]:
    """(key, value) of the seed RecBole's random split was drawn with: ``split_seed`` if set, else ``seed``."""
    if "split_seed" in config and config["split_seed"] is not None:
        return "split_seed", config["split_seed"]
    return "seed", config["seed"]


def _check_split_settings(path, teacher_config, config) -> list[str]:
    """Compare the split-deciding settings of a fingerprint-less teacher with the student's.

    A difference is a ValueError naming the file, the key and both values; returns the keys the
    teacher's config does not carry (those could not be compared).
    """
    pairs: list[tuple[str, Any, Any, bool]] = []
    for key in SPLIT_KEYS:
        pairs.append((key, teacher_config[key], config[key], key in teacher_config))
    teacher_eval, student_eval = teacher_config["eval_args"] or {}, config["eval_args"] or {}
    for key in EVAL_ARGS_SPLIT_KEYS:
        pairs.append((f"eval_args.{key}", teacher_eval.get(key), student_eval.get(key), key in teacher_eval))
    not_carried = [key for key, _, _, carried in pairs if not carried]
    for key, theirs, ours, carried in pairs:
        if carried and _comparable(key, theirs) != _comparable(key, ours):
            raise ValueError(f"{path} was trained on another split or filtering of {config['dataset']!r}: its {key} "
                             f"is {theirs!r}, this run's is {ours!r} (the checkpoint carries no training-data "
                             "fingerprint, so these settings must match)")
    random_split = config["benchmark_filename"] is None and student_eval.get("order") == "RO"
    if random_split:  # a seeded shuffle decides the split
        (their_key, theirs), (our_key, ours) = _split_seed(teacher_config), _split_seed(config)
        if theirs is None:
            not_carried.append("seed")
        elif int(theirs) != int(ours):
            raise ValueError(f"{path} was trained on another random split of {config['dataset']!r}: its split seed "
                             f"({their_key}) is {theirs!r}, this run's ({our_key}) is {ours!r} (the checkpoint "
                             "carries no training-data fingerprint, so the seed of the split must match)")
    return not_carried


def load_teacher(path: str | os.PathLike, config, train_dataset,
                 checkpoint: dict | None = None) -> EmbeddingRecommender:
    """The checkpoint's model, rebuilt on ``train_dataset``, in eval mode with gradients off.

    Raises a ValueError naming the file before any training when the checkpoint is not a
    model freqd can distil from, or was trained on other data: dataset name, user/item counts,
    and the training split. A freqd checkpoint's training-split fingerprint must match; a
    checkpoint without one (stock RecBole) must carry the student's split-deciding settings
    (:data:`SPLIT_KEYS`, ``eval_args``' split/order/group_by, and for a random split the seed
    it was drawn with: ``split_seed`` if set, else ``seed``), the error naming the key and both
    values. Such a teacher's split still cannot be verified exactly (the data files may differ):
    that is logged as a WARNING. ``checkpoint`` is the already loaded content of ``path``, so a
    caller that read it need not read it again.

    The returned model carries ``checkpoint_sha256`` (the file's hash, for caches keyed by the
    teacher), ``split_verified`` (True when the fingerprint matched) and ``split_note`` (why not,
    else None), which :func:`freqd.runs.distill` records in ``results.json``.
    """
    if checkpoint is None:
        checkpoint = load_checkpoint(path, map_location="cpu")
    teacher_config = checkpoint.get("config")
    if teacher_config is None or "model" not in teacher_config:
        raise ValueError(f"{path}: no RecBole config in the checkpoint; cannot tell which model it holds")
    name = teacher_config["model"]
    try:
        model_cls = get_model(name)
    except ValueError as exc:
        raise ValueError(f"{path}: teacher model class {name!r} is unknown to freqd") from exc
    if not issubclass(model_cls, EmbeddingRecommender):
        raise ValueError(f"{path}: teacher model {name!r} is not a freqd embedding backbone (BPR, LightGCN)")
    if teacher_config["dataset"] != config["dataset"]:
        raise ValueError(
            f"{path} was trained on dataset {teacher_config['dataset']!r}, not {config['dataset']!r}"
        )
    state = checkpoint["state_dict"]
    expected = {"user_embedding.weight": train_dataset.user_num, "item_embedding.weight": train_dataset.item_num}
    for key, rows in expected.items():
        if key not in state:
            raise ValueError(f"{path}: state_dict has no {key!r}")
        if state[key].shape[0] != rows:
            raise ValueError(
                f"{path}: {key} has {state[key].shape[0]} rows but the dataset has {rows} "
                "(another split or filtering?)"
            )
    fingerprint = (checkpoint.get("freqd") or {}).get("data_fingerprint")
    if fingerprint and fingerprint != dataset_fingerprint(train_dataset):
        raise ValueError(
            f"{path} was trained on a different training split of {config['dataset']!r} "
            "(split seed or preprocessing changed)"
        )
    split_note = None
    if not fingerprint:
        not_carried = _check_split_settings(path, teacher_config, config)
        split_note = ("no training-data fingerprint (not a freqd checkpoint): dataset, sizes and split settings "
                      "match, but the split itself cannot be verified"
                      + (f"; settings not in the checkpoint: {', '.join(not_carried)}" if not_carried else ""))
        logger.warning(f"{path}: {split_note}")
    teacher_config["device"] = config["device"]
    teacher = model_cls(teacher_config, train_dataset)
    teacher.load_state_dict(state)
    teacher.to(config["device"]).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    teacher.checkpoint_sha256 = file_sha256(path)
    teacher.split_verified = split_note is None
    teacher.split_note = split_note
    return teacher
