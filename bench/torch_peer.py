"""PyTorch eager as the peer for u2net: the ONNX graph run op by op with torch's own kernels.

    python bench/torch_peer.py MODEL.onnx [--device cuda|cpu] [--repeat 20] [--shape 1,3,320,320]

No onnx2torch on the GPU machine and no network there, so this is a small interpreter written
for the ops U^2-Net uses (Conv, Relu, MaxPool, Resize, Concat, Add, Sigmoid, BatchNormalization,
and the Shape/Gather/Unsqueeze/Slice/Cast/Constant chains that compute Resize's sizes).  To be
fair to PyTorch, those shape chains are worked out once per input shape (the first call) and
later calls run only the tensor ops, as a hand-written ``nn.Module`` would: about 230 torch
calls for u2net, under ``torch.inference_mode``.  Weights go to the device once.

Reports the first call's time, the median latency (CUDA-synchronised) and the peak memory torch's
caching allocator counted (``torch.cuda.max_memory_allocated``; on the CPU: not measured).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import numpy as np

SHAPE_OPS = frozenset({"Shape", "Gather", "Unsqueeze", "Squeeze", "Slice", "Cast", "Constant", "Concat"})


class OnnxTorch:
    """Runs an ONNX graph with torch; shape chains folded per input shape."""

    def __init__(self, path: str, device: str) -> None:
        import onnx
        import torch
        from onnx import numpy_helper

        self.torch = torch
        self.device = torch.device(device)
        model = onnx.load(path)
        self.graph = model.graph
        self.weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()).to(self.device)
                        for t in self.graph.initializer}
        self.inputs = [i.name for i in self.graph.input if i.name not in self.weights]
        self.outputs = [o.name for o in self.graph.output]
        self.attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in self.graph.node]
        self._folded: dict[tuple, tuple[dict, list[int]]] = {}  # input shapes -> (host values, steps to run)

    def __call__(self, *feeds: Any) -> list:
        key = tuple(tuple(f.shape) for f in feeds)
        if key not in self._folded:
            return self._first_call(key, feeds)
        host, steps = self._folded[key]
        env = dict(self.weights)
        env.update(host)
        env.update(zip(self.inputs, feeds))
        nodes = self.graph.node
        for i in steps:
            node = nodes[i]
            results = self._op(node, self.attrs[i], [env[n] if n else None for n in node.input])
            env.update(zip(node.output, results if isinstance(results, (list, tuple)) else [results]))
        return [env[name] for name in self.outputs]

    def _first_call(self, key: tuple, feeds: tuple) -> list:
        """Run every node; keep what the shape chains computed (host numpy) and which steps are
        device work, so later calls with these input shapes run only those."""
        env: dict[str, Any] = dict(self.weights)
        env.update(zip(self.inputs, feeds))
        host: dict[str, np.ndarray] = {}
        steps: list[int] = []
        for i, node in enumerate(self.graph.node):
            args = [env[n] if n else None for n in node.input]
            if node.op_type == "Shape":
                value: Any = np.array(tuple(args[0].shape), dtype=np.int64)
            elif node.op_type in SHAPE_OPS and all(a is None or isinstance(a, np.ndarray) for a in args):
                value = _host_op(node.op_type, self.attrs[i], args)
            else:
                steps.append(i)
                results = self._op(node, self.attrs[i], args)
                env.update(zip(node.output, results if isinstance(results, (list, tuple)) else [results]))
                continue
            env[node.output[0]] = host[node.output[0]] = value
        self._folded[key] = ({k: self._as_tensor(v) for k, v in host.items()}, steps)
        return [env[name] for name in self.outputs]

    def _as_tensor(self, value: np.ndarray) -> Any:
        if value.dtype.kind == "f" and value.size > 1:
            return self.torch.from_numpy(value.copy()).to(self.device)
        return value  # shape data and scalars stay on the host (sizes, indices, empty scales)

    def _op(self, node: Any, attrs: dict, args: list) -> Any:
        torch = self.torch
        F = torch.nn.functional
        op = node.op_type
        if op not in ("Resize",):
            args = [self._as_tensor(a) if isinstance(a, np.ndarray) else a for a in args]
        if op == "Conv":
            pads = attrs.get("pads", [0, 0, 0, 0])
            x = args[0]
            if pads[:2] != pads[2:]:
                x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
                pads = [0, 0, 0, 0]
            return F.conv2d(x, args[1], args[2] if len(args) > 2 else None, stride=attrs.get("strides", 1),
                            padding=tuple(pads[:2]), dilation=attrs.get("dilations", 1), groups=attrs.get("group", 1))
        if op == "Relu":
            return torch.relu(args[0])
        if op == "Sigmoid":
            return torch.sigmoid(args[0])
        if op == "Add":
            return args[0] + args[1]
        if op == "Concat":
            return torch.cat(args, dim=attrs["axis"])
        if op == "MaxPool":
            pads = attrs.get("pads", [0, 0, 0, 0])
            return F.max_pool2d(args[0], attrs["kernel_shape"], attrs.get("strides", attrs["kernel_shape"]),
                                padding=tuple(pads[:2]), ceil_mode=bool(attrs.get("ceil_mode", 0)))
        if op == "BatchNormalization":
            return F.batch_norm(args[0], args[3], args[4], args[1], args[2], False, 0.0, attrs.get("epsilon", 1e-5))
        if op == "Resize":
            return self._resize(attrs, args)
        raise NotImplementedError(f"torch_peer: no torch version of ONNX op {op}")

    def _resize(self, attrs: dict, args: list) -> Any:
        F = self.torch.nn.functional
        x = args[0]
        sizes = args[3] if len(args) > 3 and args[3] is not None and np.size(args[3]) else None
        mode = attrs.get("mode", b"nearest").decode()
        transform = attrs.get("coordinate_transformation_mode", b"half_pixel").decode()
        size = tuple(int(s) for s in np.asarray(sizes)[2:]) if sizes is not None else None
        scale = None if size is not None else tuple(float(s) for s in np.asarray(args[2])[2:])
        if mode == "linear":
            return F.interpolate(x, size=size, scale_factor=scale, mode="bilinear",
                                 align_corners=transform == "align_corners")
        return F.interpolate(x, size=size, scale_factor=scale, mode="nearest")


def _host_op(op: str, attrs: dict, args: list) -> np.ndarray:
    """The shape-chain ops on numpy."""
    if op == "Constant":
        from onnx import numpy_helper

        return numpy_helper.to_array(attrs["value"])
    if op == "Gather":
        return np.take(args[0], args[1], axis=attrs.get("axis", 0))
    if op == "Unsqueeze":
        axes = attrs.get("axes") if args[1:2] == [None] or len(args) < 2 else list(args[1])
        return np.expand_dims(args[0], tuple(axes))
    if op == "Squeeze":
        return np.squeeze(args[0], tuple(attrs["axes"])) if "axes" in attrs else np.squeeze(args[0])
    if op == "Concat":
        return np.concatenate([np.atleast_1d(a) for a in args], axis=attrs["axis"])
    if op == "Cast":
        from onnx import helper

        return args[0].astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
    if op == "Slice":
        data, starts, ends = args[0], args[1], args[2]
        axes = args[3] if len(args) > 3 and args[3] is not None else range(len(starts))
        steps = args[4] if len(args) > 4 and args[4] is not None else [1] * len(starts)
        index = [slice(None)] * data.ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            index[int(a)] = slice(int(s), int(e), int(st))
        return data[tuple(index)]
    raise NotImplementedError(op)


def measure(path: str, device: str, shape: tuple, repeat: int) -> dict:
    """First-call seconds, median seconds and peak bytes of torch eager on ``path``."""
    import torch

    peer = OnnxTorch(path, device)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32)).to(peer.device)
    cuda = peer.device.type == "cuda"

    def once() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            out = peer(x)
        if cuda:
            torch.cuda.synchronize()
        del out
        return time.perf_counter() - start

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    first = once()
    times = [once() for _ in range(repeat)]
    peak = torch.cuda.max_memory_allocated() - base if cuda else None
    return {"runtime": f"torch {torch.__version__} eager", "device": str(peer.device), "first_s": first,
            "median_s": statistics.median(times), "peak_bytes": peak, "weights_bytes": base if cuda else None,
            "runs": repeat}


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--shape", default="1,3,320,320")
    args = parser.parse_args(argv)
    shape = tuple(int(d) for d in args.shape.split(","))
    print(json.dumps(measure(args.model, args.device, shape, args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
