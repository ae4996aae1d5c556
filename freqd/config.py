"""``freqd.Config``: RecBole's Config, with freqd's models and defaults and no ``sys.argv`` parsing."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from recbole.config import Config as _RecBoleConfig

PROPERTIES = Path(__file__).parent / "properties"
OVERRIDES = "the overrides (--key=value, config_dict)"


def yaml_problem(file, exc, what: str = "config file") -> str:
    """A YAML syntax error as one line: ``config file X, line N: <problem>``."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{what} {file}" + (f", line {mark.line + 1}, column {mark.column + 1}" if mark else "")
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        problem += f" ({context} on line {context_mark.line + 1})"
    return f"{where}: {problem}"


def load_yaml_file(file, loader=None) -> dict[str, Any]:
    """The mapping a YAML config file holds ({} when empty), read with ``loader`` (default: the safe
    loader); a syntax error or a file that is not a mapping is a ``ValueError`` naming the file (and
    line), never a yaml traceback."""
    import yaml

    text = Path(file).read_text(encoding="utf-8")
    try:
        loaded = yaml.load(text, Loader=loader) if loader is not None else yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(yaml_problem(file, exc)) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {file} must hold a mapping of keys to values")
    return loaded


def yaml_settings(files) -> dict[str, Any]:
    """The settings of the YAML ``files`` merged (later files win); see :func:`load_yaml_file`."""
    merged: dict[str, Any] = {}
    for file in files or []:
        merged.update(load_yaml_file(file))
    return merged


def kd_defaults_file(kd: str) -> Path:
    """``freqd/properties/kd/<Name>.yaml`` of a registered distiller (its reference ``kd_weight``)."""
    from freqd.distillers import get_distiller

    return get_distiller(kd).defaults_file()


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
    import importlib
    import pkgutil

    import recbole

    import freqd.distillers as distillers
    from freqd.settings import Settings

    keys = _yaml_keys(Path(recbole.__file__).parent.joinpath("properties").rglob("*.yaml"))
    keys |= _yaml_keys(PROPERTIES.rglob("*.yaml"))
    for info in pkgutil.iter_modules(distillers.__path__):
        module = importlib.import_module(f"freqd.distillers.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Settings):
                keys |= value.keys()
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
    * The settings freqd relies on (:mod:`freqd.core_settings`) and, with ``kd``, the distiller's
      (its ``settings_cls``) are validated once every source is merged, before any data is loaded:
      a wrong type or range is a :class:`freqd.settings.SettingsError` naming the key, the value and
      where it came from; the validated values replace the given ones (``epochs: 3.0`` is 3). A
      YAML syntax error is a ValueError naming the file and line.
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
        self._kd = kd
        self._kd_defaults = kd_defaults_file(kd) if kd is not None else None
        self._file_dicts: list[tuple[str, dict[str, Any]]] = []
        super().__init__(model, dataset, config_file_list, dict(config_dict or {}))

    def _load_config_files(self, file_list) -> dict:
        """RecBole's merge of the files (same loader), with syntax errors naming the file and line."""
        merged: dict[str, Any] = {}
        for file in file_list or []:
            loaded = load_yaml_file(file, self.yaml_loader)
            self._file_dicts.append((str(file), loaded))
            merged.update(loaded)
        return merged

    def _set_default_parameters(self) -> None:
        """Check keys and settings once RecBole has merged every source, before its own derivations."""
        final = self.final_config_dict
        if final.get("strict_keys", True) is not False:
            internal = frozenset(self.internal_config_dict)
            for file, loaded in self._file_dicts:
                check_keys(loaded, f"config file {file}", internal)
            check_keys(self.variable_config_dict, OVERRIDES, internal)
        from freqd.core_settings import CORE_SETTINGS, check_settings

        final.update(check_settings(final, CORE_SETTINGS, self._source))
        super()._set_default_parameters()
        if self._kd is not None:
            self._validate_distiller_settings()

    def _validate_distiller_settings(self) -> None:
        """The distiller's settings (its ``settings_cls``), validated and written back like the core ones."""
        from freqd.distillers import get_distiller

        assert self._kd is not None  # called only for a distillation config
        distiller = get_distiller(self._kd)
        settings_cls = getattr(distiller, "settings_cls", None)
        if settings_cls is None:
            return
        from freqd.core_settings import check_settings
        from freqd.settings import SettingsError

        where = f"{distiller.name} settings"
        try:
            settings = settings_cls.from_config(self, where=where)
        except SettingsError:
            try:  # the same check per key, to name where each invalid value came from
                check_settings(self.final_config_dict, (settings_cls,), self._source)
            except SettingsError as named:
                raise SettingsError(f"{where}: {named}") from None
            raise
        given = [key for key in settings_cls.model_fields if self.final_config_dict.get(key) is not None]
        self.final_config_dict.update({key: getattr(settings, key) for key in given})

    def _source(self, key: str) -> str:
        """Where the value of ``key`` came from: the overrides, the last config file setting it, else the
        defaults."""
        if key in self.variable_config_dict:
            return OVERRIDES
        for file, loaded in reversed(self._file_dicts):
            if key in loaded:
                return f"config file {file}"
        return "the defaults (freqd/properties, RecBole's properties)"

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
