"""Data sets for ``freqd``: strict readers, per-user splits and RecBole atomic files.

Typical use::

    from freqd.datasets import prepare_dataset
    config_dict = prepare_dataset("citeulike-t-kds", out_root="dataset")
    # -> {"dataset": ..., "data_path": ..., "benchmark_filename": [...], "load_col": {...}}

Your own data: ``import_interactions`` (``freqd datasets import``) turns one interaction file
into atomic files, id maps, a manifest and a config; ``user_dataset_config`` checks (and if
needed cleans) atomic files you wrote yourself.

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
from .importer import ImportOptions, import_interactions
from .readers import ReadReport, read_lightgcn_txt, read_pair_tsv, read_users_dat
from .registry import KNOWN_DATASETS, find_data_root, prepare_dataset, read_manifest
from .splits import CoreFilterResult, carve_validation, filter_core, split_per_user
from .train_loader import FastTrainDataLoader
from .user_files import user_dataset_config

__all__ = [
    "FastTrainDataLoader",
    "AtomicFileInfo",
    "CleanReport",
    "CleanSplits",
    "CoreFilterResult",
    "DataFormatError",
    "ImportOptions",
    "KNOWN_DATASETS",
    "ReadReport",
    "carve_validation",
    "check_atomic_file",
    "clean_splits",
    "filter_core",
    "find_data_root",
    "import_interactions",
    "prepare_dataset",
    "read_lightgcn_txt",
    "read_manifest",
    "read_pair_tsv",
    "read_users_dat",
    "split_per_user",
    "user_dataset_config",
    "write_benchmark_files",
]
