"""The real models the tests run: the shared ones (MODELS.md shapes) and onnx's nine light networks.

The light networks' weights are all ``ConstantOfShape(0.02)``; a match on such uniform outputs
proves nothing, so ``light_model`` swaps every such weight for seeded random values scaled like
He initialisation (uniform; 1-D parameters in [0.5, 1.5], so BatchNorm variances stay positive) and adds
the logits before the final Softmax as an extra output.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
from onnx import numpy_helper

from gpuinfer.graph.weightless import weightless_copy

# GPUINFER_SHARED_MODELS: where the shared models were staged (bench/gpu_proof.py on a GPU machine)
SHARED_MODELS = Path(os.environ.get("GPUINFER_SHARED_MODELS") or Path(__file__).resolve().parents[2] / "shared" / "models")
LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_NAMES = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
               "squeezenet", "vgg19", "zfnet512"]


def _image(shape):
    return lambda rng: rng.standard_normal(shape).astype(np.float32)


def _minilm_feeds(rng):
    ids = rng.integers(0, 30522, size=(1, 128), dtype=np.int64)
    mask = np.ones((1, 128), dtype=np.int64)
    mask[0, 100:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros((1, 128), dtype=np.int64)}


def _silero_feeds(rng):
    return {"input": rng.standard_normal((1, 512)).astype(np.float32) * 0.1,
            "state": np.zeros((2, 1, 128), dtype=np.float32), "sr": np.array(16000, dtype=np.int64)}


# file -> feeds maker, at the shapes MODELS.md lists
SHARED_FEEDS = {
    "all-MiniLM-L6-v2_int8w.onnx": _minilm_feeds,
    "ch_PP-OCRv4_det_infer.onnx": lambda rng: {"x": _image((1, 3, 640, 640))(rng)},
    "ch_PP-OCRv4_rec_infer.onnx": lambda rng: {"x": _image((1, 3, 48, 320))(rng)},
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": lambda rng: {"x": _image((1, 3, 48, 192))(rng)},
    "mtcnn_onet.onnx": lambda rng: {"input_3": _image((4, 48, 48, 3))(rng)},
    "mtcnn_pnet.onnx": lambda rng: {"input_1": _image((1, 120, 160, 3))(rng)},
    "mtcnn_rnet.onnx": lambda rng: {"input_2": _image((4, 24, 24, 3))(rng)},
    "nudenet_320n.onnx": lambda rng: {"images": _image((1, 3, 320, 320))(rng)},
    "silero_vad.onnx": _silero_feeds,
    "u2netp.onnx": lambda rng: {"input.1": _image((1, 3, 320, 320))(rng)},
}
for _name in ["bvlc_alexnet", "densenet121", "inception_v1", "resnet50", "squeezenet", "vgg19"]:
    SHARED_FEEDS[f"light_{_name}.onnx"] = None  # same graphs as onnx's light set: run from there

SHARED_NAMES = [n for n, f in SHARED_FEEDS.items() if f is not None]


def shared_available() -> bool:
    return SHARED_MODELS.is_dir()


def shared_model_path(name: str) -> Path:
    return SHARED_MODELS / name


@functools.lru_cache(maxsize=None)
def light_model(name: str) -> bytes:
    """A light network with seeded random weights and its pre-Softmax logits as an extra output."""
    model = onnx.load(str(LIGHT_DIR / f"light_{name}.onnx"))
    model.ir_version = 7  # IR >= 4: initializers need not be listed as graph inputs
    rng = np.random.default_rng(sum(map(ord, name)))
    graph = model.graph
    keep = []
    for node in graph.node:
        if node.op_type != "ConstantOfShape":
            keep.append(node)
            continue
        shape = _constant_shape(graph, node)
        graph.initializer.append(numpy_helper.from_array(_random_weight(rng, shape), node.output[0]))
    del graph.node[:]
    graph.node.extend(keep)
    # on the model without its weights' data: the same types, without serialising 548 MB (vgg19)
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(weightless_copy(model)[0]).graph.value_info}
    for node in graph.node:
        if node.op_type == "Softmax" and any(o.name == node.output[0] for o in graph.output):
            graph.output.append(inferred[node.input[0]])
    used = {i for n in graph.node for i in n.input}
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)
    weights = {t.name for t in graph.initializer}
    for inp in [i for i in graph.input if i.name not in used or i.name in weights]:
        graph.input.remove(inp)
    return model.SerializeToString()


def light_feeds(name: str) -> dict:
    model = onnx.load_from_string(light_model(name))
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    return {inp.name: np.random.default_rng(1).standard_normal(shape).astype(np.float32)}


def _constant_shape(graph, node) -> tuple:
    for init in graph.initializer:
        if init.name == node.input[0]:
            return tuple(int(d) for d in numpy_helper.to_array(init))
    for other in graph.node:
        if other.op_type == "Constant" and other.output[0] == node.input[0]:
            return tuple(int(d) for d in numpy_helper.to_array(other.attribute[0].t))
    raise LookupError(f"shape of {node.output[0]} is not a constant")


def _random_weight(rng, shape: tuple) -> np.ndarray:
    if len(shape) <= 1:
        return rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    fan_in = int(np.prod(shape[1:]))
    # He initialisation's uniform form (variance 2 / fan_in), drawn in float32: vgg19's 143M
    # weights in under a second (normal draws took 6.5 s)
    weight = rng.random(shape, dtype=np.float32)
    weight -= np.float32(0.5)
    weight *= np.float32(2 * np.sqrt(6.0 / fan_in))
    return weight


def shared_feeds(name: str, seed: int = 0) -> dict:
    return SHARED_FEEDS[name](np.random.default_rng(seed))


def reference_outputs(model, feeds: dict, output_names: Optional[list] = None) -> list:
    """onnxruntime's outputs (CPU, default optimisations) for the same feeds."""
    import onnxruntime as ort

    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("GPUINFER_TEST_THREADS", "2"))
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return sess.run(output_names, feeds)


MODEL_IDS = [f"shared/{n}" for n in SHARED_NAMES] + [f"light/{n}" for n in LIGHT_NAMES]


def model_case(model_id: str):
    """(model source, feeds) for a model id; pytest-skips shared models when the folder is absent."""
    kind, name = model_id.split("/", 1)
    if kind == "light":
        return light_model(name), light_feeds(name)
    if not shared_available():
        import pytest

        pytest.skip(f"shared models folder not found at {SHARED_MODELS}")
    return str(shared_model_path(name)), shared_feeds(name)


@functools.lru_cache(maxsize=4)
def reference_for(model_id: str) -> tuple:
    source, feeds = model_case(model_id)
    return tuple(reference_outputs(source, feeds))


def assert_matches_reference(got: list, expected, rtol: float = 1e-3, atol: float = 1e-4, what: str = ""):
    """Float outputs within tolerance, integer and bool outputs exactly; shapes and dtypes equal.

    The absolute tolerance grows with the output's scale (1e-6 of its largest magnitude): a float32
    sum carries rounding error proportional to its terms, so an element that cancels to a small value
    among logits of 1e6 (the light networks' random weights) keeps an error of a few units."""
    assert len(got) == len(expected), f"{what}: {len(got)} outputs, onnxruntime gives {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g.shape == e.shape, f"{what} output {i}: shape {g.shape} != onnxruntime {e.shape}"
        assert g.dtype == e.dtype, f"{what} output {i}: dtype {g.dtype} != onnxruntime {e.dtype}"
        if np.issubdtype(e.dtype, np.floating):
            scale = float(np.max(np.abs(e))) if e.size else 0.0
            np.testing.assert_allclose(g, e, rtol=rtol, atol=max(atol, 1e-6 * scale), err_msg=f"{what} output {i}")
        else:
            np.testing.assert_array_equal(g, e, err_msg=f"{what} output {i}")
