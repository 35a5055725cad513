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

from gpuinfer.values import SCRATCH, TensorKey


def _entry(view: Any, key: TensorKey) -> Optional[tuple]:
    """(view, shape, dtype, key, (shape, dtype)): what ``out`` compares a request with, and the
    key and entry it records in ``seen``."""
    if view is None:
        return None
    shape, dtype = view.shape, view.dtype
    return view, shape, dtype, key, (shape, dtype)


class ViewBinding:
    """The planned views of one runner's steps, as of one pool cache (``RunPool.views``)."""

    def __init__(self, contexts: list, scope: tuple):
        self.contexts = contexts
        self.scope = scope
        self.views: Optional[dict] = None  # the pool cache bound now (None: unbound)
        self.size = -1  # its length when bound: views made since mean binding again

    def ensure(self, pool: Any) -> None:
        """Bind to ``pool``'s views unless bound to them already (one identity and length test)."""
        views = pool.views
        if views is not self.views or len(views) != self.size:
            self.bind(pool)

    def bind(self, pool: Any) -> None:
        views = pool.views
        scratch: dict[int, dict[int, Any]] = {}
        for key, view in views.items():  # other entries (nested.py's traced views) are not TensorKeys
            if type(key) is TensorKey and key.kind == SCRATCH and key.scope == self.scope:
                scratch.setdefault(key.step, {})[key.index] = _entry(view, key)
        for ctx in self.contexts:
            ctx.bound = tuple(None if key is None else _entry(views.get(key), key) for key in ctx.keys)
            mine = scratch.get(ctx.node.step)
            ctx.bound_scratch = tuple(mine.get(j) for j in range(max(mine) + 1)) if mine else ()
        pool.blocks.binders.add(self)
        self.views, self.size = views, len(views)

    def stale(self) -> None:
        """A bound view missed: bind again before the next run."""
        self.size = -1

    def unbind(self) -> None:
        """The blocks behind the views are going: hold none of them."""
        for ctx in self.contexts:
            ctx.bound, ctx.bound_scratch = (None,) * len(ctx.keys), ()
        self.views, self.size = None, -1

