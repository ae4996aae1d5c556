"""freqd: compress recommenders by (frequency-aware) knowledge distillation, on RecBole 1.2.1."""

from freqd import _compat  # noqa: F401  (numpy aliases before any RecBole import)
from freqd._compat import load_checkpoint

__version__ = "0.1.0"

__all__ = ["__version__", "load_checkpoint", "Config", "get_model", "run_freqd", "train", "distill", "compare"]


def __getattr__(name):
    """Lazy access to the heavy parts, so ``import freqd`` stays cheap."""
    if name == "Config":
        from freqd.config import Config

        return Config
    if name == "get_model":
        from freqd.models import get_model

        return get_model
    if name in ("run_freqd", "train"):  # train: the public name
        from freqd.quick_start import run_freqd

        return run_freqd
    if name == "distill":
        from freqd.quick_start import run_distill

        return run_distill
    if name == "compare":
        from freqd.compare import run_comparison

        return run_comparison
    raise AttributeError(f"module 'freqd' has no attribute {name!r}")
