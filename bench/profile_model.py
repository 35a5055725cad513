"""Per-op-type time of one model (``InferenceSession(profile=True)``), to see where a run goes.

    python bench/profile_model.py shared/ch_PP-OCRv4_rec_infer.onnx [--mode arena] [--runs 10] [--threads 1] [--write]
        [--section profile-silero]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, markdown_table, write_section  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model id of the test zoo, e.g. shared/u2netp.onnx or light/resnet50")
    parser.add_argument("--mode", default="arena")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--section", default="profile",
                        help="the RESULTS.md section to write (one per profiled model)")
    args = parser.parse_args(argv)

    import gpuinfer
    from tests.model_zoo import model_case

    source, feeds = model_case(args.model)
    sess = gpuinfer.InferenceSession(source, device="cpu", memory_mode=args.mode, profile=True,
                                     intra_op_threads=args.threads)
    sess.run(None, feeds)
    sess._executor.profile.clear()  # keep the steady-state runs only
    for _ in range(args.runs):
        sess.run(None, feeds)
    table = sess.profile()
    total = sum(seconds for _, seconds in table.values())
    rows = [[op, str(calls // args.runs), f"{seconds / args.runs * 1000:.2f}", f"{seconds / total * 100:.1f}"]
            for op, (calls, seconds) in sorted(table.items(), key=lambda kv: -kv[1][1])]
    text = markdown_table(["op type", "calls per run", "ms per run", "% of run"], rows)
    print(text)
    if args.write:
        command = f"python bench/profile_model.py {args.model} --mode {args.mode} --runs {args.runs}" + (
            f" --threads {args.threads}" if args.threads else "")
        if args.section != "profile":
            command += f" --section {args.section}"
        write_section(args.section, f"## Where the time goes: {args.model} ({args.mode})\n\nCommand: `{command}` "
                      f"({len(sess.graph.nodes)} nodes after graph passes; {total / args.runs * 1000:.1f} ms "
                      f"per run in kernels)\n\nMachine: {machine()}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
