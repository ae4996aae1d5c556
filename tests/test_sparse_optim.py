"""Row-sparse embedding optimisation: RowAdam against torch's SparseAdam/Adam and a per-row NumPy
Adam, lazy rows, mixed sparse + dense gradients, state round trips, and BPR training/resume."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from freqd import load_checkpoint
from freqd.trainers.optim import OptimizerGroup, RowAdam

LR, BETAS, EPS = 0.01, (0.9, 0.999), 1e-8
ROWS, DIM, STEPS = 40, 6, 25


class NumpyRowAdam:
    """Brute-force lazy Adam in float64: one row at a time, coupled L2 on the rows it touches."""

    def __init__(self, weight: np.ndarray, lr: float, weight_decay: float) -> None:
        self.w = weight.astype(np.float64).copy()
        self.m = np.zeros_like(self.w)
        self.v = np.zeros_like(self.w)
        self.t = 0
        self.lr, self.wd = lr, weight_decay

    def step(self, grads_by_row: dict[int, np.ndarray]) -> None:
        self.t += 1
        b1, b2 = BETAS
        for row, grad in grads_by_row.items():
            g = grad + self.wd * self.w[row]
            self.m[row] = b1 * self.m[row] + (1 - b1) * g
            self.v[row] = b2 * self.v[row] + (1 - b2) * g * g
            m_hat = self.m[row] / (1 - b1**self.t)
            v_hat = self.v[row] / (1 - b2**self.t)
            self.w[row] = self.w[row] - self.lr * m_hat / (np.sqrt(v_hat) + EPS)


def batches(seed: int, steps: int = STEPS, size: int = 12, rows: int = ROWS):
    """Row ids (with repeats, never the last 5 rows) and upstream gradients for each step."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield torch.from_numpy(rng.integers(0, rows - 5, size)), torch.from_numpy(rng.normal(size=(size, DIM))).float()


def row_sums(ids: torch.Tensor, values: torch.Tensor) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    for row, value in zip(ids.tolist(), values.double().numpy()):
        out[row] = out.get(row, 0.0) + value
    return out


def table(seed: int = 0) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.randn(ROWS, DIM, generator=torch.Generator().manual_seed(seed)))


def sparse_backward(weight, ids, upstream) -> None:
    """d/dW of sum(E[ids] * upstream): a sparse, uncoalesced gradient (repeated ids)."""
    (F.embedding(ids, weight, sparse=True) * upstream).sum().backward()


def test_row_adam_matches_torch_sparse_adam_step_by_step():
    ours, ref = table(), table()
    opt = RowAdam([ours], lr=LR, betas=BETAS, eps=EPS)
    ref_opt = torch.optim.SparseAdam([ref], lr=LR, betas=BETAS, eps=EPS)
    for ids, upstream in batches(1):
        for weight, optimizer in ((ours, opt), (ref, ref_opt)):
            optimizer.zero_grad()
            sparse_backward(weight, ids, upstream)
            assert weight.grad.is_sparse
            optimizer.step()
        torch.testing.assert_close(ours.detach(), ref.detach(), atol=1e-6, rtol=0)
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(opt.state[ours][key], ref_opt.state[ref][key], atol=1e-6, rtol=0)
    assert opt.state[ours]["step"] == STEPS
    assert not torch.equal(ours.detach(), table().detach())


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_row_adam_matches_per_row_numpy_adam_and_leaves_other_rows_bit_unchanged(weight_decay):
    weight = table()
    opt = RowAdam([weight], lr=LR, betas=BETAS, eps=EPS, weight_decay=weight_decay)
    ref = NumpyRowAdam(weight.detach().numpy(), LR, weight_decay)
    for ids, upstream in batches(2):
        before = weight.detach().clone()
        opt.zero_grad()
        sparse_backward(weight, ids, upstream)
        opt.step()
        ref.step(row_sums(ids, upstream))
        np.testing.assert_allclose(weight.detach().numpy(), ref.w, atol=1e-6, rtol=0)
        untouched = torch.ones(ROWS, dtype=torch.bool)
        untouched[ids] = False
        assert torch.equal(weight.detach()[untouched], before[untouched])
        assert not torch.equal(weight.detach()[~untouched], before[~untouched])
    # The last 5 rows were never in a batch: bit-unchanged (not even decayed), zero moments.
    assert torch.equal(weight.detach()[-5:], table().detach()[-5:])
    assert not opt.state[weight]["exp_avg"][-5:].any()


def test_mixed_sparse_and_dense_gradients_update_the_union_of_rows():
    """A distiller's term on a few rows of the full table makes autograd's sum dense."""
    weight, weight_decay = table(), 0.02
    opt = RowAdam([weight], lr=LR, betas=BETAS, eps=EPS, weight_decay=weight_decay)
    ref = NumpyRowAdam(weight.detach().numpy(), LR, weight_decay)
    rng = np.random.default_rng(3)
    for ids, upstream in batches(4):
        extra_ids = torch.from_numpy(rng.integers(0, ROWS - 5, 4))
        extra_up = torch.from_numpy(rng.normal(size=(4, DIM))).float()
        opt.zero_grad()
        loss = (F.embedding(ids, weight, sparse=True) * upstream).sum() + (weight[extra_ids] * extra_up).sum()
        loss.backward()
        assert not weight.grad.is_sparse
        opt.step()
        grads = row_sums(torch.cat([ids, extra_ids]), torch.cat([upstream, extra_up]))
        ref.step(grads)
        np.testing.assert_allclose(weight.detach().numpy(), ref.w, atol=1e-6, rtol=0)
    assert torch.equal(weight.detach()[-5:], table().detach()[-5:])


def test_every_row_touched_every_step_equals_dense_adam_with_coupled_l2():
    ours, ref = table(), table()
    opt = RowAdam([ours], lr=LR, betas=BETAS, eps=EPS, weight_decay=0.1)
    ref_opt = torch.optim.Adam([ref], lr=LR, betas=BETAS, eps=EPS, weight_decay=0.1)
    target = torch.randn(ROWS, DIM, generator=torch.Generator().manual_seed(9))
    for ids, upstream in batches(5):
        for weight, optimizer in ((ours, opt), (ref, ref_opt)):
            optimizer.zero_grad()
            ((weight - target) ** 2).sum().backward()
            optimizer.step()
    torch.testing.assert_close(ours.detach(), ref.detach(), atol=1e-6, rtol=0)


def test_state_dict_round_trip_continues_exactly():
    """Checkpoint after some steps, restore into fresh parameters/optimisers, continue: bit-equal."""
    def build(weight, head):
        return OptimizerGroup([RowAdam([weight], lr=LR, weight_decay=0.01), torch.optim.Adam(head.parameters(), lr=LR)])

    def train(weight, head, optimizer, steps):
        for ids, upstream in steps:
            optimizer.zero_grad()
            (F.embedding(ids, weight, sparse=True) * head(upstream)).sum().backward()
            optimizer.step()

    all_steps = list(batches(6, steps=10))
    weight, head = table(), torch.nn.Linear(DIM, DIM)
    optimizer = build(weight, head)
    train(weight, head, optimizer, all_steps[:5])
    buffer = io.BytesIO()
    torch.save({"w": weight.detach().clone(), "head": head.state_dict(), "opt": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    weight2, head2 = torch.nn.Parameter(saved["w"]), torch.nn.Linear(DIM, DIM)
    head2.load_state_dict(saved["head"])
    restored = build(weight2, head2)
    restored.load_state_dict(saved["opt"])
    train(weight, head, optimizer, all_steps[5:])
    train(weight2, head2, restored, all_steps[5:])
    assert torch.equal(weight.detach(), weight2.detach())
    assert all(torch.equal(a, b) for a, b in zip(head.parameters(), head2.parameters()))
    assert restored.optimizers[0].state[weight2]["step"] == 10
    with pytest.raises(ValueError, match="sparse_embeddings"):
        build(table(), torch.nn.Linear(DIM, DIM)).load_state_dict(torch.optim.Adam([table()]).state_dict())


# -- BPR on ml-100k ------------------------------------------------------------------------------------
QUIET = {"show_progress": False, "state": "ERROR", "use_gpu": False, "embedding_size": 8,
         "train_batch_size": 4096, "learning_rate": 0.01,
         "sparse_embeddings": True}


@pytest.mark.slow
def test_lightgcn_refuses_sparse_embeddings(one_thread):
    from freqd.runs import train

    with pytest.raises(ValueError, match="sparse_embeddings: True is not supported by LightGCN"):
        train("LightGCN", "ml-100k", config_dict={**QUIET, "epochs": 1})


@pytest.mark.slow
def test_sparse_learner_and_clipping_are_checked(one_thread):
    from freqd.runs import train

    with pytest.raises(ValueError, match="learner: adam.*got learner: sgd"):
        train("BPR", "ml-100k", config_dict={**QUIET, "epochs": 1, "learner": "sgd"})
    with pytest.raises(ValueError, match="clip_grad_norm"):
        train("BPR", "ml-100k", config_dict={**QUIET, "epochs": 1, "clip_grad_norm": {"max_norm": 1.0}})


@pytest.mark.slow
def test_bpr_trains_with_row_sparse_tables_and_resumes(one_thread):
    from freqd.runs import build_model, setup, train
    from freqd.trainers import Trainer

    first = train("BPR", "ml-100k", config_dict={**QUIET, "epochs": 2})
    with open(f"{first['run_dir']}/metrics.csv") as handle:
        losses = [float(row["train_loss"]) for row in csv.DictReader(handle)]
    assert len(losses) == 2 and losses[1] < 0.95 * losses[0]
    saved = load_checkpoint(first["checkpoint"])
    assert saved["optimizer"]["classes"] == ["RowAdam"]
    user_state = saved["optimizer"]["optimizers"][0]["state"][0]
    # The padding user (id 0) is in no batch: never touched, so its moments stay zero.
    assert not user_state["exp_avg"][0].any() and user_state["exp_avg"][1:].abs().sum(dim=1).gt(0).all()

    # A trainer's checkpoint restores into a fresh trainer that takes bit-identical next steps.
    config, _, (train_data, _, _) = setup("BPR", "ml-100k", None, {**QUIET, "epochs": 3})
    live = Trainer(config, build_model(config, train_data))
    live.saved_model_file = "live.pth"
    live._train_epoch(train_data, 0)
    live._save_checkpoint(0, verbose=False)
    restored = Trainer(config, build_model(config, train_data))
    restored.resume_checkpoint("live.pth")
    states = zip(restored.optimizer.optimizers[0].state.values(), live.optimizer.optimizers[0].state.values())
    for ours, theirs in states:
        assert ours["step"] == theirs["step"] == len(train_data)
        assert all(torch.equal(ours[key], theirs[key]) for key in ("exp_avg", "exp_avg_sq"))
    for batch in list(train_data)[:3]:
        for trainer in (live, restored):
            trainer.model.train()
            trainer.optimizer.zero_grad()
            trainer.model.calculate_loss(batch).backward()
            assert trainer.model.user_embedding.weight.grad.is_sparse
            trainer.optimizer.step()
    assert torch.equal(live.model.user_embedding.weight, restored.model.user_embedding.weight)
    assert torch.equal(live.model.item_embedding.weight, restored.model.item_embedding.weight)
    resumed = train("BPR", "ml-100k", config_dict={**QUIET, "epochs": saved["epoch"] + 2},
                        resume=first["checkpoint"])
    assert resumed["epochs_run"] == 1
    with pytest.raises(ValueError, match="sparse_embeddings: True; resume it with the same setting"):
        train("BPR", "ml-100k", config_dict={**QUIET, "sparse_embeddings": False, "epochs": 3},
                  resume=first["checkpoint"])


@pytest.mark.slow
def test_distilled_sparse_student_steps_tables_row_wise_and_projector_densely(bpr_teacher_32, one_thread):
    from freqd.runs import distill

    result = distill(bpr_teacher_32, "BPR", "FitNet",
                         config_dict={**QUIET, "epochs": 1, "projector": "linear"})
    saved = load_checkpoint(result["checkpoint"])
    assert saved["optimizer"]["classes"] == ["RowAdam", "Adam"]
    assert np.isfinite(result["test_result"]["ndcg@20"])
