"""Retrieval ranks against a brute-force stable-argsort oracle, ties included, on every BLAS kernel."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from autoresearch.scoring import retrieval
from autoresearch.scoring.retrieval import (
    EmbeddingError,
    NonFiniteEmbeddings,
    retrieval_metrics,
    reference_similarity,
    retrieval_ranks,
    score_embeddings,
)


def reference_matrix(img, txt) -> np.ndarray:
    """The defined similarity, without BLAS: float64 products of the float32 values, added left to right."""
    a = np.asarray(img, np.float32).astype(np.float64)
    b = np.asarray(txt, np.float32).astype(np.float64)
    s = np.zeros((len(a), len(b)))
    for k in range(a.shape[1]):
        s += a[:, k, None] * b[None, :, k]
    return s


def oracle(img: np.ndarray, txt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = reference_matrix(img, txt)
    n = s.shape[0]
    i2t = np.array([int(np.flatnonzero(np.argsort(-s[i], kind="stable") == i)[0]) for i in range(n)])
    t2i = np.array([int(np.flatnonzero(np.argsort(-s[:, i], kind="stable") == i)[0]) for i in range(n)])
    return i2t, t2i


def check(img, txt, chunks=(1, 7, 64, 10_000)):
    """Ranks equal the oracle's for every query chunk, with the whole gallery in one block and in
    blocks of 5 distinct rows (so that counts accumulate across blocks)."""
    want_i2t, want_t2i = oracle(img, txt)
    five_rows = 8 * np.asarray(img).shape[1] * 5
    for block_bytes in (retrieval._BLOCK_BYTES, five_rows):
        with mock.patch.object(retrieval, "_BLOCK_BYTES", block_bytes):
            for chunk in chunks:
                i2t, t2i = retrieval_ranks(img, txt, chunk=chunk)
                where = f"chunk={chunk}, block bytes={block_bytes}"
                np.testing.assert_array_equal(i2t, want_i2t, err_msg=f"i2t, {where}")
                np.testing.assert_array_equal(t2i, want_t2i, err_msg=f"t2i, {where}")
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
    check(emb, emb, chunks=(1, 64))
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


def test_huge_finite_values_rank_without_overflow():
    rng = np.random.default_rng(4)
    big = (rng.standard_normal((40, 8)) * 1e37).astype(np.float32)   # float32 dot products would overflow
    i2t, t2i = check(big, big * 0.5 + np.roll(big, 1, axis=1), chunks=(3, 40))
    assert i2t.max() > 0
    with pytest.raises(NonFiniteEmbeddings, match="float32 range"):
        retrieval_ranks(np.full((4, 3), 1e300), np.ones((4, 3)))   # float64 input beyond float32


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


def cancellation_data(seed: int = 7, n: int = 64, d: int = 700) -> tuple[np.ndarray, np.ndarray]:
    """Every text is a permutation of one vector whose entries span 80 binary orders of magnitude, and
    every image is constant: all similarities of an image are equal in exact arithmetic, and which of
    them come out larger depends on the order of the additions. d > 512 so that BLAS kernels split the
    sum into blocks of their own size (on this data their float64 products differ from the reference
    and from one another)."""
    rng = np.random.default_rng(seed)
    v = rng.choice([-1.0, 1.0], size=d) * 2.0 ** rng.integers(-40, 41, size=d)
    txt = np.stack([v[rng.permutation(d)] for _ in range(n)]).astype(np.float32)
    img = rng.choice([-1.0, 1.0], size=(n, 1)) * 2.0 ** rng.integers(-3, 4, size=(n, 1)) * np.ones(d)
    return img.astype(np.float32), txt


def test_cancelling_sums_follow_the_reference_not_the_blas_order():
    img, txt = cancellation_data()
    ref = reference_matrix(img, txt)
    assert len(set(ref[0])) > 10          # exact ties, broken only by the order of the additions
    check(img, txt, chunks=(1, 5, 17, 64))


def test_reference_similarity_is_the_left_to_right_sum():
    a = np.array([[2.0 ** 60, 1.0, -(2.0 ** 60)]], dtype=np.float32)
    b = np.ones((1, 3), dtype=np.float32)
    assert reference_similarity(a, b)[0] == 0.0          # 2**60 + 1 rounds to 2**60 in float64
    assert reference_similarity(a[:, [0, 2, 1]], b)[0] == 1.0


# ---------------------------------------------------------------- the same ranks under every BLAS kernel

def _x86_kernels() -> list[str]:
    """OpenBLAS core types this CPU can run (its DYNAMIC_ARCH build honours OPENBLAS_CORETYPE)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    if "avx2" not in flags:
        return ["Prescott"]                # SSE3 only: one kernel to choose
    return ["Haswell", "SkylakeX" if "avx512f" in flags else "Prescott"]


_CHILD = """
import sys
try:
    import threadpoolctl
    arch = sorted({i.get("architecture") or "" for i in threadpoolctl.threadpool_info()
                   if i.get("internal_api") == "openblas"})
except ImportError:
    arch = ["?"]
print("BLAS-KERNEL", ",".join(arch) or "-", flush=True)
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", sys.argv[1], "-k",
                      "duplicate or quantised or constant or cancelling or reference"]))
"""


@pytest.mark.slow
def test_tie_tests_pass_under_several_blas_kernels():
    """The tie tests (every chunk and block size, duplicates, quantised ties, a collapsed model, cancelling
    sums) in a fresh process per OpenBLAS kernel: the oracle does not use BLAS, so passing under each
    kernel means identical ranks on all of them."""
    kernels = _x86_kernels()
    if len(kernels) < 2:
        pytest.skip("needs an x86-64 CPU with at least two OpenBLAS kernels to choose from")
    seen = {}
    for kernel in kernels:
        env = {**os.environ, "OPENBLAS_CORETYPE": kernel}
        done = subprocess.run([sys.executable, "-c", _CHILD, __file__], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"OPENBLAS_CORETYPE={kernel}:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
        assert " passed" in done.stdout and "deselected" in done.stdout
        seen[kernel] = done.stdout.split("BLAS-KERNEL ", 1)[1].split()[0]
    if "?" not in seen.values() and "-" not in seen.values():   # threadpoolctl saw OpenBLAS: really 2 kernels
        assert len(set(seen.values())) >= 2, f"OPENBLAS_CORETYPE changed nothing: {seen}"
