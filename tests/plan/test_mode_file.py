"""A new memory mode is one file: a planner plus a ``MemoryMode`` passed to ``register_mode``."""
from __future__ import annotations

import importlib.util
import textwrap

import numpy as np
import pytest

import gpuinfer
from gpuinfer.plan import MODES, unregister_mode, verify_plan
from tests.model_zoo import reference_outputs
from tests.tiny_models import conv_net, conv_net_feeds

TOY_MODE = textwrap.dedent('''
    """toy_per_tensor: a block for every tensor and every scratch buffer, in one file."""
    from gpuinfer.plan.modes import MemoryMode, register_mode
    from gpuinfer.plan.plan import Placement


    def plan_toy(lifetimes, sharing):
        """Every placed lifetime its own block (per_tensor shares its steps' scratch; this does not)."""
        placements = {life.key: Placement(i, 0) for i, life in enumerate(lifetimes)}
        return [life.nbytes for life in lifetimes], placements, {}, {}


    TOY = register_mode(MemoryMode("toy_per_tensor", plan_toy, speed_rank=9, hands_out_intermediates=True))
''')


@pytest.fixture
def toy_mode(tmp_path):
    path = tmp_path / "toy_mode.py"
    path.write_text(TOY_MODE)
    spec = importlib.util.spec_from_file_location("toy_mode", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module.TOY
    unregister_mode("toy_per_tensor")


def test_a_mode_from_one_file_runs_a_model(toy_mode):
    assert MODES["toy_per_tensor"] is toy_mode
    model = conv_net(channels=8).SerializeToString()
    feeds = conv_net_feeds()
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode="toy_per_tensor")
    got = sess.run(None, feeds)
    np.testing.assert_allclose(got[0], reference_outputs(model, feeds)[0], rtol=1e-4, atol=1e-5)
    report = sess.memory_report()
    plan = sess.plan_for(feeds)
    verify_plan(plan)
    per_tensor = gpuinfer.InferenceSession(model, device="cpu", memory_mode="per_tensor")
    per_tensor.run(None, feeds)
    assert report.mode == "toy_per_tensor"
    placed = sum(life.nbytes for key, life in plan.lifetimes.items() if key in plan.placements)
    assert report.planned_bytes == plan.planned_bytes == placed
    assert per_tensor.memory_report().planned_bytes < placed  # per_tensor's steps share one scratch block
    # an intermediate can be read back, as the mode says (hands_out_intermediates)
    inner = next(n for node in sess.graph.nodes for n in node.outputs if n and n not in sess.graph.outputs)
    assert sess.run([inner], feeds)[0] is not None


def test_a_mode_name_is_taken_once(toy_mode):
    from gpuinfer.plan.modes import register_mode

    with pytest.raises(gpuinfer.GpuinferError, match="already registered"):
        register_mode(toy_mode)


def test_unknown_mode_lists_the_registered_ones():
    with pytest.raises(gpuinfer.GpuinferError, match="arena"):
        gpuinfer.InferenceSession(conv_net().SerializeToString(), device="cpu", memory_mode="nope")
