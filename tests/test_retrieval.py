"""Retrieval ranks against a brute-force stable-argsort oracle, ties included."""

from __future__ import annotations

import numpy as np
import pytest

from autoresearch.scoring.retrieval import (
    EmbeddingError,
    NonFiniteEmbeddings,
    retrieval_metrics,
    retrieval_ranks,
    score_embeddings,
)


def oracle(img: np.ndarray, txt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(img, np.float32) @ np.asarray(txt, np.float32).T
    n = s.shape[0]
    i2t = np.array([int(np.flatnonzero(np.argsort(-s[i], kind="stable") == i)[0]) for i in range(n)])
    t2i = np.array([int(np.flatnonzero(np.argsort(-s[:, i], kind="stable") == i)[0]) for i in range(n)])
    return i2t, t2i


def check(img, txt, chunks=(1, 7, 64, 10_000)):
    want_i2t, want_t2i = oracle(img, txt)
    for chunk in chunks:
        i2t, t2i = retrieval_ranks(img, txt, chunk=chunk)
        np.testing.assert_array_equal(i2t, want_i2t, err_msg=f"i2t, chunk={chunk}")
        np.testing.assert_array_equal(t2i, want_t2i, err_msg=f"t2i, chunk={chunk}")
    return want_i2t, want_t2i


def test_random_embeddings_match_oracle():
    rng = np.random.default_rng(0)
    img = rng.standard_normal((257, 16)).astype(np.float32)
    txt = (img + 1.5 * rng.standard_normal((257, 16))).astype(np.float32)
    i2t, t2i = check(img, txt)
    assert 0 < i2t.mean() < 128 and 0 < t2i.mean() < 128  # neither perfect nor random


def test_quantised_embeddings_with_many_ties_match_oracle():
    rng = np.random.default_rng(1)
    img = rng.integers(-1, 2, size=(203, 3)).astype(np.float32)   # 27 distinct rows: ties everywhere
    txt = rng.integers(-1, 2, size=(203, 3)).astype(np.float32)
    i2t, t2i = check(img, txt, chunks=(1, 5, 50, 203, 1000))
    assert i2t.max() > 100  # ties really pushed later items down


def test_duplicate_rows_match_oracle():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((40, 8)).astype(np.float32)
    img = np.repeat(base, 3, axis=0)                # each image appears three times
    txt = img[rng.permutation(len(img))] * 0.5 + img
    check(img, txt, chunks=(1, 13, 120))


def test_constant_embeddings_give_half_the_gallery_not_zero():
    n, d = 301, 32
    emb = np.full((n, d), 1 / np.sqrt(d), dtype=np.float32)   # a collapsed model, L2-normalised
    for chunk in (1, 64, 1024):
        i2t, t2i = retrieval_ranks(emb, emb, chunk=chunk)
        np.testing.assert_array_equal(i2t, np.arange(n))
        np.testing.assert_array_equal(t2i, np.arange(n))
    m = retrieval_metrics(i2t, t2i)
    assert m["mean_rank"] == (n - 1) / 2
    assert m["i2t_r1"] == pytest.approx(1 / n)


def test_perfect_embeddings_rank_zero():
    emb = np.eye(50, dtype=np.float32)
    i2t, t2i = retrieval_ranks(emb, emb * 3, chunk=7)
    assert not i2t.any() and not t2i.any()
    m = score_embeddings(emb, emb)
    assert m["mean_rank"] == 0 and m["i2t_r1"] == 1 and m["t2i_r10"] == 1


def test_directions_are_not_swapped():
    # image 0 is most similar to every text, so text->image ranks of items 1, 2 suffer, image->text not.
    img = np.array([[10.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    txt = np.array([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.5, 0.0, 1.0]], dtype=np.float32)
    i2t, t2i = retrieval_ranks(img, txt)
    assert i2t.tolist() == [0, 0, 0]
    assert t2i.tolist() == [0, 1, 1]


def test_metrics_on_known_ranks():
    m = retrieval_metrics(np.array([0, 1, 2, 10]), np.array([0, 0, 5, 20]))
    assert m["mean_rank"] == pytest.approx((13 / 4 + 25 / 4) / 2)
    assert m["median_rank"] == pytest.approx((1.5 + 2.5) / 2)
    assert (m["i2t_r1"], m["i2t_r5"], m["i2t_r10"]) == (0.25, 0.75, 0.75)
    assert (m["t2i_r1"], m["t2i_r5"], m["t2i_r10"]) == (0.5, 0.5, 0.75)
    assert m["n"] == 4
    assert m["mean_rank_frac"] == pytest.approx(m["mean_rank"] / 4)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_embeddings_raise(bad):
    img = np.ones((5, 3), dtype=np.float32)
    txt = np.ones((5, 3), dtype=np.float32)
    txt[3, 1] = bad
    with pytest.raises(NonFiniteEmbeddings, match="row 3"):
        retrieval_ranks(img, txt)
    with pytest.raises(NonFiniteEmbeddings):
        retrieval_ranks(txt, img)


def test_overflowing_similarities_raise():
    big = np.full((4, 8), 1e20, dtype=np.float32)   # finite, but the dot products overflow float32
    with pytest.raises(NonFiniteEmbeddings, match="overflow"):
        retrieval_ranks(big, big)


def test_bad_shapes_and_chunk():
    with pytest.raises(EmbeddingError, match="differ"):
        retrieval_ranks(np.ones((4, 3)), np.ones((5, 3)))
    with pytest.raises(EmbeddingError, match="2-D"):
        retrieval_ranks(np.ones(4), np.ones(4))
    with pytest.raises(EmbeddingError, match="empty"):
        retrieval_ranks(np.ones((0, 3)), np.ones((0, 3)))
    with pytest.raises(ValueError, match="chunk"):
        retrieval_ranks(np.ones((4, 3)), np.ones((4, 3)), chunk=0)
    with pytest.raises(ValueError):
        retrieval_metrics(np.array([0, 1]), np.array([0]))
