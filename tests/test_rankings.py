"""Teacher top-N cache: exact against a dense reference, masks, chunking, on-disk reuse."""

from __future__ import annotations

import pytest
import torch

from freqd.distillers.rankings import teacher_key, teacher_topk, topk_unobserved


class _Tiny:
    """A stand-in train dataset with RecBole's attribute names."""

    uid_field, iid_field = "user_id", "item_id"

    def __init__(self, users, items, n_users, n_items):
        self.inter_feat = {"user_id": torch.tensor(users), "item_id": torch.tensor(items)}
        self.user_num, self.item_num = n_users, n_items


class _Teacher(torch.nn.Module):
    def __init__(self, users, items):
        super().__init__()
        self.user_embedding = torch.nn.Embedding.from_pretrained(users)
        self.item_embedding = torch.nn.Embedding.from_pretrained(items)

    def embeddings(self):
        return self.user_embedding.weight, self.item_embedding.weight


def _dense_reference(users, items, data, n):
    scores = users @ items.T
    scores[:, 0] = float("-inf")
    for u, i in zip(data.inter_feat["user_id"].tolist(), data.inter_feat["item_id"].tolist()):
        scores[u, i] = float("-inf")
    return scores.topk(n, dim=1).indices


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_topk_matches_dense_reference_and_masks_training_items(chunk_size):
    gen = torch.Generator().manual_seed(0)
    users, items = torch.randn(7, 4, generator=gen), torch.randn(12, 4, generator=gen)
    pairs = [(1, 3), (1, 5), (2, 1), (4, 11), (4, 2), (6, 7)]
    data = _Tiny([u for u, _ in pairs], [i for _, i in pairs], 7, 12)
    from freqd.distillers.rankings import training_csr

    got = topk_unobserved(users, items, training_csr(data), 5, chunk_size=chunk_size)
    assert torch.equal(got, _dense_reference(users, items, data, 5))
    for u, i in pairs:
        assert i not in got[u].tolist()
    assert not (got == 0).any()


def test_topk_too_large_names_the_limit():
    data = _Tiny([1, 1, 1], [1, 2, 3], 2, 5)
    from freqd.distillers.rankings import training_csr

    with pytest.raises(ValueError, match="N=2 is more than the 1 unobserved"):
        topk_unobserved(torch.randn(2, 3), torch.randn(5, 3), training_csr(data), 2)


def test_cache_is_reused_and_keyed_by_teacher(tmp_path):
    gen = torch.Generator().manual_seed(1)
    teacher = _Teacher(torch.randn(5, 3, generator=gen), torch.randn(9, 3, generator=gen))
    data = _Tiny([1, 2, 3], [4, 5, 6], 5, 9)
    first = teacher_topk(teacher, data, 4, cache_dir=tmp_path)
    files = list((tmp_path / "teacher_topk").glob("*.pt"))
    assert len(files) == 1
    # A cached answer is returned as stored (poison it to prove the file is read, not recomputed).
    stored = torch.load(files[0], weights_only=True)
    stored["topk"] = torch.zeros_like(stored["topk"])
    torch.save(stored, files[0])
    assert torch.equal(teacher_topk(teacher, data, 4, cache_dir=tmp_path), torch.zeros_like(first))
    # Another teacher (or N) gets its own entry.
    other = _Teacher(torch.randn(5, 3, generator=gen), torch.randn(9, 3, generator=gen))
    assert teacher_key(other) != teacher_key(teacher)
    assert torch.equal(teacher_topk(other, data, 4, cache_dir=tmp_path), teacher_topk(other, data, 4))
    teacher_topk(teacher, data, 3, cache_dir=tmp_path)
    assert len(list((tmp_path / "teacher_topk").glob("*.pt"))) == 3


def test_checkpoint_hash_is_the_key(tmp_path):
    teacher = _Teacher(torch.randn(3, 2), torch.randn(4, 2))
    teacher.checkpoint_sha256 = "abc"
    assert teacher_key(teacher) == "abc"
