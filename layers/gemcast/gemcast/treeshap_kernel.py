"""The compiled explanation kernel: exact path-dependent TreeSHAP, stone by stone, leaf by leaf.

The same sum as ``TreeEnsembleModel._explain_inputs``'s numpy kernel (see the model's docstring
for why it is exact): per leaf l with path inputs j = 1..k, the stone's a_j (does it satisfy
the path's interval on input j), the cover products b_j, and with g_j(t) = b_j + (a_j - b_j) t

    phi_i += value_l * (a_i - b_i) * integral_0^1 prod_{j != i} g_j(t) dt,

the integral of a polynomial of degree k - 1, computed exactly by Gauss-Legendre quadrature
with ceil(k / 2) points. The products without g_i come from prefix and suffix products, never
a division, so a child no sample reached (b = 0) costs nothing special. Work is a few
multiply-adds per (leaf, path input, point) and nothing is allocated per stone: about 0.1 ms
a stone for a model of ten thousand leaves, against about 1 ms for the numpy kernel, whose
cost is dominated by numpy's per-array passes over (leaves x slots x stones).

numba compiles it at first use (cached beside this file when the folder is writable). Without
numba, or when it cannot compile here, :func:`kernel` answers None and the numpy kernel is used;
tests/unit/test_model.py checks both against brute force.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

_log = logging.getLogger(__name__)
_KERNEL: Any = None
BLOCK = 256  # stones at a time: a tabulated leaf's table is read by all of them while in cache
BATCH = 32  # from this many stones on, every table is worth reading (fewer: only SMALL_TABLE_K ones)
_TRIED = False


def _source() -> Any:
    import numba

    @numba.njit(cache=True, nogil=True, inline="always")
    def terms(first, k, q, v, b, t_of, w_of, base, ratio, on, product, out):  # pragma: no cover
        # One leaf's phi per path slot, for the pattern a = on, by q-point quadrature.
        # P(t) = value * w * prod_j g_j(t). A slot on the path adds P (1 - b) / g1; a slot off it
        # adds P (-b) / g0 = -P / (1 - t), the same for every such slot (and when b = 0 there,
        # P = 0 and so is its own term, -b * prod_{j != i} g_j).
        for p in range(q):
            product[p] = v * w_of[q, p]
        for j in range(k):
            bj = b[first + j]
            inside = on[j]
            for p in range(q):
                t = t_of[q, p]
                product[p] *= bj + (1.0 - bj) * t if inside else bj * (1.0 - t)
        off = 0.0
        for p in range(q):
            off -= product[p] / (1.0 - t_of[q, p])
        for j in range(k):
            total = off
            if on[j]:
                total = 0.0
                for p in range(q):
                    total += product[p] * ratio[base + j * q + p]
            out[j] = total

    @numba.njit(cache=True, nogil=True)
    def treeshap(xa, start, column, lo, hi, feature, b, value, points, t_of, w_of, ratio_at, ratio,
                 table_at, table, phi):  # pragma: no cover - compiled; checked against brute force
        # xa (width, n) inputs (float32 copies appended), transposed so that one slot's test runs
        # along a block of stones; per leaf l its slots start[l]..start[l+1]
        # (column, interval lo < x <= hi, input index, cover product b), its value and number of
        # quadrature points q; t_of[q, p], w_of[q, p] the q-point rule on [0, 1]; ratio[ratio_at[l]
        # + j * q + p] = (1 - b_j) / g1_j(t_p). A leaf with table_at[l] >= 0 has its phi for every
        # pattern of a precomputed: table[table_at[l] + pattern * k + j], pattern = sum_j a_j 2^j.
        # phi (F, n) is added to.
        n = xa.shape[1]
        n_leaves = value.shape[0]
        widest = 1
        for leaf in range(n_leaves):
            widest = max(widest, start[leaf + 1] - start[leaf])
        on = np.empty(widest, dtype=np.bool_)
        product = np.empty(t_of.shape[1])
        term = np.empty(widest)
        pattern = np.empty(BLOCK, dtype=np.int64)
        for s0 in range(0, n, BLOCK):
            m = min(BLOCK, n - s0)
            for leaf in range(n_leaves):
                first = start[leaf]
                k = start[leaf + 1] - first
                if k == 0:
                    continue
                at = table_at[leaf]
                if at >= 0:
                    # Tabulated: the leaf's table stays in cache while the block's stones read it.
                    pattern[:m] = 0
                    for j in range(k):
                        c, low, high = column[first + j], lo[first + j], hi[first + j]
                        for i in range(m):
                            x = xa[c, s0 + i]
                            pattern[i] |= ((x > low) & (x <= high)) << j
                    for i in range(m):
                        pattern[i] = at + pattern[i] * k
                    for j in range(k):
                        out = phi[feature[first + j]]
                        for i in range(m):
                            out[s0 + i] += table[pattern[i] + j]
                    continue
                for i in range(m):
                    for j in range(k):
                        x = xa[column[first + j], s0 + i]
                        on[j] = (x > lo[first + j]) & (x <= hi[first + j])
                    terms(first, k, points[leaf], value[leaf], b, t_of, w_of, ratio_at[leaf], ratio, on, product,
                          term)
                    for j in range(k):
                        phi[feature[first + j], s0 + i] += term[j]

    @numba.njit(cache=True, nogil=True)
    def fill(start, b, value, points, t_of, w_of, ratio_at, ratio, table_at, table):  # pragma: no cover
        # Every tabulated leaf's phi for every pattern, by the kernel's own quadrature.
        product = np.empty(t_of.shape[1])
        on = np.empty(max(1, int((start[1:] - start[:-1]).max())), dtype=np.bool_)
        for leaf in range(value.shape[0]):
            at = table_at[leaf]
            first = start[leaf]
            k = start[leaf + 1] - first
            if at < 0 or k == 0:
                continue
            for pattern in range(1 << k):
                for j in range(k):
                    on[j] = (pattern >> j) & 1
                terms(first, k, points[leaf], value[leaf], b, t_of, w_of, ratio_at[leaf], ratio, on, product,
                      table[at + pattern * k : at + (pattern + 1) * k])

    return treeshap, fill


def first_use(namespace: dict[str, Any], build: Any, what: str) -> Any:
    """``namespace["_KERNEL"]``, set by ``build()`` (which compiles and tries the kernel) at the
    first call; None for good when that fails (no numba, or no compiling here). ``namespace`` is
    the kernel module's globals, so that tests can stand in for a machine without numba."""
    if not namespace["_TRIED"]:
        namespace["_TRIED"] = True
        try:
            namespace["_KERNEL"] = build()
        except Exception as exc:  # noqa: BLE001 - a compiled kernel is optional: do without it
            _log.info("%s unavailable: %s", what, exc)
    return namespace["_KERNEL"]


def kernel() -> Any:
    """(explain, fill): the compiled kernel and its table filler, or None (no numba, or no compiling here)."""
    return first_use(globals(), _build, "compiled TreeSHAP kernel (explanations use numpy)")


def _build() -> Any:
    fn, fill = _source()
    tables = quadrature(1)
    fn(np.zeros((1, 1)), np.array([0, 1], dtype=np.int64), np.zeros(1, dtype=np.int64),
       np.array([-np.inf]), np.array([np.inf]), np.zeros(1, dtype=np.int64), np.ones(1),
       np.ones(1), np.ones(1, dtype=np.int64), *tables, np.zeros(1, dtype=np.int64), np.zeros(1),
       np.full(1, -1, dtype=np.int64), np.zeros(1), np.zeros((1, 1)))
    fill(np.array([0, 1], dtype=np.int64), np.ones(1), np.ones(1), np.ones(1, dtype=np.int64), *tables,
         np.zeros(1, dtype=np.int64), np.zeros(1), np.zeros(1, dtype=np.int64), np.zeros(2))
    return fn, fill


def quadrature(q_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre rules on [0, 1]: t_of[q, :q] and w_of[q, :q] for q = 1..q_max."""
    t_of = np.zeros((q_max + 1, max(q_max, 1)))
    w_of = np.zeros_like(t_of)
    for q in range(1, q_max + 1):
        gx, gw = np.polynomial.legendre.leggauss(q)
        t_of[q, :q] = (gx + 1.0) / 2.0
        w_of[q, :q] = gw / 2.0
    return t_of, w_of


# A leaf with at most this many path inputs gets its phi tabulated for every pattern of a
# (2^k * k values), as long as all the tables stay within TABLE_VALUES.
TABLE_MAX_K = 12
TABLE_VALUES = 1 << 23
# A small batch reads each table entry it needs once: only tables this short stay in cache, and
# longer leaves take the quadrature.
SMALL_TABLE_K = 4


def table_layout(start: np.ndarray) -> np.ndarray:
    """Per leaf, where its table starts (2^k * k values), or -1 when it is not tabulated.

    Leaves are tabulated shortest path first while all the tables stay within TABLE_VALUES.
    """
    k = np.diff(start)
    table_at = np.full(k.size, -1, dtype=np.int64)
    used = 0
    for width in range(1, TABLE_MAX_K + 1):
        leaves = np.flatnonzero(k == width)
        size = leaves.size * (width << width)
        if used + size > TABLE_VALUES:
            break
        table_at[leaves] = used + np.arange(leaves.size) * (width << width)
        used += size
    return table_at


def ratios(start: np.ndarray, b: np.ndarray, points: np.ndarray, t_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ratio_at, ratio): per leaf, per path slot j and point p, (1 - b_j) / (b_j + (1 - b_j) t_p)."""
    k = np.diff(start)
    size = k * points
    ratio_at = np.r_[0, np.cumsum(size)[:-1]].astype(np.int64)
    leaf = np.repeat(np.arange(k.size), size)
    if leaf.size == 0:
        return ratio_at, np.zeros(1)
    inner = np.arange(leaf.size) - ratio_at[leaf]
    q = points[leaf]
    j, p = inner // q, inner % q
    bj = b[start[leaf] + j]
    t = t_of[q, p]
    return ratio_at, (1.0 - bj) / (bj + (1.0 - bj) * t)
