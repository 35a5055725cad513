"""NonMaxSuppression against onnxruntime: box encodings, thresholds, limits, ties, batches."""
import numpy as np
import pytest

import gpuinfer.ops  # noqa: F401  (registers the kernels)
from gpuinfer.errors import NodeExecutionError
from tests.node_helpers import check_against_onnxruntime, run_kernel

rng = np.random.default_rng(0)


def random_boxes(b, m):
    corner = rng.random((b, m, 2)) * 10
    size = rng.random((b, m, 2)) * 4 + 0.5
    return np.concatenate([corner, corner + size], axis=2).astype(np.float32)


@pytest.mark.parametrize("opset", [10, 11])
@pytest.mark.parametrize("limit,iou,score", [(3, 0.5, None), (10, 0.3, 0.4), (2, 0.0, 0.0), (0, 0.5, None)])
def test_nms_random(opset, limit, iou, score):
    boxes = random_boxes(2, 12)
    scores = rng.random((2, 3, 12)).astype(np.float32)
    inputs = [boxes, scores, np.array([limit], np.int64), np.array([iou], np.float32)]
    if score is not None:
        inputs.append(np.array([score], np.float32))
    check_against_onnxruntime("NonMaxSuppression", inputs, opset=opset)


def test_nms_center_point_and_flipped_corners():
    boxes = random_boxes(1, 10)
    scores = rng.random((1, 2, 10)).astype(np.float32)
    lim, iou = np.array([5], np.int64), np.array([0.4], np.float32)
    flipped = boxes[:, :, [2, 3, 0, 1]]
    check_against_onnxruntime("NonMaxSuppression", [flipped, scores, lim, iou], opset=11)
    yx, hw = (boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]
    center = np.concatenate([yx[..., ::-1], hw[..., ::-1]], axis=2)
    check_against_onnxruntime("NonMaxSuppression", [center, scores, lim, iou], opset=11, center_point_box=1)


def test_nms_ties_keep_lower_index_and_optional_inputs():
    boxes = np.array([[[0, 0, 1, 1], [5, 5, 6, 6], [0, 0, 1, 1], [9, 9, 10, 10]]], np.float32)
    scores = np.array([[[0.5, 0.5, 0.5, 0.1]]], np.float32)
    check_against_onnxruntime("NonMaxSuppression", [boxes, scores, np.array([4], np.int64)], opset=11)
    (out,) = run_kernel("NonMaxSuppression", [boxes, scores], opset=11)  # no limit: nothing selected
    assert out.shape == (0, 3) and out.dtype == np.int64


def test_nms_rejects_mismatched_scores():
    with pytest.raises(NodeExecutionError, match="boxes"):
        run_kernel("NonMaxSuppression", [random_boxes(1, 4), np.zeros((1, 1, 5), np.float32)], opset=11)
