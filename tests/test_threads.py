"""The ``threads`` key: its ``auto`` resolution, refused values, the CLI spellings, and its record in results.json;
the reuse of freed memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from freqd.cli import build_parser, main
from freqd.threads import apply_threads, parse_threads, resolve_threads


@pytest.fixture
def cpus(monkeypatch):
    """Pretend this process may use ``n`` CPUs, with ``OMP_NUM_THREADS`` unset unless a test sets it."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    def pretend(n: int) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)))

    return pretend


@pytest.fixture
def restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("n_cpus, omp, jobs, expected", [
    (8, None, 1, 8),     # all usable CPUs
    (8, None, 3, 2),     # 8 // 3
    (8, None, 4, 2),
    (2, None, 4, 1),     # never below 1
    (8, "3", 1, 3),      # OMP_NUM_THREADS caps auto
    (8, "3", 4, 2),      # ... and so does the share of each job
    (2, "6", 1, 2),      # auto never exceeds the usable CPUs
    (8, "", 2, 4),       # an empty OMP_NUM_THREADS counts as unset
])
def test_auto_is_the_cpu_share_capped_by_omp_num_threads(cpus, monkeypatch, n_cpus, omp, jobs, expected):
    cpus(n_cpus)
    if omp is not None:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert resolve_threads("auto", jobs=jobs) == expected
    assert resolve_threads(None, jobs=jobs) == expected


def test_an_explicit_count_is_kept(cpus, monkeypatch):
    cpus(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert resolve_threads(5, jobs=4) == 5
    assert resolve_threads("3") == 3
    assert parse_threads("AUTO") == "auto"


@pytest.mark.parametrize("value", [0, -1, "0", "-2", 1.5, "1.5", 2.0, "two", "", True, [1]])
def test_invalid_values_are_refused_naming_key_and_value(value):
    with pytest.raises(ValueError) as error:
        parse_threads(value)
    assert str(error.value) == f"threads={value!r} is invalid: expected a positive integer or 'auto'"


def test_an_invalid_omp_num_threads_is_named(cpus, monkeypatch):
    cpus(4)
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    with pytest.raises(ValueError, match=r"OMP_NUM_THREADS='many' is invalid"):
        resolve_threads("auto")


def test_apply_sets_torch_threads(cpus, restore_torch_threads):
    cpus(1)
    torch.set_num_threads(2)
    assert apply_threads("auto") == 1 and torch.get_num_threads() == 1


def test_apply_flushes_subnormals_to_zero(cpus, restore_torch_threads):
    """Subnormal floats made FreqD epochs 6.5x slower; a run computes with them flushed to zero."""
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush subnormals")
    tiny = torch.tensor([1e-39])
    assert 0 < (tiny * 2).item() < torch.finfo(torch.float32).tiny
    cpus(1)
    apply_threads("auto")
    assert (tiny * 2).item() == 0.0 and (torch.tensor([1e-30]) * 2).item() == pytest.approx(2e-30)


@pytest.mark.parametrize("command", [["train", "--model", "BPR"], ["distill", "--teacher", "t.pth"],
                                     ["compare", "c.yaml"], ["quickstart"]])
def test_both_spellings_of_the_option_agree(command):
    parser = build_parser()
    for spelling in (["--threads", "3"], ["--threads=3"]):
        args, extra = parser.parse_known_args([*command, *spelling])
        assert args.threads == "3" and extra == []


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "BPR", "--threads", "0"], "threads='0' is invalid"),
    (["train", "--model", "BPR", "--threads=-1"], "threads='-1' is invalid"),
    (["distill", "--teacher", "saved/none.pth", "--threads", "1.5"], "threads='1.5' is invalid"),
    (["quickstart", "--threads=none"], "threads='none' is invalid"),
    (["quickstart", "--jobs", "0"], "--jobs=0 is invalid"),
])
def test_cli_refuses_invalid_values_before_running(capsys, argv, message):
    assert main([*argv, "--use_gpu=False"]) == 2
    err = capsys.readouterr().err
    assert message in err and "expected a positive integer" in err
    assert not Path("results").exists()


def test_a_config_file_value_is_refused_naming_the_key(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("threads: 0\n")
    assert main(["train", "--model", "BPR", "--config", str(config), "--use_gpu=False"]) == 2
    assert "threads=0 is invalid" in capsys.readouterr().err


@pytest.mark.slow
def test_train_records_the_thread_count_it_set(fast_config, monkeypatch, restore_torch_threads):
    """``--threads 1`` beats ``auto`` (2 here: OMP_NUM_THREADS=2 on at least 2 CPUs), is set and recorded."""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert resolve_threads("auto") == 2
    overrides = [f"--{k}={v}" for k, v in {**fast_config, "epochs": 1, "embedding_size": 4}.items()]
    assert main(["train", "--model", "BPR", "--threads", "1", *overrides]) == 0
    assert torch.get_num_threads() == 1
    stored = json.loads(next(Path("results").glob("*/results.json")).read_text())
    assert stored["threads"] == 1 and stored["config"]["threads"] == 1


@pytest.mark.slow
def test_auto_is_applied_before_the_data_is_loaded(monkeypatch, restore_torch_threads):
    """Torch already uses the count ``auto`` stands for when the dataset is built; the config holds it."""
    import freqd.runs as runs

    seen = []
    create_dataset = runs.create_dataset
    monkeypatch.setattr(runs, "create_dataset",
                        lambda config: seen.append(torch.get_num_threads()) or create_dataset(config))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(2)
    config, _, _ = runs.setup("BPR", "ml-100k", None, {"state": "ERROR", "use_gpu": False})
    assert seen == [1] and config["threads"] == 1


def test_an_orphaned_compare_worker_drops_its_queued_runs(monkeypatch, restore_torch_threads):
    """A worker whose comparison process is gone (another parent pid) returns without running."""
    from freqd.compare import runner

    monkeypatch.setattr(runner, "_PARENT_PID", [])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # _init_worker sets it; restored after the test
    runner._init_worker(1, parent_pid=os.getppid())
    assert not runner._parent_gone()
    runner._init_worker(1, parent_pid=os.getppid() + 1)
    assert runner._parent_gone()
    ran = []
    monkeypatch.setattr(runner, "_ensure_arm", lambda *args: ran.append(args))
    assert runner._worker_run(None, None, None, 0, "key", "content", None) is False and ran == []


_FAULTS = """
import ctypes, resource
from freqd.threads import reuse_freed_memory
applied = reuse_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
def block():  # a 64 MB buffer written once and freed, like a step's gradient table
    address = libc.malloc(64 << 20)
    ctypes.memset(address, 1, 64 << 20)
    libc.free(address)
block()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    block()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(reuse: str) -> tuple[str, int]:
    """(whether the setting applied, minor page faults of five 64 MB allocations after a first one)."""
    env = {**os.environ, "FREQD_MALLOC_REUSE": reuse, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_large_blocks_are_reused_instead_of_faulted_in_again():
    pages = 5 * (64 << 20) // 4096  # what five fresh 64 MB blocks fault in at 4 kB pages
    applied, faults = _page_faults("0")
    assert applied == "False" and faults > pages // 2  # glibc's default: each block mapped anew
    applied, faults = _page_faults("1")
    assert applied == "True" and faults < pages // 20
