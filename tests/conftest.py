"""Shared fixtures: every test runs in its own folder (RecBole writes log/, saved/ there)."""

from __future__ import annotations

import os
import sys

# Tiny graphs: one thread per test process. Runs started by tests resolve ``threads: auto``
# under this cap (set before torch starts its thread pool).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import freqd  # noqa: F401  (compat shims first)

FAST = {"show_progress": False, "state": "ERROR", "epochs": 2, "use_gpu": False}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def fast_config() -> dict:
    return dict(FAST)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def argv_with_flags(monkeypatch):
    """A process argv full of flags, like pytest's or the freqd CLI's own."""
    monkeypatch.setattr(sys, "argv", ["prog", "--epochs=1", "--tb=short", "--embedding_size=3"])


@pytest.fixture
def one_thread(monkeypatch):
    """Tiny graphs: a second OpenMP thread only adds sync overhead (70x slower on a busy machine).

    Also for the runs the test starts: their ``threads: auto`` is capped by ``OMP_NUM_THREADS``.
    """
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def saved_figures(monkeypatch) -> list:
    """Every matplotlib figure saved during the test, in order; the files are still written."""
    from matplotlib.figure import Figure

    figures = []
    save = Figure.savefig

    def record(self, *args, **kwargs):
        figures.append(self)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return figures


@pytest.fixture(scope="session")
def bpr_teacher_32(tmp_path_factory) -> str:
    """Checkpoint path of a 32-d BPR teacher trained 2 epochs on ml-100k: the suite's one trained teacher.

    Every test that distils from, loads or checks a trained ml-100k teacher uses it (treat it as
    read-only); tests whose subject is training itself (parity with RecBole, resume, the comparison's
    teacher stage) train their own.
    """
    from freqd.runs import train

    folder = tmp_path_factory.mktemp("bpr-teacher-32")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        result = train("BPR", "ml-100k", config_dict={"show_progress": False, "state": "ERROR", "use_gpu": False,
                                                          "epochs": 2, "embedding_size": 32})
    finally:
        os.chdir(cwd)
    return str(folder / result["checkpoint"])
