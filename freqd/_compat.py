"""Make RecBole 1.2.1 run on the current numpy/torch stack, without process-wide switches.

Imported by ``freqd/__init__`` before anything from RecBole. Each fix is local and tested
(``tests/test_compat.py``); see ``../shared/docs/recbole-notes.md`` §10 for the breakages.
"""

from __future__ import annotations

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


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a RecBole/freqd checkpoint dict.

    RecBole pickles its Config into checkpoints with protocol 4, which torch >= 2.6's default
    ``weights_only=True`` loader cannot read. We opt out for this call only, instead of setting
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` for the whole process. Only load files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
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
