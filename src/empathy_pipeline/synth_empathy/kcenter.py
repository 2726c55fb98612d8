"""K-Center-Greedy (Sener & Savarese 2018), exact and fast: Synth-Empathy §3.3's diversity selection.

Starting from one centre, repeatedly pick the point farthest (L2) from its nearest chosen centre.
`k_center_greedy` returns exactly the picks of that plain algorithm (ties -> lowest index) while
doing the work in blocks of float64 matrix products instead of one full distance pass per pick;
see its docstring. `diverse_subset` applies it to the quality-selected samples.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from empathy_pipeline.core.errors import PipelineError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> str:
    """params diversity.device: cpu, cuda, cuda:N, or auto (cuda when available)."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"diversity.device = {name!r} but no CUDA device is available (use cpu or auto)")
    return name


def k_center_greedy(embeddings: np.ndarray, k: int, first_index: int, device: str = "cpu",
                    block_size: int | None = None, pool_size: int | None = None,
                    return_radii: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """K-Center-Greedy: indices of k points, in pick order, `first_index` first.

    Each pick is the not-yet-chosen point whose L2 distance to its nearest chosen centre is largest,
    ties going to the lowest index: exactly what the plain algorithm (one distance pass per pick)
    picks in exact arithmetic. k >= n keeps every point (with a warning).

    With `return_radii` also returns radii[j] = coverage radius (max over all points of the distance
    to the nearest centre) of the first j+1 picks: radii[0] with one centre, radii[-1] with all k.

    How it is fast and still exact:
    - Squared distances come from ||x||^2 + ||c||^2 - 2 x.c in float64, a block of `block_size`
      new centres at a time against all points (one GEMM instead of block_size passes).
    - Between blocks only a pool of the points with the largest distances can win a pick; a pool
      point is refreshed against the centres picked since the last block only when it could be the
      winner (lazy evaluation; distances only ever go down, so stale values are upper bounds).
    - Every computed squared distance is within a rigorous float64 error bound `err` of the exact
      one. A pick is taken only when no other point can be within 2*err of the winner; otherwise the
      few competitors get their exact distances recomputed directly as sum((x - c)^2) in float64.
    - Exact duplicate rows are collapsed first (the plain algorithm picks the lowest-index copy and
      the other copies then sit at distance 0, picked last in index order).
    Extra memory is O(n) plus one float64 row chunk (~5% of the matrix): well under 0.3x the matrix.
    """
    import torch

    x = embeddings if isinstance(embeddings, np.ndarray) else np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] == 0:
        raise PipelineError(f"k_center_greedy: need a non-empty 2-D embedding matrix, got shape {x.shape}")
    n, dim = x.shape
    if not 0 <= first_index < n:
        raise PipelineError(f"k_center_greedy: first_index {first_index} outside 0..{n - 1}")
    if k < 1:
        raise PipelineError(f"k_center_greedy: k = {k}, must be >= 1")
    if k >= n:
        if k > n:
            warnings.warn(f"k_center_greedy: k = {k} >= n = {n} points; keeping all {n}", stacklevel=2)
        k = n

    is_rep = _first_copies(x, first_index)
    n_reps = int(is_rep.sum())
    # Per-pick work is many tiny ops, which a second CPU thread only slows down (each parallel region
    # waits for it, badly so on a busy machine): run single-threaded, and give the caller's threads
    # back to the big block GEMMs only (see _KCenter.sync).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        core = _KCenter(x, is_rep, torch.device(device), block_size, pool_size, threads)
        picks = [first_index]
        radii: list[float] = []
        core.choose(first_index)
        while len(picks) < min(k, n_reps):
            index, radius = core.pick()
            picks.append(index)
            radii.append(radius)
        if return_radii:
            radii.append(core.radius() if len(picks) < n_reps else 0.0)
    finally:
        torch.set_num_threads(threads)
    if len(picks) < k:
        # Only copies of chosen points are left: all at distance 0, so the ties go in index order.
        chosen = np.zeros(n, dtype=bool)
        chosen[picks] = True
        rest = np.flatnonzero(~chosen)[: k - len(picks)]
        picks.extend(int(i) for i in rest)
        radii.extend([0.0] * len(rest))
    order = np.asarray(picks, dtype=np.int64)
    return (order, np.asarray(radii[:k], dtype=np.float64)) if return_radii else order


def _first_copies(x: np.ndarray, first_index: int) -> np.ndarray:
    """Mask of one representative per group of identical rows: the lowest index, or first_index.

    Rows are compared by a 128-bit hash of their bytes (after -0.0 -> 0.0, which are equal numbers).
    """
    n = x.shape[0]
    digests = np.empty(n, dtype="V16")
    rows_per_chunk = max(1, (1 << 20) // max(1, x[0].nbytes))
    for start in range(0, n, rows_per_chunk):
        chunk = np.array(x[start:start + rows_per_chunk])
        chunk += 0  # -0.0 + 0 = 0.0
        if not np.isfinite(chunk).all():
            bad = start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
            raise PipelineError(f"k_center_greedy: embedding row {bad} is not finite")
        for offset, row in enumerate(chunk):
            digests[start + offset] = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
    _, first_of_group, group = np.unique(digests, return_index=True, return_inverse=True)
    first_of_group[group[first_index]] = first_index
    mask = np.zeros(n, dtype=bool)
    mask[first_of_group] = True
    return mask


class _KCenter:
    """State of the blocked, lazily refreshed K-Center-Greedy (see k_center_greedy)."""

    def __init__(self, x: np.ndarray, is_rep: np.ndarray, device: torch.device, block_size: int | None,
                 pool_size: int | None, threads: int = 1):
        import torch

        n, dim = x.shape
        self.n, self.dim, self.device, self.threads = n, dim, device, threads
        self.block_size = block_size or (1024 if device.type == "cuda" else 256)
        self.pool_size = pool_size or max(4096, 16 * self.block_size)
        # A float64 row chunk (and its GEMM output) stays ~5% of the matrix (at least 256 rows).
        self.chunk_rows = max(256, self.block_size, min(n, int(0.05 * x.nbytes / (8 * dim))))
        self.x_np, self.x_dev = x, None
        if device.type != "cpu":  # the matrix lives on the accelerator in its own dtype
            dtype = torch.from_numpy(np.zeros(0, dtype=x.dtype)).dtype
            self.x_dev = torch.empty((n, dim), dtype=dtype, device=device)
            for start in range(0, n, self.chunk_rows):
                chunk = np.array(x[start:start + self.chunk_rows])  # a writable copy (x may be a read-only map)
                self.x_dev[start:start + len(chunk)] = torch.from_numpy(chunk).to(device)

        f64 = torch.float64
        self.chunk_buf = torch.empty((self.chunk_rows, dim), dtype=f64, device=device)
        self.gemm_buf = torch.empty(self.chunk_rows * self.block_size, dtype=f64, device=device)
        self.sq_norms = torch.empty(n, dtype=f64, device=device)
        for start in range(0, n, self.chunk_rows):
            end = min(start + self.chunk_rows, n)
            rows = self.rows64(slice(start, end), out=self.chunk_buf[:end - start])
            self.sq_norms[start:end] = torch.einsum("ij,ij->i", rows, rows)
        # Rigorous bound on |computed - exact| squared distance: a length-d dot product has error
        # <= gamma_d * sum|x_i c_i| (Higham, any summation order, FMA or not), and
        # ||x||^2 + ||c||^2 - 2x.c adds a few roundings; every term is <= (||x|| + ||c||)^2
        # <= 4 max||x||^2. The factor 4 is headroom for the roundings of the norms themselves.
        unit = 2.0 ** -53
        gamma = (dim + 4) * unit / (1 - (dim + 4) * unit)
        self.err = 4.0 * gamma * 4.0 * float(self.sq_norms.max()) * (1 + 1e-9)

        # best[i]: approximate min squared distance from i to the centres synced into it;
        # -inf = never a candidate (already chosen, or a copy of a representative row).
        self.best = torch.full((n,), math.inf, dtype=f64, device=device)
        self.best[torch.from_numpy(~is_rep).to(device)] = -math.inf
        self.centers: list[int] = []
        self.synced = 0  # centres [0, synced) are folded into every point's `best`
        self.pending = torch.empty((self.block_size, dim), dtype=f64, device=device)  # centres [synced, m)
        self.pending_sq = torch.empty(self.block_size, dtype=f64, device=device)
        self.n_pending = 0
        self.pool_idx = None

    def rows64(self, index, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows of the matrix as float64 on the device (index: slice or index tensor), into `out` if given."""
        import torch

        if self.x_dev is not None:
            rows = self.x_dev[index]
            return rows.to(torch.float64) if out is None else out.copy_(rows)
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        if out is None:
            return torch.from_numpy(np.asarray(self.x_np[index], dtype=np.float64))
        out.numpy()[:] = self.x_np[index]
        return out

    def choose(self, index: int) -> None:
        self.centers.append(index)
        self.best[index] = -math.inf
        if self.pool_idx is not None:
            self.pool_best[self.pool_idx == index] = -math.inf
        self.pending[self.n_pending] = self.rows64(slice(index, index + 1))[0]
        self.pending_sq[self.n_pending] = self.sq_norms[index]
        self.n_pending += 1

    def sync(self, pool_size: int) -> None:
        """Fold the pending centres into every point (one GEMM per row chunk), then rebuild the pool."""
        import torch

        if self.n_pending:
            centers, centers_sq = self.pending[:self.n_pending], self.pending_sq[:self.n_pending]
            big = self.n * self.n_pending * self.dim >= 1 << 24
            torch.set_num_threads(self.threads if big else 1)
            try:
                for start in range(0, self.n, self.chunk_rows):
                    end = min(start + self.chunk_rows, self.n)
                    # min_c(||c||^2 - 2 x.c) + ||x||^2: the row's own norm is added after the min.
                    # Reused buffers: fresh multi-MB temporaries per chunk fragment the CPU heap.
                    rows = self.rows64(slice(start, end), out=self.chunk_buf[:end - start])
                    part = self.gemm_buf[:(end - start) * len(centers)].view(end - start, len(centers))
                    torch.addmm(centers_sq[None, :], rows, centers.T, alpha=-2.0, out=part)
                    sq = part.min(1).values + self.sq_norms[start:end]
                    torch.minimum(self.best[start:end], sq, out=self.best[start:end])
            finally:
                torch.set_num_threads(1)
            self.synced = len(self.centers)
            self.n_pending = 0
        size = min(pool_size, self.n)
        top = torch.topk(self.best, min(size + 1, self.n), sorted=False)
        if size < self.n:
            cut = int(torch.argmin(top.values))
            self.floor = float(top.values[cut])  # no point outside the pool is above this
            keep = torch.ones(size + 1, dtype=torch.bool, device=self.device)
            keep[cut] = False
            self.pool_idx = top.indices[keep]
        else:
            self.floor = -math.inf
            self.pool_idx = top.indices
        self.pool_best = self.best[self.pool_idx]
        self.pool_seen = torch.full_like(self.pool_idx, len(self.centers))

    def refresh(self, positions: torch.Tensor) -> None:
        """Bring these pool points up to date with the centres picked since the last sync."""
        import torch

        lo = int(self.pool_seen[positions].min()) - self.synced
        centers, centers_sq = self.pending[lo:self.n_pending], self.pending_sq[lo:self.n_pending]
        rows = self.pool_idx[positions]
        part = torch.addmm(centers_sq[None, :], self.rows64(rows).to(self.device), centers.T, alpha=-2.0)
        sq = part.min(1).values + self.sq_norms[rows]
        self.pool_best[positions] = torch.minimum(self.pool_best[positions], sq)
        self.pool_seen[positions] = len(self.centers)

    def candidates(self) -> torch.Tensor | None:
        """Pool positions that may hold the next pick, all up to date; None if the pool can't tell."""
        import torch

        m = len(self.centers)
        two_err = 2.0 * self.err
        alive = torch.isfinite(self.pool_best)
        while True:
            fresh = alive & (self.pool_seen == m)
            stale = alive & ~fresh
            top = float(self.pool_best[fresh].max()) if bool(fresh.any()) else -math.inf
            if top > -math.inf:  # stale values are upper bounds: only those near `top` can beat it
                need = torch.nonzero(stale & (self.pool_best >= top - two_err)).flatten()
            else:  # nothing up to date yet: refresh the largest stale values first
                stale_pos = torch.nonzero(stale).flatten()
                if len(stale_pos) == 0:
                    return None
                need = stale_pos[torch.topk(self.pool_best[stale_pos], min(32, len(stale_pos))).indices]
            if len(need) == 0:
                break
            self.refresh(need)
        # Points outside the pool are at most floor (+ err): they can't compete unless top is that low.
        if top <= self.floor + two_err:
            return None
        return torch.nonzero(self.pool_best >= top - two_err).flatten()

    def pick(self) -> tuple[int, float]:
        """The next centre and its distance to the nearest earlier centre."""
        if self.pool_idx is None or self.n_pending >= self.block_size:
            self.sync(self.pool_size)
        positions = self.candidates()
        pool_size = self.pool_size
        while positions is None:  # pool ran dry: fold in pending centres; widen it if that's not enough
            if self.n_pending == 0:
                pool_size *= 2
            self.sync(pool_size)
            positions = self.candidates()
        if len(positions) == 1:
            index, sq_dist = int(self.pool_idx[positions[0]]), float(self.pool_best[positions[0]])
        else:
            index, sq_dist = self.exact_argmax(self.pool_idx[positions])
        self.choose(index)
        return index, math.sqrt(max(sq_dist, 0.0))

    def exact_argmax(self, indices: torch.Tensor) -> tuple[int, float]:
        """Near-tied candidates: exact min over all centres of sum((x - c)^2) in float64; ties -> lowest index."""
        import torch

        indices = torch.sort(indices).values
        cand = self.rows64(indices).to(self.device)
        exact = torch.full((len(indices),), math.inf, dtype=torch.float64, device=self.device)
        centers = torch.tensor(self.centers, device=self.device)
        step = max(1, self.chunk_rows // len(indices))
        for start in range(0, len(centers), step):
            diff = cand[:, None, :] - self.rows64(centers[start:start + step]).to(self.device)[None, :, :]
            exact = torch.minimum(exact, (diff * diff).sum(-1).min(1).values)
        best = int(torch.argmax(exact))  # the first maximum: lowest index
        return int(indices[best]), float(exact[best])

    def radius(self) -> float:
        """Coverage radius of the centres chosen so far (max distance of any point to its nearest)."""
        import torch

        self.sync(self.pool_size)
        alive = self.best[torch.isfinite(self.best)]
        return math.sqrt(max(float(alive.max()), 0.0)) if len(alive) else 0.0


# ---- the diversity selection stage's tables ----------------------------------------------------------

def diversity_k(n: int, k: int | None, ratio: float | None) -> int:
    """Subset size: params diversity.k if set, else round(ratio * n)."""
    if k is not None:
        if int(k) < 1:
            raise PipelineError(f"diversity.k = {k}: must be >= 1 (or null to use diversity.ratio)")
        return int(k)
    if ratio is None or not 0 < float(ratio) <= 1:
        raise PipelineError(f"diversity.ratio = {ratio}: must be in (0, 1] when diversity.k is null")
    return max(1, round(float(ratio) * n))


def embedding_rows(quality: pl.DataFrame, scores: pl.DataFrame, n_embeddings: int) -> np.ndarray:
    """Rows of sample_embeddings.npy for the quality-selected samples, checked against scores.parquet."""
    if "embedding_row" not in quality.columns:
        raise PipelineError("quality table: no embedding_row column (rerun quality_select)")
    if scores.height != n_embeddings:
        raise PipelineError(f"sample embeddings have {n_embeddings} rows but scores table {scores.height} "
                            "(rerun embed)")
    rows = quality["embedding_row"].to_numpy().astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= n_embeddings):
        raise PipelineError(f"quality table: embedding_row outside 0..{n_embeddings - 1} (rerun quality_select)")
    mismatched = int((scores["sample_id"].gather(rows) != quality["sample_id"]).sum())
    if mismatched:
        raise PipelineError(f"quality table: {mismatched} embedding_row value(s) point at another sample_id "
                            "in scores (rerun quality_select)")
    return rows


def random_subset(quality: pl.DataFrame, *, k: int | None, ratio: float | None, seed: int) -> tuple[pl.DataFrame, dict]:
    """A seeded uniform subset of the size K-Center-Greedy would pick (Synth-Empathy Table 4's ablation)."""
    size = min(diversity_k(quality.height, k, ratio), quality.height)
    order = np.random.default_rng(seed).permutation(quality.height)[:size]
    picked = quality[order].with_columns(pl.lit(None, dtype=pl.Float64).alias("pick_distance"))
    return picked, {"method": "random", "n_in": quality.height, "k_requested": diversity_k(quality.height, k, ratio),
                    "k": size}


def diverse_subset(quality: pl.DataFrame, scores: pl.DataFrame, embeddings: np.ndarray, *, k: int | None,
                   ratio: float | None, seed: int, device: str, method: str = "kcenter") -> tuple[pl.DataFrame, dict]:
    """K-Center-Greedy over the quality-selected samples' embeddings: (picked rows in pick order, metrics).

    `pick_distance` is each pick's distance to the nearest earlier pick (none for the first).
    method "random" picks a seeded uniform subset of the same size instead (random_subset).
    """
    rows = embedding_rows(quality, scores, embeddings.shape[0])
    if method == "random":
        return random_subset(quality, k=k, ratio=ratio, seed=seed)
    if method != "kcenter":
        raise PipelineError(f"diversity.method: unknown value {method!r} (use kcenter or random)")
    # Everything kept, in order: run on the memory map itself instead of a copy.
    vectors = embeddings if np.array_equal(rows, np.arange(embeddings.shape[0])) else embeddings[rows]
    size = diversity_k(quality.height, k, ratio)
    first = int(np.random.default_rng(seed).integers(quality.height))
    device = resolve_device(device)
    order, radii = k_center_greedy(vectors, size, first, device=device, return_radii=True)
    pick_distance = pl.Series("pick_distance", [None, *radii[:-1].tolist()], dtype=pl.Float64)
    metrics = {
        "method": "kcenter",
        "n_in": quality.height,
        "k_requested": size,
        "k": len(order),
        "first_index": first,
        "coverage_radius_max": round(float(radii[0]), 6),
        "coverage_radius_min": round(float(radii[-1]), 6),
    }
    return quality[order].with_columns(pick_distance), metrics
