"""What ``tests/test_fuzz.py`` mutates and how one fuzz case runs, bounded in time and memory.

A case is plain data (model bytes, a feed recipe, a memory mode), so it can run in this process
(CI: a thread joined with a timeout, under an address-space cap) or in a worker subprocess (the
long mode, which also survives and reports a segfault or a hang).  ``run_case`` returns
``("ok" | "refused", type name, message)`` or ``("escape", type name, traceback)``: only
``GpuinferError`` may leave ``InferenceSession(...)`` and ``run(...)``.
"""
from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import resource
import threading
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.tiny_models import conv_net

SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
CASE_SECONDS = 30.0  # a case that takes longer counts as a hang
MEMORY_LIMIT = 256 << 20  # the sessions' memory_limit_bytes
ADDRESS_SPACE_HEADROOM = 3 << 30  # bytes a case may map beyond what the process had before it
FEED_ELEMENTS = 1 << 22  # feeds are made no larger than this
FOLD_LIMIT = 64 << 20  # load-time folding cap during fuzzing (the default, 4 GiB, is for real models)


# --- seed models -----------------------------------------------------------------------------------

def _init(name: str, value) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _typed(graph: onnx.GraphProto, outputs: list[str], opset: int) -> onnx.ModelProto:
    """The model with its graph outputs declared as ONNX shape inference types them."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    del model.graph.output[:]
    model.graph.output.extend(inferred[name] for name in outputs)
    onnx.checker.check_model(model)
    return model


def mixed_model() -> onnx.ModelProto:
    """Twenty-odd common ops with attributes and constant inputs, over a batch-dynamic input."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    inits = [
        _init("W", rng.standard_normal((3, 5)).astype(f32)), _init("b", rng.standard_normal(5).astype(f32)),
        _init("rows", np.array([-1, 5], np.int64)), _init("starts", np.array([0], np.int64)),
        _init("ends", np.array([3], np.int64)), _init("axes1", np.array([1], np.int64)),
        _init("pads", np.array([0, 0, 1, 0, 0, 1], np.int64)), _init("lo", np.array(-0.5, f32)),
        _init("hi", np.array(0.5, f32)), _init("k", np.array([2], np.int64)), _init("zero", np.array(0, np.int64)),
        _init("gamma", np.ones(5, f32)), _init("beta", np.zeros(5, f32)), _init("split", np.array([2, 3], np.int64)),
        _init("reps", np.array([1, 2], np.int64)), _init("ax0", np.array([0], np.int64)),
    ]
    n = helper.make_node
    nodes = [
        n("Transpose", ["x"], ["t"], perm=[0, 2, 1], name="transpose"),
        n("MatMul", ["t", "W"], ["m"], name="matmul"),
        n("Add", ["m", "b"], ["a"], name="add"),
        n("Softmax", ["a"], ["s"], axis=-1, name="softmax"),
        n("ReduceMean", ["s"], ["r"], axes=[1], keepdims=1, name="reduce"),
        n("Reshape", ["s", "rows"], ["resh"], name="reshape"),
        n("Slice", ["resh", "starts", "ends", "axes1"], ["sl"], name="slice"),
        n("Gather", ["sl", "idx"], ["g"], axis=0, name="gather"),
        n("Cast", ["g"], ["c"], to=TensorProto.DOUBLE, name="cast"),
        n("Pad", ["r", "pads"], ["p"], mode="constant", name="pad"),
        n("Clip", ["a", "lo", "hi"], ["cl"], name="clip"),
        n("TopK", ["a", "k"], ["tv", "ti"], axis=-1, name="topk"),
        n("CumSum", ["tv", "zero"], ["cs"], name="cumsum"),
        n("LayerNormalization", ["a", "gamma", "beta"], ["ln"], axis=-1, epsilon=1e-5, name="layernorm"),
        n("Split", ["ln", "split"], ["s1", "s2"], axis=-1, name="split"),
        n("Concat", ["s2", "s1"], ["cat"], axis=-1, name="concat"),
        n("Tile", ["resh", "reps"], ["tile"], name="tile"),
        n("Unsqueeze", ["c", "ax0"], ["u"], name="unsqueeze"),
        n("Where", ["mask", "cl", "cat"], ["w"], name="where"),
        n("ArgMax", ["w"], ["am"], axis=1, keepdims=0, name="argmax"),
        n("Reshape", ["x", "r3"], ["t4"], name="to3d"),
        n("Conv", ["t4", "cw"], ["conv"], pads=[1, 1], strides=[1], name="conv1d"),
    ]
    inits += [_init("cw", rng.standard_normal((2, 3, 3)).astype(f32)), _init("r3", np.array([0, 3, 4], np.int64))]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4]),
              helper.make_tensor_value_info("idx", TensorProto.INT64, [2]),
              helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 5])]
    graph = helper.make_graph(nodes, "mixed", inputs, [], initializer=inits)
    return _typed(graph, ["u", "p", "cs", "ti", "w", "am", "tile", "conv"], 17)


def control_model() -> onnx.ModelProto:
    """If (branches read an outer value) and Loop (a carried sum and a scan output)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, "L"])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    then_out = helper.make_tensor_value_info("branch", TensorProto.FLOAT, [2, "L"])
    then_g = helper.make_graph([helper.make_node("Add", ["x", "one"], ["branch"], name="then_add")], "then", [],
                               [then_out], initializer=[_init("one", np.array(1, np.float32))])
    else_g = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["branch"], name="else_mul")], "else", [],
                               [helper.make_tensor_value_info("branch", TensorProto.FLOAT, [2, "L"])])
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"], name="keep_going"),
         helper.make_node("Add", ["acc_in", "picked"], ["acc_out"], name="accumulate"),
         helper.make_node("Relu", ["acc_out"], ["scan_out"], name="body_relu")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [2, "L"])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2, "L"]),
         helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, [2, "L"])])
    nodes = [
        helper.make_node("If", ["cond"], ["picked"], then_branch=then_g, else_branch=else_g, name="if"),
        helper.make_node("Loop", ["trips", "yes", "picked"], ["total", "scans"], body=body, name="loop"),
        helper.make_node("ReduceSum", ["scans"], ["y"], keepdims=0, name="sum"),
    ]
    graph = helper.make_graph(nodes, "control", [x, cond],
                              [helper.make_tensor_value_info("total", TensorProto.FLOAT, [2, "L"]),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
                              initializer=[_init("trips", np.array(3, np.int64)), _init("yes", np.array(True))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def shapes_model() -> onnx.ModelProto:
    """Shape arithmetic that sizes tensors at run time: Shape, ConstantOfShape, Range, Expand, NonZero."""
    n = helper.make_node
    nodes = [
        n("Shape", ["x"], ["sh"], name="shape"),
        n("ConstantOfShape", ["sh"], ["ones"], value=numpy_helper.from_array(np.array([1.5], np.float32)),
          name="const_of_shape"),
        n("Add", ["x", "ones"], ["xo"], name="add"),
        n("Gather", ["sh", "last"], ["L"], axis=0, name="length"),
        n("Range", ["start", "L", "step"], ["ramp"], name="range"),
        n("Cast", ["ramp"], ["rampf"], to=TensorProto.FLOAT, name="cast"),
        n("Expand", ["rampf", "sh"], ["ex"], name="expand"),
        n("Mul", ["ex", "xo"], ["prod"], name="mul"),
        n("Greater", ["prod", "zerof"], ["pos"], name="greater"),
        n("NonZero", ["pos"], ["nz"], name="nonzero"),
        n("ReduceMax", ["prod"], ["mx"], axes=[1], keepdims=0, name="reduce_max"),
        n("Unsqueeze", ["x", "axes01"], ["x4"], name="to4d"),
        n("Resize", ["x4", "", "scales"], ["big"], mode="nearest", name="resize"),
    ]
    inits = [_init("last", np.array(-1, np.int64)), _init("start", np.array(0, np.int64)),
             _init("step", np.array(1, np.int64)), _init("zerof", np.array(0, np.float32)),
             _init("scales", np.array([1, 1, 2, 2], np.float32)), _init("axes01", np.array([0, 1], np.int64))]
    graph = helper.make_graph(nodes, "shapes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "L"])],
                              [], initializer=inits)
    return _typed(graph, ["nz", "mx", "big"], 13)


# input shapes (and values) the shared seeds run with; other inputs take FeedRecipe.size for open dims
SHARED_SIZES = {"mtcnn_pnet.onnx": {"input_1": (1, 24, 24, 3)},
                "silero_vad.onnx": {"input": (1, 512), "state": (2, 1, 128)}}
SHARED_VALUES = {"silero_vad.onnx": {"sr": np.array(16000, np.int64)}}


def seed_models() -> dict[str, bytes]:
    """name -> serialized model: the synthetic ones always, two small shared ones when present."""
    seeds = {"conv_net": conv_net(), "mixed": mixed_model(), "control": control_model(), "shapes": shapes_model()}
    found = {name: model.SerializeToString() for name, model in seeds.items()}
    for name in SHARED_SIZES:
        if (SHARED_MODELS / name).is_file():
            found[name] = (SHARED_MODELS / name).read_bytes()
    return found


# --- feeds ------------------------------------------------------------------------------------------

_DTYPES = {"float": np.float32, "double": np.float64, "float16": np.float16, "int64": np.int64,
           "int32": np.int32, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_, "string": object}


@dataclass(frozen=True)
class FeedRecipe:
    """How to feed whatever inputs a (mutated) model declares: sizes, values and deliberate mistakes.

    ``edits`` are ``(input index, kind, parameter)``; the index wraps around the model's inputs.
    """

    size: int = 2  # every dim the model leaves open
    fill: str = "normal"  # normal, zeros, nan, inf, huge, ints
    edits: tuple = ()
    sizes: dict = field(default_factory=dict, hash=False)  # input name -> shape, overriding the rest
    values: dict = field(default_factory=dict, hash=False)  # input name -> the array to feed


def make_feeds(inputs: list, recipe: FeedRecipe) -> dict:
    """Feeds for ``session.get_inputs()`` following ``recipe`` (then its edits applied)."""
    feeds: dict = {}
    for arg in inputs:
        shape = recipe.sizes.get(arg.name) or tuple(d if isinstance(d, int) and d >= 0 else recipe.size
                                                    for d in arg.shape)
        if math.prod(shape) > FEED_ELEMENTS:  # a mutated declared dim: feed less (the run refuses it)
            shape = tuple(d if d <= 64 else 1 for d in shape)
        dtype = _DTYPES.get(arg.type[len("tensor("):-1], np.float32)
        feeds[arg.name] = recipe.values[arg.name] if arg.name in recipe.values else \
            _fill(shape, dtype, recipe.fill, arg.name)
    names = list(feeds)
    for index, kind, param in recipe.edits:
        if not names:
            feeds[f"stray{param}"] = np.zeros(param % 4, np.float32)
            continue
        name = names[index % len(names)]
        _edit(feeds, name, kind, param)
    return feeds


def _fill(shape: tuple, dtype, fill: str, name: str) -> np.ndarray:
    rng = np.random.default_rng(len(name))
    if dtype is object:
        return np.full(shape, "text", dtype=object)
    if np.dtype(dtype).kind == "b":
        return np.asarray(rng.random(shape) < 0.5)
    if np.dtype(dtype).kind in "iu":
        high = 3 if fill != "huge" else np.iinfo(dtype).max
        return rng.integers(0, high, size=shape, dtype=dtype, endpoint=True)
    values = {"normal": lambda: rng.standard_normal(shape), "zeros": lambda: np.zeros(shape),
              "nan": lambda: np.full(shape, np.nan), "inf": lambda: np.full(shape, -np.inf),
              "huge": lambda: np.full(shape, 3e38), "ints": lambda: rng.integers(-3, 4, size=shape)}[fill]()
    with np.errstate(all="ignore"):
        return values.astype(dtype)


def _edit(feeds: dict, name: str, kind: str, param: int) -> None:
    if name not in feeds:  # dropped by an earlier edit
        return
    arr = feeds[name]
    if not isinstance(arr, np.ndarray):  # made a Python value by an earlier edit
        return
    if kind == "drop":
        del feeds[name]
    elif kind == "extra":
        feeds[f"{name}_extra"] = arr
    elif kind == "rank_up":
        feeds[name] = arr[None]
    elif kind == "rank_down":
        feeds[name] = arr.reshape(-1)[:1].reshape(()) if arr.size else np.zeros((), arr.dtype)
    elif kind == "dim":
        if arr.ndim:
            shape = list(arr.shape)
            shape[param % arr.ndim] = param % 7
            feeds[name] = np.resize(arr, shape) if arr.size else np.zeros(shape, arr.dtype)
    elif kind == "empty":
        feeds[name] = np.zeros((0,) + arr.shape[1:], arr.dtype)
    elif kind == "dtype":
        target = [np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_, np.complex64, object][param % 8]
        with np.errstate(all="ignore"), contextlib.suppress(ValueError, TypeError, OverflowError):
            feeds[name] = arr.astype(target)
    elif kind == "nan":
        if arr.dtype.kind == "f" and arr.size:
            arr = arr.copy()
            arr.flat[param % arr.size] = np.nan
            feeds[name] = arr
    elif kind == "noncontiguous":
        feeds[name] = np.asfortranarray(arr) if arr.ndim > 1 else arr[::-1] if arr.ndim else arr
    elif kind == "python":
        feeds[name] = [None, arr.tolist(), "text", 3, {"a": 1}, b"bytes"][param % 6]


# --- one case ---------------------------------------------------------------------------------------

def run_case(model: bytes, recipe: FeedRecipe, mode: str) -> tuple[str, str, str]:
    """Load ``model`` and run it twice on the recipe's feeds; what came out (see the module doc)."""
    import gpuinfer
    from gpuinfer.graph import build

    fold_limit, build.MAX_FOLDED_BYTES = build.MAX_FOLDED_BYTES, FOLD_LIMIT  # restored below
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode, memory_limit_bytes=MEMORY_LIMIT)
            feeds = make_feeds(sess.get_inputs(), recipe)
            for _ in range(2):
                sess.run(None, feeds)
    except gpuinfer.GpuinferError as exc:
        return "refused", type(exc).__name__, str(exc)[:300]
    except BaseException as exc:  # noqa: BLE001 - the finding itself
        return "escape", type(exc).__name__, "".join(traceback.format_exception(exc))[-4000:]
    finally:
        build.MAX_FOLDED_BYTES = fold_limit
    return "ok", "", ""


@contextlib.contextmanager
def capped_address_space(headroom: int = ADDRESS_SPACE_HEADROOM):
    """Cap this process's address space a few GiB above what it maps now (a mutated dim asking
    for a terabyte then fails in malloc instead of summoning the OOM killer); restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = _mapped_bytes()
    if mapped is None:
        yield
        return
    cap = mapped + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _mapped_bytes() -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def run_in_thread(model: bytes, recipe: FeedRecipe, mode: str, timeout: float = CASE_SECONDS
                  ) -> tuple[str, str, str]:
    """``run_case`` here, in a thread joined with ``timeout`` (a hang is reported, not waited out)."""
    box: list = []
    with capped_address_space():
        worker = threading.Thread(target=lambda: box.append(run_case(model, recipe, mode)), daemon=True)
        worker.start()
        worker.join(timeout)
    if not box:
        return "escape", "Hang", f"the case ran past {timeout} s"
    return box[0]


class SubprocessRunner:
    """Runs cases in a worker process (restarted after a crash or a hang), for the long mode."""

    def __init__(self, timeout: float = CASE_SECONDS, target=None):
        self.timeout = timeout
        self._target = target or _worker  # a module-level function of a pipe end (spawn imports it)
        self._ctx = multiprocessing.get_context("spawn")
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        self._conn, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=self._target, args=(child,), daemon=True)
        self._proc.start()
        child.close()

    def run(self, model: bytes, recipe: FeedRecipe, mode: str) -> tuple[str, str, str]:
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send((model, recipe, mode))
        if not self._conn.poll(self.timeout):
            self.close()
            return "escape", "Hang", f"the case ran past {self.timeout} s"
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(5)
            code = self._proc.exitcode
            self._proc = None
            return "escape", "Crash", f"the worker process died (exit code {code}; negative = signal)"

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
            self._proc = None


def _worker(conn) -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import gpuinfer  # noqa: F401  (import before capping memory)

    with capped_address_space():
        while True:
            try:
                model, recipe, mode = conn.recv()
            except EOFError:
                return
            conn.send(run_case(model, recipe, mode))


def crashing_worker(conn) -> None:
    """A worker that dies by a signal on its first case: how the runner's crash report is tested."""
    conn.recv()
    os.abort()


def sleeping_worker(conn) -> None:
    """A worker that never answers: how the runner's hang report is tested."""
    conn.recv()
    import time

    time.sleep(3600)
