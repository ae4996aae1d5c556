"""Make RecBole 1.2.1 run on the current numpy/torch stack, without process-wide switches.

Imported by ``freqd/__init__`` before anything from RecBole. Each fix is local and tested
(``tests/test_compat.py``); README, "RecBole 1.2.1 on a modern stack", lists the breakages.
"""

from __future__ import annotations

import copyreg
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

# numpy 2 removed these; RecBole's Config.compatibility_settings() reads them and then aliases
# np.float/np.int/np.bool itself. Only add what is missing, never override.
_NUMPY_ALIASES = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_}
for _name, _value in _NUMPY_ALIASES.items():
    if not hasattr(np, _name):
        setattr(np, _name, _value)


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


# Known, harmless noise from RecBole 1.2.1 on pandas 3 / torch 2.13 and from PyG's CSR support.
_KNOWN_WARNINGS = [
    (r".*inplace.*", Warning),
    (r".*[Cc]hained assignment.*|.*ChainedAssignment.*", Warning),
    (r".*torch\.cuda\.amp\.GradScaler.*", FutureWarning),
    (r".*Sparse CSR tensor support is in beta.*", UserWarning),
    (r".*Sparse invariant checks are implicitly disabled.*", UserWarning),
]


def silence_known_warnings() -> None:
    """Hide the warnings above (for the CLI and benchmarks; the library itself never filters)."""
    for message, category in _KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
