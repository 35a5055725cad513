"""Detection ops: NonMaxSuppression and RoiAlign.

NonMaxSuppression: greedy per-(batch, class) box selection by score with IoU suppression.  The
selection is sequential and data-dependent, so it runs on the host (``ctx.host``) over the small
box/score tensors; only the (num_selected, 3) int64 result goes back to the device.

RoiAlign: the small rois/batch_indices tensors are read on the host, where the bilinear sample
positions and weights of every roi are worked out per axis.  Average pooling is separable, so each
roi becomes two matmuls, ``Ay @ X[b] @ Ax^T``, with ``Ay`` (out_h, H) and ``Ax`` (out_w, W) holding
the summed sample weights; max pooling gathers the four corners of every sample instead.
"""
from __future__ import annotations

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op
from gpuinfer.ops.tiles import scaled, tile_bytes_of

# RoiAlign max mode: elements of the corner-value temporaries per group of rois (CPU; a device
# scales it by its ``caps.tile_bytes``, ops/tiles.py: all rois of a shape at once on a GPU).
ROI_MAX_CHUNK_ELEMENTS = 1 << 22


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


def _roi_axis(start, length, pooled, grid, size):
    """Bilinear corners of one axis' samples for rois sharing a ``grid``: (lo, hi, w_lo, w_hi), each
    (rois, pooled, grid).  Samples outside [-1, size] get zero weights (and index 0)."""
    bin_size = (length / pooled)[:, None, None]
    steps = np.arange(pooled, dtype=np.float64)[None, :, None]
    frac = (np.arange(grid, dtype=np.float64)[None, None, :] + 0.5) / grid
    pos = start[:, None, None] + steps * bin_size + frac * bin_size
    valid = (pos >= -1.0) & (pos <= size)
    pos = np.maximum(pos, 0.0)
    lo = np.floor(pos).astype(np.int64)
    edge = lo >= size - 1
    lo = np.where(edge, size - 1, lo)
    hi = np.where(edge, size - 1, lo + 1)
    pos = np.where(edge, lo, pos)
    w_hi = pos - lo
    w_lo = 1.0 - w_hi
    zero = np.zeros_like(lo)
    return (np.where(valid, lo, zero), np.where(valid, hi, zero),
            np.where(valid, w_lo, 0.0), np.where(valid, w_hi, 0.0))


def _roi_geometry(ctx, rois, batch_indices, n_batch):
    """Host-side roi starts, sizes and sample grids along (h, w), plus the batch index of each roi."""
    r = ctx.host(rois).astype(np.float64)
    b = ctx.host(batch_indices).astype(np.int64).reshape(-1)
    if r.ndim != 2 or r.shape[1] != 4 or b.shape[0] != r.shape[0]:
        raise NodeExecutionError(f"RoiAlign: want rois (num_rois, 4) and batch_indices (num_rois,), "
                                 f"got {tuple(r.shape)} and {tuple(ctx.host(batch_indices).shape)}")
    if b.size and (b.min() < 0 or b.max() >= n_batch):
        raise NodeExecutionError(f"RoiAlign: batch_indices must lie in [0, {n_batch}), got {b.min()}..{b.max()}")
    half_pixel = ctx.opset >= 16 and ctx.attr("coordinate_transformation_mode", "half_pixel") == "half_pixel"
    scale = float(ctx.attr("spatial_scale", 1.0))
    shift = 0.5 if half_pixel else 0.0
    x0, y0, x1, y1 = (r[:, i] * scale - shift for i in range(4))
    width, height = x1 - x0, y1 - y0
    if not half_pixel:  # malformed rois become 1x1
        width, height = np.maximum(width, 1.0), np.maximum(height, 1.0)
    out_h, out_w = int(ctx.attr("output_height", 1)), int(ctx.attr("output_width", 1))
    ratio = int(ctx.attr("sampling_ratio", 0))
    if ratio > 0:
        grid_h = np.full(r.shape[0], ratio, np.int64)
        grid_w = grid_h
    else:  # adaptive: about one sample per input pixel of the bin
        grid_h = np.ceil(height / out_h).astype(np.int64)
        grid_w = np.ceil(width / out_w).astype(np.int64)
    return (y0, height, grid_h), (x0, width, grid_w), b


def _avg_weights(axis, pooled, size, count, dtype):
    """(rois, pooled, size) per-roi interpolation matrices: summed sample weights, over ``count``."""
    start, length, grid = axis
    mat = np.zeros((start.shape[0], pooled, size), np.float64)
    for g in np.unique(grid):
        if g <= 0:
            continue
        sel = np.nonzero(grid == g)[0]
        lo, hi, w_lo, w_hi = _roi_axis(start[sel], length[sel], pooled, int(g), size)
        rows = np.broadcast_to(sel[:, None, None], lo.shape)
        cols = np.broadcast_to(np.arange(pooled)[None, :, None], lo.shape)
        np.add.at(mat, (rows, cols, lo), w_lo)
        np.add.at(mat, (rows, cols, hi), w_hi)
    return (mat / count[:, None, None]).astype(dtype)


def _roi_scratch(attrs, shapes, dtypes):
    """Average mode: the (rois, C, out_h, W) product ``Ay @ X[b]``; max mode needs none."""
    if attrs.get("mode", "avg") != "avg":
        return []
    n_rois, (_, channels, _, width) = shapes[1][0], shapes[0]
    return [((n_rois, channels, int(attrs.get("output_height", 1)), width), dtypes[0])]


def _roi_avg(ctx, x, ys, xs, batch, out):
    """Average pooling: out[r] = Ay[r] @ X[batch[r]] @ Ax[r]^T."""
    xp = ctx.xp
    n_rois, out_h, out_w = out.shape[0], out.shape[2], out.shape[3]
    count = np.maximum(ys[2] * xs[2], 1).astype(np.float64)
    ay = xp.asarray(_avg_weights(ys, out_h, x.shape[2], count, x.dtype))
    ax_t = xp.asarray(np.ascontiguousarray(
        _avg_weights(xs, out_w, x.shape[3], np.ones_like(count), x.dtype).transpose(0, 2, 1)))
    rows = ctx.scratch((n_rois, x.shape[1], out_h, x.shape[3]), x.dtype)
    for b in np.unique(batch):
        sel = np.nonzero(batch == b)[0]
        if sel[-1] - sel[0] + 1 == sel.size:  # a contiguous run of rois: write in place
            span = slice(int(sel[0]), int(sel[-1]) + 1)
            xp.matmul(ay[span, None], x[int(b)], out=rows[span])
        else:
            idx = xp.asarray(sel)
            rows[idx] = xp.matmul(ay[idx][:, None], x[int(b)])
    return xp.matmul(rows, ax_t[:, None], out=out)


def _roi_max(ctx, x, ys, xs, batch, out):
    """Max pooling as onnxruntime does it: the max, over samples, of the largest weighted corner
    value ``w_i * x_i`` (not of the interpolated value)."""
    xp = ctx.xp
    channels, out_h, out_w = x.shape[1], out.shape[2], out.shape[3]
    out[...] = 0
    pairs = np.stack([ys[2], xs[2]], axis=1)
    for gh, gw in np.unique(pairs, axis=0) if pairs.size else ():
        if gh <= 0 or gw <= 0:
            continue
        group = np.nonzero((pairs[:, 0] == gh) & (pairs[:, 1] == gw))[0]
        per_roi = channels * out_h * out_w * int(gh) * int(gw)
        chunk = max(1, scaled(ROI_MAX_CHUNK_ELEMENTS, tile_bytes_of(ctx)) // max(per_roi, 1))
        for first in range(0, group.size, chunk):
            sel = group[first:first + chunk]
            ycorners = _roi_axis(ys[0][sel], ys[1][sel], out_h, int(gh), x.shape[2])
            xcorners = _roi_axis(xs[0][sel], xs[1][sel], out_w, int(gw), x.shape[3])
            bi = xp.asarray(batch[sel])[:, None, None, None, None]
            best = None
            for yi, wy in ((ycorners[0], ycorners[2]), (ycorners[1], ycorners[3])):
                for xi, wx in ((xcorners[0], xcorners[2]), (xcorners[1], xcorners[3])):
                    # (k, out_h, gh, out_w, gw, C): advanced indices split by a slice go first
                    vals = x[bi, :, xp.asarray(yi)[:, :, :, None, None], xp.asarray(xi)[:, None, None, :, :]]
                    w = (wy[:, :, :, None, None] * wx[:, None, None, :, :]).astype(x.dtype)
                    vals *= xp.asarray(w)[..., None]
                    best = vals if best is None else xp.maximum(best, vals, out=best)
            pooled = best.max(axis=(2, 4))  # (k, out_h, out_w, C)
            out[xp.asarray(sel)] = pooled.transpose(0, 3, 1, 2)
    return out


def _roi_align(ctx, x, rois, batch_indices):
    if x.ndim != 4:
        raise NodeExecutionError(f"RoiAlign: want X of rank 4 (N, C, H, W), got shape {tuple(x.shape)}")
    mode = ctx.attr("mode", "avg")
    if mode not in ("avg", "max"):
        raise NodeExecutionError(f"RoiAlign: mode must be 'avg' or 'max', got {mode!r}")
    ys, xs, batch = _roi_geometry(ctx, rois, batch_indices, x.shape[0])
    out_h, out_w = int(ctx.attr("output_height", 1)), int(ctx.attr("output_width", 1))
    out = ctx.out(0, (batch.shape[0], x.shape[1], out_h, out_w), x.dtype)
    if mode == "avg":
        return _roi_avg(ctx, x, ys, xs, batch, out)
    return _roi_max(ctx, x, ys, xs, batch, out)


@op("RoiAlign", since=10, scratch=_roi_scratch)
def roi_align_10(ctx, x, rois, batch_indices):
    """Pool each roi of X to (output_height, output_width) by bilinear sampling (no half-pixel shift)."""
    return _roi_align(ctx, x, rois, batch_indices)


@op("RoiAlign", since=16, scratch=_roi_scratch)
def roi_align_16(ctx, x, rois, batch_indices):
    """RoiAlign with ``coordinate_transformation_mode`` (half_pixel by default)."""
    return _roi_align(ctx, x, rois, batch_indices)
