"""String ops and n-gram counting: StringNormalizer, StringConcat, StringSplit, RegexFullMatch,
TfIdfVectorizer.

Strings live on the host as numpy object arrays of ``str``, so these kernels work on host data and
copy their results into the output buffers.
"""
from __future__ import annotations

import re

import numpy as np

from gpuinfer.errors import NodeExecutionError
from gpuinfer.ops.registry import op


def _text(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _texts(values) -> list:
    return [_text(v) for v in (values or [])]


def _strings(ctx, x, op_name: str) -> np.ndarray:
    """``x`` as a host object array of str."""
    host = ctx.host(x)
    if host.dtype.kind not in "OUS":
        raise NodeExecutionError(f"{op_name}: expected a string tensor, got {host.dtype}")
    out = np.empty(host.shape, dtype=object)
    flat = out.reshape(-1)
    for i, v in enumerate(host.reshape(-1)):
        flat[i] = _text(v)
    return out


def _emit(ctx, i, values: np.ndarray, dtype=None):
    """Copy host ``values`` into output buffer ``i``."""
    dtype = np.dtype(values.dtype if dtype is None else dtype)
    buf = ctx.out(i, tuple(int(d) for d in values.shape), dtype)
    if dtype == object:
        buf[...] = values
    else:
        ctx.xp.copyto(buf, ctx.xp.asarray(values.astype(dtype, copy=False)))
    return buf


@op("StringNormalizer", since=10)
def string_normalizer(ctx, x):
    """Drop stopwords (optionally case-blind), then change case; an all-dropped input gives [""]."""
    data = _strings(ctx, x, "StringNormalizer")
    if not (data.ndim == 1 or (data.ndim == 2 and data.shape[0] == 1)):
        raise NodeExecutionError(f"StringNormalizer: expected shape [C] or [1, C], got {list(data.shape)}")
    action = _text(ctx.attr("case_change_action", "NONE")).upper()
    if action not in ("NONE", "LOWER", "UPPER"):
        raise NodeExecutionError(f"StringNormalizer: unknown case_change_action {action!r}")
    sensitive = bool(ctx.attr("is_case_sensitive", 0))
    stop = _texts(ctx.attr("stopwords"))
    stop = set(stop) if sensitive else {s.lower() for s in stop}
    kept = [s for s in data.reshape(-1) if (s if sensitive else s.lower()) not in stop]
    if action == "LOWER":
        kept = [s.lower() for s in kept]
    elif action == "UPPER":
        kept = [s.upper() for s in kept]
    if not kept:
        kept = [""]
    result = np.empty(len(kept), dtype=object)
    result[:] = kept
    return _emit(ctx, 0, result.reshape((1, -1)) if data.ndim == 2 else result)


@op("StringConcat", since=20)
def string_concat(ctx, x, y):
    """Elementwise concatenation with broadcasting."""
    a, b = _strings(ctx, x, "StringConcat"), _strings(ctx, y, "StringConcat")
    shape = np.broadcast_shapes(a.shape, b.shape)
    result = np.empty(shape, dtype=object)
    np.add(a, b, out=result)
    return _emit(ctx, 0, result)


@op("StringSplit", since=20)
def string_split(ctx, x):
    """Split each string on ``delimiter`` (whitespace runs when empty), padding with ""; also the counts."""
    data = _strings(ctx, x, "StringSplit")
    delimiter = _text(ctx.attr("delimiter", "")) or None
    maxsplit = ctx.attr("maxsplit")
    maxsplit = -1 if maxsplit is None else int(maxsplit)
    pieces = [s.split(delimiter, maxsplit) for s in data.reshape(-1)]
    if delimiter is not None:
        pieces = [[] if p == [""] else p for p in pieces]
    width = max((len(p) for p in pieces), default=0)
    parts = np.full((len(pieces), width), "", dtype=object)
    for i, p in enumerate(pieces):
        parts[i, :len(p)] = p
    counts = np.array([len(p) for p in pieces], dtype=np.int64)
    return (_emit(ctx, 0, parts.reshape(data.shape + (width,))),
            _emit(ctx, 1, counts.reshape(data.shape)))


@op("RegexFullMatch", since=20)
def regex_full_match(ctx, x):
    """Whether each string matches ``pattern`` in full."""
    data = _strings(ctx, x, "RegexFullMatch")
    try:
        pattern = re.compile(_text(ctx.attr("pattern")))
    except (re.error, TypeError) as e:
        raise NodeExecutionError(f"RegexFullMatch: bad pattern {ctx.attr('pattern')!r}: {e}") from e
    result = np.array([pattern.fullmatch(s) is not None for s in data.reshape(-1)], dtype=np.bool_)
    return _emit(ctx, 0, result.reshape(data.shape))


def _ngram_table(ctx):
    """(n-gram tuple -> output column, output width), from the pool and its per-length offsets."""
    strings = ctx.attr("pool_strings")
    pool = _texts(strings) if strings is not None else [int(v) for v in (ctx.attr("pool_int64s") or [])]
    starts = [int(v) for v in ctx.attr("ngram_counts")]
    columns = [int(v) for v in ctx.attr("ngram_indexes")]
    table = {}
    ordinal = 0
    for i, start in enumerate(starts):
        n = i + 1
        end = starts[i + 1] if i + 1 < len(starts) else len(pool)
        for j in range(start, end, n):
            if ordinal >= len(columns):
                raise NodeExecutionError("TfIdfVectorizer: ngram_indexes is shorter than the n-gram pool")
            table[tuple(pool[j:j + n])] = columns[ordinal]
            ordinal += 1
    return table, max(columns, default=-1) + 1


@op("TfIdfVectorizer", since=9)
def tfidf_vectorizer(ctx, x):
    """Count pool n-grams (with up to max_skip_count skips) per row; weight them as TF, IDF or TFIDF."""
    host = ctx.host(x)
    rows = _strings(ctx, x, "TfIdfVectorizer") if host.dtype.kind in "OUS" else host.astype(np.int64)
    if rows.ndim not in (1, 2):
        raise NodeExecutionError(f"TfIdfVectorizer: expected rank 1 or 2 input, got {list(rows.shape)}")
    table, width = _ngram_table(ctx)
    lo, hi = int(ctx.attr("min_gram_length")), int(ctx.attr("max_gram_length"))
    max_skip = int(ctx.attr("max_skip_count", 0))
    mode = _text(ctx.attr("mode", "TF")).upper()
    batch = rows.reshape((1, -1)) if rows.ndim == 1 else rows
    counts = np.zeros((batch.shape[0], width), dtype=np.float32)
    for r, row in enumerate(batch):
        items = row.tolist()
        for n in range(lo, hi + 1):
            for skip in range(max_skip + 1 if n > 1 else 1):
                step = skip + 1
                for start in range(len(items) - (n - 1) * step):
                    column = table.get(tuple(items[start:start + (n - 1) * step + 1:step]))
                    if column is not None:
                        counts[r, column] += 1
    weights = ctx.attr("weights")
    w = np.ones(width, np.float32) if weights is None else np.asarray(weights, np.float32)
    if mode == "IDF":
        counts = (counts > 0).astype(np.float32) * w
    elif mode == "TFIDF":
        counts = counts * w
    elif mode != "TF":
        raise NodeExecutionError(f"TfIdfVectorizer: unknown mode {mode!r}")
    return _emit(ctx, 0, counts.reshape((width,)) if rows.ndim == 1 else counts, np.float32)
