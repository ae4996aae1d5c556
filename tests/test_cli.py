"""The ``freqd`` command: help, overrides, errors, and one real (tiny) training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from freqd.cli import build_parser, main, parse_overrides


def test_help_lists_subcommands_and_override_syntax(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for word in ("train", "quickstart", "compare", "datasets", "--key=value", "--embedding_size=20"):
        assert word in out


def test_overrides_are_key_value_strings():
    assert parse_overrides(["--epochs=3", "--eval_args={'mode': 'full'}"]) == {
        "epochs": "3", "eval_args": "{'mode': 'full'}"}


@pytest.mark.parametrize("token", ["--epochs", "epochs=3", "--=3"])
def test_malformed_override_is_rejected(token):
    with pytest.raises(SystemExit, match="--key=value"):
        parse_overrides([token])


@pytest.mark.slow
def test_train_runs_and_prints_table(capsys, fast_config):
    args = ["train", "--model", "bpr", "--dataset", "ml-100k", "--seed", "3"]
    args += [f"--{k}={v}" for k, v in {**fast_config, "embedding_size": 8, "epochs": 1}.items()]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| BPR | 8 |" in out
    results = next(Path("results").glob("*/results.json"))
    stored = json.loads(results.read_text())
    assert stored["seed"] == 3 and stored["embedding_size"] == 8 and stored["epochs_run"] == 1


def test_unknown_model_exits_2_with_message(capsys):
    assert main(["train", "--model", "NoSuchNet", "--use_gpu=False"]) == 2
    assert "unknown model 'NoSuchNet'" in capsys.readouterr().err


def test_unknown_dataset_names_the_folder(capsys):
    assert main(["train", "--model", "BPR", "--dataset", "nowhere", "--use_gpu=False"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "gowalla" in err


def test_datasets_list(capsys):
    assert main(["datasets", "list"]) == 0
    assert capsys.readouterr().out.split() == ["citeulike-t", "citeulike-t-kds", "gowalla", "ml-100k", "ml-1m"]


def test_quickstart_parser_defaults():
    args = build_parser().parse_args(["quickstart"])
    assert (args.model, args.dataset, args.teacher_size, args.student_size) == ("BPR", None, 300, 20)
    assert (args.seeds, args.out, args.rerun_stale) == (None, None, False)


def test_dataset_comes_from_the_config_file_unless_given(tmp_path, capsys):
    yaml_file = tmp_path / "data.yaml"
    yaml_file.write_text("dataset: elsewhere\n")
    assert main(["train", "--model", "BPR", "--config", str(yaml_file), "--use_gpu=False"]) == 2
    assert "dataset 'elsewhere'" in capsys.readouterr().err
    assert main(["train", "--model", "BPR", "--dataset", "nowhere", "--config", str(yaml_file),
                 "--use_gpu=False"]) == 2
    assert "dataset 'nowhere'" in capsys.readouterr().err


@pytest.mark.slow
def test_train_then_distill(capsys, fast_config):
    overrides = [f"--{k}={v}" for k, v in {**fast_config, "epochs": 1}.items()]
    assert main(["train", "--model", "BPR", "--embedding_size=16", *overrides]) == 0
    teacher = next(Path("saved").glob("BPR-*.pth"))
    capsys.readouterr()
    assert main(["distill", "--teacher", str(teacher), "--student", "BPR", "--embedding_size", "4",
                 "--config", str(Path(__file__).parents[1] / "configs/kd/freqd.yaml"), *overrides]) == 0
    assert "| BPR <- FreqD | 4 |" in capsys.readouterr().out


def test_distill_with_missing_teacher_exits_2(capsys):
    assert main(["distill", "--teacher", "saved/none.pth", "--use_gpu=False"]) == 2
    assert "saved/none.pth" in capsys.readouterr().err


@pytest.mark.slow
def test_quickstart_smoke_prints_the_story(capsys, fast_config, one_thread):
    overrides = [f"--{k}={v}" for k, v in {**fast_config, "epochs": 1}.items()]
    assert main(["quickstart", "--teacher-size", "16", "--student-size", "4", "--no-progress", *overrides]) == 0
    out = capsys.readouterr().out
    for label in ("| teacher |", "| scratch |", "| plain FD (α=0) |", "| FreqD (α=0.5) |", "gap recovered",
                  "Wilcoxon p", "users/s"):
        assert label in out
    assert Path("results/compare/quickstart-ml-100k/report.md").is_file()


@pytest.mark.slow
def test_plot_draws_the_metrics_csv_columns(tmp_path, saved_figures):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text(
        "epoch,train_seconds,train_loss,rec_loss,kd_loss,freqd_alpha,rayleigh_1,rayleigh_2,valid_ndcg@20\n"
        "0,1.0,3.0,2.0,1.0,0.5,1.2,1.6,\n1,1.0,2.0,1.5,0.5,0.5,1.0,1.3,0.2\n2,1.0,1.8,1.4,0.4,0.5,0.9,1.1,0.3\n")
    assert main(["plot", str(run)]) == 0
    curves, spectral = saved_figures
    losses, valid = curves.axes

    def drawn(ax):
        return {line.get_label(): (line.get_xdata().tolist(), line.get_ydata().tolist()) for line in ax.get_lines()}

    assert drawn(losses) == {"train_loss": ([0, 1, 2], [3.0, 2.0, 1.8]), "rec_loss": ([0, 1, 2], [2.0, 1.5, 1.4]),
                             "kd_loss": ([0, 1, 2], [1.0, 0.5, 0.4])}
    assert drawn(valid) == {"ndcg@20": ([1, 2], [0.2, 0.3])}  # an epoch without validation is left out
    assert drawn(spectral.axes[0]) == {"k=1": ([0, 1, 2], [1.2, 1.0, 0.9]), "k=2": ([0, 1, 2], [1.6, 1.3, 1.1])}
    assert sorted(path.name for path in run.glob("*.png")) == ["curves.png", "spectral.png"]


def test_ctrl_c_exits_130_with_how_to_continue(capsys, monkeypatch):
    import freqd.cli as cli

    def interrupted(args, overrides):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_tune", interrupted)
    assert cli.main(["tune", "search.yaml"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Rerun the same command" in err and "--resume" in err
