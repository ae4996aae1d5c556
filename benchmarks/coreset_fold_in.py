"""Other fold-ins on the saved teachers of a ``bench_coreset.py`` work folder: is the fold-in what a coreset loses?

A BPR teacher trained on a user coreset serves the other users by a fold-in (``coreset_fold_in``):
the mean of their training items' rows. This script takes every coreset run of a work folder,
recomputes the outside users' rows from the checkpoint's item table with other fold-ins, and reports
validation and test NDCG@20 (RecBole's metric on the trainer's ranking), over all users and split
into kept and folded-in users. The item table is the run's own (trained with the mean fold-in in its
validation); only the outside rows change, so a better fold-in would show here without retraining.

- ``mean``: the package's fold-in, (1/|H_u|) Σ_{i∈H_u} e_i; its test NDCG@20 must equal the run's own.
- ``mean, kept users too``: the same rows for every user, the coreset's trained rows replaced as well
  (the split into kept and folded-in users still names the coreset's users).
- ``centered``: the mean minus the mean item row (the direction a BPR gradient from zero points to).
- ``ridge w0 lam``: the least-squares fold-in of implicit-feedback ALS, e_u = (Q_Hᵀ Q_H + w0 |H_u|/n Qᵀ Q
  + λ I)⁻¹ Q_Hᵀ 1 with λ = lam · tr(·)/d; as lam grows the direction tends to the mean's.
- ``bpr steps``: the mean, then Adam steps (lr 0.01) on the BPR loss of the user's training pairs with the
  item table frozen (one uniform negative per positive, seeded).

    OMP_NUM_THREADS=1 python benchmarks/coreset_fold_in.py --work <bench_coreset.py work folder> \\
        --dataset citeulike-t --config configs/dataset/citeulike-t.yaml \\
        --json benchmarks/results/coreset/citeulike-t-fold-in-variants-30-2026-12-07.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_coreset import reading_setup, table_ndcg  # noqa: E402


def mean_rows(history: sp.csr_matrix, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The mean of each user's training items' rows, for the internal user ids ``rows``."""
    h = history[rows - 1]
    return sp.diags(1.0 / h.getnnz(axis=1)) @ h @ q


def variants(users: torch.Tensor, items: torch.Tensor, rows: np.ndarray, history: sp.csr_matrix):
    """(name, user table) for each fold-in: ``rows`` (internal user ids) rewritten from ``items``."""
    q = items.double().numpy()
    h = history[rows - 1]
    mean = mean_rows(history, rows, q)

    def put(folded: np.ndarray, where: np.ndarray = rows) -> torch.Tensor:
        table = users.clone()
        table[torch.from_numpy(where)] = torch.from_numpy(folded).to(table.dtype)
        return table

    yield "mean", put(mean)
    everyone = np.flatnonzero(history.getnnz(axis=1)) + 1
    yield "mean, kept users too", put(mean_rows(history, everyone, q), everyone)
    yield "centered", put(mean - q[1:].mean(axis=0))
    gram = q[1:].T @ q[1:]
    d = q.shape[1]
    for w0 in (0.0, 1.0):
        for lam in (1.0, 10.0):
            folded = np.empty_like(mean)
            for k in range(len(rows)):
                qh = q[h.indices[h.indptr[k]:h.indptr[k + 1]]]
                a = qh.T @ qh + w0 * len(qh) / (len(q) - 1) * gram
                folded[k] = np.linalg.solve(a + lam * np.trace(a) / d * np.eye(d), qh.sum(axis=0))
            yield f"ridge w0={w0:g} lam={lam:g}", put(folded)
    pairs = h.tocoo()
    pos_user, pos_item = torch.from_numpy(pairs.row).long(), torch.from_numpy(pairs.col).long()
    table = torch.from_numpy(q).float()
    for steps in (50, 200):
        gen = torch.Generator().manual_seed(0)
        rows_e = torch.from_numpy(mean).float().requires_grad_(True)
        opt = torch.optim.Adam([rows_e], lr=0.01)
        for _ in range(steps):
            neg = torch.randint(1, len(table), (len(pos_user),), generator=gen)
            margin = (rows_e[pos_user] * (table[pos_item] - table[neg])).sum(dim=1)
            loss = torch.nn.functional.softplus(-margin).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        yield f"bpr steps={steps}", put(rows_e.detach().double().numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from freqd.checkpoints import load_teacher
    from freqd.coreset.signals import histories

    config, (train, valid, test) = reading_setup(args.dataset, args.config, args.dim)
    history = histories(train._dataset).tocsr()
    rows_out = []
    for path in sorted((args.work / "runs").glob("*/results.json")):
        run = json.loads(path.read_text())
        if not run.get("coreset"):
            continue
        selection = json.loads(Path(run["coreset"]["file"]).read_text())
        kept = train._dataset.token2id(train._dataset.uid_field, selection["keep"])
        folded = np.setdiff1d(np.flatnonzero(history.getnnz(axis=1)) + 1, kept)
        model = load_teacher(run["checkpoint"], config, train._dataset)
        users, items = (t.detach().clone() for t in model.cached_embeddings())
        for name, table in variants(users, items, folded, history):
            row = {"selection": Path(run["coreset"]["file"]).stem, "seed": int(run["seed"]), "fold_in": name,
                   "folded_in_users": int(len(folded))}
            for split, loader in (("valid", valid), ("test", test)):
                uids, values = table_ndcg(table, items, config, loader)
                outside = np.isin(uids, folded)
                row.update({f"{split}_ndcg@20": float(values.mean()), f"{split}_folded": float(values[outside].mean()),
                            f"{split}_kept": float(values[~outside].mean())})
            if name == "mean" and abs(row["test_ndcg@20"] - run["test_result"]["ndcg@20"]) > 1e-5:
                raise SystemExit(f"{path}: the mean fold-in gives {row['test_ndcg@20']:.6f}, the run recorded "
                                 f"{run['test_result']['ndcg@20']}")
            rows_out.append(row)
            print(f"{row['selection']:28s} s{row['seed']} {name:18s} valid {row['valid_ndcg@20']:.4f} "
                  f"(kept {row['valid_kept']:.4f}, folded {row['valid_folded']:.4f})  test {row['test_ndcg@20']:.4f}",
                  flush=True)
    names = list(dict.fromkeys(r["fold_in"] for r in rows_out))
    summary = {name: {key: float(np.mean([r[key] for r in rows_out if r["fold_in"] == name]))
                      for key in ("valid_ndcg@20", "valid_kept", "valid_folded", "test_ndcg@20")} for name in names}
    chosen = max(names, key=lambda n: summary[n]["valid_ndcg@20"])
    print(f"chosen on validation (mean over runs): {chosen}")
    if args.json:
        args.json.write_text(json.dumps({
            "command": " ".join(["python benchmarks/coreset_fold_in.py --work <work folder>", "--dataset", args.dataset,
                                 *sum((["--config", c] for c in args.config), []), "--dim", str(args.dim)]),
            "chosen_on_validation": chosen, "summary": summary, "rows": rows_out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
