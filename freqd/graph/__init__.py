"""Graph and spectral utilities: normalised adjacencies and sparse propagation."""

from freqd.graph.adjacency import bipartite_edge_index, normalized_adjacency, sym_spmm

__all__ = ["bipartite_edge_index", "normalized_adjacency", "sym_spmm"]
