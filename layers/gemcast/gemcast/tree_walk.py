"""The compiled tree walk: log(price) of a tree ensemble, stone by stone, tree by tree (numba).

The same walk as ``TreeEnsembleModel._walk`` (numpy) over the same flat arrays: per node its
(augmented) input column, threshold and two children; ``x > threshold`` goes right, else left,
as scikit-learn's ``x <= threshold`` goes left; the float32 copies of the inputs sit in the
columns after the inputs, so a tree scikit-learn compares in float32 reads them. Leaves are
where the model's feature is -1. It reaches the same leaves, always (tests/unit/test_tree_walk.py
checks that, and the prices against the numpy walk and scikit-learn); the prices differ from the
numpy walk's only by the order of the sum over trees (here tree after tree; numpy's is pairwise).

Trees are walked GROUP at a time side by side, each group for as many steps as its deepest tree
(a leaf points to itself, so a walk that ended early stays put): the steps of one tree wait on
each other (node, then its column, then the next node), those of different trees do not, so the
processor overlaps them. The child is chosen without a branch (``child[2 * node + went_right]``):
a random direction would otherwise be a mispredicted jump at every level. One stone costs its
trees' steps and nothing else: no numpy array per level (the numpy walk's dozens of passes), no
session call (onnxruntime's fixed cost a call); for about 16 stones and more, onnxruntime's
batch walk is faster, and the model uses it there (``TreeEnsembleModel.predict_log``).

:func:`by_row_blocks` splits a large batch over the cores, for this walk, onnxruntime's and the
TreeSHAP kernel alike (each releases the GIL, and each row is computed on its own, so the blocks
answer what the whole batch would).

numba compiles it at first use (cached beside this file when the folder is writable). Without
numba, or when it cannot compile here, :func:`kernel` answers None and the model keeps its
other predictors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from gemcast.treeshap_kernel import first_use

GROUP = 16  # trees walked side by side: their steps do not wait for one another
PARALLEL_MIN_ROWS = 256  # from this many rows on, a batch is split over the machine's cores
_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (the process it belongs to, the pool)
_KERNEL: Any = None
_TRIED = False


def _source() -> Any:
    import numba

    @numba.njit(cache=True, nogil=True)
    def walk(xa, roots, group_depth, column, threshold, child, value, bias, out):  # pragma: no cover - compiled
        # xa (n, width) inputs (float32 copies appended); per flat node its column, threshold,
        # children child[2 * node] (left) and child[2 * node + 1] (right) and value (the leaf's
        # weighted value). A leaf has column 0, threshold +inf and itself as both children, so
        # a walk that reached it stays. roots[t]: tree t's root; trees go GROUP at a time, each
        # group for group_depth[g] steps (its deepest tree's depth). out (n,) is set.
        lanes = np.empty(GROUP, dtype=np.int32)
        n_trees = roots.shape[0]
        for i in range(xa.shape[0]):
            total = 0.0
            for g in range(group_depth.shape[0]):
                t0 = g * GROUP
                width = min(GROUP, n_trees - t0)
                for k in range(width):
                    lanes[k] = roots[t0 + k]
                for _ in range(group_depth[g]):
                    for k in range(width):
                        node = lanes[k]
                        lanes[k] = child[2 * node + (xa[i, column[node]] > threshold[node])]
                for k in range(width):
                    total += value[lanes[k]]
            out[i] = total + bias

    @numba.njit(cache=True, nogil=True)
    def leaves(xa, roots, group_depth, column, threshold, child, found):  # pragma: no cover - compiled
        # The same walk, answering the flat node each stone ends at in each tree: found (n, trees).
        n_trees = roots.shape[0]
        for i in range(xa.shape[0]):
            for g in range(group_depth.shape[0]):
                for t in range(g * GROUP, min(n_trees, (g + 1) * GROUP)):
                    node = roots[t]
                    for _ in range(group_depth[g]):
                        node = child[2 * node + (xa[i, column[node]] > threshold[node])]
                    found[i, t] = node

    return walk, leaves


def kernel() -> Any:
    """(walk, leaves): the compiled walk and its leaf finder, or None (no numba, or no compiling here)."""
    return first_use(globals(), _build, "compiled tree walk")


def _build() -> Any:
    walk, leaves = _source()
    one, roots, depth = np.zeros((1, 1)), np.zeros(1, dtype=np.int32), np.ones(1, dtype=np.int32)
    column, threshold, child = np.zeros(1, dtype=np.int32), np.full(1, np.inf), np.zeros(2, dtype=np.int32)
    walk(one, roots, depth, column, threshold, child, np.ones(1), 0.0, np.zeros(1))
    leaves(one, roots, depth, column, threshold, child, np.zeros((1, 1), dtype=np.int32))
    return walk, leaves


class CompiledTrees:
    """A tree ensemble's flat nodes in the compiled walk's layout, and the walk over them.

    Built from the model's own arrays (``TreeEnsembleModel``'s ``tree_*``): nothing is
    re-derived from scikit-learn, so it walks exactly the trees the numpy walk walks.
    """

    def __init__(self, walk: Any, leaves: Any, *, feature: np.ndarray, threshold: np.ndarray, left: np.ndarray,
                 right: np.ndarray, leaf_value: np.ndarray, columns_of: np.ndarray, bias: float) -> None:
        """``feature`` etc. are (trees x nodes) as the model file holds them (feature -1 at a
        leaf, children within the tree); ``leaf_value`` the weighted leaf values; ``columns_of``
        per tree the offset of its input columns (the input count for a float32 tree, else 0)."""
        T, M = feature.shape
        split = feature >= 0
        base = np.arange(T, dtype=np.int64)[:, None] * M
        here = base + np.arange(M)[None, :]
        self._walk, self._leaves = walk, leaves
        self.roots = np.ascontiguousarray(base[:, 0], dtype=np.int32)
        self.column = np.ascontiguousarray(np.where(split, feature + columns_of[:, None], 0).ravel(), dtype=np.int32)
        self.threshold = np.ascontiguousarray(np.where(split, threshold, np.inf).ravel(), dtype=np.float64)
        child = np.empty(2 * T * M, dtype=np.int32)
        child[0::2] = np.where(split, base + left, here).ravel()
        child[1::2] = np.where(split, base + right, here).ravel()
        self.child = child
        self.value = np.ascontiguousarray(np.where(split, 0.0, leaf_value).ravel(), dtype=np.float64)
        self.bias = float(bias)
        depth = _tree_depths(feature, left, right)
        groups = -(-T // GROUP)
        padded = np.zeros(groups * GROUP, dtype=np.int32)
        padded[:T] = depth
        self.group_depth = np.ascontiguousarray(padded.reshape(groups, GROUP).max(axis=1), dtype=np.int32)

    @classmethod
    def build(cls, **arrays: Any) -> CompiledTrees | None:
        """The compiled walk over a model's arrays (see ``__init__``), or None without numba
        (or with too many nodes for its int32 indices)."""
        compiled = kernel()
        if compiled is None or 2 * np.size(arrays["feature"]) >= np.iinfo(np.int32).max:
            return None
        return cls(*compiled, **arrays)

    def predict(self, Xa: np.ndarray) -> np.ndarray:
        """log(price) for rows of (augmented) inputs."""
        xa = np.ascontiguousarray(Xa, dtype=np.float64)
        out = np.empty(xa.shape[0])
        self._walk(xa, self.roots, self.group_depth, self.column, self.threshold, self.child, self.value,
                   self.bias, out)
        return out

    def leaves(self, Xa: np.ndarray) -> np.ndarray:
        """The flat node (tree * nodes + node) of the leaf each row reaches in each tree: (rows, trees)."""
        xa = np.ascontiguousarray(Xa, dtype=np.float64)
        found = np.empty((xa.shape[0], self.roots.size), dtype=np.int32)
        self._leaves(xa, self.roots, self.group_depth, self.column, self.threshold, self.child, found)
        return found


def _tree_depths(feature: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Each tree's longest root-to-leaf path, all trees walked level by level."""
    T = feature.shape[0]
    depth = np.zeros(T, dtype=np.int32)
    tree, node = np.arange(T), np.zeros(T, dtype=np.intp)
    level = 0
    while tree.size:
        inner = feature[tree, node] >= 0
        tree, node = tree[inner], node[inner]
        level += 1
        depth[tree] = level
        tree, node = np.concatenate([tree, tree]), np.concatenate([left[tree, node], right[tree, node]])
    return depth


def _row_pool() -> ThreadPoolExecutor | None:
    """This process's pool of (cores - 1) threads, made at first use (a pool does not survive a
    fork: a forked worker makes its own); None on one core."""
    global _POOL
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cores < 2:
        return None
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = os.getpid(), ThreadPoolExecutor(cores - 1, thread_name_prefix="gemcast-rows")
    return _POOL[1]


def by_row_blocks(fn: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> np.ndarray:
    """``fn(rows)``, for a batch of at least PARALLEL_MIN_ROWS rows computed as one block of rows a
    core side by side, and joined in order along the first axis.

    For a function whose rows do not depend on each other and that releases the GIL while it
    works (a nogil numba kernel, onnxruntime's run): a 1,000-stone request then takes both
    cores of an otherwise idle 2-core server instead of one. Under load (every core already
    busy with other requests) it is no faster, and costs a thread switch a block.
    """
    pool = _row_pool() if rows.shape[0] >= PARALLEL_MIN_ROWS else None
    if pool is None:
        return fn(rows)
    parts = np.array_split(rows, pool._max_workers + 1)
    pending = [pool.submit(fn, part) for part in parts[1:]]
    return np.concatenate([fn(parts[0]), *(p.result() for p in pending)])
