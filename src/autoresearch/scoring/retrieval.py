"""Cross-modal retrieval ranks and metrics: chunked, and the same on every machine.

Row i of ``image_emb`` pairs with row i of ``text_emb``. The rank of item i is its 0-indexed position in
a *stable* descending sort of its similarities (image->text: image i against every text; text->image:
text i against every image)::

    rank_i = #{j : s_j > s_true} + #{j < i : s_j == s_true}

Ties count against the item only for earlier indices, as ``np.argsort(-s, kind="stable")`` places it:
constant embeddings give ranks 0..n-1 and a mean rank of (n-1)/2 (a random ranking), never 0.

**The similarity is defined exactly**, so that ties, and hence the metric, do not depend on the BLAS
kernel, the thread count or the chunk size. Embeddings are rounded to float32 once; the similarity of
a and b is then ``reference_similarity(a, b)``: the float64 products ``a_k * b_k`` (exact, since a
float32 product has at most 48 significant bits) added left to right in float64. A BLAS matrix product
sums in an order of its own choosing (kernel, blocking, FMA), so its last bits differ from machine to
machine. We use it anyway, in float64, because it is fast, and correct its few doubtful comparisons:

- Any summation order is within ``gamma_d * |a| * |b|`` of the exact dot product (``gamma_d = d*u/(1-d*u)``,
  ``u = 2**-53``; the products are exact), and so is the reference. Every BLAS similarity is compared
  with the reference similarity of the item's true pair; when they differ by more than twice the
  bound, the reference orders them the same way. Only pairs inside that band (in practice exact ties)
  are recomputed with the reference formula.
- Identical gallery rows are merged before the product and share one column, so duplicates are exact
  ties by construction and a collapsed model (all rows equal) costs one column, not n.

The full n x n matrix is never built: each direction takes the deduplicated gallery a block of rows at a
time (about 16 MB in float64) and the queries ``chunk`` rows at a time against it, and accumulates each
query's counts over the blocks.
"""

from __future__ import annotations

import warnings

import numpy as np

_U = 2.0 ** -53           # unit roundoff of float64
_PAIR_BYTES = 4 << 20     # memory for one block of reference recomputations
_BLOCK_BYTES = 16 << 20   # the float64 copy of one block of gallery rows


class EmbeddingError(ValueError):
    """Embeddings that cannot be scored (wrong shape, non-finite values)."""


class NonFiniteEmbeddings(EmbeddingError):
    """NaN or inf in the embeddings, or values beyond the float32 range."""


def _as_matrix(name: str, x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise EmbeddingError(f"{name} must be a 2-D array [n, d], got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise EmbeddingError(f"{name} must be numeric, got dtype {arr.dtype}")
    with warnings.catch_warnings():       # float64 beyond the float32 range becomes inf: reported below
        warnings.simplefilter("ignore", RuntimeWarning)
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise NonFiniteEmbeddings(f"{name} has {int(bad.sum())} non-finite values (NaN, inf, or beyond "
                                  f"the float32 range; first in row {row})")
    return arr


def _check_pair(image_emb, text_emb) -> tuple[np.ndarray, np.ndarray]:
    img = _as_matrix("image embeddings", image_emb)
    txt = _as_matrix("text embeddings", text_emb)
    if img.shape != txt.shape:
        raise EmbeddingError(f"image embeddings {img.shape} and text embeddings {txt.shape} differ in shape")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise EmbeddingError(f"embeddings are empty (shape {img.shape})")
    # No overflow check is needed: |float32| < 3.5e38, so a product is < 1.2e77 and a sum of even a
    # million of them stays far inside float64.
    return img, txt


def reference_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The defined similarity of rows ``a[p]`` and ``b[p]``: exact float64 products summed left to right.

    ``np.cumsum`` is a recurrence (each partial sum is an output), so no machine may reorder it.
    """
    a = np.asarray(a, dtype=np.float32).astype(np.float64)
    b = np.asarray(b, dtype=np.float32).astype(np.float64)
    if a.shape[-1] == 0:
        return np.zeros(np.broadcast_shapes(a.shape, b.shape)[:-1])
    return _reference64(a, b)


def _unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first, inverse)``: the first index of each distinct row (by bytes) and each row's group.

    Rows are grouped by a 64-bit hash of their bytes, computed a block at a time (sorting the rows
    themselves would copy the matrix twice), and every row is then compared with its group's first
    row; a hash collision (never seen in practice) falls back to sorting the rows.
    """
    words = np.ascontiguousarray(x).view(np.uint32)
    mult = np.random.default_rng(0x5EED).integers(1, 2 ** 63, size=words.shape[1], dtype=np.uint64) | np.uint64(1)
    rows = max(1, _PAIR_BYTES // (8 * max(1, words.shape[1])))
    hashes = np.concatenate([(words[i:i + rows] * mult).sum(axis=1, dtype=np.uint64)
                             for i in range(0, len(words), rows)])
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    for i in range(0, len(words), rows):
        if not np.array_equal(words[i:i + rows], words[first[inverse[i:i + rows]]]):
            void = words.view(np.dtype((np.void, words.itemsize * words.shape[1]))).ravel()
            _, first, inverse = np.unique(void, return_index=True, return_inverse=True)
            return first, inverse.ravel()
    return first, inverse


def _reference64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.cumsum(a * b, axis=-1)[..., -1].copy()   # a copy: the view would keep the whole cumsum


class _Groups:
    """Identical gallery rows, merged: the first index of each distinct row and the group of every row."""

    def __init__(self, gallery: np.ndarray) -> None:
        n = gallery.shape[0]
        self.first, self.inverse = _unique_rows(gallery)
        self.sizes = np.bincount(self.inverse, minlength=len(self.first))
        self.duplicated = len(self.first) < n
        # Members of each group in index order, as one sorted key u * (n + 1) + index, so that
        # "members of group u before index i" is one vectorised searchsorted.
        order = np.argsort(self.inverse, kind="stable")
        self._stride = n + 1
        self._keys = self.inverse[order].astype(np.int64) * self._stride + order
        self._starts = np.searchsorted(self._keys, np.arange(len(self.first), dtype=np.int64) * self._stride)

    def members_before(self, groups: np.ndarray, index: np.ndarray) -> np.ndarray:
        """How many gallery rows of group ``groups[p]`` have an index below ``index[p]``."""
        keys = groups.astype(np.int64) * self._stride + index
        return np.searchsorted(self._keys, keys) - self._starts[groups]


def _by_rows(x: np.ndarray, fn, rows: int) -> np.ndarray:
    """``fn`` of consecutive row blocks of ``x`` in float64, concatenated (bounded temporaries)."""
    return np.concatenate([fn(x[i:i + rows].astype(np.float64), i) for i in range(0, len(x), rows)])


def _ranks_of_rows(queries: np.ndarray, gallery: np.ndarray, chunk: int) -> np.ndarray:
    """Rank of gallery[i] among the similarities of queries[i] with every gallery row.

    The gallery is taken a block of distinct rows at a time (converted to float64 once), the queries
    ``chunk`` rows at a time against it; each query's counts accumulate over the blocks. Every
    comparison is against the reference similarity of the query's true pair, ``true[i]``.
    """
    n, d = queries.shape
    groups = _Groups(gallery)
    m = len(groups.first)
    chunk = min(chunk, n)
    rows = max(1, _PAIR_BYTES // (16 * d))
    gamma = d * _U / (1 - d * _U)
    top = float(_by_rows(gallery, lambda g, _: np.sqrt(np.einsum("ij,ij->i", g, g)), rows).max())
    true = _by_rows(queries, lambda q, i: _reference64(q, gallery[i:i + len(q)].astype(np.float64)), rows)
    # |BLAS - exact| and |reference - exact| are each at most gamma * |q| * |g|: outside this band the
    # BLAS value and the reference agree on which side of true[i] a column lies (doubled for safety).
    width = 4 * gamma * top * _by_rows(queries, lambda q, _: np.sqrt(np.einsum("ij,ij->i", q, q)), rows)
    ranks = groups.members_before(groups.inverse, np.arange(n))   # earlier copies of the true partner
    block = min(m, max(1, _BLOCK_BYTES // (8 * d)))
    diff_buf = np.empty((chunk, block))                # reused: the largest temporaries
    above_buf = np.empty((chunk, block), dtype=bool)
    reach_buf = np.empty((chunk, block), dtype=bool)
    g_buf = np.empty((block, d))
    for b0 in range(0, m, block):
        nb = min(block, m - b0)
        g = g_buf[:nb]
        g[...] = gallery[groups.first[b0:b0 + nb]]
        sizes = groups.sizes[b0:b0 + nb]
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            c = stop - start
            diff, above, reach = diff_buf[:c, :nb], above_buf[:c, :nb], reach_buf[:c, :nb]
            np.matmul(queries[start:stop].astype(np.float64), g.T, out=diff)
            np.subtract(diff, true[start:stop, None], out=diff)
            w = width[start:stop, None]
            np.greater(diff, w, out=above)             # certainly above the true partner
            np.greater_equal(diff, -w, out=reach)      # not certainly below it
            own = groups.inverse[start:stop] - b0      # the true partner's column, when in this block
            mine = np.flatnonzero((own >= 0) & (own < nb))
            above[mine, own[mine]] = reach[mine, own[mine]] = False   # its earlier copies: counted above
            if groups.duplicated:                      # a column stands for every copy of its row
                ranks[start:stop] += np.rint(above @ sizes.astype(np.float64)).astype(np.int64)
            else:
                ranks[start:stop] += np.count_nonzero(above, axis=1)
            doubtful = np.flatnonzero(np.count_nonzero(reach, axis=1) > np.count_nonzero(above, axis=1))
            if doubtful.size:
                r, u = np.nonzero(reach[doubtful] & ~above[doubtful])
                _settle(ranks, queries, start + doubtful[r], g, u, b0, sizes, true, groups, rows)
    return ranks


def _settle(ranks, queries, items, g, cols, b0, sizes, true, groups: _Groups, rows: int) -> None:
    """Rank contributions of the columns inside the band, decided by the reference similarity."""
    for s in range(0, len(items), rows):
        i, u = items[s:s + rows], cols[s:s + rows]
        ref = _reference64(queries[i].astype(np.float64), g[u])
        add = np.where(ref > true[i], sizes[u], 0)
        tied = ref == true[i]
        add[tied] = groups.members_before(b0 + u[tied], i[tied])
        np.add.at(ranks, i, add)


def retrieval_ranks(image_emb, text_emb, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(i2t_ranks, t2i_ranks)``, int64 arrays of length n (0 = the pair is ranked first).

    Raises ``NonFiniteEmbeddings`` for NaN/inf values and ``EmbeddingError`` for shape problems. Memory
    beyond the inputs: about 16 MB for a float64 block of gallery rows, ``chunk * 10`` bytes per row of
    that block, and a few arrays of n. The result does not depend on ``chunk`` nor on the BLAS library
    (see the module docstring).
    """
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    img, txt = _check_pair(image_emb, text_emb)
    i2t = _ranks_of_rows(img, txt, int(chunk))   # image i against every text
    t2i = _ranks_of_rows(txt, img, int(chunk))   # text i against every image
    return i2t, t2i


def retrieval_metrics(i2t, t2i) -> dict[str, float]:
    """Mean/median rank (averaged over both directions), R@1/5/10 per direction, gallery size.

    ``mean_rank_frac`` and ``median_rank_frac`` divide by the gallery size n, so galleries of
    different sizes (3,300-item folds, a 1,100-item test split) can be compared; random is about 0.5.
    """
    i2t = np.asarray(i2t, dtype=np.float64)
    t2i = np.asarray(t2i, dtype=np.float64)
    if i2t.ndim != 1 or i2t.shape != t2i.shape or i2t.size == 0:
        raise ValueError(f"rank arrays must be 1-D, non-empty and equal in length, got {i2t.shape}, {t2i.shape}")
    n = int(i2t.size)
    out: dict[str, float] = {
        "mean_rank": float((i2t.mean() + t2i.mean()) / 2),
        "median_rank": float((np.median(i2t) + np.median(t2i)) / 2),
        "i2t_mean_rank": float(i2t.mean()),
        "t2i_mean_rank": float(t2i.mean()),
        "i2t_median_rank": float(np.median(i2t)),
        "t2i_median_rank": float(np.median(t2i)),
    }
    for k in (1, 5, 10):
        out[f"i2t_r{k}"] = float((i2t < k).mean())
        out[f"t2i_r{k}"] = float((t2i < k).mean())
    out["n"] = n
    out["mean_rank_frac"] = out["mean_rank"] / n
    out["median_rank_frac"] = out["median_rank"] / n
    return out


def score_embeddings(image_emb, text_emb, chunk: int = 512) -> dict[str, float]:
    """``retrieval_metrics(*retrieval_ranks(image_emb, text_emb, chunk))`` in one call."""
    return retrieval_metrics(*retrieval_ranks(image_emb, text_emb, chunk))
