"""Each step's planned buffers, resolved once per (plan, blocks) instead of looked up on every run.

For a fixed plan the buffer of every planned output and scratch is a view at a fixed place of a
block (an arena offset, a tensor's own block in ``per_tensor``), and the pool caches those views
(``BlockSet.views_for``).  Asking the pool for them on every run costs a method call, a
``TensorKey`` hash and a shape check per output: about as much as a tiny kernel.  So a runner's
contexts get the views themselves (``bound``, ``bound_scratch``), copied out of the pool's cache
once; ``ctx.out`` then checks the request against the bound view's shape and dtype and hands it
out, recording what ``RunPool.buffer`` records (``seen``).  Anything else (a shape the plan did
not foresee, a value without a view yet, the dynamic path) goes through the pool as before.

The binding is the pool's own cache, copied: it is taken again when that cache is another object
(another plan, blocks grown) or changed size (views made since), when a bound view missed (its
cache entry may have been replaced), and dropped when the blocks are released or grown, so that
no view keeps a released block's memory alive (``BlockSet.unbind_all``).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from gpuinfer.ops.context import data_pointer
from gpuinfer.values import SCRATCH, TensorKey


def _entry(view: Any, key: TensorKey, same: Optional[dict] = None) -> Optional[tuple]:
    """(buffer, shape, dtype, key, (shape, dtype), view): what ``out`` hands out and compares a
    request with, the key and entry ``seen`` records, and the pool's own view (``_missed``).

    ``same`` (numpy only): one array object per distinct (address, shape, dtype, strides), shared
    by every key whose view that is.  A step the plan put in place then gets its input's very
    object as its output: numpy takes ``ufunc(x, out=x)`` straight, but for two objects over the
    same bytes it first works out how they overlap, which costs a tiny kernel its own time again
    (Neg on 16 floats: 0.25 -> 0.38 us, Add 0.26 -> 0.52 us).  Same bytes, same layout: nothing a
    kernel can see differs."""
    if view is None:
        return None
    shape, dtype = view.shape, view.dtype
    buffer = view
    if same is not None and isinstance(view, np.ndarray):
        buffer = same.setdefault((data_pointer(view), shape, dtype, view.strides), view)
    return buffer, shape, dtype, key, (shape, dtype), view


class ViewBinding:
    """The planned views of one runner's steps, as of one pool cache (``RunPool.views``)."""

    def __init__(self, contexts: list, scope: tuple):
        self.contexts = contexts
        self.scope = scope
        self.views: Optional[dict] = None  # the pool cache bound now (None: unbound)
        self.size = -1  # its length when bound: views made since mean binding again
        # key -> (shape, dtype) of every bound output: what ``RunPool.buffer`` would record in
        # ``seen`` when the step asks for it.  Copied into the run's ``seen`` at its start (one
        # C-level update, hashes kept) instead of one store, and one key hash, per output; an
        # output a step did not ask for after all is taken out again (``forget_unrequested``).
        self.seen: dict = {}

    def start(self, pool: Any) -> None:
        """A run starts: bind to ``pool``'s views unless bound to them already (one identity and
        length test), and record every bound output in ``pool.seen`` at once (see ``seen``)."""
        views = pool.views
        if views is not self.views or len(views) != self.size:
            self.bind(pool)
        pool.seen.update(self.seen)

    def bind(self, pool: Any) -> None:
        views = pool.views
        scratch: dict[int, dict[int, Any]] = {}
        for key, view in views.items():  # other entries (nested.py's traced views) are not TensorKeys
            if type(key) is TensorKey and key.kind == SCRATCH and key.scope == self.scope:
                scratch.setdefault(key.step, {})[key.index] = _entry(view, key)
        same: dict = {}
        for ctx in self.contexts:
            ctx.bound = tuple(None if key is None else _entry(views.get(key), key, same) for key in ctx.keys)
            mine = scratch.get(ctx.node.step)
            ctx.bound_scratch = tuple(mine.get(j) for j in range(max(mine) + 1)) if mine else ()
        self.seen = {b[3]: b[4] for ctx in self.contexts for b in ctx.bound if b is not None}
        pool.blocks.binders.add(self)
        self.views, self.size = views, len(views)

    def stale(self) -> None:
        """A bound view missed: bind again before the next run."""
        self.size = -1

    def unbind(self) -> None:
        """The blocks behind the views are going: hold none of them."""
        for ctx in self.contexts:
            ctx.bound, ctx.bound_scratch = (None,) * len(ctx.keys), ()
        self.views, self.size, self.seen = None, -1, {}


def forget_unrequested(ctx: Any) -> None:
    """After a step's outputs were stored the long way: a bound output its kernel never asked for
    (a sequence, a host value, ...) leaves ``seen``, as the pool would never have recorded it.
    Every output asked for is in ``ctx.handed`` (``out`` records it there, bound or not)."""
    handed = ctx.handed
    for i, b in enumerate(ctx.bound):
        if b is not None and i not in handed:
            ctx.seen.pop(b[3], None)

