"""The measure step of bench/gpu_proof.py, in its own process (a CUDA failure cannot take the
proof down): every model, every memory mode, eagerly and with CUDA graphs; one JSON line a row,
appended as it goes, so a step that runs out of time still leaves what it measured.

    python bench/gpu_proof_measure.py --models-dir DIR --rows FILE [--dry-run] [--quick]
        [--repeat N] [--budget SECONDS] [--no-u2net] [--models TEXT ...]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from gpu_proof import DRY_SHAPES, GRAPH_MODES, MODES  # noqa: E402

U2NET_SHAPE = (1, 3, 320, 320)


def models_to_run(folder: Path, args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(name, path): the full u2net first, then u2netp, then the rest smallest first."""
    found = sorted((folder / "models").glob("*.onnx"), key=lambda p: (p.name != "u2netp.onnx", p.name.startswith("light_"),
                                                                     p.stat().st_size))
    if args.dry_run:  # the stand-in runs kernels on numpy: the light networks' 100s of MB would take minutes
        found = [p for p in found if not p.name.startswith("light_")]
    if args.models:
        found = [p for p in found if any(t in p.name for t in args.models)]
    listed = [(p.name, p) for p in found]
    if not args.no_u2net and not args.dry_run and (folder / "u2net" / "graph.onnx").exists():
        listed.insert(0, ("u2net.onnx (full, rebuilt)", folder / "u2net" / "u2net.onnx"))
    return listed


def rebuild_u2net(folder: Path) -> Path:
    """The full u2net from its weight-free graph (rebuild.py: seeded random weights, 176 MB)."""
    out = folder / "u2net" / "u2net.onnx"
    if not out.exists():
        spec = importlib.util.spec_from_file_location("u2net_rebuild", folder / "u2net" / "rebuild.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        import onnx

        onnx.save(module.rebuild(0), str(out))
    return out


def feeds_for(name: str, path: Path, dry: bool) -> dict:
    import numpy as np

    from tests import model_zoo

    rng = np.random.default_rng(0)
    if name.startswith("u2net.onnx"):
        return {"input.1": rng.standard_normal(U2NET_SHAPE).astype(np.float32)}
    if dry and name in DRY_SHAPES:
        return {k: rng.standard_normal(shape).astype(np.float32) for k, shape in DRY_SHAPES[name].items()}
    if model_zoo.SHARED_FEEDS.get(name) is not None:
        return model_zoo.shared_feeds(name)
    from common import made_feeds

    return made_feeds(path)


def measure(source: str, feeds: dict, device: str, mode: str, graphs: bool, repeat: int) -> dict:
    """First run, median of ``repeat`` later runs (after capture, with graphs) and the report, from a
    session without the sampler (its polling thread would take the GIL from the timed runs); the
    NVML-sampled peak from a second session's last run.  On the stand-in one session does both."""
    import gpuinfer

    dry = device == "strict"
    sess = gpuinfer.InferenceSession(source, device=device, memory_mode=mode, cuda_graph=graphs, sample_memory=dry)
    start = time.perf_counter()
    sess.run(None, feeds)
    first = time.perf_counter() - start
    for _ in range(2 if graphs else 0):  # the sizing run and the captured one
        sess.run(None, feeds)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - start)
    rep = nvml = sess.memory_report()
    del sess
    if not dry:
        sampled = gpuinfer.InferenceSession(source, device=device, memory_mode=mode, cuda_graph=graphs,
                                            sample_memory=True)
        for _ in range(4 if graphs else 2):  # to a replay with graphs, else a second run
            sampled.run(None, feeds)
        nvml = sampled.memory_report()
    return {"first_s": first, "median_s": statistics.median(times), "runs": repeat, "status": rep.cuda_graph,
            "peak_bytes": rep.peak_bytes, "sampled_peak_bytes": nvml.sampled_peak_bytes, "sampler": nvml.sampler,
            "lower_bound_bytes": rep.lower_bound_bytes, "planned_bytes": rep.planned_bytes,
            "graph_pool_bytes": rep.graph_pool_bytes, "held_bytes": rep.held_bytes_after_run}


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models-dir", required=True)
    parser.add_argument("--rows", required=True)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-u2net", action="store_true")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--budget", type=float, default=200)
    parser.add_argument("--models", action="append")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.budget
    folder = Path(args.models_dir)
    device = "strict" if args.dry_run else "cuda"
    rows = Path(args.rows)
    last = 0.0  # seconds the latest session took: the next one is started only if it fits
    for name, path in models_to_run(folder, args):
        base = {"model": name}
        try:
            if name.startswith("u2net.onnx"):
                path = rebuild_u2net(folder)
            feeds = feeds_for(name, path, args.dry_run)
        except Exception as exc:  # noqa: BLE001 — one model's failure is one row
            _append(rows, dict(base, error=f"{type(exc).__name__}: {exc}"))
            continue
        base["shapes"] = {k: list(getattr(v, "shape", ())) for k, v in feeds.items()}
        for mode in MODES:
            for graphs in ((False, True) if mode in GRAPH_MODES else (False,)):
                row = dict(base, mode=mode, graphs=graphs)
                if time.monotonic() + last > deadline:  # the next session would not finish in time
                    _append(rows, dict(row, error="not measured: the step's time ran out"))
                    continue
                started = time.monotonic()
                try:
                    row.update(measure(str(path), feeds, device, mode, graphs, args.repeat))
                except Exception as exc:  # noqa: BLE001
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                last = time.monotonic() - started
                _append(rows, row)
                print(json.dumps(row), flush=True)
    return 0


def _append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
