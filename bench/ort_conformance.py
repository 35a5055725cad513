"""onnxruntime through the harness gpuinfer's conformance figures come from: onnx's backend tests, counted.

    python bench/ort_conformance.py [--kind node] [-j N] [--reasons] [--quiet] [--write]

The same ``onnx.backend.test.BackendTest`` cases as ``python -m tests.test_onnx_backend --count``
(CPU tests only, no model data downloaded, the random Bernoulli tests skipped, one BLAS thread and
one onnxruntime thread per worker, onnx's own tolerances), run through ``onnxruntime.backend``
with onnxruntime's CPU provider, so the two counts compare like for like.  A test onnxruntime's
backend declares incompatible (an opset it does not support) counts as skipped, as onnx's runner
reports it.
"""
from __future__ import annotations

import argparse
import os
import sys
import unittest
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, main_guard, markdown_table, progress, write_section  # noqa: E402

_CASES: dict = {}  # name -> (kind, generated TestCase class), filled in each process by build()


class _OneThreadBackend:
    """onnxruntime's backend module with one intra-op thread, CPU provider only."""

    @staticmethod
    def _ort():
        import onnxruntime.backend as ort_backend

        return ort_backend

    @classmethod
    def prepare(cls, model, device=None, **kwargs):
        kwargs.setdefault("intra_op_num_threads", 1)
        data = model.SerializeToString() if hasattr(model, "SerializeToString") else model
        return cls._ort().prepare(data, device, **kwargs)

    @classmethod
    def run_model(cls, model, inputs, device=None, **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device=None, outputs_info=None, **kwargs):
        return cls._ort().run_node(node, inputs, device, outputs_info, **kwargs)

    @classmethod
    def supports_device(cls, device):
        return cls._ort().supports_device(device)

    @classmethod
    def is_compatible(cls, model, device=None, **kwargs):
        return cls._ort().is_compatible(model, device, **kwargs)


def build() -> list[tuple[str, str]]:
    """(kind, test name) of every case, selected as tests/test_onnx_backend.py selects them."""
    import onnx.backend.test

    from tests.test_onnx_backend import KINDS, _local

    import onnxruntime

    onnxruntime.set_default_logger_severity(4)  # failures are counted here, not logged (4: fatal only)
    os.environ["ORT_ONNX_BACKEND_EXCLUDE_PROVIDERS"] = ",".join(_other_providers())
    with warnings.catch_warnings():  # onnx computes the node tests' expected outputs here, noisily
        warnings.simplefilter("ignore", RuntimeWarning)
        runner = onnx.backend.test.BackendTest(_OneThreadBackend, __name__)
        records = {}
        for kind in KINDS.values():
            for rec in onnx.backend.test.loader.load_model_tests(kind=kind):
                records[f"{rec.name}_cpu"] = rec
    found = []
    for category, cls in runner.test_cases.items():
        kind = KINDS[category]
        for attr in sorted(a for a in vars(cls) if a.startswith("test_") and a.endswith("_cpu")):
            rec = records.get(attr)
            if rec is not None and not _local(rec):
                continue  # would download model data; the gpuinfer count skips these too
            _CASES[attr] = (kind, cls)
            found.append((kind, attr))
    return found


def _other_providers() -> list[str]:
    import onnxruntime

    return [p for p in onnxruntime.get_available_providers() if p != "CPUExecutionProvider"]


def run_one(name: str) -> tuple[str, str, str]:
    """(name, status, last exception line) of one test in this process."""
    from tests.test_onnx_backend import SKIPS, _blas_as_in_pytest, _private_onnx_home

    if not _CASES:
        build()
    _private_onnx_home()
    _blas_as_in_pytest()
    if name in SKIPS:
        return name, "skipped", SKIPS[name][1]
    _kind, cls = _CASES[name]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            getattr(cls(name), name)()
    except unittest.SkipTest as exc:
        return name, "skipped", str(exc)
    except Exception as exc:  # noqa: BLE001 - every failure is data here
        text = " ".join(str(exc).split())
        return name, "failed", f"{type(exc).__name__}: {text[:150]}"
    return name, "passed", ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", action="append", help="only this kind (node, real, simple, pytorch-converted, "
                                                        "pytorch-operator); repeatable")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--reasons", action="store_true", help="print the failures' exception types, counted")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    args = parser.parse_args(argv)
    import onnx
    import onnxruntime

    cases = [(k, n) for k, n in build() if not args.kind or k in args.kind]
    kind_of = dict((n, k) for k, n in cases)
    outcomes = []
    with progress(len(cases), f"ort_conformance (onnxruntime {onnxruntime.__version__}, "
                              f"onnx {onnx.__version__} backend tests)", args.quiet) as bar:
        if args.jobs <= 1:
            for _, name in cases:
                outcomes.append(run_one(name))
                bar.advance(name)
        else:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(args.jobs, maxtasksperchild=200) as pool:
                for outcome in pool.imap_unordered(run_one, [n for _, n in cases], chunksize=8):
                    outcomes.append(outcome)
                    bar.advance(outcome[0])
    table = {}
    for name, status, _ in outcomes:
        row = table.setdefault(kind_of[name], {"passed": 0, "failed": 0, "skipped": 0})
        row[status] += 1
    kinds = [k for k in ("node", "real", "simple", "pytorch-converted", "pytorch-operator") if k in table]
    rows = [[k, f"{table[k]['passed']:,}", f"{table[k]['failed']:,}", f"{table[k]['skipped']:,}",
             f"{sum(table[k].values()):,}"] for k in kinds]
    rows.append(["all"] + [f"{sum(table[k][s] for k in kinds):,}" for s in ("passed", "failed", "skipped")]
                + [f"{len(outcomes):,}"])
    text = markdown_table(["kind", "passed", "failed", "skipped", "total"], rows)
    print(text)
    if args.reasons:
        counted: dict[str, int] = {}
        for _, status, detail in outcomes:
            if status == "failed":
                key = detail.split(":", 1)[0]
                counted[key] = counted.get(key, 0) + 1
        for key, n in sorted(counted.items(), key=lambda kv: -kv[1]):
            print(f"{n:>5} failed with {key}")
    if args.write:
        command = "python bench/ort_conformance.py" + "".join(f" --kind {k}" for k in args.kind or [])
        write_section("ort-conformance", f"## onnxruntime {onnxruntime.__version__} under gpuinfer's conformance "
                      f"harness\n\nCommand: `{command}` (onnx's backend tests as `python -m tests.test_onnx_backend "
                      f"--count` selects them, run through `onnxruntime.backend`, CPU provider, one thread)\n\n"
                      f"Machine: {machine()}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
