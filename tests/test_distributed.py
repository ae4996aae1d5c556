"""Work split over ranks and items: shards partition the rows, block-wise top-k is the whole row's top-k
(against a full sort), two ``gloo`` ranks give the single-process rankings bit for bit, and
data-parallel training on two ranks matches one process."""

from __future__ import annotations

import json

import pytest
import torch

from freqd.distillers.rankings import teacher_topk, topk_unobserved, training_csr
from freqd.distributed import Shard, batch_part, blockwise_topk, gather_chunks
from freqd.evaluation.fullsort import rank_topk
from freqd.testing import FakeDataset, TinyEmbeddingModel, run_process_group


# -- shards -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, chunk, world", [(0, 3, 2), (1, 3, 2), (10, 3, 2), (10, 3, 3), (12, 4, 3), (7, 10, 4)])
def test_shards_partition_the_rows_in_whole_chunks(n, chunk, world):
    owned = [Shard(rank, world).rows(n, chunk).tolist() for rank in range(world)]
    assert sorted(sum(owned, [])) == list(range(n))
    for rank, rows in enumerate(owned):
        assert rows == sorted(rows)
        for start, stop in Shard(rank, world).chunks(n, chunk):
            assert start % chunk == 0 and (start // chunk) % world == rank and stop == min(start + chunk, n)


@pytest.mark.parametrize("rank, world, chunk", [(2, 2, 1), (-1, 2, 1), (0, 0, 1)])
def test_impossible_shards_are_refused(rank, world, chunk):
    with pytest.raises(ValueError, match="does not exist"):
        Shard(rank, world)


def test_a_chunk_of_zero_rows_is_refused_and_one_process_gathers_nothing():
    with pytest.raises(ValueError, match="chunk must be at least 1"):
        Shard().chunks(5, 0)
    local = torch.arange(6).view(3, 2)
    assert gather_chunks(local, 3, 2, Shard()) is local


# -- block-wise top-k against a full sort ---------------------------------------------------------------
def _full_sort_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]


@pytest.mark.parametrize("width", [1, 3, 7, 40, 100])
@pytest.mark.parametrize("k", [1, 5, 12])
def test_blockwise_topk_is_the_whole_rows_top_k(width, k):
    scores = torch.randn(9, 40, generator=torch.Generator().manual_seed(width * 100 + k), dtype=torch.float64)
    scores[2, 5:30] = -torch.inf  # excluded entries never beat a finite score
    got = blockwise_topk(lambda i0, i1: scores[:, i0:i1].clone(), 40, k, width)
    assert torch.equal(got, _full_sort_topk(scores, k))


def _ranking_problem(seed: int = 0, n_users: int = 23, n_items: int = 57, d: int = 5):
    g = torch.Generator().manual_seed(seed)
    users_t, items_t = torch.randn(n_users, d, generator=g), torch.randn(n_items, d, generator=g)
    history = [torch.randperm(n_items - 1, generator=g)[: int(torch.randint(0, 9, (1,), generator=g))] + 1
               for _ in range(n_users)]
    positives = [torch.randperm(n_items - 1, generator=g)[:3] + 1 for _ in range(n_users)]
    order = torch.randperm(n_users, generator=g)  # evaluation users in any order
    return users_t, items_t, order, [history[u] for u in order], [positives[u] for u in order]


def _brute_force_ranking(users_t, items_t, order, history, positives, k):
    scores = (users_t[order].double() @ items_t.double().T)
    scores[:, 0] = -torch.inf
    for row, items in enumerate(history):
        scores[row, items] = -torch.inf
    top = _full_sort_topk(scores, k)
    hits = torch.tensor([[int(item in set(positives[row].tolist())) for item in top[row].tolist()]
                         for row in range(len(order))])
    counts = torch.tensor([[len(set(p.tolist()))] for p in positives])
    return top, torch.cat([hits, counts], dim=1)


@pytest.mark.parametrize("item_chunk", [None, 1, 8, 56, 500])
@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_rank_topk_with_item_blocks_is_the_brute_force_ranking(chunk, item_chunk):
    problem = _ranking_problem()
    top, rec = rank_topk(*problem, k=10, chunk=chunk, item_chunk=item_chunk)
    want_top, want_rec = _brute_force_ranking(*problem, k=10)
    assert torch.equal(top, want_top) and torch.equal(rec, want_rec)


@pytest.mark.parametrize("item_chunk", [None, 4, 13])
def test_topk_unobserved_with_item_blocks_is_the_brute_force_top_n(item_chunk):
    data = FakeDataset.random(n_users=12, n_items=50, per_user=7, seed=3)
    model = TinyEmbeddingModel.random(12, 50, 4, seed=3)
    users_t, items_t = model.embeddings()
    got = topk_unobserved(users_t, items_t, training_csr(data), 9, chunk_size=5, item_chunk=item_chunk)
    scores = (users_t.double() @ items_t.double().T)
    scores[:, 0] = -torch.inf
    scores[data.inter_feat["user_id"], data.inter_feat["item_id"]] = -torch.inf
    assert torch.equal(got, _full_sort_topk(scores, 9))


def test_a_models_own_scorer_cannot_be_cut_into_item_blocks():
    users_t, items_t, order, history, positives = _ranking_problem()
    with pytest.raises(ValueError, match="item_chunk"):
        rank_topk(users_t, items_t, order, history, positives, 5, 4, scorer=lambda u: users_t[u] @ items_t.T,
                  item_chunk=8)


# -- two gloo ranks ----------------------------------------------------------------------------------
def _ranked_on_ranks(chunk: int, item_chunk, cache_dir: str):
    from freqd.distributed import current_shard

    shard = current_shard()
    top, rec = rank_topk(*_ranking_problem(), k=10, chunk=chunk, shard=shard, item_chunk=item_chunk)
    data = FakeDataset.random(n_users=12, n_items=50, per_user=7, seed=3)
    model = TinyEmbeddingModel.random(12, 50, 4, seed=3)
    teacher = teacher_topk(model, data, 9, cache_dir=cache_dir, chunk_size=5, item_chunk=item_chunk)
    again = teacher_topk(model, data, 9, cache_dir=cache_dir, chunk_size=5, item_chunk=item_chunk)
    return shard.rank, top, rec, teacher, again


@pytest.mark.slow
@pytest.mark.parametrize("chunk, item_chunk", [(4, None), (3, 8)])
def test_two_gloo_ranks_rank_exactly_as_one_process(tmp_path, chunk, item_chunk):
    results = run_process_group(_ranked_on_ranks, world=2, args=(chunk, item_chunk, str(tmp_path)), timeout=180)
    one_top, one_rec = rank_topk(*_ranking_problem(), k=10, chunk=chunk, item_chunk=item_chunk)
    data = FakeDataset.random(n_users=12, n_items=50, per_user=7, seed=3)
    model = TinyEmbeddingModel.random(12, 50, 4, seed=3)
    one_teacher = teacher_topk(model, data, 9, cache_dir=None, chunk_size=5, item_chunk=item_chunk)
    assert [r[0] for r in results] == [0, 1]
    for _, top, rec, teacher, again in results:
        assert torch.equal(top, one_top) and torch.equal(rec, one_rec)
        assert torch.equal(teacher, one_teacher) and torch.equal(again, one_teacher)
    assert len(list((tmp_path / "teacher_topk").glob("*.pt"))) == 1  # written once, by rank 0


def _computed_on_ranks():
    """Rank r's own ``make`` gives r: every rank must end with rank 0's value, and only rank 0 computes.
    Then FreqD with rank r holding a different random teacher: every rank's basis is rank 0's."""
    from freqd.distributed import computed_once, current_shard
    from freqd.testing import build_distiller, fake_config, tiny_models

    shard = current_shard()
    calls = []

    def make():
        calls.append(shard.rank)
        return torch.full((2, 3), float(shard.rank))

    value = computed_once(make, torch.zeros(0, dtype=torch.float64), (2, 3), shard)
    data = FakeDataset.random(n_users=8, n_items=30, per_user=5, seed=1)
    teacher, student = tiny_models(data, teacher_dim=12, student_dim=3, seed=shard.rank)
    freqd = build_distiller("FreqD", fake_config({"freqd_teacher_rank": 4, "seed": 0}), teacher, student, data)
    return value, calls, freqd.teacher_basis


@pytest.mark.slow
def test_rank_zero_computes_and_every_rank_receives_its_value():
    from freqd.testing import build_distiller, fake_config, tiny_models

    (v0, calls0, basis0), (v1, calls1, basis1) = run_process_group(_computed_on_ranks, world=2, timeout=120)
    assert torch.equal(v0, torch.zeros(2, 3, dtype=torch.float64)) and torch.equal(v1, v0)
    assert calls0 == [0] and calls1 == []
    data = FakeDataset.random(n_users=8, n_items=30, per_user=5, seed=1)
    alone = [build_distiller("FreqD", fake_config({"freqd_teacher_rank": 4, "seed": 0}),
                             *tiny_models(data, teacher_dim=12, student_dim=3, seed=seed), data).teacher_basis
             for seed in (0, 1)]
    assert not torch.allclose(alone[0], alone[1])  # the ranks' own bases would differ
    assert torch.equal(basis0, alone[0]) and torch.equal(basis1, alone[0])


def _fails_on_rank_one():
    import torch.distributed as dist

    if dist.get_rank() == 1:
        raise KeyError("planted")
    return dist.get_rank()


def _hangs():
    import time

    time.sleep(60)


@pytest.mark.slow
def test_a_failing_or_hanging_group_is_reported():
    with pytest.raises(RuntimeError, match="rank 1: KeyError"):
        run_process_group(_fails_on_rank_one, world=2, timeout=120)
    with pytest.raises(RuntimeError, match="still running after"):
        run_process_group(_hangs, world=2, timeout=3)


# -- data-parallel training ----------------------------------------------------------------------------
@pytest.mark.parametrize("n, world", [(10, 2), (11, 2), (7, 3), (2, 3), (1, 2), (9, 1)])
def test_batch_parts_partition_a_batch_or_take_a_tiny_one_whole(n, world):
    parts = [batch_part(100, 100 + n, Shard(rank, world)) for rank in range(world)]
    if n < world:
        assert parts == [(100, 100 + n)] * world
        return
    assert parts[0][0] == 100 and parts[-1][1] == 100 + n
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    sizes = [hi - lo for lo, hi in parts]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def _averaged_step():
    """Rank r: gradients r + 1 on ``a``, ``b`` only on rank 1, ``c`` on no rank; one SGD step of lr 1."""
    from freqd.distributed import AveragedGradients, current_shard

    shard = current_shard()
    a, b, c = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    optimizer = AveragedGradients(torch.optim.SGD([a, b, c], lr=1.0), shard)
    optimizer.zero_grad()
    (a * (shard.rank + 1)).sum().backward()
    if shard.rank == 1:
        (b * 4).sum().backward()
    optimizer.step()
    return a.detach().clone(), b.detach().clone(), c.grad


@pytest.mark.slow
def test_averaged_gradients_are_the_mean_over_ranks_and_absent_ones_stay_absent():
    for a, b, c_grad in run_process_group(_averaged_step, world=2, timeout=120):
        assert torch.equal(a, torch.full((3,), -1.5))  # mean of 1 and 2
        assert torch.equal(b, torch.full((3,), -2.0))  # mean of 0 (no gradient) and 4
        assert c_grad is None


@pytest.mark.filterwarnings("ignore::Warning:recbole.*", "ignore:__array_wrap__:DeprecationWarning")
def test_ranks_started_together_do_not_race_for_the_log_folder(monkeypatch, tmp_path, fast_config):
    """RecBole checks for ./log and then creates it: another rank creating it in between must be harmless."""
    import os

    import recbole.utils.logger

    from freqd.runs import setup

    def other_rank_wins(path):
        if not os.path.exists(path):
            os.makedirs(path, exist_ok=True)  # the other rank, between the check and the mkdir
            os.makedirs(path)

    monkeypatch.setattr(recbole.utils.logger, "ensure_dir", other_rank_wins)
    setup("BPR", "ml-100k", [], fast_config)
    assert (tmp_path / "log" / "BPR").is_dir()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


QUIET = {"show_progress": False, "state": "ERROR", "use_gpu": False, "train_sampler": "fast", "eval_step": 1}


@pytest.mark.slow
def test_two_ranks_train_bpr_as_one_process(tmp_path):
    """Same seed, same global batches: the ranks' parts together are the one-process batch, gradients are
    averaged, so the model and every metric match the one-process run (up to float summation order)."""
    from freqd.checkpoints import load_checkpoint
    from freqd.runs import train

    settings = {**QUIET, "epochs": 3, "embedding_size": 8}
    one = train("BPR", "ml-100k", config_dict=dict(settings))
    two = train("BPR", "ml-100k", config_dict={**settings, "nproc": 2, "ip": "127.0.0.1", "port": _free_port()})
    for key in ("best_valid_result", "test_result"):
        for metric, value in one[key].items():
            assert two[key][metric] == pytest.approx(value, abs=1e-6), (key, metric)
    a, b = (load_checkpoint(r["checkpoint"])["state_dict"] for r in (one, two))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert len(list((tmp_path / "saved").glob("*.pth"))) == 2  # rank 1 wrote nothing here
    assert len(list((tmp_path / "log_tensorboard").glob("*/events.out.tfevents.*"))) == 2


@pytest.mark.parametrize("settings, port", [
    ({"nproc": 2}, None),                                        # one machine, no address: a folder, no port
    ({"nproc": 2, "port": "6001"}, 6001),
    ({"nproc": 2, "ip": "10.0.0.1"}, 5678),                      # an address asked for: RecBole's default port
    ({"nproc": 2, "world_size": 4}, 5678),                       # other machines join: they need the port
])
def test_group_settings_leave_the_port_free_only_for_one_machine_without_an_address(settings, port):
    from freqd.runs import group_settings

    assert group_settings(settings)["port"] == port


@pytest.mark.slow
def test_two_ranks_distil_freqd_and_resume(bpr_teacher_32):
    from freqd.runs import distill

    settings = {**QUIET, "embedding_size": 8, "nproc": 2}      # no ip or port: the ranks meet in a temporary folder
    first = distill(bpr_teacher_32, "BPR", kd="FreqD", config_dict={**settings, "epochs": 2})
    assert first["epochs_run"] == 2 and 0 < first["test_result"]["ndcg@20"] < 1
    resumed = distill(bpr_teacher_32, "BPR", kd="FreqD", resume=first["checkpoint"],
                      config_dict={**settings, "epochs": 4})
    assert resumed["epochs_run"] == 2 and resumed["best_epoch"] in (2, 3)  # epochs 2 and 3 after the resume


@pytest.mark.slow
@pytest.mark.parametrize("setting, message", [({"train_sampler": "recbole"}, "needs train_sampler: fast"),
                                              ({"sparse_embeddings": True}, "sparse_embeddings: True is not")])
def test_data_parallel_refusals_name_the_setting(setting, message):
    from freqd.runs import train

    with pytest.raises(RuntimeError, match=message):
        train("BPR", "ml-100k", config_dict={**QUIET, "epochs": 1, "embedding_size": 4, "nproc": 2,
                                             "ip": "127.0.0.1", "port": _free_port(), **setting})


@pytest.mark.slow
def test_torchrun_ranks_join_its_group_and_rank_0_reports(tmp_path):
    """``torchrun -m freqd train``: each process joins torchrun's group; one checkpoint, one results folder,
    one summary table."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "freqd", "train",
         "--model", "BPR", "--dataset", "ml-100k", "--epochs=1", "--embedding_size=4", "--train_sampler=fast",
         "--show_progress=False", "--use_gpu=False", "--state=ERROR"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("| model |") == 1
    assert len(list((tmp_path / "saved").glob("*.pth"))) == 1
    assert len(list((tmp_path / "results").glob("*/results.json"))) == 1


@pytest.mark.slow
def test_a_comparison_of_data_parallel_runs_with_two_jobs(tmp_path):
    """``freqd compare --jobs 2 --nproc=2``: two process groups at once, each meeting in its own folder."""
    import yaml

    from freqd.compare import run_comparison

    config = {"title": "two groups", "dataset": "ml-100k",
              "overrides": {**QUIET, "epochs": 1, "eval_batch_size": 1_000_000, "nproc": 2},
              "teacher": {"model": "BPR", "embedding_size": 8, "seed": 0},
              "student": {"model": "BPR", "embedding_size": 4}, "seeds": [0, 1], "control": "scratch",
              "arms": [{"name": "scratch"}], "latency": {"enabled": False}}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config))
    run_comparison(path, out=tmp_path / "out", progress=False, jobs=2)
    runs = [json.loads((tmp_path / "out" / "arms" / "scratch" / f"s{seed}.json").read_text()) for seed in (0, 1)]
    assert [r["seed"] for r in runs] == [0, 1] and all(0 < r["metrics"]["ndcg@20"] < 1 for r in runs)
    assert runs[0]["metrics"] != runs[1]["metrics"]                          # two seeds, two models
    assert json.loads((tmp_path / "out" / "teacher.json").read_text())["metrics"]["ndcg@20"] > 0
