"""Data sets for ``freqd``: strict readers, per-user splits and RecBole atomic files.

Typical use::

    from freqd.datasets import prepare_dataset
    config_dict = prepare_dataset("citeulike-t-kds", out_root="dataset")
    # -> {"dataset": ..., "data_path": ..., "benchmark_filename": [...], "load_col": {...}}

Lower-level pieces: ``read_*`` parsers returning ``(pairs, ReadReport)``, ``split_per_user``,
``carve_validation``, ``filter_core``, ``clean_splits``, ``write_benchmark_files`` and
``check_atomic_file``. Malformed input raises :class:`DataFormatError`.
"""

from .atomic import (
    AtomicFileInfo,
    CleanReport,
    CleanSplits,
    check_atomic_file,
    clean_splits,
    write_benchmark_files,
)
from .errors import DataFormatError
from .readers import ReadReport, read_lightgcn_txt, read_pair_tsv, read_users_dat
from .registry import KNOWN_DATASETS, find_data_root, prepare_dataset, read_manifest
from .splits import CoreFilterResult, carve_validation, filter_core, split_per_user
from .train_loader import FastTrainDataLoader

__all__ = [
    "FastTrainDataLoader",
    "AtomicFileInfo",
    "CleanReport",
    "CleanSplits",
    "CoreFilterResult",
    "DataFormatError",
    "KNOWN_DATASETS",
    "ReadReport",
    "carve_validation",
    "check_atomic_file",
    "clean_splits",
    "filter_core",
    "find_data_root",
    "prepare_dataset",
    "read_lightgcn_txt",
    "read_manifest",
    "read_pair_tsv",
    "read_users_dat",
    "split_per_user",
    "write_benchmark_files",
]
