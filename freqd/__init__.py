"""freqd: compress recommenders by (frequency-aware) knowledge distillation, on RecBole 1.2.1."""

from typing import TYPE_CHECKING

from freqd import compat  # noqa: F401  (numpy aliases before any RecBole import)

if TYPE_CHECKING:  # the public names, resolved lazily by __getattr__ below
    from freqd.checkpoints import load_checkpoint
    from freqd.compare import run_comparison as compare
    from freqd.config import Config
    from freqd.models import get_model
    from freqd.runs import distill, train

from freqd.version import __version__

__all__ = ["__version__", "load_checkpoint", "Config", "get_model", "train", "distill", "compare"]


def __getattr__(name):
    """Lazy access to the heavy parts, so ``import freqd`` stays cheap."""
    if name == "load_checkpoint":
        from freqd.checkpoints import load_checkpoint

        return load_checkpoint
    if name == "Config":
        from freqd.config import Config

        return Config
    if name == "get_model":
        from freqd.models import get_model

        return get_model
    if name == "train":
        from freqd.runs import train

        return train
    if name == "distill":
        from freqd.runs import distill

        return distill
    if name == "compare":
        from freqd.compare import run_comparison

        return run_comparison
    raise AttributeError(f"module 'freqd' has no attribute {name!r}")
