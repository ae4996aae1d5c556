"""Small random graphs shared by the graph tests: bipartite, user–user and item–item top-K (``freqd.testing``)."""

from __future__ import annotations

from freqd.testing import random_graph as make_graph
from freqd.testing import random_pairs

GRAPHS = [("bipartite", s) for s in range(3)] + [("user", s) for s in range(2)] + [("item", s) for s in range(2)]

__all__ = ["GRAPHS", "make_graph", "random_pairs"]
