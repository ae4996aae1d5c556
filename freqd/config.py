"""``freqd.Config``: RecBole's Config, with freqd's models and defaults and no ``sys.argv`` parsing."""

from __future__ import annotations

import os
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


class Config(_RecBoleConfig):
    """A RecBole ``Config`` that resolves freqd's own models first and layers freqd's defaults.

    Differences from RecBole's, each deliberate:

    * ``sys.argv`` is never read. RecBole injects every ``--key=value`` of the running process
      with the highest priority, so pytest's or the ``freqd`` CLI's own flags leaked into the
      config. Pass overrides through ``config_dict`` (the CLI does this for you).
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
