"""``--plot FILE.png``: bytes alive per step for each mode, the lower bound, the busiest ops named.

matplotlib is an optional extra (``pip install gpuinfer[plot]``); ``require_matplotlib`` is
called before any model runs so a missing extra costs the user no waiting.
"""
from __future__ import annotations

from gpuinfer.cli.errors import UsageError
from gpuinfer.cli.measure import ModeResult
from gpuinfer.cli.tables import MIB

LABELLED_STEPS = 5  # how many of the busiest steps get their op and node written beside them


def require_matplotlib() -> None:
    """Raise a one-line ``UsageError`` when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib, which is not installed: pip install 'gpuinfer[plot]'") from None


def plot_timelines(results: list[ModeResult], path: str, title: str) -> None:
    """Draw one line per mode (step -> live MiB) and save it to ``path`` (format from the suffix)."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.5))
    try:
        for res in results:
            steps = [s.step for s in res.report.timeline]
            live = [s.live_bytes / MIB for s in res.report.timeline]
            ax.plot(steps, live, label=f"{res.mode} (peak {res.report.peak_bytes / MIB:.1f} MiB)",
                    linewidth=1.4, drawstyle="steps-post")
        _lower_bounds(ax, results)
        _label_busiest(ax, results)
        ax.set_xlabel("step (node in run order)")
        ax.set_ylabel("bytes alive (MiB)")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        try:
            fig.savefig(path, dpi=110)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--plot {path}: cannot write it ({exc})") from None
    finally:
        plt.close(fig)


def _lower_bounds(ax, results: list[ModeResult]) -> None:
    """One dashed line when every mode has the same bound, else one per distinct bound."""
    bounds = sorted({r.report.lower_bound_bytes for r in results})
    for bound in bounds:
        modes = [r.mode for r in results if r.report.lower_bound_bytes == bound]
        who = "" if len(bounds) == 1 else f" ({', '.join(modes)})"
        ax.axhline(bound / MIB, color="black", linestyle="--", linewidth=1,
                   label=f"lower bound {bound / MIB:.1f} MiB{who}")


def _label_busiest(ax, results: list[ModeResult]) -> None:
    """Name the busiest steps of ``reduce`` when it ran (its curve is exactly the tensors alive),
    else of the leanest mode; steps close to one already named are skipped so labels stay legible."""
    source = next((r for r in results if r.mode == "reduce"), None) or min(results, key=lambda r: r.report.peak_bytes)
    timeline = source.report.timeline
    gap = max(1, len(timeline) // 25)
    chosen: list = []
    for rec in source.report.top_steps(len(timeline)):
        if len(chosen) == LABELLED_STEPS:
            break
        if all(abs(rec.step - c.step) > gap for c in chosen):
            chosen.append(rec)
    for i, rec in enumerate(chosen):
        ax.annotate(f"{rec.op} {rec.node}", xy=(rec.step, rec.live_bytes / MIB),
                    xytext=(6, 10 + 10 * (i % 3)), textcoords="offset points", fontsize=7,
                    arrowprops={"arrowstyle": "-", "linewidth": 0.5, "color": "grey"})
