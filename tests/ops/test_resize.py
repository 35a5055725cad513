"""Resize and Upsample against onnxruntime: modes, coordinate transforms, nearest modes, opset changes."""
import math

import numpy as np
import pytest

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.context import StandaloneContext
from gpuinfer.ops.registry import lookup
from tests.node_helpers import check_against_onnxruntime, run_kernel

rng = np.random.default_rng(0)
X = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)
TOL = dict(rtol=1e-4, atol=1e-5)


def F(*v):
    return np.array(v, np.float32)


def I(*v):
    return np.array(v, np.int64)


CTMS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn"]
SCALES = [F(1, 1, 2, 2), F(1, 1, 0.5, 0.6), F(1, 1, 1.7, 2.3), F(1, 1, 3, 1)]
SIZES = [I(2, 3, 14, 18), I(2, 3, 4, 5), I(2, 3, 1, 1), I(2, 3, 13, 20)]


def _modes():
    for mode in ["nearest", "linear", "cubic"]:
        for ctm in CTMS:
            if ctm != "tf_half_pixel_for_nn" or mode == "nearest":
                yield mode, ctm


@pytest.mark.parametrize("mode,ctm", list(_modes()))
def test_resize_scales(mode, ctm):
    for sc in SCALES:
        check_against_onnxruntime("Resize", [X, None, sc], opset=13, mode=mode, coordinate_transformation_mode=ctm,
                                  constant_inputs=[2], **TOL)


@pytest.mark.parametrize("mode,ctm", list(_modes()))
def test_resize_sizes(mode, ctm):
    for sz in SIZES:
        check_against_onnxruntime("Resize", [X, None, None, sz], opset=13, mode=mode,
                                  coordinate_transformation_mode=ctm, constant_inputs=[3], **TOL)


@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
@pytest.mark.parametrize("ctm", ["half_pixel", "asymmetric", "align_corners"])
def test_resize_nearest_modes(nearest_mode, ctm):
    for sc in [F(1, 1, 2, 2), F(1, 1, 0.5, 0.6), F(1, 1, 1.7, 2.3), F(1, 1, 3, 1.5)]:
        check_against_onnxruntime("Resize", [X, None, sc], opset=13, mode="nearest", nearest_mode=nearest_mode,
                                  coordinate_transformation_mode=ctm, constant_inputs=[2])


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_tf_crop_and_resize(mode):
    roi = F(0, 0, 0.2, -0.1, 1, 1, 0.9, 1.3)
    common = dict(mode=mode, coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=7.0, **TOL)
    check_against_onnxruntime("Resize", [X, roi, None, I(2, 3, 5, 6)], opset=13, constant_inputs=[1, 3], **common)
    check_against_onnxruntime("Resize", [X, roi, F(1, 1, 1.5, 0.8)], opset=13, constant_inputs=[1, 2], **common)


@pytest.mark.parametrize("sc", [F(1, 1, 0.5, 0.6), F(1, 1, 1.5, 1.6)])
@pytest.mark.parametrize("a", [-0.75, -0.5])
def test_resize_cubic_exclude_outside(sc, a):
    check_against_onnxruntime("Resize", [X, None, sc], opset=13, mode="cubic", exclude_outside=1, cubic_coeff_a=a,
                              constant_inputs=[2], **TOL)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_opset10_11_and_upsample(mode):
    for sc in [F(1, 1, 2, 2), F(1, 1, 0.5, 0.6), F(1, 1, 1.7, 2.3)]:
        check_against_onnxruntime("Resize", [X, sc], opset=10, mode=mode, constant_inputs=[1], **TOL)
        if sc[2] >= 1:  # onnxruntime's Upsample refuses downsampling
            check_against_onnxruntime("Upsample", [X, sc], opset=9, mode=mode, constant_inputs=[1], **TOL)
            check_against_onnxruntime("Upsample", [X], opset=7, mode=mode, scales=[float(v) for v in sc], **TOL)
    check_against_onnxruntime("Resize", [X, F(), F(1, 1, 2, 2)], opset=11, mode=mode, constant_inputs=[1, 2], **TOL)
    check_against_onnxruntime("Resize", [X, F(), F(), I(2, 3, 14, 18)], opset=11, mode=mode,
                              coordinate_transformation_mode="pytorch_half_pixel", constant_inputs=[1, 2, 3], **TOL)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("sc", [F(1, 1, 0.5, 0.6), F(1, 1, 0.3, 0.45), F(1, 1, 1.5, 2)])
def test_resize_antialias(mode, sc):
    check_against_onnxruntime("Resize", [X, None, sc], opset=18, mode=mode, antialias=1, constant_inputs=[2], **TOL)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_resize_axes_and_aspect_policy(policy):
    check_against_onnxruntime("Resize", [X, None, None, I(14, 12)], opset=18, axes=[2, 3],
                              keep_aspect_ratio_policy=policy, mode="linear", constant_inputs=[3], **TOL)


def test_resize_opset18_19_misc():
    check_against_onnxruntime("Resize", [X, None, F(2, 0.5)], opset=18, axes=[3, -2], mode="linear",
                              constant_inputs=[2], **TOL)
    check_against_onnxruntime("Resize", [X, None, F(1.5, 1.5)], opset=19, axes=[2, 3], mode="linear",
                              coordinate_transformation_mode="half_pixel_symmetric", constant_inputs=[2], **TOL)
    check_against_onnxruntime("Resize", [X, None, F(1, 1, 2, 2)], opset=13, mode="nearest")  # runtime scales


def test_resize_5d_and_integers():
    x5 = rng.standard_normal((1, 2, 3, 4, 5)).astype(np.float32)
    check_against_onnxruntime("Resize", [x5, None, F(1, 1, 2, 1.5, 0.5)], opset=13, mode="linear",
                              constant_inputs=[2], **TOL)
    xu = rng.integers(0, 255, (1, 2, 5, 6)).astype(np.uint8)
    check_against_onnxruntime("Resize", [xu, None, F(1, 1, 2, 2)], opset=13, mode="nearest", constant_inputs=[2])
    check_against_onnxruntime("Resize", [xu, None, F(1, 1, 2, 2)], opset=13, mode="linear", constant_inputs=[2])


def test_resize_identity_copies():
    check_against_onnxruntime("Resize", [X, None, F(1, 1, 1, 1)], opset=13, mode="linear", constant_inputs=[2])


def test_resize_scratch_matches_requests():
    """Given the output shape, the scratch function predicts exactly what the kernel asks for."""
    spec = lookup("Resize", 13)
    for mode, sizes in [("linear", I(2, 3, 14, 18)), ("linear", I(2, 3, 4, 20)), ("nearest", I(2, 3, 14, 18)),
                        ("cubic", I(2, 3, 4, 5)), ("linear", I(2, 3, 7, 20))]:
        requested = []

        class Ctx(StandaloneContext):
            def scratch(self, shape, dtype):
                requested.append((tuple(shape), np.dtype(dtype)))
                return super().scratch(shape, dtype)

        attrs = {"mode": mode}
        out = spec.kernel(Ctx(attrs=attrs, opset=13), X, None, None, sizes)
        predicted = spec.scratch(attrs, [X.shape, None, None, (4,)], [X.dtype, None, None, np.dtype(np.int64)],
                                 output_shapes=[out.shape])
        assert requested == [(tuple(s), np.dtype(d)) for s, d in predicted], (mode, sizes)


def test_resize_errors():
    with pytest.raises(NodeExecutionError, match="Resize"):
        run_kernel("Resize", [X, None, None, None], opset=13)
    with pytest.raises(NodeExecutionError, match="Resize"):
        run_kernel("Resize", [X, None, F(1, 2)], opset=13)


def test_upsample7_scratch_is_predicted_from_attributes():
    spec = lookup("Upsample", 7)
    attrs = {"mode": "linear", "scales": [1.0, 1.0, 2.0, 3.0]}
    requested = []

    class Ctx(StandaloneContext):
        def scratch(self, shape, dtype):
            requested.append((tuple(shape), np.dtype(dtype)))
            return super().scratch(shape, dtype)

    spec.kernel(Ctx(attrs=attrs, opset=7), X)
    predicted = spec.scratch(attrs, [X.shape], [X.dtype])
    assert requested and requested == [(tuple(s), np.dtype(d)) for s, d in predicted]


@pytest.mark.parametrize("ctm", CTMS[:4])
@pytest.mark.parametrize("scales", [F(1, 1, 2, 2), F(1, 1, 4, 3), F(1, 1, 8, 1), F(1, 2, 1, 1), F(1, 1, 1, 32)])
def test_linear_integer_upsampling(ctm, scales):
    """Integer-factor linear upsampling (u2netp's 38 Resize nodes are 2x to 32x), on short axes
    where clamping reaches every output position near the edges, and on a leading axis."""
    x = rng.standard_normal((1, 3, 5, 2)).astype(np.float32)
    check_against_onnxruntime("Resize", [x, None, scales], opset=13, mode="linear",
                              coordinate_transformation_mode=ctm, constant_inputs=[2], **TOL)


def test_linear_upsampling_on_threads_and_in_float64(monkeypatch):
    """A resize big enough to be split over a session's threads (it is: the pool's ``run`` is
    called), and a float64 one (onnxruntime has no float64 Resize: held to its float32 result):
    the same as onnxruntime."""
    import gpuinfer
    from gpuinfer.backends import numpy_threads
    from gpuinfer.ops import resize as resize_module
    from tests.node_helpers import run_onnxruntime, single_node_model

    monkeypatch.setattr(resize_module, "RESIZE_SHARE", 1)  # blocks of 26 channels: 958 KiB out each
    x = rng.standard_normal((1, 32, 48, 48)).astype(np.float32)  # over SPLIT_MIN_BYTES a block
    sc = F(1, 1, 2, 2)
    splits = []
    real_run = numpy_threads.RowThreads.run
    monkeypatch.setattr(numpy_threads.RowThreads, "run",
                        lambda self, blocks, body: (splits.append(len(blocks)), real_run(self, blocks, body)))
    model = single_node_model("Resize", [x, None, sc], 1, 13, constant_inputs=[2], mode="linear",
                              coordinate_transformation_mode="pytorch_half_pixel")
    (want,) = run_onnxruntime(model, {"in0": x})
    sess = gpuinfer.InferenceSession(model.SerializeToString(), device="cpu", intra_op_threads=2)
    np.testing.assert_allclose(sess.run(None, {"in0": x})[0], want, **TOL)
    assert splits and min(splits) >= 2, "the resize was not split over the threads"
    (got64,) = run_kernel("Resize", [x.astype(np.float64), None, sc], opset=13, mode="linear",
                          coordinate_transformation_mode="pytorch_half_pixel")
    assert got64.dtype == np.float64
    np.testing.assert_allclose(got64, want, **TOL)


def test_pass_order_takes_the_last_axis_first_where_no_memory_is_added():
    """The costly last-axis pass goes first on a 2x upsampling (it then resizes the small input);
    no order ever needs more scratch than shrinking-axes-first (the planned bound)."""
    from itertools import product

    from gpuinfer.ops.resize import _pass_order, _pass_sizes, _scratch_elements

    assert _pass_order((1, 64, 160, 160), (1, 64, 320, 320), [2, 3]) == [3, 2]
    assert _pass_order((1, 3, 100, 100), (1, 3, 50, 200), [2, 3]) == [2, 3]  # shrink first: smaller scratch
    for h, w, oh, ow, c, oc in product([3, 8, 20], [3, 8, 20], [2, 5, 40], [2, 6, 40], [2], [1, 2, 5]):
        i, o = (1, c, h, w), (1, oc, oh, ow)
        axes = [a for a in (1, 2, 3) if i[a] != o[a]]
        smallest = sorted(axes, key=lambda a: (o[a] / i[a], a))
        got, least = _pass_sizes(i, o, _pass_order(i, o, axes)), _pass_sizes(i, o, smallest)
        for into_output in (True, False):
            assert sum(_scratch_elements(got, into_output)) <= sum(_scratch_elements(least, into_output)), (i, o)


@pytest.mark.parametrize("shape,scales", [((2, 40, 30, 20), F(1, 1, 2, 3)), ((1, 64, 40, 40), F(1, 1, 2, 2)),
                                          ((2, 24, 64, 64), F(1, 1, 0.5, 2.5))])
def test_linear_resize_works_in_channel_blocks(monkeypatch, shape, scales):
    """A linear resize works a block of one image's channels at a time: its declared scratch holds a
    block (far below whole-tensor intermediates), it asks for exactly that, and it gives the bytes
    of one whole-tensor block and onnxruntime's values, over several images and a partial block."""
    from gpuinfer.ops import resize as resize_module

    x = rng.standard_normal(shape).astype(np.float32)
    spec = lookup("Resize", 13)
    out_shape = tuple(int(math.floor(d * s)) for d, s in zip(shape, scales))
    declared = spec.scratch({"mode": "linear"}, [x.shape, None, (4,)], [x.dtype, None, np.dtype(np.float32)],
                            output_shapes=[out_shape])
    order = resize_module._pass_order(x.shape, out_shape, [2, 3])
    sizes = resize_module._pass_sizes  # elements each pass makes, on the given shapes
    plane = sum(resize_module._scratch_elements(sizes((1, 1, *shape[2:]), (1, 1, *out_shape[2:]), order), True))
    whole = sum(resize_module._scratch_elements(sizes(x.shape, out_shape, order), True))
    block = resize_module.channel_block(x.shape, out_shape, [2, 3], 4, True)
    assert 1 <= block < shape[1]  # several blocks an image
    assert sum(n[0] for n, _ in declared) == plane * block < whole
    (got,) = check_against_onnxruntime("Resize", [x, None, scales], opset=13, mode="linear",
                                       constant_inputs=[2], **TOL)
    monkeypatch.setattr(resize_module, "RESIZE_SHARE", 1 / 1e9)  # one block: every channel at once
    (one_block,) = run_kernel("Resize", [x, None, scales], opset=13, mode="linear")
    np.testing.assert_array_equal(got, one_block)
