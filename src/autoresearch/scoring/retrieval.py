"""Cross-modal retrieval ranks and metrics, computed in chunks so a 10k x 10k gallery stays small.

Row i of ``image_emb`` pairs with row i of ``text_emb``. Similarity is ``image @ text.T``. The rank of
item i is its 0-indexed position in a *stable* descending sort of its row (image->text) or of its
column (text->image)::

    rank_i = #{j : s_j > s_true} + #{j < i : s_j == s_true}

Ties therefore count against the item only for earlier indices, exactly as
``np.argsort(-s, kind="stable")`` would place it: constant embeddings give ranks 0..n-1 and a mean
rank of (n-1)/2 (a random ranking), never 0. The full n x n matrix is never built: image->text works
on ``chunk`` rows of images at a time and text->image on ``chunk`` rows of text against all images.
"""

from __future__ import annotations

import numpy as np

_F32_MAX = float(np.finfo(np.float32).max)


class EmbeddingError(ValueError):
    """Embeddings that cannot be scored (wrong shape, non-finite values)."""


class NonFiniteEmbeddings(EmbeddingError):
    """NaN or inf in the embeddings, or values so large that similarities overflow float32."""


def _as_matrix(name: str, x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise EmbeddingError(f"{name} must be a 2-D array [n, d], got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise EmbeddingError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise NonFiniteEmbeddings(f"{name} has {int(bad.sum())} non-finite values (first in row {row})")
    return arr


def _max_norm(x: np.ndarray, rows: int = 4096) -> float:
    """Largest row norm, in float64 a block at a time (no full-size copy, no float32 overflow)."""
    return max(float(np.sqrt(np.einsum("ij,ij->i", b, b)).max())
               for b in (x[i:i + rows].astype(np.float64) for i in range(0, len(x), rows)))


def _check_pair(image_emb, text_emb) -> tuple[np.ndarray, np.ndarray]:
    img = _as_matrix("image embeddings", image_emb)
    txt = _as_matrix("text embeddings", text_emb)
    if img.shape != txt.shape:
        raise EmbeddingError(f"image embeddings {img.shape} and text embeddings {txt.shape} differ in shape")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise EmbeddingError(f"embeddings are empty (shape {img.shape})")
    # Cauchy-Schwarz bounds every similarity and every partial sum by |a|*|b|: check it fits float32.
    bound = _max_norm(img) * _max_norm(txt)
    if not bound < _F32_MAX / 4:
        raise NonFiniteEmbeddings(f"embedding norms are too large (|image|*|text| up to {bound:.3g}); "
                                  "similarities would overflow float32")
    return img, txt


def _ranks_of_rows(queries: np.ndarray, gallery: np.ndarray, chunk: int) -> np.ndarray:
    """Rank of gallery[i] among the similarities of queries[i] with every gallery row."""
    n = queries.shape[0]
    chunk = min(chunk, n)
    ranks = np.empty(n, dtype=np.int64)
    cols = np.arange(n)
    sims_buf = np.empty((chunk, n), dtype=np.float32)   # reused: the only large temporaries
    mask_buf = np.empty((chunk, n), dtype=bool)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        c = stop - start
        sims, mask = sims_buf[:c], mask_buf[:c]
        np.matmul(queries[start:stop], gallery.T, out=sims)
        true_idx = cols[start:stop]
        true = sims[np.arange(c), true_idx][:, None]    # from the same product: exact ties stay exact
        above = np.count_nonzero(np.greater(sims, true, out=mask), axis=1)
        equal = np.count_nonzero(np.equal(sims, true, out=mask), axis=1)  # includes the item itself
        tied = np.flatnonzero(equal > 1)
        if tied.size:                                   # rare in real data: only then count earlier ties
            earlier = (sims[tied] == true[tied]) & (cols[None, :] < true_idx[tied, None])
            above[tied] += np.count_nonzero(earlier, axis=1)
        ranks[start:stop] = above
    return ranks


def retrieval_ranks(image_emb, text_emb, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(i2t_ranks, t2i_ranks)``, int64 arrays of length n (0 = the pair is ranked first).

    Raises ``NonFiniteEmbeddings`` for NaN/inf (or overflowing) values and ``EmbeddingError`` for shape
    problems. Memory beyond the inputs is about ``chunk * n * 4`` bytes plus a few boolean masks.
    """
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    img, txt = _check_pair(image_emb, text_emb)
    i2t = _ranks_of_rows(img, txt, int(chunk))   # row i of image @ text.T
    t2i = _ranks_of_rows(txt, img, int(chunk))   # column i of image @ text.T, as text-chunk @ image.T
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


def score_embeddings(image_emb, text_emb, chunk: int = 1024) -> dict[str, float]:
    """``retrieval_metrics(*retrieval_ranks(image_emb, text_emb, chunk))`` in one call."""
    return retrieval_metrics(*retrieval_ranks(image_emb, text_emb, chunk))
