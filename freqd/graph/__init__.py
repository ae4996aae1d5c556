"""Graph and spectral utilities: normalised adjacencies, co-occurrence graphs, polynomial filters."""

from freqd.graph.adjacency import bipartite_edge_index, normalized_adjacency, sym_spmm
from freqd.graph.cooccurrence import cooccurrence_adjacency
from freqd.graph.filters import ALPHA_SCHEDULES, SCHEDULES, PolynomialFilter, alpha_schedule, edge_dropout
from freqd.graph.local import filter_rows, k_hop, unique_ids
from freqd.graph.sampled import NeighborTable, sample_neighbors, sampled_filter_rows
from freqd.graph.spectral import (
    BipartiteSpectrum,
    bipartite_frequency_energies,
    bipartite_spectrum,
    laplacian_eigh,
    per_frequency_losses,
    rayleigh_quotients,
)

__all__ = [
    "ALPHA_SCHEDULES",
    "BipartiteSpectrum",
    "NeighborTable",
    "SCHEDULES",
    "PolynomialFilter",
    "alpha_schedule",
    "bipartite_edge_index",
    "bipartite_frequency_energies",
    "bipartite_spectrum",
    "cooccurrence_adjacency",
    "edge_dropout",
    "filter_rows",
    "k_hop",
    "laplacian_eigh",
    "normalized_adjacency",
    "per_frequency_losses",
    "rayleigh_quotients",
    "sample_neighbors",
    "sampled_filter_rows",
    "sym_spmm",
    "unique_ids",
]
