"""Planner invariants on tiny integer graphs and on random lifetimes: no kernel runs here.

Every plan goes through the independent verifier; golden cases write the expected placement
beside them; a corrupted plan must be caught.
"""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuinfer.plan import MODES, ALIGNMENT, MemoryPlan, Placement, PlanVerificationError, Sharing, lower_bound, verify_plan
from gpuinfer.plan.lifetimes import Lifetime


def make(mode: str, lives: list[Lifetime], pairs=(), concat=()) -> MemoryPlan:
    blocks, placements, inplace, concat_map = MODES[mode](lives, Sharing(list(pairs), list(concat)))
    steps = max((l.last for l in lives), default=0) + 1
    plan = MemoryPlan(mode, steps, {l.key: l for l in lives}, placements, blocks, inplace, [],
                      lower_bound(lives, steps), concat=concat_map)
    verify_plan(plan, check_alignment=(mode == "arena"))
    return plan


def life(key, first, last, nbytes, shape=None):
    return Lifetime(key, first, last, nbytes, "value", shape or (nbytes // 4,), "float32")


CHAIN = [life("a", 0, 1, 1024), life("b", 1, 2, 1024), life("c", 2, 3, 1024), life("d", 3, 4, 1024)]


def test_arena_chain_uses_two_slots():
    # a(0-1) b(1-2) c(2-3) d(3-4): neighbours overlap, every other one does not:
    # a@0, b@1024, c@0, d@1024 — two slots, equal to the lower bound.
    plan = make("arena", CHAIN)
    assert plan.planned_bytes == 2048 == plan.lower_bound_bytes
    assert plan.placements["a"].offset == plan.placements["c"].offset
    assert plan.placements["b"].offset == plan.placements["d"].offset != plan.placements["a"].offset


def test_arena_inplace_chain_uses_one_slot():
    # every step writes over the input that dies there: one slot, half the lower bound
    plan = make("arena", CHAIN, [("b", "a"), ("c", "b"), ("d", "c")])
    assert plan.planned_bytes == 1024
    assert len({p.offset for p in plan.placements.values()}) == 1


def test_reduce_places_nothing():
    plan = make("reduce", CHAIN)
    assert plan.placements == {} and plan.planned_bytes == 0


def test_per_tensor_is_the_sum():
    plan = make("per_tensor", CHAIN)
    assert plan.planned_bytes == sum(l.nbytes for l in CHAIN)


SCRATCH = [Lifetime(f"s{step}.{i}", step, step, nbytes, "scratch", (nbytes,), "uint8")
           for step, sizes in ((1, (1000, 300)), (2, (1500,)), (3, (200, 200, 200))) for i, nbytes in enumerate(sizes)]


@pytest.mark.parametrize("mode", ["per_tensor", "reuse"])
def test_steps_share_one_scratch_block(mode):
    """Values are placed by the mode's own rule, in blocks of their own; scratch, which lives within
    its step, shares one block as big as the most one step takes, a step's buffers side by side at
    aligned offsets."""
    plan = make(mode, CHAIN + SCRATCH)
    assert len({plan.placements[l.key].block for l in SCRATCH}) == 1
    assert not {plan.placements[l.key].block for l in SCRATCH} & {plan.placements[l.key].block for l in CHAIN}
    assert plan.placements["s1.1"].offset == 1024 and plan.placements["s3.2"].offset == 512
    assert plan.planned_bytes == sum(plan.blocks[b] for b in {plan.placements[l.key].block for l in CHAIN}) \
        + max(1024 + 300, 1500, 512 + 200)


def test_per_tensor_keeps_a_block_per_scratch_buffer_where_that_is_smaller():
    """Tiny buffers at aligned offsets would take more than a block each: then a block each."""
    scratch = [Lifetime("s1.0", 1, 1, 8, "scratch", (8,), "uint8"), Lifetime("s1.1", 1, 1, 8, "scratch", (8,), "uint8"),
               Lifetime("s2.0", 2, 2, 8, "scratch", (8,), "uint8")]
    plan = make("per_tensor", CHAIN + scratch)
    assert len({plan.placements[l.key].block for l in CHAIN + scratch}) == len(CHAIN) + 3
    assert plan.planned_bytes == sum(l.nbytes for l in CHAIN + scratch)


def test_reuse_shares_only_same_shape():
    lives = [life("a", 0, 1, 1024), life("b", 2, 3, 1024), life("c", 4, 5, 2048)]
    plan = make("reuse", lives)
    assert plan.placements["a"] == plan.placements["b"]
    assert plan.planned_bytes == 1024 + 2048


def test_verifier_catches_overlap():
    plan = make("arena", CHAIN)
    bad = dataclasses.replace(plan, placements={**plan.placements, "b": plan.placements["a"]})
    with pytest.raises(PlanVerificationError, match="alive together"):
        verify_plan(bad)


def test_verifier_catches_misfit_and_misalignment():
    plan = make("arena", CHAIN)
    with pytest.raises(PlanVerificationError, match="runs past"):
        verify_plan(dataclasses.replace(plan, blocks=[1024]))
    with pytest.raises(PlanVerificationError, match="aligned"):
        verify_plan(dataclasses.replace(plan, placements={**plan.placements, "c": Placement(0, 4096 + 8)},
                                        blocks=[8192]))


def test_verifier_catches_false_inplace():
    plan = make("arena", CHAIN)
    with pytest.raises(PlanVerificationError, match="in-place"):
        verify_plan(dataclasses.replace(plan, inplace={"c": "a"}))


@st.composite
def random_lifetimes(draw):
    n = draw(st.integers(1, 40))
    lives = []
    for i in range(n):
        first = draw(st.integers(0, 30))
        last = first + draw(st.integers(0, 10))
        shape = (draw(st.sampled_from([1, 3, 64, 100, 257, 1000])),)
        lives.append(Lifetime(f"v{i}", first, last, shape[0] * 4, "value", shape, "float32"))
    return lives


@settings(max_examples=150, deadline=None)
@given(random_lifetimes(), st.sampled_from(sorted(MODES)))
def test_random_plans_never_overlap(lives, mode):
    plan = make(mode, lives)
    if mode != "reduce":
        assert set(plan.placements) == {l.key for l in lives}
    if mode == "arena":
        # no plan can be smaller than the busiest step (rounded up to alignment per tensor)
        aligned = [dataclasses.replace(l, nbytes=-(-l.nbytes // ALIGNMENT) * ALIGNMENT) for l in lives]
        assert plan.lower_bound_bytes <= plan.planned_bytes
        assert plan.planned_bytes <= sum(l.nbytes for l in aligned)


@settings(max_examples=100, deadline=None)
@given(random_lifetimes())
def test_reuse_is_optimal_per_shape_class(lives):
    plan = make("reuse", lives)
    best = 0
    for shape in {l.shape for l in lives}:
        members = [l for l in lives if l.shape == shape]
        busiest = max(sum(1 for m in members if m.first <= s <= m.last)
                      for s in range(max(m.last for m in members) + 1))
        best += busiest * members[0].nbytes
    assert plan.planned_bytes == best


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 5000), min_size=2, max_size=30))
def test_random_inplace_chains_verify(sizes):
    # a chain where each tensor may be written over its predecessor when sizes match
    lives = [Lifetime(f"v{i}", i, i + 1, s, "value", (s,), "uint8") for i, s in enumerate(sizes)]
    pairs = [(f"v{i}", f"v{i - 1}") for i in range(1, len(sizes)) if sizes[i] == sizes[i - 1]]
    make("arena", lives, pairs)


def test_concat_inputs_live_inside_the_output():
    # a(0-2) and b(1-2) are concatenated at step 2 into c(2-3): with the inputs written into their
    # slices of c, the plan needs only c's bytes.
    lives = [life("a", 0, 2, 1024), life("b", 1, 2, 2048), life("c", 2, 3, 3072)]
    plan = make("arena", lives, concat=[("a", "c", 0), ("b", "c", 1024)])
    assert plan.planned_bytes == 3072 < plan.lower_bound_bytes
    assert plan.placements["b"].offset == plan.placements["c"].offset + 1024
    assert plan.concat == {"a": ("c", 0), "b": ("c", 1024)}


def test_verifier_catches_a_concat_input_alive_after_the_concat():
    lives = [life("a", 0, 3, 1024), life("b", 1, 2, 2048), life("c", 2, 3, 3072)]
    blocks, placements, _, _ = MODES["arena"](lives[1:] + [life("a", 0, 2, 1024)],
                                              Sharing([], [("a", "c", 0), ("b", "c", 1024)]))
    plan = MemoryPlan("arena", 4, {l.key: l for l in lives}, placements, blocks, {}, [], 0,
                      concat={"a": ("c", 0), "b": ("c", 1024)})
    with pytest.raises(PlanVerificationError, match="concat input 'a'"):
        verify_plan(plan)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=2, max_size=12))
def test_random_dense_blocks_verify(widths):
    # DenseNet-like: x_k = concat(x_{k-1}, new_k); each new_k made the step before its concat
    unit = 256
    lives, concat = [life("x0", 0, 2, widths[0] * unit)], []
    size, step = widths[0] * unit, 1
    for k, w in enumerate(widths[1:], start=1):
        lives.append(life(f"n{k}", step, step + 1, w * unit))
        lives.append(life(f"x{k}", step + 1, step + 3 if k < len(widths) - 1 else step + 2, size + w * unit))
        concat += [(f"x{k - 1}", f"x{k}", 0), (f"n{k}", f"x{k}", size)]
        size += w * unit
        step += 2
    # x_{k-1} must die at x_k's concat: trim its lifetime to that step
    lives = [dataclasses.replace(l, last=l.first + 2) if l.key.startswith("x") and l.key != f"x{len(widths) - 1}"
             else l for l in lives]
    make("arena", lives, concat=concat)
