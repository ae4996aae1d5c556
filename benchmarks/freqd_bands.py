"""Which graph frequencies of the teacher each student reaches: an exact per-band diagnosis.

For the arms of a ``freqd compare`` folder, on the comparison's bipartite user–item training graph:

* L = I − Â is diagonalised exactly from one SVD of the user–item block
  (:func:`freqd.graph.bipartite_spectrum`; no dense N × N eigendecomposition);
* the teacher's final tables T = [T_u; T_i] (the ones it scores with) are split into frequency bands
  of λ ∈ [0, 2]: its **energy share** per band;
* for each arm and seed, the best per-entity linear read-out of the student's final tables,
  T̂ = [S_u W_u; S_i W_i] with W fit by least squares over each side's rows (the bias-free
  per-entity projector that fits best), gives **captured(band) = 1 − E_band(T − T̂) / E_band(T)**:
  how much of the teacher's signal in that band is linearly present in the student.

Both variants are reported: ``raw`` tables, and ``unit`` rows (the cosine distance of FreqD's
default looks at directions only). ``--cache FILE`` keeps the SVD (safetensors, keyed by a hash of
the graph; a file of another graph is refused), so a rerun skips it. Row 0 of each side (RecBole's padding) is left out. λ = 1 exactly is its own band:
it holds the part of each side orthogonal to the graph's singular vectors (most of the item side
when items outnumber users).

    OMP_NUM_THREADS=1 python benchmarks/freqd_bands.py <folder> --config configs/compare/citeulike-t-lightgcn-bpr.yaml \\
        --arms scratch fd freqd kd freqd-kd rrd --seeds 0 1 2 --out benchmarks/results/<name>.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

#: Band edges over λ ∈ [0, 2]; λ = 1 (within EXACT_ONE) is a band of its own.
EDGES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
EXACT_ONE = 1e-9


def band_labels(edges=EDGES) -> list[str]:
    """[a, b) bands, then λ = 1 alone, then (1, b) and [a, b) bands up to [a, 2]."""
    low = [f"[{a:g}, {b:g})" for a, b in zip(edges, edges[1:]) if b <= 1.0]
    high = [f"{'(' if a == 1.0 else '['}{a:g}, {b:g}{']' if b == edges[-1] else ')'}"
            for a, b in zip(edges, edges[1:]) if a >= 1.0]
    return [*low, "1", *high]


def band_of(lam: torch.Tensor, edges=EDGES) -> torch.Tensor:
    """Band index of each eigenvalue, in :func:`band_labels` order."""
    inner = torch.tensor(edges[1:-1], dtype=lam.dtype)
    n_low = sum(1 for b in edges[1:] if b <= 1.0)
    index = torch.bucketize(lam, inner, right=True)  # 0 .. len(edges) - 2
    index = torch.where(lam > 1.0, index + 1, index)  # make room for the λ = 1 band
    return torch.where((lam - 1.0).abs() <= EXACT_ONE, torch.full_like(index, n_low), index)


def band_energy(lam: torch.Tensor, energy: torch.Tensor, n_bands: int) -> torch.Tensor:
    return torch.zeros(n_bands, dtype=torch.float64).index_add_(0, band_of(lam), energy)


def _prepare(table: torch.Tensor, normalize: bool) -> torch.Tensor:
    x = table.detach().to(torch.float64).clone()
    x[0] = 0.0
    if normalize:
        x[1:] = torch.nn.functional.normalize(x[1:], dim=1)
    return x


def read_out(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """S W with W = argmin ‖S W − T‖_F over the rows after the padding row (least squares)."""
    w = torch.linalg.lstsq(student[1:], teacher[1:]).solution
    fit = student @ w
    fit[0] = 0.0
    return fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a freqd compare output folder")
    parser.add_argument("--config", required=True, help="the comparison YAML of that folder")
    parser.add_argument("--arms", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--teacher-checkpoint", type=Path, default=None,
                        help="the teacher's file where the comparison was given one (default: the YAML's)")
    parser.add_argument("--cache", type=Path, default=None, help="safetensors file holding the graph's SVD")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from freqd.compare.config import load_comparison_config
    from freqd.compare.evaluate import build_eval_context, load_model, result_checkpoint
    from freqd.graph import bipartite_edge_index, bipartite_frequency_energies, normalized_adjacency

    comparison = load_comparison_config(args.config)
    if args.teacher_checkpoint is not None:
        comparison = comparison.with_overrides(teacher_checkpoint=args.teacher_checkpoint)
    ctx = build_eval_context(comparison)
    train = ctx.train_dataset
    n_users, n_items = train.user_num, train.item_num
    inter = train.inter_feat
    edges = bipartite_edge_index(inter[train.uid_field], inter[train.iid_field], n_users)
    adj = normalized_adjacency(edges, n_users + n_items, torch.ones(edges.shape[1], dtype=torch.float64))
    cached = args.cache is not None and args.cache.is_file()
    start = time.perf_counter()
    spectrum = _spectrum(adj, n_users, args.cache)
    svd_seconds = time.perf_counter() - start
    labels = band_labels()
    eigen_bands = torch.zeros(len(labels), dtype=torch.float64).index_add_(
        0, band_of(spectrum.eigenvalues), torch.ones_like(spectrum.eigenvalues))

    def final_tables(checkpoint) -> tuple[torch.Tensor, torch.Tensor]:
        model = load_model(checkpoint, ctx)
        with torch.no_grad():
            return model.embeddings()

    teacher_record = json.loads((args.folder / "teacher.json").read_text(encoding="utf-8"))
    teacher = final_tables(result_checkpoint(args.folder, teacher_record, comparison.teacher.checkpoint))
    students = {(arm, seed): final_tables(result_checkpoint(args.folder, stored)) + (stored["metrics"]["ndcg@20"],)
                for arm in args.arms for seed in args.seeds
                for stored in [json.loads((args.folder / "arms" / arm / f"s{seed}.json").read_text(encoding="utf-8"))]}
    variants = {}
    for variant, normalize in (("raw", False), ("unit", True)):
        t_users, t_items = (_prepare(t, normalize) for t in teacher)
        lam, t_energy = bipartite_frequency_energies(spectrum, t_users, t_items)
        teacher_bands = band_energy(lam, t_energy, len(labels))
        share = (teacher_bands / teacher_bands.sum()).tolist()
        rows = []
        for arm in args.arms:
            per_seed = []
            for seed in args.seeds:
                s_users, s_items, ndcg = students[arm, seed]
                s_users, s_items = _prepare(s_users, normalize), _prepare(s_items, normalize)
                residual_u, residual_i = t_users - read_out(s_users, t_users), t_items - read_out(s_items, t_items)
                _, r_energy = bipartite_frequency_energies(spectrum, residual_u, residual_i)
                captured = 1 - band_energy(lam, r_energy, len(labels)) / teacher_bands
                overall = 1 - float(r_energy.sum() / t_energy.sum())
                per_seed.append({"seed": seed, "captured": captured.tolist(), "overall": overall, "test_ndcg@20": ndcg})
            mean = [statistics.mean(s["captured"][b] for s in per_seed) for b in range(len(labels))]
            rows.append({"arm": arm, "seeds": per_seed, "captured_mean": mean,
                         "overall_mean": statistics.mean(s["overall"] for s in per_seed),
                         "test_ndcg@20_mean": statistics.mean(s["test_ndcg@20"] for s in per_seed)})
        variants[variant] = {"teacher_energy_share": share, "arms": rows}
        print(f"\n{variant} tables: teacher energy share and captured(band), mean over seeds {args.seeds}")
        print(f"{'band':>14} {'eigvals':>8} {'T share':>8} " + " ".join(f"{r['arm']:>9}" for r in rows))
        for b, label in enumerate(labels):
            print(f"{label:>14} {int(eigen_bands[b]):>8} {share[b]:8.3f} "
                  + " ".join(f"{r['captured_mean'][b]:9.3f}" for r in rows))
        print(f"{'all':>14} {spectrum.eigenvalues.numel():>8} {1.0:8.3f} "
              + " ".join(f"{r['overall_mean']:9.3f}" for r in rows))
        print(f"{'test NDCG@20':>32} " + " ".join(f"{r['test_ndcg@20_mean']:9.4f}" for r in rows))
    result = {"command": "python benchmarks/freqd_bands.py " + " ".join(_argv()), "dataset": comparison.dataset,
              "teacher": teacher_record["model"], "n_users": int(n_users), "n_items": int(n_items), "seeds": args.seeds,
              "bands": labels, "eigenvalues_per_band": [int(v) for v in eigen_bands], "svd_seconds": svd_seconds,
              "svd_from_cache": cached,
              **variants, "machine": platform.platform(), "date": time.strftime("%Y-%m-%d"),
              "torch": torch.__version__}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


def _spectrum(adj: torch.Tensor, n_users: int, cache: Path | None):
    """The graph's :class:`~freqd.graph.BipartiteSpectrum`, from ``cache`` when it holds this graph's."""
    import hashlib

    from safetensors.torch import load_file, save_file

    from freqd.graph import BipartiteSpectrum, bipartite_spectrum

    coo = adj.to_sparse_coo().coalesce()
    digest = hashlib.sha256()
    for part in (coo.indices(), coo.values(), torch.tensor([n_users])):
        digest.update(part.contiguous().numpy().tobytes())
    key = digest.hexdigest()
    if cache is not None and cache.is_file():
        from safetensors import safe_open

        with safe_open(str(cache), "pt") as handle:
            stored = (handle.metadata() or {}).get("graph_sha256")
        if stored != key:
            raise SystemExit(f"{cache}: the cached SVD is of another graph (graph_sha256 {stored}, this one {key})")
        tensors = load_file(str(cache))
        return BipartiteSpectrum(tensors["sigma"], tensors["left"], tensors["right"])
    spectrum = bipartite_spectrum(adj, n_users)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(cache.name + ".partial")
        save_file({name: t.contiguous() for name, t in spectrum._asdict().items()}, str(partial),
                  metadata={"graph_sha256": key})
        partial.replace(cache)
    return spectrum


def _argv() -> list[str]:
    """The command line with absolute paths cut to their file names: no machine paths in the results."""
    import re
    import sys

    return [re.sub(r"(^|[=@])/[^\s=@]*/([^/\s=@]+)", r"\1<...>/\2", arg) for arg in sys.argv[1:]]


if __name__ == "__main__":
    main()
