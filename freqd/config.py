"""``freqd.Config``: RecBole's Config, with freqd's models and defaults and no ``sys.argv`` parsing."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from recbole.config import Config as _RecBoleConfig

PROPERTIES = Path(__file__).parent / "properties"
PROTOCOLS = ("recbole", "reference")


def yaml_settings(files) -> dict[str, Any]:
    """The settings of the YAML ``files`` merged (later files win); a file that is not a mapping is a
    ``ValueError`` naming it."""
    import yaml

    merged: dict[str, Any] = {}
    for file in files or []:
        loaded = yaml.safe_load(Path(file).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {file} must hold a mapping of keys to values")
        merged.update(loaded)
    return merged


def kd_defaults_file(kd: str) -> Path:
    """``freqd/properties/kd/<Name>.yaml`` of a registered distiller (its reference ``kd_weight``)."""
    from freqd.distillers import get_distiller

    path = PROPERTIES / "kd" / f"{get_distiller(kd).name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"distiller {kd!r} has no defaults file {path}")
    return path


#: Keys freqd reads that no properties file or settings class declares.
_FREQD_KEYS = frozenset({
    "model", "dataset", "seed", "split_seed", "use_gpu", "gpu_id", "device", "state", "show_progress", "data_path",
    "checkpoint_dir", "threads", "init_std", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "valid_metric_bigger",
    "local_rank", "single_spec", "nproc", "world_size", "offset", "ip", "port", "train_neg_sample_args",
    "valid_neg_sample_args", "test_neg_sample_args", "eval_neg_sample_args", "neg_sampling", "shuffle",
    "transform", "train_stage", "strict_keys",
})


def _yaml_keys(files) -> set[str]:
    import yaml

    keys: set[str] = set()
    for file in files:
        loaded = yaml.safe_load(Path(file).read_text(encoding="utf-8")) or {}
        if isinstance(loaded, dict):
            keys.update(str(k) for k in loaded)
    return keys


@lru_cache(maxsize=1)
def known_keys() -> frozenset[str]:
    """Every config key freqd or RecBole defines: RecBole's and freqd's properties files (all models
    and datasets), every distiller's settings fields and the keys freqd reads directly."""
    import dataclasses
    import importlib
    import pkgutil

    import recbole

    import freqd.distillers as distillers

    keys = _yaml_keys(Path(recbole.__file__).parent.joinpath("properties").rglob("*.yaml"))
    keys |= _yaml_keys(PROPERTIES.rglob("*.yaml"))
    for info in pkgutil.iter_modules(distillers.__path__):
        module = importlib.import_module(f"freqd.distillers.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__name__.endswith("Settings"):
                keys.update(f.name for f in dataclasses.fields(value))
    return frozenset(keys | _FREQD_KEYS)


def check_keys(keys, where: str, extra: frozenset[str] = frozenset()) -> None:
    """A ValueError naming the first key that no component defines, with a did-you-mean suggestion."""
    import difflib

    known = known_keys() | extra
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.75)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown config key {key!r} in {where}{hint} (strict_keys: False accepts keys of "
                             "your own components)")


class Config(_RecBoleConfig):
    """A RecBole ``Config`` that resolves freqd's own models first and layers freqd's defaults.

    Differences from RecBole's, each deliberate:

    * ``sys.argv`` is never read. RecBole injects every ``--key=value`` of the running process
      with the highest priority, so pytest's or the ``freqd`` CLI's own flags leaked into the
      config. Pass overrides through ``config_dict`` (the CLI does this for you).
    * A key that neither RecBole nor freqd defines (a typo: ``embeding_size``) is a ValueError
      naming it and its source, with a suggestion; ``strict_keys: False`` accepts the keys of your
      own RecBole components.
    * ``model`` may be a freqd name (``"bpr"``, ``"LightGCN"``) or a class; the defaults in
      ``freqd/properties/overall.yaml``, ``freqd/properties/model/<Model>.yaml`` and, with ``kd``
      (a distiller name), ``freqd/properties/kd/<Name>.yaml`` (its reference ``kd_weight``) are
      layered above RecBole's.
    """

    def __init__(
        self,
        model: str | type | None = None,
        dataset: str | None = None,
        config_file_list: list[str] | None = None,
        config_dict: dict[str, Any] | None = None,
        kd: str | None = None,
    ) -> None:
        for file in config_file_list or []:
            if not os.path.isfile(file):
                raise FileNotFoundError(f"config file not found: {file}")
        self._kd_defaults = kd_defaults_file(kd) if kd is not None else None
        super().__init__(model, dataset, config_file_list, dict(config_dict or {}))
        if self.final_config_dict.get("strict_keys", True) is not False:
            internal = frozenset(self.internal_config_dict)
            for file in config_file_list or []:
                check_keys(_yaml_keys([file]), f"config file {file}", internal)
            check_keys(dict(config_dict or {}), "the overrides (--key=value, config_dict)", internal)
        protocol = self.final_config_dict.get("protocol", "recbole")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol={protocol!r} is not one of {PROTOCOLS}")

    def _load_cmd_line(self) -> dict:
        return {}

    def _get_model_and_dataset(self, model, dataset):
        from freqd.models import get_model

        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise KeyError("model must be given as an argument, in a config file or config_dict")
        if isinstance(model, str):
            model = get_model(model)
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset) -> None:
        super()._load_internal_config_dict(model, model_class, dataset)
        for file in (PROPERTIES / "overall.yaml", PROPERTIES / "model" / f"{model}.yaml", self._kd_defaults):
            if file is not None and file.is_file():
                self._update_internal_config_dict(str(file))
