"""NonMaxSuppression: greedy per-(batch, class) box selection by score with IoU suppression.

The selection is sequential and data-dependent, so it runs on the host (``ctx.host``) over the
small box/score tensors; only the (num_selected, 3) int64 result goes back to the device.
"""
from __future__ import annotations

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op


def _corners(boxes, center_point_box):
    """(y_min, x_min, y_max, x_max) columns of (M, 4) boxes in either encoding."""
    if center_point_box:
        xc, yc, w, h = boxes.T
        half_w, half_h = w / boxes.dtype.type(2), h / boxes.dtype.type(2)
        return yc - half_h, xc - half_w, yc + half_h, xc + half_w
    y1, x1, y2, x2 = boxes.T
    return np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2), np.maximum(x1, x2)


def _select(boxes, scores, limit, iou_threshold, score_threshold, center_point_box):
    """Box indices kept for one (batch, class): highest score first, ties to the lower index."""
    candidates = np.arange(scores.shape[0])
    if score_threshold is not None:
        candidates = candidates[scores > score_threshold]
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    y0, x0, y1, x1 = _corners(boxes, center_point_box)
    area = (y1 - y0) * (x1 - x0)
    kept: list[int] = []
    alive = np.ones(order.shape[0], dtype=bool)
    for pos, i in enumerate(order):
        if len(kept) >= limit:
            break
        if not alive[pos]:
            continue
        kept.append(int(i))
        rest = order[pos + 1:]
        ih = np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest])
        iw = np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest])
        inter = np.where((ih > 0) & (iw > 0), ih * iw, 0)
        union = area[i] + area[rest] - inter
        ok = (inter > 0) & (area[i] > 0) & (area[rest] > 0) & (union > 0)
        iou = np.where(ok, inter / np.where(union > 0, union, 1), 0)
        alive[pos + 1:] &= ~(ok & (iou > iou_threshold))
    return kept


@op("NonMaxSuppression", since=10)
def non_max_suppression(ctx, boxes, scores, max_output_boxes_per_class=None, iou_threshold=None,
                        score_threshold=None):
    """Selected [batch, class, box] triples, batch-major then class then selection order."""
    b = ctx.host(boxes)
    s = ctx.host(scores)
    if b.ndim != 3 or b.shape[2] != 4 or s.ndim != 3 or s.shape[0] != b.shape[0] or s.shape[2] != b.shape[1]:
        raise NodeExecutionError(f"NonMaxSuppression: want boxes (B, M, 4) and scores (B, C, M), "
                                 f"got {tuple(b.shape)} and {tuple(s.shape)}")
    mx = ctx.host(max_output_boxes_per_class)
    limit = max(int(mx.reshape(-1)[0]), 0) if mx is not None and mx.size else 0
    iou = ctx.host(iou_threshold)
    iou = iou.reshape(-1)[0].astype(b.dtype) if iou is not None and iou.size else b.dtype.type(0)
    st = ctx.host(score_threshold)
    st = st.reshape(-1)[0].astype(s.dtype) if st is not None and st.size else None
    center = int(ctx.attr("center_point_box", 0))
    rows = []
    if limit > 0:
        for n in range(b.shape[0]):
            for c in range(s.shape[1]):
                for i in _select(b[n], s[n, c], limit, iou, st, center):
                    rows.append((n, c, i))
    out = ctx.out(0, (len(rows), 3), np.int64)
    if rows:
        out[...] = ctx.xp.asarray(np.array(rows, dtype=np.int64))
    return out
