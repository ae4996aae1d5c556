"""InfoMax coresets (docs/coreset.md): which users to KEEP when training a teacher or distilling.

:mod:`freqd.coreset.solvers` selects (pure NumPy/SciPy); :mod:`freqd.coreset.signals` computes
importance and similarity from a trained teacher; :mod:`freqd.coreset.files` writes a selection
file and applies one to a run (``freqd train --coreset``, ``freqd distill --kd_coreset``).
"""

from freqd.coreset.solvers import (
    METHODS,
    SOLVERS,
    KeepIndices,
    jaccard_similarity,
    knn_similarity,
    objective,
    rank_normalise,
    select,
)

__all__ = ["METHODS", "SOLVERS", "KeepIndices", "jaccard_similarity", "knn_similarity", "objective",
           "rank_normalise", "select"]
