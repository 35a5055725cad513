"""DeformConv against onnxruntime: strides, dilations, pads, groups, offset groups, mask and bias."""
import numpy as np
import pytest

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from tests.node_helpers import check_against_onnxruntime, requested_scratch, run_kernel

rng = np.random.default_rng(0)


def make(n=2, c=4, hw=(7, 6), oc=6, k=(3, 2), strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0), group=1,
         offset_group=1, spread=2.0, mask=True, bias=True, dtype=np.float32):
    """Inputs whose offsets push many taps past the borders (sampled as zero)."""
    out = [(hw[d] + pads[d] + pads[d + 2] - (k[d] - 1) * dilations[d] - 1) // strides[d] + 1 for d in range(2)]
    taps = k[0] * k[1]
    x = rng.standard_normal((n, c, *hw)).astype(dtype)
    w = rng.standard_normal((oc, c // group, *k)).astype(dtype)
    offset = (rng.standard_normal((n, offset_group * taps * 2, *out)) * spread).astype(dtype)
    b = rng.standard_normal(oc).astype(dtype) if bias else None
    m = rng.random((n, offset_group * taps, *out)).astype(dtype) if mask else None
    attrs = dict(strides=list(strides), dilations=list(dilations), pads=list(pads), group=group,
                 offset_group=offset_group)
    return [x, w, offset, b, m], attrs


@pytest.mark.parametrize("case", [
    dict(),
    dict(strides=(2, 1), dilations=(1, 2), pads=(1, 0, 2, 1)),
    dict(strides=(1, 2), dilations=(2, 1), pads=(1, 1, 1, 1), group=2, offset_group=2),
    dict(group=4, offset_group=4, oc=8),
    dict(group=2, offset_group=1, mask=False),
    dict(offset_group=2, bias=False, spread=0.0),
    dict(k=(1, 1), hw=(4, 5), c=2, oc=3),
])
def test_deform_conv_matches_onnxruntime(case):
    inputs, attrs = make(**case)
    check_against_onnxruntime("DeformConv", inputs, opset=19, rtol=1e-4, atol=1e-4, **attrs)


def test_deform_conv_float64_and_kernel_shape_attr():
    inputs, attrs = make(dtype=np.float64, n=1)
    check_against_onnxruntime("DeformConv", inputs, opset=19, rtol=1e-10, atol=1e-10, kernel_shape=[3, 2], **attrs)


def test_deform_conv_zero_offsets_is_plain_conv():
    inputs, attrs = make(spread=0.0, mask=False, bias=False, pads=(1, 1, 1, 1), group=2)
    inputs[2][...] = 0
    (got,) = run_kernel("DeformConv", inputs, opset=19, **attrs)
    want = check_against_onnxruntime("Conv", inputs[:2], opset=19, rtol=1e-4, atol=1e-4, pads=[1, 1, 1, 1], group=2)
    np.testing.assert_allclose(got, want[0], rtol=1e-4, atol=1e-4)


def test_deform_conv_scratch_promise():
    inputs, attrs = make(group=2, offset_group=2)
    predicted, requested = requested_scratch("DeformConv", inputs, 19, **attrs)
    assert predicted == requested and len(requested) == 2


def test_deform_conv_rejects_bad_shapes():
    inputs, attrs = make()
    bad = list(inputs)
    bad[2] = bad[2][:, :-2]
    with pytest.raises(NodeExecutionError, match="offset shape"):
        run_kernel("DeformConv", bad, opset=19, **attrs)
    with pytest.raises(NodeExecutionError, match="offset_group"):
        run_kernel("DeformConv", inputs, opset=19, **{**attrs, "offset_group": 3})
    with pytest.raises(NodeExecutionError, match="group"):
        run_kernel("DeformConv", inputs, opset=19, **{**attrs, "group": 3})
