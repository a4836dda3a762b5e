"""Time and peak memory of the chunked retrieval ranks on an n x n gallery (default 10,000, d=512).

    python benchmarks/retrieval_bench.py [--n 10000] [--d 512] [--chunk 512] [--full] [--collapsed]

Peak memory is what numpy allocates during the call (tracemalloc sees numpy's buffers), beyond the
inputs. It is compared with the float32 similarity matrix alone (n*n*4 bytes), which a full-matrix
implementation needs before it even sorts. ``--full`` also measures that implementation
(one float32 matmul, the same counting, ties ignored) for a timing comparison. ``--collapsed`` also
times a collapsed model (every embedding equal: n-way ties everywhere, mean rank (n-1)/2).
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np

from autoresearch.scoring.retrieval import retrieval_ranks

MB = 1024 * 1024


def full_matrix_ranks(img: np.ndarray, txt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = img @ txt.T
    n = len(s)
    idx = np.arange(n)
    true = s[idx, idx]
    i2t = np.count_nonzero(s > true[:, None], axis=1)
    t2i = np.count_nonzero(s > true[None, :], axis=0)
    return i2t, t2i  # ties ignored: only for timing and memory


def measure(fn, *args) -> tuple[float, float, object]:
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / MB, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--full", action="store_true", help="also time the full-matrix computation")
    ap.add_argument("--collapsed", action="store_true", help="also time constant embeddings (all tied)")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    img = rng.standard_normal((args.n, args.d)).astype(np.float32)
    txt = (img + 12.0 * rng.standard_normal((args.n, args.d))).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    inputs_mb = (img.nbytes + txt.nbytes) / MB
    matrix_mb = args.n * args.n * 4 / MB

    retrieval_ranks(img[:256], txt[:256])  # warm up the BLAS threads
    seconds, peak_mb, (i2t, t2i) = measure(lambda: retrieval_ranks(img, txt, chunk=args.chunk))
    print(f"n={args.n} d={args.d} chunk={args.chunk}")
    print(f"inputs                 {inputs_mb:8.1f} MB")
    print(f"chunked ranks          {seconds:8.2f} s   peak {peak_mb:8.1f} MB   mean rank "
          f"{(i2t.mean() + t2i.mean()) / 2:.2f}")
    print(f"full float32 matrix    {matrix_mb:8.1f} MB   ratio full/chunked peak = {matrix_mb / peak_mb:.1f}x")
    if args.full:
        seconds_f, peak_f, _ = measure(full_matrix_ranks, img, txt)
        print(f"full-matrix ranks      {seconds_f:8.2f} s   peak {peak_f:8.1f} MB   "
              f"ratio = {peak_f / peak_mb:.1f}x")
    if args.collapsed:
        flat = np.full_like(img, 1 / np.sqrt(args.d))
        seconds_c, peak_c, (ci, ct) = measure(lambda: retrieval_ranks(flat, flat, chunk=args.chunk))
        print(f"collapsed (all tied)   {seconds_c:8.2f} s   peak {peak_c:8.1f} MB   mean rank "
              f"{(ci.mean() + ct.mean()) / 2:.2f} (want {(args.n - 1) / 2:.2f})")
    print(f"process max RSS        {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.1f} MB")


if __name__ == "__main__":
    main()
