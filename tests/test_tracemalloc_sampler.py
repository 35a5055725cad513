"""The CPU's independent peak (report/sampler.py) measures the run, not what else the process does.

tests/test_memory_modes.py failed now and then in full runs, another model each time, because
the sampler's figure moved with memory that was not the run's: its baseline was taken when the
session was created, and Python's cyclic collector could free other objects mid-run.
"""
from __future__ import annotations

import gc

import numpy as np

import gpuinfer
from tests.tiny_models import conv_net, conv_net_feeds


def _session(mode: str = "reduce"):
    sess = gpuinfer.InferenceSession(conv_net(), device="cpu", memory_mode=mode, sample_memory=True)
    feeds = conv_net_feeds(2, 64, 64)
    sess.run(None, feeds)
    return sess, feeds


def test_memory_made_between_creation_and_the_run_is_not_the_runs():
    sess, feeds = _session()
    unrelated = np.ones(4 << 20, np.uint8)  # 4 MiB the caller keeps: before the run, not in it
    sess.run(None, feeds)
    report = sess.memory_report()
    assert 0.98 * report.peak_bytes <= report.sampled_peak_bytes <= 1.02 * report.peak_bytes + (256 << 10), report
    assert unrelated.sum() == unrelated.size


def test_the_cyclic_collector_waits_for_the_end_of_a_sampled_run():
    sess, feeds = _session()
    sampler = sess._observers.sampler
    inside, collections = [False], []
    begin, end = sampler.begin_run, sampler.end_run

    def begin_run(*args):
        begin(*args)
        inside[0] = True

    def end_run():
        inside[0] = False
        return end()

    sampler.begin_run, sampler.end_run = begin_run, end_run
    callback = lambda phase, info: collections.append(inside[0]) if phase == "start" else None  # noqa: E731
    threshold = gc.get_threshold()
    gc.callbacks.append(callback)
    gc.set_threshold(1)  # a collection at almost every allocation, were the collector on
    try:
        cycle = [np.ones(1 << 20)]  # 8 MB that only the collector frees
        cycle.append(cycle)
        del cycle
        sess.run(None, feeds)
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(callback)
    assert collections, "the collector never ran"
    assert not any(collections), "the collector ran inside the sampled run"
    assert gc.isenabled()
    report = sess.memory_report()
    assert report.sampled_peak_bytes >= 0.98 * report.peak_bytes, report
