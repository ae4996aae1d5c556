"""Make RecBole 1.2.1 run on the current numpy/torch stack, without process-wide switches.

Imported by ``freqd/__init__`` before anything from RecBole. Each fix is local and tested
(``tests/test_compat.py``); README, "RecBole 1.2.1 on a modern stack", lists the breakages.
Loading checkpoints safely is :mod:`freqd.checkpoints`.
"""

from __future__ import annotations

import warnings

import numpy as np

# numpy 2 removed these; RecBole's Config.compatibility_settings() reads them and then aliases
# np.float/np.int/np.bool itself. Only add what is missing, never override.
_NUMPY_ALIASES = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_}
for _name, _value in _NUMPY_ALIASES.items():
    if not hasattr(np, _name):
        setattr(np, _name, _value)


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
