"""TreeEnsemble (ai.onnx.ml opset 5) against onnxruntime, which implements it (the reference is the oracle
only where onnxruntime lacks a case: float16 inputs)."""
from __future__ import annotations

from statistics import NormalDist

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from gpuinfer.errors import NodeExecutionError
from tests.node_helpers import np_to_onnx_type, run_kernel, run_onnxruntime

ML = "ai.onnx.ml"
TENSOR_ATTRS = ("nodes_splits", "nodes_modes", "leaf_weights", "membership_values", "nodes_hitrates")


def model_for(attrs: dict, dtype) -> onnx.ModelProto:
    """A one-node TreeEnsemble model; numpy-array attributes become tensor attributes."""
    kw = {k: (onnx.numpy_helper.from_array(v, k) if isinstance(v, np.ndarray) else v) for k, v in attrs.items()}
    node = helper.make_node("TreeEnsemble", ["X"], ["Y"], domain=ML, **kw)
    t = np_to_onnx_type(dtype)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", t, [None, None])],
                              [helper.make_tensor_value_info("Y", t, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(ML, 5)])
    model.ir_version = 10
    return model


def kernel(x, attrs):
    return run_kernel("TreeEnsemble", [x], opset=5, domain=ML, **attrs)[0]


def check(x, attrs, rtol=1e-5, atol=1e-6):
    expected = run_onnxruntime(model_for(attrs, x.dtype), {"X": x})[0]
    got = kernel(x, attrs)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)
    return got


def random_ensemble(rng, dtype, n_features=4, n_trees=3, depth=4, n_targets=2, modes=range(7),
                    aggregate=1, transform=0, missing=True):
    """Random trees (nodes listed in creation order, so MEMBER sets follow node order)."""
    feat, split, mode, tid, tleaf, fid, fleaf, miss, sets = [], [], [], [], [], [], [], [], []
    leaf_t, leaf_w = [], []
    grid = np.round(np.linspace(-2, 2, 9), 1)

    def leaf():
        leaf_t.append(int(rng.integers(n_targets)))
        leaf_w.append(float(np.round(rng.normal(), 3)))
        return len(leaf_t) - 1, 1

    def build(level):
        if level == depth or (level > 1 and rng.random() < 0.2):
            return leaf()
        i = len(feat)
        m = int(rng.choice(list(modes)))
        # MEMBER nodes test feature 0, which random_x keeps integer: onnxruntime truncates x to an
        # integer before its set lookup (so 1.6 would be "in" {1}), unlike the spec's exact membership
        feat.append(0 if m == 6 else int(rng.integers(n_features)))
        mode.append(m)
        if m == 6:
            # integers: onnxruntime only implements integer set members
            sets.append(sorted(set(rng.integers(-2, 3, size=int(rng.integers(1, 4))).tolist())))
            split.append(0.0)
        else:
            split.append(float(rng.choice(grid)))
        miss.append(int(rng.integers(2)))
        tid.append(0), tleaf.append(0), fid.append(0), fleaf.append(0)
        tid[i], tleaf[i] = build(level + 1)
        fid[i], fleaf[i] = build(level + 1)
        return i, 0

    roots = []
    for _ in range(n_trees):
        root, is_leaf = build(0)
        assert not is_leaf
        roots.append(root)
    attrs = dict(nodes_featureids=feat, nodes_splits=np.array(split, dtype),
                 nodes_modes=np.array(mode, np.uint8), nodes_truenodeids=tid, nodes_trueleafs=tleaf,
                 nodes_falsenodeids=fid, nodes_falseleafs=fleaf, leaf_targetids=leaf_t,
                 leaf_weights=np.array(leaf_w, dtype), tree_roots=roots, n_targets=n_targets,
                 aggregate_function=aggregate, post_transform=transform)
    if missing:
        attrs["nodes_missing_value_tracks_true"] = miss
    if sets:
        attrs["membership_values"] = np.array([v for s in sets for v in s + [np.nan]], dtype)
    return attrs


def random_x(rng, dtype, n=64, n_features=4, nan_fraction=0.1):
    x = rng.choice(np.round(np.linspace(-2.2, 2.2, 23), 1), size=(n, n_features)).astype(dtype)
    x[:, 0] = rng.integers(-3, 4, size=n)
    x[rng.random(x.shape) < nan_fraction] = np.nan
    return x


def stump(mode, split, missing=None, n_targets=2, dtype=np.float32, **extra):
    """One node: true -> leaf 0 (target 0, weight 1), false -> leaf 1 (target 1, weight 2)."""
    attrs = dict(nodes_featureids=[0], nodes_splits=np.array([split], dtype), nodes_modes=np.array([mode], np.uint8),
                 nodes_truenodeids=[0], nodes_trueleafs=[1], nodes_falsenodeids=[1], nodes_falseleafs=[1],
                 leaf_targetids=[0, 1], leaf_weights=np.array([1.0, 2.0], dtype), tree_roots=[0],
                 n_targets=n_targets)
    if missing is not None:
        attrs["nodes_missing_value_tracks_true"] = [missing]
    attrs.update(extra)
    return attrs


@pytest.mark.parametrize("mode", range(6))
@pytest.mark.parametrize("missing", [None, 0, 1])
def test_each_mode_and_missing_value(mode, missing):
    x = np.array([[np.nan], [1.0], [0.5], [1.5], [-np.inf], [np.inf]], np.float32)
    got = check(x, stump(mode, 1.0, missing))
    ops = [np.less_equal, np.less, np.greater_equal, np.greater, np.equal, np.not_equal]
    with np.errstate(invalid="ignore"):
        true = ops[mode](x[:, 0], 1.0) | ((missing == 1) & np.isnan(x[:, 0]))
    np.testing.assert_array_equal(got, np.where(true[:, None], [[1, 0]], [[0, 2]]).astype(np.float32))


@pytest.mark.parametrize("missing", [0, 1])
def test_member_sets(missing):
    # onnxruntime only takes integer set members. node 0: x0 in {1, 3}; node 1 (its false branch): x1 in {7}; node 2: x1 in {-1}
    attrs = dict(nodes_featureids=[0, 1, 1], nodes_splits=np.array([np.nan, 0, np.nan], np.float32),
                 nodes_modes=np.array([6, 6, 6], np.uint8), nodes_truenodeids=[2, 0, 0], nodes_trueleafs=[0, 1, 1],
                 nodes_falsenodeids=[1, 1, 2], nodes_falseleafs=[0, 1, 1], leaf_targetids=[0, 1, 2],
                 leaf_weights=np.array([1, 10, 100], np.float32), tree_roots=[0], n_targets=3,
                 membership_values=np.array([1, 3.0, np.nan, 7, np.nan, -1, np.nan], np.float32),
                 nodes_missing_value_tracks_true=[missing] * 3)
    x = np.array([[1, -1], [3.0, 0], [4, -1], [np.nan, -1], [3.0, np.nan], [np.nan, np.nan], [0, 7]], np.float32)
    check(x, attrs)
    # An empty set (onnxruntime refuses it) matches nothing: only NaN, when missing values track true.
    # The last set may also omit its closing NaN.
    empty = dict(attrs, membership_values=np.array([1, 3.0, np.nan, np.nan, -1], np.float32))
    got = kernel(x, empty)
    node1_true = np.isnan(x[:, 1]) & (missing == 1)  # true -> leaf 0 (1), false -> leaf 1 (10)
    in_first = np.isin(x[:, 0], [1, 3.0]) | (np.isnan(x[:, 0]) & (missing == 1))
    in_third = np.isin(x[:, 1], [-1]) | (np.isnan(x[:, 1]) & (missing == 1))
    expected = np.zeros((len(x), 3), np.float32)
    for r in range(len(x)):
        if in_first[r]:
            expected[r, 0 if in_third[r] else 2] = 1 if in_third[r] else 100
        else:
            expected[r, 0 if node1_true[r] else 1] = 1 if node1_true[r] else 10
    np.testing.assert_array_equal(got, expected)


def test_member_is_exact_equality_like_the_reference():
    # onnxruntime truncates x to an integer for set lookups; the spec (reference evaluator) does not
    attrs = dict(stump(6, 0.0), membership_values=np.array([1, 2, np.nan], np.float32))
    x = np.array([[1.0], [1.5], [2.0], [0.99], [np.nan]], np.float32)
    got = kernel(x, attrs)
    np.testing.assert_array_equal(got, [[1, 0], [0, 2], [1, 0], [0, 2], [0, 2]])
    np.testing.assert_array_equal(got, ReferenceEvaluator(model_for(attrs, np.float32)).run(None, {"X": x})[0])


def test_backend_style_single_tree_float64():
    attrs = dict(nodes_featureids=[0, 0, 0], nodes_splits=np.array([3.14, 1.2, 4.2]),
                 nodes_modes=np.array([0, 0, 0], np.uint8), nodes_truenodeids=[1, 0, 1], nodes_trueleafs=[0, 1, 1],
                 nodes_falsenodeids=[2, 2, 3], nodes_falseleafs=[0, 1, 1], leaf_targetids=[0, 1, 0, 1],
                 leaf_weights=np.array([5.23, 12.12, -12.23, 7.21]), tree_roots=[0], n_targets=2)
    got = check(np.array([[1.2, 3.4], [-0.12, 1.66], [4.14, 1.77]]), attrs)
    np.testing.assert_array_equal(got, [[5.23, 0], [5.23, 0], [0, 12.12]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("aggregate", range(4))
@pytest.mark.parametrize("seed", range(3))
def test_random_ensembles_each_aggregate(dtype, aggregate, seed):
    rng = np.random.default_rng(seed)
    attrs = random_ensemble(rng, dtype, n_trees=int(rng.integers(1, 6)), n_targets=int(rng.integers(1, 4)),
                            aggregate=aggregate)
    check(random_x(rng, dtype), attrs)


@pytest.mark.parametrize("modes", [[0], [3], [6], [4, 5]])
def test_random_ensembles_single_mode_paths(modes):
    rng = np.random.default_rng(7)
    attrs = random_ensemble(rng, np.float32, n_trees=5, depth=6, n_targets=3, modes=modes, missing=False)
    check(random_x(rng, np.float32, n=200), attrs)


def test_many_trees_many_rows_chunks(monkeypatch):
    from gpuinfer.ops import trees
    rng = np.random.default_rng(3)
    attrs = random_ensemble(rng, np.float32, n_trees=20, depth=5, n_targets=4, aggregate=0)
    x = random_x(rng, np.float32, n=500)
    whole = check(x, attrs)
    monkeypatch.setattr(trees, "_SLOTS_PER_CHUNK", 7 * 20 + 3)  # chunks of 7 rows, last one short
    np.testing.assert_array_equal(kernel(x, attrs), whole)


def test_one_leaf_trees_and_empty_batch():
    # tree 0 is a single leaf (both branches the same leaf; its feature id is never read); tree 1 a stump
    attrs = dict(nodes_featureids=[99, 0], nodes_splits=np.array([0, 0.5], np.float32),
                 nodes_modes=np.array([0, 0], np.uint8), nodes_truenodeids=[0, 1], nodes_trueleafs=[1, 1],
                 nodes_falsenodeids=[0, 2], nodes_falseleafs=[1, 1], leaf_targetids=[0, 0, 1],
                 leaf_weights=np.array([3, 1, 2], np.float32), tree_roots=[0, 1], n_targets=2)
    x = np.array([[0.0], [1.0]], np.float32)
    np.testing.assert_array_equal(kernel(x, attrs), [[4, 0], [3, 2]])
    empty = kernel(np.zeros((0, 1), np.float32), attrs)
    assert empty.shape == (0, 2) and empty.dtype == np.float32


def test_min_max_leave_unscored_targets_zero():
    x = np.array([[0.0], [2.0]], np.float32)
    for aggregate in (2, 3):
        got = check(x, stump(0, 1.0, aggregate_function=aggregate, n_targets=3))
        assert got[:, 2].tolist() == [0, 0]


def _raw(x, attrs):
    return run_onnxruntime(model_for(dict(attrs, post_transform=0), x.dtype), {"X": x})[0].astype(np.float64)


def _softmax(s):
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _softmax_zero(s):
    nz = s != 0
    e = np.where(nz, np.exp(np.where(nz, s - np.where(nz, s, -np.inf).max(axis=1, keepdims=True), 0)), 0)
    total = e.sum(axis=1, keepdims=True)
    return e / np.where(total > 0, total, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transform,fn", [(0, lambda s: s), (1, _softmax), (2, lambda s: 1 / (1 + np.exp(-s))),
                                          (3, _softmax_zero)])
def test_post_transforms(dtype, transform, fn):
    # onnxruntime 1.32 swaps codes 1 and 2 (its own enum has LOGISTIC=1, SOFTMAX=2), so the expected
    # values are the spec's formulas applied to onnxruntime's untransformed scores.
    rng = np.random.default_rng(11)
    attrs = random_ensemble(rng, dtype, n_trees=4, n_targets=4, transform=transform)
    x = random_x(rng, dtype)
    got = kernel(x, attrs)
    assert got.dtype == dtype and got.shape == (64, 4)
    np.testing.assert_allclose(got, fn(_raw(x, attrs)).astype(dtype), rtol=1e-5, atol=1e-6)


def test_softmax_zero_keeps_zeros_and_all_zero_rows():
    x = np.array([[0.0], [2.0]], np.float32)
    attrs = stump(0, 1.0, n_targets=3, post_transform=3)
    got = kernel(x, attrs)  # row 0 scores [1, 0, 0]; row 1 scores [0, 2, 0]
    np.testing.assert_array_equal(got, [[1, 0, 0], [0, 1, 0]])
    zero = dict(attrs, leaf_weights=np.array([0, 0], np.float32))
    np.testing.assert_array_equal(kernel(x, zero), np.zeros((2, 3)))


def test_probit():
    attrs = dict(stump(0, 1.0, n_targets=1, dtype=np.float64), leaf_targetids=[0, 0], post_transform=4)
    x = np.array([[0.0], [2.0]])
    for w0, w1 in [(0.975, 0.3), (0.5, 1e-6), (0.0, 1.0)]:
        got = kernel(x, dict(attrs, leaf_weights=np.array([w0, w1])))
        inv = [NormalDist().inv_cdf(w) if 0 < w < 1 else (-np.inf if w == 0 else np.inf) for w in (w0, w1)]
        np.testing.assert_allclose(got[:, 0], inv, rtol=1e-12)
    assert abs(kernel(x, dict(attrs, leaf_weights=np.array([0.975, 0.3])))[0, 0] - 1.959963985) < 1e-8
    # onnxruntime uses a coarse erfinv approximation: agree to about 1e-3
    x32 = x.astype(np.float32)
    a32 = dict(attrs, nodes_splits=np.array([1.0], np.float32), leaf_weights=np.array([0.8, 0.3], np.float32))
    np.testing.assert_allclose(kernel(x32, a32), run_onnxruntime(model_for(a32, np.float32), {"X": x32})[0],
                               rtol=2e-3)


def test_float16_matches_reference_and_float32():
    rng = np.random.default_rng(5)
    attrs16 = random_ensemble(rng, np.float16, n_trees=3, n_targets=2, missing=True)
    x16 = random_x(rng, np.float16)
    got = kernel(x16, attrs16)
    assert got.dtype == np.float16
    attrs32 = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == np.float16 else v)
               for k, v in attrs16.items()}
    ort32 = run_onnxruntime(model_for(attrs32, np.float32), {"X": x16.astype(np.float32)})[0]
    np.testing.assert_allclose(got, ort32.astype(np.float16), rtol=2e-3, atol=2e-3)
    ref = ReferenceEvaluator(model_for(attrs16, np.float16)).run(None, {"X": x16})[0]
    np.testing.assert_allclose(got.astype(np.float32), ref.astype(np.float32), rtol=5e-3, atol=5e-3)


def test_n_targets_inferred_when_absent():
    attrs = stump(0, 1.0)
    del attrs["n_targets"]
    assert kernel(np.array([[0.0]], np.float32), attrs).shape == (1, 2)


def _bad(**changes):
    attrs = stump(0, 1.0)
    attrs.update(changes)
    return attrs


@pytest.mark.parametrize("x,attrs,message", [
    (np.zeros(3, np.float32), stump(0, 1.0), "rank 2"),
    (np.zeros((2, 1), np.int64), stump(0, 1.0), "float16, float32 or float64"),
    (np.zeros((2, 1), np.float32), _bad(nodes_featureids=[0, 0]), "'nodes_splits' has 1 entries, expected 2"),
    (np.zeros((2, 1), np.float32), _bad(nodes_modes=np.array([7], np.uint8)), "'nodes_modes' must be in"),
    (np.zeros((2, 1), np.float32), _bad(nodes_truenodeids=[2]), "'nodes_truenodeids'[0] = 2 is not a valid leaf"),
    (np.zeros((2, 1), np.float32), _bad(nodes_falseleafs=[0]), "'nodes_falsenodeids'[0] = 1 is not a valid node"),
    (np.zeros((2, 1), np.float32), _bad(nodes_trueleafs=[2]), "'nodes_trueleafs' must hold 0 or 1"),
    (np.zeros((2, 1), np.float32), _bad(leaf_targetids=[0, 2]), "'leaf_targetids' must be in [0, 2)"),
    (np.zeros((2, 1), np.float32), _bad(leaf_weights=np.array([1.0], np.float32)), "'leaf_weights' has 1"),
    (np.zeros((2, 1), np.float32), _bad(tree_roots=[1]), "'tree_roots' must index nodes in [0, 1)"),
    (np.zeros((2, 1), np.float32), _bad(tree_roots=[]), "'tree_roots' is empty"),
    (np.zeros((2, 1), np.float32), _bad(aggregate_function=4), "'aggregate_function' must be 0..3"),
    (np.zeros((2, 1), np.float32), _bad(post_transform=5), "'post_transform' must be 0..4"),
    (np.zeros((2, 1), np.float32), _bad(nodes_featureids=[1]), "'nodes_featureids'[0] = 1 is out of range"),
    (np.zeros((2, 1), np.float32), _bad(nodes_splits=np.array([1.0])), "must have the input's type float32"),
    (np.zeros((2, 1), np.float32), _bad(nodes_missing_value_tracks_true=[1, 0]),
     "'nodes_missing_value_tracks_true' has 2"),
    (np.zeros((2, 1), np.float32), _bad(nodes_modes=np.array([6], np.uint8)), "no 'membership_values'"),
    (np.zeros((2, 1), np.float32), _bad(nodes_modes=np.array([6], np.uint8),
                                        membership_values=np.array([1, np.nan, 2, np.nan], np.float32)),
     "holds 2 NaN-delimited set(s) but 1 node(s)"),
    (np.zeros((2, 1), np.float32), {k: v for k, v in stump(0, 1.0).items() if k != "tree_roots"},
     "'tree_roots' is required"),
])
def test_errors(x, attrs, message):
    with pytest.raises(NodeExecutionError) as info:
        kernel(x, attrs)
    assert "TreeEnsemble" in str(info.value) and message in str(info.value)


def test_cycle_is_an_error():
    attrs = dict(nodes_featureids=[0, 0], nodes_splits=np.array([1, 1], np.float32),
                 nodes_modes=np.array([0, 0], np.uint8), nodes_truenodeids=[1, 0], nodes_trueleafs=[0, 0],
                 nodes_falsenodeids=[0, 0], nodes_falseleafs=[1, 1], leaf_targetids=[0],
                 leaf_weights=np.array([1], np.float32), tree_roots=[0], n_targets=1)
    with pytest.raises(NodeExecutionError, match="cycle"):
        kernel(np.zeros((2, 1), np.float32), attrs)
