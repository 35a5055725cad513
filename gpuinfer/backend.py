"""gpuinfer as an ``onnx.backend.base.Backend``: what the ONNX backend test suite drives.

Use it like onnxruntime's backend module::

    import gpuinfer.backend as backend
    rep = backend.prepare(model, device="CPU", memory_mode="arena")
    outputs = rep.run([x])            # or rep.run({"x": x}); outputs in graph output order
    outputs = backend.run_model(model, [x])
    outputs = backend.run_node(node, [x, y])

The memory mode comes from the ``memory_mode`` keyword, else from the class attribute
``memory_mode`` (``backend_for("arena")`` makes a subclass with that default, which is how the
test suite runs every test in two modes), else from the module's ``DEFAULT_MEMORY_MODE``.  The device names are onnx's:
``"CPU"`` and ``"CUDA"`` (``"CUDA:0"``); gpuinfer drives one GPU, so only device id 0 is accepted.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import onnx
from onnx import helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

from gpuinfer.errors import GpuinferError, InputError
from gpuinfer.plan import MODES
from gpuinfer.runtime.session import InferenceSession

DEFAULT_MEMORY_MODE = "per_tensor"

# InferenceSession keywords that prepare() passes through.
_SESSION_KWARGS = ("keep", "sample_memory", "memory_limit_bytes", "plan_cache_size", "profile")
# Keywords the onnx test runner may hand to prepare() (per-test tolerances): not ours, ignored.
_IGNORED_KWARGS = ("rtol", "atol")


def _device_name(device: str) -> str:
    """onnx's device string ("CPU", "CUDA", "CUDA:0") -> gpuinfer's ("cpu", "cuda")."""
    try:
        parsed = Device(device)
    except (AttributeError, ValueError):
        raise GpuinferError(f"unknown device {device!r}; the ONNX backend API names 'CPU' or 'CUDA[:0]'") from None
    if parsed.device_id != 0:
        raise GpuinferError(f"device {device!r}: gpuinfer drives one device, id 0 only")
    return "cuda" if parsed.type == DeviceType.CUDA else "cpu"


class GpuinferRep(BackendRep):
    """A prepared model: one ``InferenceSession`` that ``run`` feeds positionally or by name."""

    def __init__(self, session: InferenceSession) -> None:
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self._outputs_type = namedtupledict("Outputs", self.output_names)

    def run(self, inputs: Any, **kwargs: Any) -> tuple:
        """Outputs in graph output order (a namedtuple that also takes output names as keys).

        ``inputs``: a list/tuple given in the order of the model's inputs (initializers excluded),
        a dict name -> value, or one array for a one-input model.  A sequence input takes a list
        of arrays, an optional input an array, a list or None (empty); outputs come back alike.
        """
        feeds = self._feeds(inputs)
        outputs = self.session.run(None, feeds)
        return self._outputs_type(*outputs)

    def _feeds(self, inputs: Any) -> dict:
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if not isinstance(inputs, (list, tuple)):
                inputs = [inputs]
            if len(inputs) > len(self.input_names):
                raise InputError(f"{len(inputs)} inputs given, but the model takes "
                                 f"{len(self.input_names)}: {self.input_names}")
            feeds = dict(zip(self.input_names, inputs))
        return feeds  # the session checks each feed against its input's type (tensor, sequence, optional)


class GpuinferBackend(Backend):
    """``onnx.backend.base.Backend`` over ``gpuinfer.InferenceSession``."""

    memory_mode: Optional[str] = None  # None: the module's DEFAULT_MEMORY_MODE at prepare() time
    device: Optional[str] = None  # gpuinfer device that runs "CPU" tests (e.g. "strict"); None: as named

    @classmethod
    def supports_device(cls, device: str) -> bool:
        try:
            name = _device_name(device)
        except GpuinferError:
            return False
        if name == "cpu":
            return True
        from gpuinfer.backends import cuda_unavailable_reason

        return cuda_unavailable_reason() is None

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> GpuinferRep:
        """Load ``model`` (ModelProto, bytes or path) into a session; raises ``GpuinferError`` subclasses."""
        memory_mode = kwargs.pop("memory_mode", None) or cls.memory_mode or DEFAULT_MEMORY_MODE
        if memory_mode not in MODES:
            raise GpuinferError(f"unknown memory_mode {memory_mode!r}; choose one of {sorted(MODES)}")
        options = {k: kwargs.pop(k) for k in _SESSION_KWARGS if k in kwargs}
        for k in _IGNORED_KWARGS:
            kwargs.pop(k, None)
        if kwargs:
            raise TypeError(f"prepare() got unexpected keyword argument(s) {sorted(kwargs)}")
        session = InferenceSession(model, device=cls.device or _device_name(device), memory_mode=memory_mode,
                                   **options)
        return GpuinferRep(session)

    @classmethod
    def run_model(cls, model: Any, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Optional[Sequence[tuple[np.dtype, tuple[int, ...]]]] = None,
                 **kwargs: Any) -> tuple:
        """Run one node: it is wrapped in a one-node model (opset ``opset_version`` or the newest)."""
        opset = kwargs.pop("opset_version", None)
        model = node_model(node, inputs, outputs_info, opset)
        return cls.run_model(model, [x for name, x in zip(node.input, _as_list(inputs, node)) if name],
                             device, **kwargs)


def _as_list(inputs: Any, node: onnx.NodeProto) -> list:
    if isinstance(inputs, dict):
        return [inputs.get(name) for name in node.input]
    return list(inputs)


def node_model(node: onnx.NodeProto, inputs: Any, outputs_info: Optional[Sequence] = None,
               opset: Optional[int] = None) -> onnx.ModelProto:
    """A model whose graph is ``node`` alone, inputs typed after the arrays given."""
    values = _as_list(inputs, node)
    graph_inputs = []
    for name, x in zip(node.input, values):
        if not name:
            continue
        x = np.asarray(x)
        graph_inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape))
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    version = opset if opset is not None else onnx.defs.onnx_opset_version()
    imports = [helper.make_opsetid("", version if domain == "" else onnx.defs.onnx_opset_version())]
    if domain:
        imports.append(helper.make_opsetid(domain, opset or 1))
    inferred = _inferred_types(node, graph_inputs, imports)
    graph_outputs = []
    for i, name in enumerate(node.output):
        if not name:
            continue
        if outputs_info is not None and i < len(outputs_info):
            dtype, shape = outputs_info[i]
            graph_outputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape))
        elif name in inferred:
            graph_outputs.append(inferred[name])
        else:  # the checker wants a type; shape inference could not say, so claim an unknown-shape float
            graph_outputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    graph = helper.make_graph([node], f"{node.op_type}_node", graph_inputs, graph_outputs)
    return helper.make_model(graph, opset_imports=imports)


def _inferred_types(node: onnx.NodeProto, graph_inputs: list, imports: list) -> dict:
    """Output name -> ValueInfoProto as ONNX shape inference types them (empty when it cannot)."""
    graph = helper.make_graph([node], "infer", graph_inputs, [])
    try:
        inferred = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=imports))
    except Exception:
        return {}
    return {v.name: v for v in inferred.graph.value_info if v.type.WhichOneof("value") is not None}


def backend_for(memory_mode: str, device: Optional[str] = None) -> type[GpuinferBackend]:
    """A ``GpuinferBackend`` subclass whose default memory mode is ``memory_mode``; with ``device``
    (e.g. ``"strict"``, the CUDA path on the strict CuPy stand-in) the tests that onnx's runner
    names "CPU" run on that gpuinfer device instead."""
    if memory_mode not in MODES:
        raise GpuinferError(f"unknown memory_mode {memory_mode!r}; choose one of {sorted(MODES)}")
    name = "GpuinferBackend_" + memory_mode + (f"_{device}" if device else "")
    return type(name, (GpuinferBackend,), {"memory_mode": memory_mode, "device": device, "__module__": __name__})


# Module-level API, so that ``gpuinfer.backend`` itself can be handed to onnx's BackendTest.
prepare = GpuinferBackend.prepare
run_model = GpuinferBackend.run_model
run_node = GpuinferBackend.run_node
supports_device = GpuinferBackend.supports_device
is_compatible = GpuinferBackend.is_compatible

__all__ = ["DEFAULT_MEMORY_MODE", "GpuinferBackend", "GpuinferRep", "backend_for", "is_compatible",
           "node_model", "prepare", "run_model", "run_node", "supports_device"]
