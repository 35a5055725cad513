"""im2col bands multiplied whole where no product is small enough for its bytes to follow its width
(``ops/blas_widths.py``): wider bands, one product each, in the modes whose plans have room to
spare, the same bytes as the narrow bands of the modes without; and where a product is small, or the
BLAS build fails the check, the narrow products as before."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import gpuinfer
import gpuinfer.ops.blas_widths as blas_widths
import gpuinfer.ops.conv as conv_module
from gpuinfer.ops.conv import COLUMN_TILE_BYTES, conv_geometry
from tests.node_helpers import run_onnxruntime

SAME = {"pads": [1, 1, 1, 1]}


@pytest.fixture
def failing_build(monkeypatch):
    """A BLAS build whose products' bytes follow their width (the check's answer, not the build's)."""
    monkeypatch.setattr(blas_widths, "_build_agrees", lambda: False)


def test_only_big_products_are_free_of_their_width():
    assert not blas_widths.width_free(16, 144, 240)  # 553k multiply-adds: small-matrix kernels' size
    assert blas_widths.width_free(256, 2304, 112) == blas_widths._build_agrees()
    assert blas_widths.width_free(64, 576, 128) == blas_widths._build_agrees()  # just above WIDE_PRODUCT


def test_the_build_check_fails_where_a_column_follows_its_width(monkeypatch):
    """A matmul whose columns change with the product's width (as small ones do) fails the check."""
    real = np.matmul
    monkeypatch.setattr(blas_widths.np, "matmul", lambda a, b: real(a, b) + np.float32(b.shape[1] * 1e-3))
    assert not blas_widths._probes_agree()
    monkeypatch.setattr(blas_widths.np, "matmul", real)
    assert blas_widths._probes_agree()


def _band_bytes(g) -> int:
    shape, dtype = g.scratch[-1]
    return int(np.prod(shape)) * np.dtype(dtype).itemsize


def test_big_weights_get_whole_band_products_as_big_as_the_weights():
    """VGG-19's 512 -> 512 at 28x28: bands of 2 rows, widened by the slack up to the weights'
    9.4 MB (not 1 MiB), and one product a band."""
    x_shape, w_shape = (1, 512, 28, 28), (512, 512, 3, 3)
    least = conv_geometry(SAME, x_shape, w_shape, np.float32)
    wide = conv_geometry(SAME, x_shape, w_shape, np.float32, slack=64 << 20)
    assert least.tile == 2 and least.gemm_rows == 0
    if not blas_widths._build_agrees():
        pytest.skip("this BLAS build's products follow their width")
    assert wide.gemm_rows == 0 and wide.tile > least.tile and wide.tile % least.tile == 0
    assert COLUMN_TILE_BYTES < _band_bytes(wide) <= 512 * 512 * 9 * 4


def test_a_failed_build_check_keeps_the_narrow_products(failing_build):
    x_shape, w_shape = (1, 512, 28, 28), (512, 512, 3, 3)
    least = conv_geometry(SAME, x_shape, w_shape, np.float32)
    wide = conv_geometry(SAME, x_shape, w_shape, np.float32, slack=64 << 20)
    assert wide.gemm_rows == least.tile and _band_bytes(wide) <= COLUMN_TILE_BYTES


@pytest.mark.parametrize("x_shape, w_shape", [
    ((1, 16, 80, 80), (16, 16, 3, 3)),  # nudenet's: 16 x 144 x (3 rows of 80), a small product
    ((1, 256, 20, 20), (256, 256, 3, 3)),  # whole bands of 9 rows; the last 2 rows' product is not small
])
def test_products_are_whole_only_where_no_narrow_one_is_small(x_shape, w_shape):
    least = conv_geometry(SAME, x_shape, w_shape, np.float32)
    wide = conv_geometry(SAME, x_shape, w_shape, np.float32, slack=64 << 20)
    row = x_shape[3]
    narrow = [least.tile * row] + ([x_shape[2] % least.tile * row] if x_shape[2] % least.tile else [])
    small = any(w_shape[0] * w_shape[1] * 9 * n < blas_widths.WIDE_PRODUCT for n in narrow)
    assert (wide.gemm_rows == 0) == (not small and blas_widths._build_agrees())
    if wide.gemm_rows:
        assert wide.gemm_rows == least.tile


def test_a_small_last_band_keeps_the_narrow_products(monkeypatch):
    """Bands of 14 rows on 29 leave a last band of 1 row: its product (alone in the narrow plan,
    inside a wider one in the wide plan) is below WIDE_PRODUCT, so none is multiplied whole."""
    monkeypatch.setattr(blas_widths, "_build_agrees", lambda: True)
    x_shape, w_shape = (1, 256, 29, 8), (160, 256, 3, 3)
    least = conv_geometry(SAME, x_shape, w_shape, np.float32)
    assert least.path == "im2col" and 160 * 2304 * least.tile * 8 >= blas_widths.WIDE_PRODUCT
    tail = x_shape[2] % least.tile
    assert tail and 160 * 2304 * tail * 8 < blas_widths.WIDE_PRODUCT
    assert conv_geometry(SAME, (1, 256, 28, 8), w_shape, np.float32, slack=64 << 20).gemm_rows == 0  # no tail
    assert conv_geometry(SAME, x_shape, w_shape, np.float32, slack=64 << 20).gemm_rows == least.tile


def _net():
    """A big early step (16 -> 64 at 128x128, the plan's busiest) pooled down to 16x16, then a
    256 -> 256 3x3 conv with room to spare: its least band is 7 rows, the slack's 14."""
    rng = np.random.default_rng(8)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.05).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("Conv", ["p", "w2"], ["q"]),
             helper.make_node("Conv", ["q", "w3"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "widths", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 128, 128])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256, 16, 16])],
                              [weight("w1", 64, 16, 3, 3), weight("w2", 256, 64, 1, 1), weight("w3", 256, 256, 3, 3)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, {"x": rng.standard_normal((1, 16, 128, 128)).astype(np.float32)}


def _product_widths(monkeypatch):
    """Columns of every im2col product the 256 -> 256 conv makes, as the kernel calls them."""
    real, widths = conv_module._band_products, []

    def spy(xp, wr, cols_g, out_n, r0, rows, row, gemm_rows):
        if wr.shape[1] == 256:
            widths.extend(min(gemm_rows, rows - s) * row for s in range(0, rows, gemm_rows))
        return real(xp, wr, cols_g, out_n, r0, rows, row, gemm_rows)

    monkeypatch.setattr(conv_module, "_band_products", spy)
    return widths


def test_modes_agree_bitwise_with_whole_band_products(monkeypatch):
    model, feeds = _net()
    widths = _product_widths(monkeypatch)
    outputs = {}
    for mode in ("per_tensor", "reuse", "reduce", "arena"):
        widths.clear()
        outputs[mode] = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode).run(None, feeds)[0]
        if mode == "per_tensor":
            assert max(widths) == 7 * 16  # the least band's products
        elif mode == "arena" and blas_widths._build_agrees():
            assert max(widths) > 7 * 16  # bands widened by the slack, one product each
    for mode, got in outputs.items():
        assert np.array_equal(got, outputs["per_tensor"]), mode
    np.testing.assert_allclose(outputs["arena"], run_onnxruntime(model, feeds)[0], rtol=1e-3, atol=1e-4)


def test_a_failed_build_check_keeps_arena_on_narrow_products(monkeypatch, failing_build):
    model, feeds = _net()
    widths = _product_widths(monkeypatch)
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode="arena")
    sess.run(None, feeds)
    assert sess.plan_for(feeds).scratch_slack
    assert widths and max(widths) == 7 * 16
