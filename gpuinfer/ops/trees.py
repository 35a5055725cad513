"""Tree-ensemble models (ai.onnx.ml TreeEnsemble): every sample walks every tree level by level.

The attributes are turned once per call into flat index tables (one row per interior node, one per
leaf); the walk then runs on ``ctx.xp`` with index arrays over (sample, tree) pairs, so the Python
loop is over tree depth, never over samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op
from gpuinfer.ops.tiles import scaled, tile_bytes_of

_LEQ, _LT, _GTE, _GT, _EQ, _NEQ, _MEMBER = range(7)
_AGGREGATES = ("AVERAGE", "SUM", "MIN", "MAX")
_TRANSFORMS = ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT")
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
# (sample, tree) pairs walked at once: bounds the walk's index arrays (CPU; a device scales it by
# its ``caps.tile_bytes``, ops/tiles.py: the whole batch at once on a GPU)
_SLOTS_PER_CHUNK = 1 << 20


@dataclass
class _Ensemble:
    """Host tables of one ensemble; child ids >= n_nodes name leaf (id - n_nodes)."""

    feature: np.ndarray  # int64 [n_nodes]
    split: np.ndarray  # float64 [n_nodes]
    mode: np.ndarray  # int64 [n_nodes]
    true_child: np.ndarray  # int64 [n_nodes]
    false_child: np.ndarray  # int64 [n_nodes]
    missing_true: np.ndarray  # bool [n_nodes]
    member_set: np.ndarray  # int64 [n_nodes]: row of ``members`` for MEMBER nodes, else 0
    members: np.ndarray  # float64 [n_sets, width], NaN-padded
    roots: np.ndarray  # int64 [n_trees]: a node id, or n_nodes + leaf for a one-leaf tree
    leaf_target: np.ndarray  # int64 [n_leaves]
    leaf_weight: np.ndarray  # float64 [n_leaves]
    n_targets: int
    aggregate: int
    transform: int


def _fail(op_type: str, message: str) -> NodeExecutionError:
    return NodeExecutionError(f"{op_type}: {message}")


def _ints(ctx, name: str, op_type: str, required: bool = True):
    value = ctx.attr(name)
    if value is None:
        if required:
            raise _fail(op_type, f"attribute '{name}' is required")
        return None
    return np.asarray(value, dtype=np.int64).reshape(-1)


def _tensor(ctx, name: str, op_type: str, x_dtype, required: bool = True, same_type: bool = True):
    value = ctx.attr(name)
    if value is None:
        if required:
            raise _fail(op_type, f"attribute '{name}' is required")
        return None
    value = np.asarray(value)
    if same_type and value.dtype != x_dtype:
        raise _fail(op_type, f"attribute '{name}' must have the input's type {x_dtype}, got {value.dtype}")
    return value.reshape(-1)


def _parse_sets(values, n_member: int, op_type: str):
    """NaN-delimited membership sets -> NaN-padded [n_sets, width] matrix (float64)."""
    if values is None or values.size == 0:
        if n_member:
            raise _fail(op_type, f"{n_member} BRANCH_MEMBER node(s) but no 'membership_values'")
        return np.full((0, 1), np.nan)
    values = values.astype(np.float64)
    if not np.isnan(values[-1]):
        values = np.append(values, np.nan)  # the last set may omit its closing NaN
    ends = np.flatnonzero(np.isnan(values))
    if ends.size != n_member:
        raise _fail(op_type, f"'membership_values' holds {ends.size} NaN-delimited set(s) but "
                             f"{n_member} node(s) have mode BRANCH_MEMBER")
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts
    table = np.full((max(n_member, 1), max(int(lengths.max(initial=0)), 1)), np.nan)
    for k, (s, n) in enumerate(zip(starts.tolist(), lengths.tolist())):
        table[k, :n] = values[s:s + n]
    return table


def _tree_ensemble_tables(ctx, x, op_type: str) -> _Ensemble:
    """Read and check TreeEnsemble (opset 5) attributes against each other and against ``x``."""
    feature = _ints(ctx, "nodes_featureids", op_type)
    split = _tensor(ctx, "nodes_splits", op_type, x.dtype)
    mode = _tensor(ctx, "nodes_modes", op_type, x.dtype, same_type=False)
    true_ids = _ints(ctx, "nodes_truenodeids", op_type)
    false_ids = _ints(ctx, "nodes_falsenodeids", op_type)
    true_leaf = _ints(ctx, "nodes_trueleafs", op_type)
    false_leaf = _ints(ctx, "nodes_falseleafs", op_type)
    missing = _ints(ctx, "nodes_missing_value_tracks_true", op_type, required=False)
    leaf_target = _ints(ctx, "leaf_targetids", op_type)
    leaf_weight = _tensor(ctx, "leaf_weights", op_type, x.dtype)
    roots = _ints(ctx, "tree_roots", op_type)
    aggregate = int(ctx.attr("aggregate_function", 1))
    transform = int(ctx.attr("post_transform", 0))

    n_nodes = feature.size
    per_node = {"nodes_splits": split, "nodes_modes": mode, "nodes_truenodeids": true_ids,
                "nodes_falsenodeids": false_ids, "nodes_trueleafs": true_leaf, "nodes_falseleafs": false_leaf}
    if missing is not None and missing.size:
        per_node["nodes_missing_value_tracks_true"] = missing
    else:
        missing = np.zeros(n_nodes, np.int64)
    for name, arr in per_node.items():
        if arr.size != n_nodes:
            raise _fail(op_type, f"'{name}' has {arr.size} entries, expected {n_nodes} "
                                 "(one per node, like 'nodes_featureids')")
    if n_nodes == 0:
        raise _fail(op_type, "the ensemble has no nodes")
    if leaf_weight.size != leaf_target.size:
        raise _fail(op_type, f"'leaf_weights' has {leaf_weight.size} entries, expected {leaf_target.size} "
                             "(one per leaf, like 'leaf_targetids')")
    n_leaves = leaf_target.size
    if n_leaves == 0:
        raise _fail(op_type, "the ensemble has no leaves")
    mode = mode.astype(np.int64)
    if mode.min() < 0 or mode.max() > _MEMBER:
        raise _fail(op_type, f"'nodes_modes' must be in [0, 6] (BRANCH_LEQ..BRANCH_MEMBER), got {mode.tolist()}")
    for name, flags in (("nodes_trueleafs", true_leaf), ("nodes_falseleafs", false_leaf)):
        if not np.isin(flags, (0, 1)).all():
            raise _fail(op_type, f"'{name}' must hold 0 or 1, got {flags.tolist()}")
    for name, ids, flags in (("nodes_truenodeids", true_ids, true_leaf), ("nodes_falsenodeids", false_ids, false_leaf)):
        limit = np.where(flags == 1, n_leaves, n_nodes)
        bad = np.flatnonzero((ids < 0) | (ids >= limit))
        if bad.size:
            i = int(bad[0])
            kind = "leaf" if flags[i] else "node"
            raise _fail(op_type, f"'{name}'[{i}] = {int(ids[i])} is not a valid {kind} index "
                                 f"(expected [0, {int(limit[i])}))")
    n_targets = ctx.attr("n_targets")
    n_targets = int(leaf_target.max()) + 1 if n_targets is None else int(n_targets)
    if n_targets < 1:
        raise _fail(op_type, f"'n_targets' must be >= 1, got {n_targets}")
    if leaf_target.min() < 0 or leaf_target.max() >= n_targets:
        raise _fail(op_type, f"'leaf_targetids' must be in [0, {n_targets}), got {leaf_target.tolist()}")
    if roots.size == 0:
        raise _fail(op_type, "'tree_roots' is empty")
    if roots.min() < 0 or roots.max() >= n_nodes:
        raise _fail(op_type, f"'tree_roots' must index nodes in [0, {n_nodes}), got {roots.tolist()}")
    if not 0 <= aggregate < len(_AGGREGATES):
        raise _fail(op_type, f"'aggregate_function' must be 0..3 (AVERAGE, SUM, MIN, MAX), got {aggregate}")
    if not 0 <= transform < len(_TRANSFORMS):
        raise _fail(op_type, f"'post_transform' must be 0..4 (NONE, SOFTMAX, LOGISTIC, SOFTMAX_ZERO, PROBIT), "
                             f"got {transform}")

    is_member = mode == _MEMBER
    members = _parse_sets(_tensor(ctx, "membership_values", op_type, x.dtype, required=False, same_type=False),
                          int(is_member.sum()), op_type)
    member_set = np.where(is_member, np.cumsum(is_member) - 1, 0)

    # A tree that is a single leaf: a root whose two branches are the same leaf.
    one_leaf = (true_leaf[roots] == 1) & (false_leaf[roots] == 1) & (true_ids[roots] == false_ids[roots])
    start = np.where(one_leaf, n_nodes + true_ids[roots], roots)
    walked = np.ones(n_nodes, bool)
    walked[roots[one_leaf]] = False
    n_features = x.shape[1]
    bad = np.flatnonzero(walked & ((feature < 0) | (feature >= n_features)))
    if bad.size:
        i = int(bad[0])
        raise _fail(op_type, f"'nodes_featureids'[{i}] = {int(feature[i])} is out of range for an input "
                             f"with {n_features} feature(s)")

    return _Ensemble(
        feature=feature, split=split.astype(np.float64), mode=mode,
        true_child=np.where(true_leaf == 1, n_nodes + true_ids, true_ids),
        false_child=np.where(false_leaf == 1, n_nodes + false_ids, false_ids),
        missing_true=missing != 0, member_set=member_set, members=members, roots=start,
        leaf_target=leaf_target, leaf_weight=leaf_weight.astype(np.float64), n_targets=n_targets,
        aggregate=aggregate, transform=transform)


def _compare(xp, mode: int, v, t):
    if mode == _LEQ:
        return v <= t
    if mode == _LT:
        return v < t
    if mode == _GTE:
        return v >= t
    if mode == _GT:
        return v > t
    if mode == _EQ:
        return v == t
    return v != t


class _DeviceTables:
    """The ensemble's tables on ``xp``, comparisons in ``cdt`` (float32 for float16 inputs)."""

    def __init__(self, xp, e: _Ensemble, cdt):
        self.n_nodes = int(e.feature.size)
        self.feature = xp.asarray(e.feature)
        self.split = xp.asarray(e.split.astype(cdt))
        self.mode = xp.asarray(e.mode)
        self.true_child = xp.asarray(e.true_child)
        self.false_child = xp.asarray(e.false_child)
        self.any_missing = bool(e.missing_true.any())
        self.missing_true = xp.asarray(e.missing_true)
        self.modes = sorted(set(e.mode.tolist()))
        self.member_set = xp.asarray(e.member_set)
        self.members = xp.asarray(e.members.astype(cdt))
        self.roots = xp.asarray(e.roots)
        self.leaf_target = xp.asarray(e.leaf_target)
        self.leaf_weight = xp.asarray(e.leaf_weight)


def _walk(xp, x, tab: _DeviceTables, cdt):
    """Leaf index reached by each (sample, tree) pair of ``x``: int64 [rows, n_trees]."""
    rows, n_trees = x.shape[0], int(tab.roots.size)
    slots = rows * n_trees
    leaf = xp.empty(slots, dtype=np.int64)
    node = xp.tile(tab.roots, rows)
    act = xp.arange(slots, dtype=np.int64)
    done = node >= tab.n_nodes
    leaf[act[done]] = node[done] - tab.n_nodes
    act, node = act[~done], node[~done]
    for _ in range(tab.n_nodes + 1):
        if act.size == 0:
            return leaf.reshape(rows, n_trees)
        v = x[act // n_trees, tab.feature[node]].astype(cdt, copy=False)
        if len(tab.modes) == 1 and tab.modes[0] != _MEMBER:
            cond = _compare(xp, tab.modes[0], v, tab.split[node])
        else:
            mode = tab.mode[node]
            cond = xp.zeros(node.shape, dtype=bool)
            for m in tab.modes:
                sel = mode == m
                if m == _MEMBER:
                    sets = tab.members[tab.member_set[node[sel]]]
                    cond[sel] = (v[sel][:, None] == sets).any(axis=1)
                else:
                    cond[sel] = _compare(xp, m, v[sel], tab.split[node[sel]])
        if tab.any_missing:
            cond |= tab.missing_true[node] & xp.isnan(v)
        node = xp.where(cond, tab.true_child[node], tab.false_child[node])
        done = node >= tab.n_nodes
        leaf[act[done]] = node[done] - tab.n_nodes
        act, node = act[~done], node[~done]
    raise NodeExecutionError("TreeEnsemble: a tree has a cycle (a walk did not reach a leaf within "
                             f"{tab.n_nodes} nodes)")


def _aggregate(xp, leaf, tab: _DeviceTables, n_targets: int, aggregate: int):
    """Per-sample, per-target scores (float64 [rows, n_targets]) from the leaves reached."""
    rows, n_trees = leaf.shape
    target = tab.leaf_target[leaf]
    weight = tab.leaf_weight[leaf]
    flat = (xp.arange(rows, dtype=np.int64)[:, None] * n_targets + target).reshape(-1)
    size = rows * n_targets
    if aggregate in (0, 1):  # AVERAGE, SUM
        acc = xp.bincount(flat, weights=weight.reshape(-1), minlength=size).reshape(rows, n_targets)
        if aggregate == 0:
            acc /= n_trees
        return acc
    reduce = xp.minimum if aggregate == 2 else xp.maximum
    acc = xp.full((rows, n_targets), np.inf if aggregate == 2 else -np.inf)
    r = xp.arange(rows)
    for j in range(n_trees):  # one leaf per sample per tree: no repeated (row, target) in one step
        t = target[:, j]
        acc[r, t] = reduce(acc[r, t], weight[:, j])
    hit = xp.bincount(flat, minlength=size).reshape(rows, n_targets) > 0
    acc[~hit] = 0.0  # a target no tree scored stays 0, as for SUM
    return acc


def _probit(xp, host, s):
    """Inverse standard-normal CDF; 0 and 1 give -inf and inf, outside [0, 1] gives NaN."""
    p = np.asarray(host(s), dtype=np.float64)
    out = np.full(p.shape, np.nan)
    inside = (p > 0) & (p < 1)
    inv = NormalDist().inv_cdf
    out[inside] = [inv(float(v)) for v in p[inside]]
    out[p == 0] = -np.inf
    out[p == 1] = np.inf
    return xp.asarray(out)


def _post_transform(xp, host, s, transform: int):
    """Apply NONE / SOFTMAX / LOGISTIC / SOFTMAX_ZERO / PROBIT row-wise to float64 scores."""
    if transform == 1:
        e = xp.exp(s - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if transform == 2:
        return 0.5 * (1.0 + xp.tanh(0.5 * s))  # the logistic, without overflow for large |s|
    if transform == 3:  # softmax over the non-zero scores; zeros stay zero
        nz = s != 0
        top = xp.where(nz, s, -np.inf).max(axis=1, keepdims=True)
        e = xp.where(nz, xp.exp(xp.where(nz, s - top, 0.0)), 0.0)
        total = e.sum(axis=1, keepdims=True)
        return e / xp.where(total > 0, total, 1.0)
    if transform == 4:
        return _probit(xp, host, s)
    return s


def _run_ensemble(ctx, x, e: _Ensemble):
    xp = ctx.xp
    out = ctx.out(0, (int(x.shape[0]), e.n_targets), x.dtype)
    cdt = np.float32 if x.dtype == np.float16 else x.dtype
    tab = _DeviceTables(xp, e, cdt)
    n_trees = int(e.roots.size)
    step = max(1, scaled(_SLOTS_PER_CHUNK, tile_bytes_of(ctx)) // n_trees)
    for r0 in range(0, int(x.shape[0]), step):
        chunk = x[r0:r0 + step]
        scores = _aggregate(xp, _walk(xp, chunk, tab, cdt), tab, e.n_targets, e.aggregate)
        out[r0:r0 + chunk.shape[0]] = _post_transform(xp, ctx.host, scores, e.transform)
    return out


@op("TreeEnsemble", since=5, domain="ai.onnx.ml")
def tree_ensemble(ctx, x):
    """Regression/classification scores of a tree ensemble: [N, F] features -> [N, n_targets]."""
    if x.dtype not in _FLOATS:
        raise _fail("TreeEnsemble", f"input X must be float16, float32 or float64, got {x.dtype}")
    if x.ndim != 2:
        raise _fail("TreeEnsemble", f"input X must have rank 2 [N, F], got shape {tuple(x.shape)}")
    return _run_ensemble(ctx, x, _tree_ensemble_tables(ctx, x, "TreeEnsemble"))
