"""The GPU proof in one command: tests, node suite, every model in every mode (eager and CUDA
graphs), PyTorch eager as u2net's peer, and bench/RESULTS-gpu.md.

A GPU session runs, from the repository root, first on the CPU machine::

    python bench/gpu_proof.py --stage .proof

(copies the shared models and u2net's weight-free graph + rebuild.py into the git-ignored .proof/,
prints the carry list and the size that will travel), then ONE call of the device tool::

    run(command="python3 bench/gpu_proof.py --models-dir .proof", carry=[".proof"], timeout_s=560)

and commits bench/RESULTS-gpu.md (the reply's files hold a copy from $OUT as well).

Steps, most valuable first, each with its own time limit; a step that fails or runs out of time
is recorded as such and the next one runs; the results file is rewritten after every step:

- measure: every staged model and the full u2net (rebuilt from its graph, 1x3x320x320), in every
  memory mode, eagerly and (arena, per_tensor) with CUDA graphs: first-run time, median latency,
  exact (counted) peak, NVML-sampled peak, lower bound, graph pool bytes;
- torch: PyTorch eager on u2net on the same GPU (bench/torch_peer.py);
- tests: pytest on the CUDA device (tests/cuda, the CUDA graph tests, the op and model tests);
- suite: onnx's backend node suite on CUDA, with its count.

``--dry-run`` runs the same steps on the strict CuPy stand-in (device="strict") with reduced
sizes and writes bench/RESULTS-gpu-dryrun.md, labelled as not a GPU: CI runs it so the script is
known to work end to end before any GPU sees it.  Whole proof on a GPU: under 8 minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "bench")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

SHARED = ROOT.parent / "shared" / "models"
STAGE_LIMIT_MIB = 62.0  # the device tool carries 64 MiB: checkout + carried folders
GPU_RUN_COMMAND = ('run(command="python3 bench/gpu_proof.py --models-dir .proof", carry=[".proof"], '
                   'timeout_s=560)')
MODES = ("per_tensor", "reduce", "reuse", "arena")
GRAPH_MODES = ("per_tensor", "arena")
# The seed study (ailia SDK on the full u2net at 1x3x320x320), MB = 10^6 bytes.
AILIA = {"per_tensor": 557.2, "reduce": 176.4, "reuse": 296.8}
# Seconds per step on a GPU (the whole proof stays under 8 minutes) and on the stand-in.
BUDGET_GPU = {"measure": 190, "torch": 45, "tests": 100, "suite": 110}
BUDGET_DRY = {"measure": 240, "torch": 60, "tests": 120, "suite": 120}
# Smaller shapes for the stand-in where a model's inputs are dynamic (numpy runs the kernels).
DRY_SHAPES = {"ch_PP-OCRv4_det_infer.onnx": {"x": (1, 3, 64, 64)}, "nudenet_320n.onnx": {"images": (1, 3, 64, 64)},
              "ch_PP-OCRv4_rec_infer.onnx": {"x": (1, 3, 48, 64)}, "mtcnn_pnet.onnx": {"input_1": (1, 24, 32, 3)}}


# --- staging (on the CPU machine) ------------------------------------------------------------------
def stage(folder: Path, names: Optional[list[str]]) -> int:
    """Copy the models the proof needs into ``folder`` (git-ignored) and say what to carry."""
    if not SHARED.is_dir():
        print(f"no shared models at {SHARED}", file=sys.stderr)
        return 2
    folder = folder if folder.is_absolute() else ROOT / folder
    models = folder / "models"
    models.mkdir(parents=True, exist_ok=True)
    for path in sorted(SHARED.glob("*.onnx")):
        if not names or any(n in path.name for n in names):
            shutil.copy2(path, models / path.name)
    if (SHARED / "u2net").is_dir():
        (folder / "u2net").mkdir(exist_ok=True)
        for name in ("graph.onnx", "rebuild.py"):
            shutil.copy2(SHARED / "u2net" / name, folder / "u2net" / name)
    staged = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    tree = _travelling_tree_bytes()
    rel = os.path.relpath(folder, ROOT)
    ignored = subprocess.run(["git", "check-ignore", "-q", rel], cwd=ROOT).returncode == 0
    print(f"staged {staged / 2**20:.1f} MiB in {rel}/ ({'git-ignored' if ignored else 'NOT git-ignored: add it to .gitignore'})")
    print(f"the working tree that travels: {tree / 2**20:.1f} MiB; with the carry: {(tree + staged) / 2**20:.1f} MiB "
          f"(limit 64 MiB)")
    print(f"carry: [{rel!r}]".replace("'", '"'))
    print(f"then: {GPU_RUN_COMMAND.replace('.proof', rel)}")
    if (tree + staged) / 2**20 > STAGE_LIMIT_MIB:
        print(f"too big to travel: stage fewer models (--models ...)", file=sys.stderr)
        return 1
    return 0


def _travelling_tree_bytes() -> int:
    """Tracked files plus untracked files git does not ignore: what the device tool copies."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, text=True).stdout.split("\0")
    return sum((ROOT / p).stat().st_size for p in listed if p and (ROOT / p).is_file())


# --- the device and where results go ---------------------------------------------------------------
def device_facts(dry: bool) -> dict:
    """Device name, driver, CuPy and CUDA versions (the stand-in says what it is)."""
    facts: dict[str, Any] = {"python": platform.python_version(), "host": platform.node()}
    if dry:
        facts.update(device="strict CuPy stand-in (numpy on the CPU), not a GPU", driver="-", cupy="-", cuda="-")
        return facts
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        facts.update(device=name.decode() if isinstance(name, bytes) else str(name), cupy=cupy.__version__,
                     cuda_runtime=_cuda_version(cupy.cuda.runtime.runtimeGetVersion()),
                     cuda_driver_api=_cuda_version(cupy.cuda.runtime.driverGetVersion()),
                     memory_gib=round(props["totalGlobalMem"] / 2**30, 1))
    except Exception as exc:  # noqa: BLE001 — a proof without a device still writes why
        facts["device"] = f"no CUDA device: {type(exc).__name__}: {exc}"
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        facts["driver"] = driver.decode() if isinstance(driver, bytes) else driver
    except Exception as exc:  # noqa: BLE001
        facts["driver"] = f"unknown ({type(exc).__name__})"
    return facts


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


class Proof:
    """The proof's state: step outcomes, measured rows, written out after every step."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dry = args.dry_run
        self.started = time.perf_counter()
        self.steps: dict[str, dict] = {}
        self.rows: list[dict] = []
        self.torch: Optional[dict] = None
        self.facts = device_facts(self.dry)
        default = ROOT / "bench" / ("RESULTS-gpu-dryrun.md" if self.dry else "RESULTS-gpu.md")
        self.results = Path(args.results) if args.results else default
        self.out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None

    def write(self) -> None:
        from gpu_proof_report import render

        text = render(self)
        self.results.write_text(text)
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / self.results.name).write_text(text)
            (self.out / "proof.json").write_text(json.dumps(
                {"facts": self.facts, "steps": self.steps, "rows": self.rows, "torch": self.torch}, indent=1))


# --- steps -----------------------------------------------------------------------------------------
def run_step(proof: Proof, name: str, command: list[str], budget: float, env: Optional[dict] = None) -> str:
    """Run one step's command with its time limit; record status, seconds and the output's tail."""
    started = time.perf_counter()
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    print(f"[gpu_proof] {name}: {' '.join(command)} (limit {budget:.0f} s)", flush=True)
    try:
        done = subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=budget)
        output, status = done.stdout + done.stderr, "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr)
        status = f"timed out after {budget:.0f} s"
    seconds = time.perf_counter() - started
    tail = "\n".join(output.strip().splitlines()[-25:])
    proof.steps[name] = {"status": status, "seconds": round(seconds, 1), "command": " ".join(command), "tail": tail}
    print(f"[gpu_proof] {name}: {status} in {seconds:.1f} s\n{tail}", flush=True)
    return output


def _text(data: Any) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def step_tests(proof: Proof, budget: float, models_dir: Path) -> None:
    args = proof.args
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts="]
    if proof.dry:
        cmd += ["tests/devices/test_cuda_graph.py", "-k",
                "capture_refuses or replay_reruns" if args.quick else "not shared_models"]
    else:
        if _has("xdist"):
            cmd += ["-n", "auto"]
        cmd += ["tests/cuda", "tests/devices/test_cuda_graph.py", "tests/ops", "tests/test_models.py"]
    run_step(proof, "tests", cmd, budget, {"GPUINFER_SHARED_MODELS": str(models_dir / "models")})


def step_suite(proof: Proof, budget: float) -> None:
    cmd = [sys.executable, "-m", "tests.test_onnx_backend", "--device", "strict" if proof.dry else "cuda",
           "--count", "-j", str(os.cpu_count() or 1)]
    if proof.args.quick:
        cmd += ["-k", "test_relu|test_sigmoid|test_maxpool_2d_default"]
    elif proof.dry:  # numpy runs every kernel: the ops of u2net, not all 1,884 tests
        cmd += ["-k", "test_conv|test_relu|test_maxpool|test_resize|test_concat|test_add|test_sigmoid"]
    run_step(proof, "suite", cmd, budget)


def step_measure(proof: Proof, budget: float, models_dir: Path) -> None:
    rows_file = (proof.out or ROOT / "bench") / ".gpu_proof_rows.jsonl"
    rows_file.unlink(missing_ok=True)
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_proof_measure.py"), "--models-dir", str(models_dir),
           "--rows", str(rows_file), "--repeat", str(proof.args.repeat), "--budget", str(budget - 10)]
    if proof.dry:
        cmd.append("--dry-run")
    if proof.args.quick:
        cmd.append("--quick")
    if proof.args.no_u2net:
        cmd.append("--no-u2net")
    for text in proof.args.models or ():
        cmd += ["--models", text]
    run_step(proof, "measure", cmd, budget)
    if rows_file.exists():
        proof.rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]
        rows_file.unlink()


def step_torch(proof: Proof, budget: float, models_dir: Path) -> None:
    if not _has("torch"):
        proof.steps["torch"] = {"status": "skipped: torch is not installed here", "seconds": 0, "command": "", "tail": ""}
        return
    u2net = models_dir / "u2net" / "u2net.onnx"
    model = u2net if u2net.exists() and not proof.dry else models_dir / "models" / "u2netp.onnx"
    device = "cpu" if proof.dry else "cuda"
    cmd = [sys.executable, str(ROOT / "bench" / "torch_peer.py"), str(model), "--device", device,
           "--repeat", str(2 if proof.dry else 20)]
    output = run_step(proof, "torch", cmd, budget)
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            proof.torch = dict(json.loads(line), model=model.name)
            break


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", metavar="DIR", help="copy the models into DIR (git-ignored) and exit")
    parser.add_argument("--models-dir", default=None, help="the staged folder (default .proof if staged, "
                        "else ../shared/models' parent layout)")
    parser.add_argument("--dry-run", action="store_true", help="on the strict CuPy stand-in, reduced sizes")
    parser.add_argument("--quick", action="store_true", help="fewest runs and tests (CI)")
    parser.add_argument("--models", action="append", help="only models whose file name contains this (repeatable)")
    parser.add_argument("--no-u2net", action="store_true", help="skip the full u2net rebuild and runs")
    parser.add_argument("--steps", default="measure,torch,tests,suite", help="comma-separated steps, in order")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per session (median)")
    parser.add_argument("--results", default=None, help="the results file (default bench/RESULTS-gpu[-dryrun].md)")
    args = parser.parse_args(argv)
    if args.stage:
        return stage(Path(args.stage), args.models)
    if args.repeat is None:
        args.repeat = 1 if args.quick else (2 if args.dry_run else 20)
    models_dir = _models_dir(args.models_dir)
    proof = Proof(args)
    budgets = BUDGET_DRY if args.dry_run else BUDGET_GPU
    steps = {"measure": lambda b: step_measure(proof, b, models_dir), "torch": lambda b: step_torch(proof, b, models_dir),
             "tests": lambda b: step_tests(proof, b, models_dir), "suite": lambda b: step_suite(proof, b)}
    for name in args.steps.split(","):
        try:
            steps[name](budgets[name])
        except Exception as exc:  # noqa: BLE001 — record and go on to the next step
            proof.steps[name] = {"status": f"failed: {type(exc).__name__}: {exc}", "seconds": 0, "command": "", "tail": ""}
        proof.write()
    print(f"[gpu_proof] wrote {proof.results} in {time.perf_counter() - proof.started:.0f} s", flush=True)
    from gpu_proof_report import u2net_table

    print(u2net_table(proof))
    return 0


def _models_dir(given: Optional[str]) -> Path:
    """A folder holding ``models/`` and ``u2net/`` (what --stage makes); ../shared works as one."""
    if given:
        path = Path(given)
        return path if path.is_absolute() else ROOT / path
    staged = ROOT / ".proof"
    if (staged / "models").is_dir():
        return staged
    return SHARED.parent


if __name__ == "__main__":
    sys.exit(main())
