"""Binary codes: bit packing, Hamming distance by XOR + popcount, and top-k by Hamming ranking.

A b-bit code h ∈ {−1, +1}^b is stored as b/8 bytes (bit set ⇔ +1) and compared as machine words:
Hamming(h_u, h_i) = popcount(h_u XOR h_i) = (b − ⟨h_u, h_i⟩)/2, so ranking by the code score
⟨h_u, h_i⟩/b is ranking by Hamming distance. Only b + 1 distances exist, so ties are the rule;
two declared schemes break them (docs/hashing.md):

- ``random``: a fixed, seeded order per user that depends on nothing the model learned: item i
  gets the key ``perm[i] XOR mask[u]`` (a random permutation of the items and a random mask per
  user), and the ranking key is ``distance · 2^m + key`` with m = bits of the item count. Integers
  only: this path never touches a float, and every key of a user is distinct, so the top-k is
  unique.
- ``score``: ties broken by the continuous score cos(z_u, z_i) of the pre-sign embeddings. This
  uses the float embeddings and is labelled as such wherever it is reported.

Top-k under ``random`` runs a compiled one-pass kernel (``freqd/_hamming.py``) when Numba is
installed (``pip install "freqd[serve]"``); otherwise, and for ``score``, NumPy and ``torch.topk``.
Both return the same items in the same order.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any, Literal, get_args

import numpy as np

Ties = Literal["random", "score"]
TIES: tuple[Ties, ...] = get_args(Ties)
Backend = Literal["auto", "numpy", "compiled"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)


@functools.cache
def compiled_available() -> bool:
    """Whether Numba is installed, so freqd's compiled kernels can run: this module's Hamming top-k and
    the ranking distillers' pair scores (``freqd/_pairs.py``). Looked up once: the distillers ask every step."""
    return importlib.util.find_spec("numba") is not None


def check_bits(bits: int) -> int:
    """``bits`` if it is a positive multiple of 8 (a whole number of bytes), else a ValueError."""
    if isinstance(bits, bool) or int(bits) != bits or bits <= 0 or bits % 8:
        raise ValueError(f"hash_bits must be a positive multiple of 8, got {bits!r}")
    return int(bits)


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """``n × b`` codes (±1, or any numbers: bit set where ≥ 0) as ``n × b/8`` uint8 bytes."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be a 2-d array (entities × bits), got shape {codes.shape}")
    check_bits(codes.shape[1])
    return np.packbits(codes >= 0, axis=1)


def unpack_codes(packed: np.ndarray, bits: int | None = None) -> np.ndarray:
    """The ±1 codes (int8) of :func:`pack_codes`'s bytes."""
    packed = np.asarray(packed, dtype=np.uint8)
    bits = packed.shape[1] * 8 if bits is None else check_bits(bits)
    return np.unpackbits(packed, axis=1, count=bits).astype(np.int8) * 2 - 1


def as_words(packed: np.ndarray) -> np.ndarray:
    """Packed bytes viewed as the widest unsigned words that divide a row (uint64 for b = 64, 128)."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    for dtype in (np.uint64, np.uint32, np.uint16):
        if packed.shape[1] % np.dtype(dtype).itemsize == 0:
            return packed.view(dtype)
    return packed


def tie_tables(n_users: int, n_items: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(item keys, user masks, m) of the ``random`` scheme: a permutation of the items and one m-bit
    mask per user, drawn from ``seed`` alone; item i's key for user u is ``keys[i] XOR masks[u]``."""
    m = max(1, int(n_items - 1).bit_length())
    rng = np.random.default_rng(seed)
    keys = rng.permutation(n_items).astype(np.uint64)
    masks = rng.integers(0, 2**m, size=n_users, dtype=np.uint64)
    return keys, masks, m


class HammingIndex:
    """Full-catalogue top-k by Hamming distance over bit-packed codes, with a declared tie-break.

    ``user_codes``/``item_codes`` are packed bytes (:func:`pack_codes`); ``exclude`` is an
    optional CSR (indptr over all users, item indices) of items never to recommend (the training
    items). ``ties="score"`` needs the continuous tables ``user_z``/``item_z`` (floats).
    ``backend``: ``compiled`` (the Numba kernel, ``random`` ties only), ``numpy`` (XOR + popcount
    in NumPy, the k smallest keys by ``torch.topk``; NumPy's ``argpartition`` was 7× slower on
    25k items) or ``auto`` (compiled where it can run). Excluded items rank after all others.
    """

    def __init__(self, user_codes: np.ndarray, item_codes: np.ndarray, ties: Ties = "random", seed: int = 0,
                 exclude: tuple[np.ndarray, np.ndarray] | None = None, user_z: np.ndarray | None = None,
                 item_z: np.ndarray | None = None, backend: Backend = "auto") -> None:
        if ties not in TIES:
            raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
        if ties == "score" and (user_z is None or item_z is None):
            raise ValueError("ties='score' needs the continuous tables user_z and item_z")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "compiled" and ties != "random":
            raise ValueError("backend='compiled' ranks with ties='random' only; use backend='numpy' for ties='score'")
        if backend == "compiled" and not compiled_available():
            raise ValueError("backend='compiled' needs Numba: pip install \"freqd[serve]\"")
        if backend == "auto":
            backend = "compiled" if ties == "random" and compiled_available() else "numpy"
        self.backend: Backend = backend
        self.users = as_words(user_codes)
        self.item_words = np.ascontiguousarray(as_words(item_codes).T)  # words × items: one row per word
        self.bits = int(np.asarray(user_codes).shape[1]) * 8
        self.ties, self.exclude = ties, exclude
        self._csr: tuple[np.ndarray, np.ndarray] | None = None
        n_users, n_items = self.users.shape[0], self.item_words.shape[1]
        keys, masks, self.shift = tie_tables(n_users, n_items, seed)
        # Signed 32-bit keys where distance and tie key fit in 31 bits (b ≤ 128 up to 2^23 items): torch.topk
        # takes signed integers, and 32-bit keys halve the memory traffic.
        self.key_dtype = np.int32 if self.bits.bit_length() + self.shift <= 31 else np.int64
        self.item_keys, self.user_masks = keys.astype(self.key_dtype), masks.astype(self.key_dtype)
        if ties == "score":
            assert user_z is not None and item_z is not None
            self.user_z = _unit_rows(user_z)
            self.item_z = _unit_rows(item_z)

    @property
    def n_items(self) -> int:
        return int(self.item_words.shape[1])

    def distances(self, users: np.ndarray) -> np.ndarray:
        """``len(users) × n_items`` Hamming distances (uint8 up to 255 bits, else uint16)."""
        codes = self.users[np.asarray(users, dtype=np.int64)]
        dist = np.bitwise_count(codes[:, 0, None] ^ self.item_words[0][None, :])
        if self.bits > 255:
            dist = dist.astype(np.uint16)
        for w in range(1, codes.shape[1]):
            dist += np.bitwise_count(codes[:, w, None] ^ self.item_words[w][None, :])
        return dist

    def keys(self, users: np.ndarray) -> np.ndarray:
        """Ranking keys of ``users`` × all items, smaller first: integers (``random``) or float64 (``score``)."""
        users = np.asarray(users, dtype=np.int64)
        dist = self.distances(users)
        if self.ties == "random":
            keys = np.left_shift(dist.astype(self.key_dtype), self.shift)
            np.bitwise_or(keys, np.bitwise_xor(self.item_keys[None, :], self.user_masks[users, None]), out=keys)
        else:
            cosine = self.user_z[users] @ self.item_z.T
            keys = dist + (1.0 - cosine) * (0.5 - 2.0**-20)  # in [0, 1): never crosses a distance
        if self.exclude is not None:
            indptr, indices = self.exclude
            starts, stops = indptr[users], indptr[users + 1]
            rows = np.repeat(np.arange(len(users)), stops - starts)
            cols = np.concatenate([indices[a:b] for a, b in zip(starts, stops)]) if len(rows) else rows
            keys[rows, cols] = np.iinfo(self.key_dtype).max if self.ties == "random" else np.inf  # never first
        return keys

    def topk(self, users: np.ndarray, k: int, chunk: int = 16) -> np.ndarray:
        """``len(users) × k`` item indices, nearest first; NumPy ranks ``chunk`` users at a time."""
        import torch

        k = min(int(k), self.n_items)
        users = np.asarray(users, dtype=np.int64)
        out = np.empty((len(users), k), dtype=np.int64)
        if self.backend == "compiled":
            return self._compiled_topk(users, k, out)
        for start in range(0, len(users), chunk):
            keys = torch.from_numpy(self.keys(users[start: start + chunk]))
            out[start: start + len(keys)] = torch.topk(keys, k, dim=1, largest=False).indices.numpy()
        return out

    def _compiled_topk(self, users: np.ndarray, k: int, out: np.ndarray) -> np.ndarray:
        from freqd._hamming import topk_random

        if len(users) and (users.min() < 0 or users.max() >= len(self.users)):
            raise IndexError(f"user ids must lie in [0, {len(self.users)}), got {users.min()}..{users.max()}")
        if self._csr is None:
            n_users = len(self.users)
            if self.exclude is None:
                self._csr = (np.zeros(n_users + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))
            else:
                indptr, indices = (np.ascontiguousarray(a, dtype=np.int64) for a in self.exclude)
                if len(indptr) != n_users + 1:
                    raise ValueError(f"exclude: indptr has {len(indptr)} entries, expected users + 1 = {n_users + 1}")
                if len(indices) and (indices.min() < 0 or indices.max() >= self.n_items):
                    raise ValueError(f"exclude: item ids must lie in [0, {self.n_items}), got "
                                     f"{indices.min()}..{indices.max()}")
                self._csr = (indptr, indices)
        dist = np.empty(self.n_items, dtype=np.uint8 if self.bits + 1 <= 255 else np.uint16)
        kernel: Any = topk_random  # a Numba dispatcher: its signature is the Python function's
        kernel(self.users, self.item_words, users, self.item_keys, self.user_masks, self.shift, *self._csr, k,
               self.bits, dist, out)
        return out


def _unit_rows(table: np.ndarray) -> np.ndarray:
    table = np.asarray(table, dtype=np.float64)
    return table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
