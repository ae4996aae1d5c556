"""Reading checkpoints: without running code from them, and checked against the data they meet.

RecBole pickles its ``Config`` (protocol 4) into checkpoints, which torch's ``weights_only``
loader cannot read, and a plain ``torch.load`` executes whatever a pickle names: teachers are
files users receive from other teams and tools, so every checkpoint freqd reads goes through
:func:`load_checkpoint`'s allowlist, and a teacher is checked against the student's data by
:func:`load_teacher` before any training.
"""

from __future__ import annotations

import copyreg
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from freqd.datasets.loading import dataset_fingerprint
from freqd.io import file_sha256
from freqd.models import EmbeddingRecommender, get_model


class UnsafeCheckpointError(ValueError):
    """A checkpoint whose pickle references something that is not checkpoint data (it could run code)."""


class _SymbolMeta(type):
    """Metaclass of :class:`CheckpointSymbol` classes; they pickle back as the global they stand for."""


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
    for core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(core, "scalar")] = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
        allowed[(core, "_reconstruct")] = (np._core.multiarray._reconstruct if hasattr(np, "_core")
                                           else np.core.multiarray._reconstruct)
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("numpy", "ndarray")] = np.ndarray
    for name in dir(enum_type):
        value = getattr(enum_type, name)
        if isinstance(value, type) and issubclass(value, __import__("enum").Enum):
            allowed[("recbole.utils.enum_type", name)] = value
    return allowed


def _restricted_pickle_module(path: Path):
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
            raise UnsafeCheckpointError(
                f"refusing to load {path}: its pickle references {module}.{name}, which is not checkpoint data "
                "(loading it could run code); re-save the model's state_dict from code you trust")

        def load_reduce(self) -> None:
            args = self.stack.pop()
            refuse_call(self.stack[-1])
            self.stack[-1] = self.stack[-1](*args)

        def _instantiate(self, klass, args) -> None:
            refuse_call(klass)
            super()._instantiate(klass, args)

        dispatch[pickle.REDUCE[0]] = load_reduce

    module = types.ModuleType("freqd_restricted_pickle")
    module.Unpickler = RestrictedUnpickler
    module.load = lambda file, **kwargs: RestrictedUnpickler(file, **kwargs).load()
    module.__name__ = "freqd_restricted_pickle"
    return module


#: Set to 1 (``--trust-checkpoint``) to load checkpoints with plain pickle: runs any code a file names.
TRUST_ENV = "FREQD_TRUST_CHECKPOINTS"


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a RecBole/freqd checkpoint dict without running code from it.

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
                                **({} if trusted else {"pickle_module": _restricted_pickle_module(path)}))
    except UnsafeCheckpointError:
        raise
    except Exception as exc:  # corrupt or non-torch file: name it
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a RecBole/freqd checkpoint (no 'state_dict' entry)")
    return checkpoint


def load_teacher(path: str | os.PathLike, config, train_dataset, checkpoint: dict | None = None) -> EmbeddingRecommender:
    """The checkpoint's model, rebuilt on ``train_dataset``, in eval mode with gradients off.

    Raises a ValueError naming the file before any training when the checkpoint is not a
    model freqd can distil from, or was trained on other data (dataset name, user/item counts,
    and, for freqd checkpoints, the training-split fingerprint). ``checkpoint`` is the already
    loaded content of ``path``, so a caller that read it need not read it again. The returned
    model carries ``checkpoint_sha256``, the file's hash, for caches keyed by the teacher.
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
    teacher_config["device"] = config["device"]
    teacher = model_cls(teacher_config, train_dataset)
    teacher.load_state_dict(state)
    teacher.to(config["device"]).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    teacher.checkpoint_sha256 = file_sha256(path)
    return teacher
