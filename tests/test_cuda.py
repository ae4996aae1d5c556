"""CUDA paths (skipped without a CUDA device): rankings on the device against a float64 brute force on
the CPU, FreqD and FreqDKD with every buffer on the device, and a short distillation run on the GPU."""

from __future__ import annotations

import pytest
import torch

from freqd.distillers import StepTables
from freqd.distillers.rankings import topk_unobserved, training_csr
from freqd.evaluation.fullsort import rank_topk
from freqd.testing import FakeDataset, TinyEmbeddingModel, contract_setup, fake_batch

pytestmark = pytest.mark.cuda


def _brute_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]


@pytest.mark.parametrize("item_chunk", [None, 7])
def test_rankings_on_the_device_are_the_cpu_brute_force(item_chunk):
    g = torch.Generator().manual_seed(0)
    users_t, items_t = torch.randn(30, 6, generator=g, dtype=torch.float64), torch.randn(45, 6, generator=g,
                                                                                          dtype=torch.float64)
    history = [torch.randperm(44, generator=g)[:4] + 1 for _ in range(30)]
    positives = [torch.randperm(44, generator=g)[:2] + 1 for _ in range(30)]
    order = torch.arange(30)
    top, _ = rank_topk(users_t.cuda(), items_t.cuda(), order.cuda(), [h.cuda() for h in history],
                       [p.cuda() for p in positives], 10, 8, item_chunk=item_chunk)
    scores = users_t @ items_t.T
    scores[:, 0] = -torch.inf
    for row, items in enumerate(history):
        scores[row, items] = -torch.inf
    assert top.device.type == "cuda" and torch.equal(top.cpu(), _brute_top(scores, 10))

    data = FakeDataset.random(n_users=12, n_items=50, per_user=7, seed=3)
    model = TinyEmbeddingModel.random(12, 50, 4, seed=3)
    u, i = (t.detach().double() for t in model.embeddings())
    got = topk_unobserved(u.cuda(), i.cuda(), training_csr(data), 9, chunk_size=5, item_chunk=item_chunk)
    full = u @ i.T
    full[:, 0] = -torch.inf
    full[data.inter_feat["user_id"], data.inter_feat["item_id"]] = -torch.inf
    assert torch.equal(got, _brute_top(full, 9))


@pytest.mark.parametrize("name", ["FreqD", "FreqDKD"])
def test_a_distiller_moved_to_the_device_keeps_everything_there(name):
    s = contract_setup(name, {"freqd_neighbors": 4, "kd_topk": 4})
    device = torch.device("cuda")
    student = s.student.to(device)
    distiller = s.distiller.to(device)
    distiller.on_epoch_start(1, student)
    batch = fake_batch(s.data).to(device)
    loss = distiller(batch, StepTables.of(student))
    loss.backward()
    assert loss.device.type == "cuda" and bool(torch.isfinite(loss))
    for key, tensor in [*distiller.named_buffers(), *distiller.named_parameters()]:
        assert tensor.device.type == "cuda", f"{name}: {key} stayed on {tensor.device}"


@pytest.mark.slow
def test_a_short_distillation_runs_on_the_gpu(bpr_teacher_32):
    from freqd.runs import distill

    result = distill(bpr_teacher_32, "BPR", kd="FreqD", dataset="ml-100k",
                     config_dict={"show_progress": False, "state": "ERROR", "use_gpu": True, "epochs": 2,
                                  "embedding_size": 8, "train_sampler": "fast"})
    assert 0 < result["test_result"]["ndcg@20"] < 1
    assert str(result["config"]["use_gpu"]) == "True"
