"""Per-user test metrics from a checkpoint, user/item groups, model size and top-k scoring speed.

Per-user metrics repeat the test ranking of RecBole's ``Trainer.evaluate`` on the run's own test
loader (so the protocol's masking is the same: train+valid items for ``recbole``, train items for
``reference``) and score it with RecBole's ``Recall``/``NDCG`` ``metric_info``; their mean over
the loader's users is RecBole's aggregated test result (times users-with-targets / all users for
the ``reference`` protocol).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import torch
from recbole.evaluator.metrics import MAP, NDCG, Recall

from freqd.compare.config import ComparisonConfig
from freqd.compare.summary import EvalData
from freqd.evaluation.fullsort import topk_hits
from freqd.models.hash import is_code_student


@dataclass
class EvalContext:
    """The comparison's data, built once: test loader, training counts, item and user groups."""

    config: Any
    train_dataset: Any
    test_data: Any
    protocol: str
    n_real_users: int
    users: np.ndarray            # test users (internal ids), in loader order
    user_train_counts: np.ndarray  # training interactions of each of ``users``
    head_items: torch.Tensor     # bool, (n_items,): the head_fraction most popular items in training
    head_share: float            # share of training interactions on head items
    activity_groups: list[np.ndarray]  # positions into ``users``, least to most active
    valid_data: Any = None       # the validation loader (its pairs are never training pairs of an altered split)


def build_eval_context(comparison: ComparisonConfig) -> EvalContext:
    """Load the dataset once with the student's settings and derive the groups."""
    from freqd.runs import setup

    config, data, (train_data, valid_data, test_data) = setup(
        comparison.student.model, comparison.dataset, [str(f) for f in comparison.eval_files()],
        comparison.eval_overrides())
    train = train_data._dataset
    n_items = train.item_num
    user_counts = np.bincount(train.inter_feat[train.uid_field].numpy(), minlength=train.user_num)
    item_counts = np.bincount(train.inter_feat[train.iid_field].numpy(), minlength=n_items)
    real_items = np.arange(1, n_items)
    n_head = max(1, math.ceil(comparison.evaluation.head_fraction * len(real_items)))
    order = real_items[np.argsort(-item_counts[1:], kind="stable")]
    head = torch.zeros(n_items, dtype=torch.bool)
    head[torch.from_numpy(order[:n_head])] = True
    users = test_data.uid_list.numpy()
    counts = user_counts[users]
    by_activity = np.lexsort((users, counts))
    groups = [np.sort(g) for g in np.array_split(by_activity, comparison.evaluation.activity_groups)]
    return EvalContext(
        config=config, train_dataset=train, test_data=test_data, protocol=config["protocol"],
        n_real_users=train.user_num - 1, users=users, user_train_counts=counts, head_items=head,
        head_share=float(item_counts[head.numpy()].sum() / max(1, item_counts.sum())), activity_groups=groups,
        valid_data=valid_data,
    )


def eval_data(ctx: EvalContext) -> EvalData:
    """What the report needs of the context: counts, groups and test users, without the dataset or tensors."""
    return EvalData(
        protocol=ctx.protocol, n_users=int(ctx.n_real_users), n_items=int(ctx.train_dataset.item_num - 1),
        users=np.asarray(ctx.users), user_train_counts=np.asarray(ctx.user_train_counts),
        activity_groups=list(ctx.activity_groups), n_head_items=int(ctx.head_items.sum()),
        head_share=float(ctx.head_share), device=str(ctx.config["device"]),
    )


def load_model(checkpoint: str | Path, ctx: EvalContext):
    """A checkpoint's model rebuilt on the comparison's data (checked against it), in eval mode."""
    from freqd.checkpoints import load_teacher

    return load_teacher(checkpoint, ctx.config, ctx.train_dataset)


def masked_scores(model, ctx: EvalContext):
    """Per test batch: (interaction, full score rows with the padding item and the protocol's history at
    −inf, positive rows, positive items), in ``ctx.users`` order."""
    device = ctx.config["device"]
    n_items = ctx.test_data._dataset.item_num
    for interaction, history_index, positive_u, positive_i in ctx.test_data:
        interaction = interaction.to(device)
        scores = model.full_sort_predict(interaction).view(-1, n_items)
        scores[:, 0] = -np.inf
        if history_index is not None:
            scores[history_index] = -np.inf
        yield interaction, scores, positive_u, positive_i


def loader_pairs(loader, uid_field: str) -> tuple[np.ndarray, np.ndarray]:
    """The (user, item) target pairs of an evaluation loader (its positives), as int64 arrays."""
    users, items = [], []
    for interaction, _, positive_u, positive_i in loader:
        users.append(interaction[uid_field][positive_u].numpy())
        items.append(positive_i.numpy())
    if not users:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(users).astype(np.int64), np.concatenate(items).astype(np.int64)


def result_checkpoint(out: Path, result: dict[str, Any], teacher_checkpoint: str | Path | None = None) -> Path:
    """A stored result's checkpoint, relative to the comparison folder ``out``.

    A teacher given by file is stored by its weights digest, not its machine-specific path: its
    checkpoint is ``teacher_checkpoint`` (the comparison's), and a missing one is an error.
    """
    if result.get("kind") == "teacher" and result.get("source") == "checkpoint":
        if teacher_checkpoint is None:
            raise FileNotFoundError(
                f"the teacher of {out} was given by checkpoint ({result.get('checkpoint_name') or 'a .pth file'}, "
                f"weights digest {(result.get('spec') or {}).get('weights_digest')}): pass that file with "
                "--teacher-checkpoint")
        return Path(teacher_checkpoint)
    path = Path(result["checkpoint"])
    return path if path.is_absolute() else out / path


@torch.no_grad()
def group_hits(topk_idx: torch.Tensor, positive_u: torch.Tensor, positive_i: torch.Tensor, head: torch.Tensor,
               n_items: int) -> dict[str, torch.Tensor]:
    """RecBole ``rec.topk`` rows (:func:`~freqd.evaluation.fullsort.topk_hits`) for all positives, the
    head items' and the tail items': sparse, with no dense users × items positives matrix."""
    in_head = head[positive_i]
    return {"all": topk_hits(topk_idx, positive_u, positive_i, n_items),
            "head": topk_hits(topk_idx, positive_u[in_head], positive_i[in_head], n_items),
            "tail": topk_hits(topk_idx, positive_u[~in_head], positive_i[~in_head], n_items)}


def per_user_metrics(model, ctx: EvalContext, topk: tuple[int, ...], group_k: int) -> dict[str, np.ndarray]:
    """Per test user: recall@k, ndcg@k, map@k for k in ``topk`` and head/tail recall, ndcg @ ``group_k``.

    Head/tail metrics keep the full ranking and count only the user's test items of that item
    group as targets (NaN for users without any).
    """
    model.eval()
    device = ctx.config["device"]
    max_k = max(max(topk), group_k)
    head = ctx.head_items.to(device)
    recall, ndcg, mean_ap = Recall(ctx.config), NDCG(ctx.config), MAP(ctx.config)
    users: list[torch.Tensor] = []
    parts: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"all": [], "head": [], "tail": []}
    uid_field = ctx.train_dataset.uid_field
    for interaction, scores, positive_u, positive_i in masked_scores(model, ctx):
        _, topk_idx = torch.topk(scores, max_k, dim=-1)
        for name, rec in group_hits(topk_idx, positive_u.to(device), positive_i.to(device), head,
                                    scores.shape[1]).items():
            parts[name].append((rec[:, :-1].cpu(), rec[:, -1].cpu()))
        users.append(interaction[uid_field].cpu())
    out: dict[str, np.ndarray] = {"users": torch.cat(users).numpy()}
    if not np.array_equal(out["users"], ctx.users):
        raise RuntimeError("the test loader's users changed between evaluations")
    for name, chunks in parts.items():
        pos_index = torch.cat([c[0] for c in chunks]).to(torch.bool).numpy()
        pos_len = torch.cat([c[1] for c in chunks]).numpy()
        has = pos_len > 0
        metrics = {"recall": recall, "ndcg": ndcg, **({"map": mean_ap} if name == "all" else {})}
        values = {metric: np.full(pos_index.shape, np.nan) for metric in metrics}
        if has.any():
            for metric, computer in metrics.items():
                values[metric][has] = computer.metric_info(pos_index[has], pos_len[has])
        ks = topk if name == "all" else (group_k,)
        prefix = "" if name == "all" else f"{name}_"
        for metric, per_rank in values.items():
            for k in ks:
                out[f"{prefix}{metric}@{k}"] = per_rank[:, k - 1].astype(np.float64)
    return out


def aggregate(per_user: dict[str, np.ndarray], ctx: EvalContext, keys) -> dict[str, float]:
    """The protocol's mean of per-user values: over test users (recbole) or all users (reference)."""
    out = {}
    for key in keys:
        values = per_user[key]
        out[key] = float(values.sum() / ctx.n_real_users) if ctx.protocol == "reference" else float(values.mean())
    return out


def model_size(model) -> dict[str, int]:
    """Trainable parameters, the bytes of the state dict, and what serving stores per user and item:
    ``bits_per_entity`` (32·d for float tables, b for a code student) and ``serving_bytes``."""
    out = {
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "bytes": int(sum(t.numel() * t.element_size() for t in model.state_dict().values())),
    }
    if hasattr(model, "cached_embeddings"):
        users, items = model.cached_embeddings()
        bits = int(model.bits) if is_code_student(model) else 8 * users.element_size() * int(users.shape[1])
        out.update(bits_per_entity=bits, serving_bytes=(int(users.shape[0]) + int(items.shape[0])) * bits // 8)
    return out


@torch.no_grad()
def measure_latency(model, users: np.ndarray, spec) -> dict[str, Any]:
    """Users/s of one model's full-catalogue top-``spec.k`` scoring (score all items, then top-k).

    ``spec.users`` requests are timed in batches of ``spec.batch_size``, cycling through ``users``
    when there are fewer. The final tables are computed once beforehand (serving caches them;
    LightGCN's propagation is not timed). The fastest of ``spec.repeats`` repeats after
    ``spec.warmup`` warm-up ones is reported: the one least disturbed by other processes.
    """
    previous = torch.get_num_threads()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    try:
        chosen = torch.from_numpy(np.asarray(users)[np.arange(spec.users) % len(users)])
        if is_code_student(model):
            return _hamming_latency(model, chosen.numpy(), spec)
        user_all, item_all = model.cached_embeddings()
        user_table, item_table = user_all.cpu()[chosen].contiguous(), item_all.cpu()[1:].contiguous()
        seconds = []
        for repeat in range(spec.warmup + spec.repeats):
            start = perf_counter()
            for begin in range(0, len(user_table), spec.batch_size):
                scores = user_table[begin: begin + spec.batch_size] @ item_table.T
                torch.topk(scores, min(spec.k, item_table.shape[0]), dim=1)
            if repeat >= spec.warmup:
                seconds.append(perf_counter() - start)
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    return {"users_per_s": len(chosen) / min(seconds), "seconds": seconds, "users": len(chosen),
            "batch_size": spec.batch_size, "threads": threads, "k": spec.k, "repeats": spec.repeats,
            "warmup": spec.warmup, "ranking": "inner product (float32)"}


def _hamming_latency(model, users: np.ndarray, spec) -> dict[str, Any]:
    """As :func:`measure_latency`, for a code student: XOR + popcount over packed codes, the model's tie-break."""
    index = model.hamming_index(first_item=1)  # the padding item is not ranked, as in the float path
    k = min(spec.k, index.n_items)
    seconds = []
    for repeat in range(spec.warmup + spec.repeats):
        start = perf_counter()
        index.topk(users, k, chunk=spec.batch_size)
        if repeat >= spec.warmup:
            seconds.append(perf_counter() - start)
    return {"users_per_s": len(users) / min(seconds), "seconds": seconds, "users": len(users),
            "batch_size": spec.batch_size, "threads": 1, "k": spec.k, "repeats": spec.repeats, "warmup": spec.warmup,
            "ranking": f"Hamming (XOR + popcount, {model.bits} bits, ties: {index.ties}, {index.backend})"}
