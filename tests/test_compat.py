"""Each RecBole-on-modern-stack workaround, with a test that fails without it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from freqd import load_checkpoint
from freqd.checkpoints import TRUST_ENV, UnsafeCheckpointError
from freqd.cli import main
from freqd.config import Config


def test_numpy2_aliases_let_recbole_config_build():
    # RecBole's Config.compatibility_settings reads np.float_ (removed in numpy 2).
    assert np.float_ is np.float64
    config = Config(model="BPR", dataset="ml-100k", config_dict={"use_gpu": False})
    assert config["model"] == "BPR"


def test_config_ignores_process_argv(argv_with_flags):
    config = Config(model="BPR", dataset="ml-100k", config_dict={"epochs": 7, "use_gpu": False})
    assert config["epochs"] == 7
    assert config["tb"] is None
    assert config["embedding_size"] == 64


def test_stock_recbole_config_does_read_argv(argv_with_flags):
    """The behaviour we guard against: stock RecBole lets argv beat config_dict."""
    from recbole.config import Config as RecBoleConfig

    config = RecBoleConfig(model="BPR", dataset="ml-100k", config_dict={"epochs": 7, "use_gpu": False})
    assert config["epochs"] == 1 and config["tb"] == "short"


@pytest.mark.slow
def test_freqd_never_imports_ray_or_quick_start():
    code = (
        "import sys, freqd, freqd.cli, freqd.runs, freqd.trainers, freqd.models;"
        "bad = [m for m in ('ray', 'recbole.quick_start') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_import_freqd_does_not_change_torch_load_default(tmp_path, monkeypatch):
    """A user's own torch.load keeps torch's weights_only default (no process-wide switch)."""
    import os

    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
    path = tmp_path / "obj.pt"
    torch.save({"when": np.float64(1.0)}, path, pickle_protocol=4)
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        torch.load(path)


def test_load_checkpoint_reads_recbole_pickles(tmp_path):
    config = Config(model="BPR", dataset="ml-100k", config_dict={"use_gpu": False})
    path = tmp_path / "ckpt.pth"
    torch.save({"config": config, "state_dict": {"w": torch.ones(2)}}, path, pickle_protocol=4)
    with pytest.raises(Exception):
        torch.load(path)  # what RecBole's Trainer.evaluate does on torch >= 2.6
    assert load_checkpoint(path)["config"]["model"] == "BPR"


class _Payload:
    """Unpickling this calls ``exec``: what a hostile checkpoint does."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


@pytest.mark.slow
def _evil_checkpoint(tmp_path, where: str):
    """A checkpoint whose unpickling would write ``tmp_path/pwned`` (the payload at ``where``)."""
    marker = tmp_path / "pwned"
    payload = _Payload(f"open({str(marker)!r}, 'w').write('x')")
    content = {"config": {"model": "BPR"}, "state_dict": {"w": torch.ones(2)}}
    if where == "top":
        content["extra"] = payload
    elif where == "config":
        content["config"]["model_class"] = payload
    else:
        content["state_dict"]["w"] = payload
    path = tmp_path / "evil.pth"
    torch.save(content, path, pickle_protocol=4)
    return path, marker


@pytest.mark.parametrize("where", ["top", "config", "state_dict"])
def test_load_checkpoint_never_runs_code_from_the_file(tmp_path, where):
    path, marker = _evil_checkpoint(tmp_path, where)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth.*builtins\.exec"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["top", "config", "state_dict"])
def test_no_cli_entry_point_runs_code_from_the_file(tmp_path, where, capsys):
    """distill --teacher, train --resume, export, compare --teacher-checkpoint: a one-line error, exit 2,
    no payload run and nothing written."""
    path, marker = _evil_checkpoint(tmp_path, where)
    assert main(["distill", "--teacher", str(path), "--kd", "FreqD"]) == 2
    assert main(["train", "--model", "BPR", "--resume", str(path), "--epochs=1"]) == 2
    assert main(["export", str(path), "--out", str(tmp_path / "export")]) == 2
    comparison = tmp_path / "compare.yaml"
    comparison.write_text("title: t\ndataset: ml-100k\noverrides: {epochs: 1, state: ERROR}\n"
                          "teacher: {model: BPR, embedding_size: 8, seed: 0}\n"
                          "student: {model: BPR, embedding_size: 4}\nseeds: [0]\ncontrol: scratch\n"
                          "arms: [{name: scratch}]\n")
    assert main(["compare", str(comparison), "--teacher-checkpoint", str(path), "--out", str(tmp_path / "cmp"),
                 "--show_progress=False"]) == 2
    assert not marker.exists() and not (tmp_path / "export").exists()
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("freqd")]
    assert len(errors) == 4 and all("evil.pth" in line and "builtins.exec" in line for line in errors), errors
    assert "Traceback" not in capsys.readouterr().err


class _ConfigCall:
    """Unpickling this calls freqd's Config constructor (which reads files) with chosen arguments."""

    def __reduce__(self):
        return (Config, ("BPR", "ml-100k"))


def test_load_checkpoint_never_calls_a_config_constructor(tmp_path):
    path = tmp_path / "call.pth"
    torch.save({"config": _ConfigCall(), "state_dict": {}}, path, pickle_protocol=4)
    with pytest.raises(UnsafeCheckpointError, match=r"calls freqd\.config\.Config\(\.\.\.\)"):
        load_checkpoint(path)


class _Getattr:
    """Unpickles as getattr(owner, name): how some Python versions pickle enum members."""

    def __init__(self, owner, name) -> None:
        self.owner, self.name = owner, name

    def __reduce__(self):
        return (getattr, (self.owner, self.name))


def test_enum_members_pickled_through_getattr_load_and_nothing_else_does(tmp_path):
    import collections

    from recbole.utils.enum_type import ModelType

    path = tmp_path / "enum.pth"
    torch.save({"state_dict": {}, "kind": _Getattr(ModelType, "GENERAL")}, path, pickle_protocol=4)
    assert load_checkpoint(path)["kind"] is ModelType.GENERAL
    for owner, name in ((collections.OrderedDict, "fromkeys"), (ModelType, "__class__")):
        torch.save({"state_dict": {}, "x": _Getattr(owner, name)}, path, pickle_protocol=4)
        with pytest.raises(UnsafeCheckpointError, match="not an enum member"):
            load_checkpoint(path)


def test_trusted_loading_is_an_explicit_opt_in(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    content = {"state_dict": {"w": torch.ones(2)}, "extra": _Payload(f"open({str(marker)!r}, 'w').write('x')")}
    path = tmp_path / "own-tool.pth"
    torch.save(content, path, pickle_protocol=4)
    monkeypatch.setenv(TRUST_ENV, "1")
    with pytest.warns(UserWarning, match="plain pickle"):
        load_checkpoint(path)
    assert marker.exists()  # what the flag's help warns about


@pytest.mark.slow
def test_load_checkpoint_reads_a_real_run_and_rebuilds_its_config(bpr_teacher_32):
    loaded = load_checkpoint(bpr_teacher_32)
    assert isinstance(loaded["config"], Config)
    assert (loaded["config"]["model"], loaded["config"]["embedding_size"]) == ("BPR", 32)
    assert loaded["state_dict"]["user_embedding.weight"].shape[1] == 32
    assert "data_fingerprint" in loaded["freqd"]


@pytest.mark.parametrize("content, message", [(b"not a checkpoint", "cannot read"), (None, "not found")])
def test_load_checkpoint_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as info:
        load_checkpoint(path)
    assert "bad.pth" in str(info.value)


def test_get_model_resolves_freqd_lightgcn_not_recboles():
    """RecBole's LightGCN builds its graph with dok_matrix._update (gone in scipy >= 1.13)."""
    from freqd.models import LightGCN, get_model

    for name in ("LightGCN", "lightgcn", "light_gcn", "Light-GCN"):
        assert get_model(name) is LightGCN


def test_unknown_model_is_a_value_error_not_lightgbm():
    from freqd.models import get_model

    with pytest.raises(ValueError, match="unknown model 'NoSuchNet'"):
        get_model("NoSuchNet")
    from recbole.model.general_recommender import ItemKNN

    assert get_model("itemknn") is ItemKNN
