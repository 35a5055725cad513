"""``trace=`` / ``gpuinfer run --trace``: the runs as a Chrome trace (chrome://tracing, Perfetto)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

import gpuinfer
from gpuinfer.plan import MODES
from tests.shape_chain_models import nonzero_feeds, nonzero_model, resize_chain, resize_chain_feeds
from tests.tiny_models import conv_net, conv_net_feeds

REQUIRED = {"X": {"name", "ph", "ts", "dur", "pid", "tid"}, "C": {"name", "ph", "ts", "pid", "tid", "args"},
            "M": {"name", "ph", "pid", "tid", "args"}}


def _load(path) -> list[dict]:
    with open(path) as f:
        document = json.load(f)
    events = document["traceEvents"]
    for event in events:
        assert event["ph"] in REQUIRED, event
        missing = REQUIRED[event["ph"]] - event.keys()
        assert not missing, f"{event} lacks {missing}"
        if "ts" in event:
            assert isinstance(event["ts"], (int, float)) and event["ts"] >= 0
        if event["ph"] == "X":
            assert isinstance(event["dur"], (int, float)) and event["dur"] >= 0
        if event["ph"] == "C":
            assert all(isinstance(v, int) for v in event["args"].values())
    return events


def _runs(events: list[dict]) -> list[tuple[dict, list[dict], list[dict]]]:
    """(run span, its op spans, its counter samples) per run, in order."""
    runs = [e for e in events if e["ph"] == "X" and e.get("cat") == "run"]
    out = []
    for run in runs:
        start, end = run["ts"], run["ts"] + run["dur"] + 1e-3
        ops = [e for e in events if e["ph"] == "X" and e.get("cat") != "run" and start <= e["ts"] <= end]
        counters = [e for e in events if e["ph"] == "C" and start <= e["ts"] <= end]
        out.append((run, ops, counters))
    return out


@pytest.mark.parametrize("mode", MODES)
def test_trace_has_a_span_per_node_and_the_peak_as_counter(mode, tmp_path):
    path = tmp_path / "trace.json"
    model, feeds = resize_chain("div", dynamic=True), resize_chain_feeds()
    sess = gpuinfer.InferenceSession(model, device="cpu", memory_mode=mode, trace=str(path))
    reports = []
    for _ in range(2):
        sess.run(None, feeds)
        reports.append(sess.memory_report())
    assert sess.end_profiling() == str(path)
    events = _load(path)
    runs = _runs(events)
    assert len(runs) == 2
    nodes = sess.graph.nodes
    for (run, ops, counters), report in zip(runs, reports):
        assert [(e["name"], e["cat"], e["args"]["op_type"]) for e in ops] == \
            [(n.name, n.op_type, n.op_type) for n in nodes]  # one span per executed node, in run order
        assert [e["args"]["live_bytes"] for e in ops] == [r.live_bytes for r in report.timeline]
        assert max(c["args"]["bytes"] for c in counters) == report.peak_bytes
        starts = [e["ts"] for e in ops]
        assert starts == sorted(starts)
        for e in ops:  # each span inside its run's span
            assert run["ts"] <= e["ts"] and e["ts"] + e["dur"] <= run["ts"] + run["dur"] + 1e-3
        assert run["args"]["peak_bytes"] == report.peak_bytes and run["args"]["mode"] == mode
    names = {e["args"]["name"] for e in events if e["ph"] == "M"}
    assert "run loop" in names


def test_trace_of_a_first_run_that_traced_peaks_where_the_report_says(tmp_path):
    path = tmp_path / "nz.json"
    sess = gpuinfer.InferenceSession(nonzero_model(), device="cpu", memory_mode="arena", trace=str(path))
    peaks = []
    for _ in range(2):
        sess.run(None, nonzero_feeds())
        peaks.append(sess.memory_report().peak_bytes)
    sess.close()  # writes the trace too
    runs = _runs(_load(path))
    assert [max(c["args"]["bytes"] for c in counters) for _, _, counters in runs] == peaks


def test_trace_is_written_when_the_session_is_collected(tmp_path):
    path = tmp_path / "gc.json"
    sess = gpuinfer.InferenceSession(conv_net(), device="cpu", memory_mode="reuse", trace=str(path))
    sess.run(None, conv_net_feeds())
    assert not path.exists()
    del sess
    import gc

    gc.collect()
    assert len(_runs(_load(path))) == 1


def test_onnxruntime_enable_profiling_turns_tracing_on(tmp_path):
    options = SimpleNamespace(enable_profiling=True, profile_file_prefix=str(tmp_path / "prof"))
    sess = gpuinfer.InferenceSession(conv_net(), "cpu", "arena", None, options)
    sess.run(None, conv_net_feeds())
    written = sess.end_profiling()
    assert os.path.basename(written).startswith("prof") and written.endswith(".json")
    assert len(_runs(_load(written))) == 1
    assert sess.end_profiling() == ""  # tracing stopped, as onnxruntime's profiler does


def test_tracing_off_costs_no_file_and_end_profiling_says_so(tmp_path):
    sess = gpuinfer.InferenceSession(conv_net(), device="cpu")
    sess.run(None, conv_net_feeds())
    assert sess.end_profiling() == ""


def test_trace_in_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(gpuinfer.GpuinferError, match="trace="):
        gpuinfer.InferenceSession(conv_net(), device="cpu", trace=str(tmp_path / "nope" / "t.json"))


def test_cli_run_trace(tmp_path):
    model_path = tmp_path / "m.onnx"
    onnx.save(resize_chain("mul"), model_path)
    trace = tmp_path / "cli.json"
    result = subprocess.run([sys.executable, "-m", "gpuinfer", "run", str(model_path), "--device", "cpu",
                             "--memory-mode", "arena", "--repeat", "2", "--trace", str(trace), "--quiet"],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert f"wrote trace to {trace}" in result.stdout
    runs = _runs(_load(trace))
    assert len(runs) == 2
    n_nodes = len(gpuinfer.InferenceSession(str(model_path), device="cpu").graph.nodes)
    assert all(len(ops) == n_nodes for _, ops, _ in runs)
    bad = subprocess.run([sys.executable, "-m", "gpuinfer", "run", str(model_path), "--device", "cpu",
                          "--trace", str(tmp_path / "missing" / "t.json"), "--quiet"],
                         capture_output=True, text=True, timeout=240)
    assert bad.returncode == 2 and "--trace" in bad.stderr
