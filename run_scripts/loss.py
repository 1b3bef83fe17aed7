"""Draw the loss curves of a training run into a PNG (the seed's loss.jpg).

    python -m run_scripts.loss runs/<run>            # writes runs/<run>/loss.png
    python -m run_scripts.loss runs/<run> --out loss.png --smooth 50
    python -m run_scripts.loss runs/<stage1> runs/<stage2> --out loss.png   # one row per run

Reads the TensorBoard event files in ``<run>/logs`` (pixel, SSIM, total loss per step and,
if present, validation PSNR per epoch). Several runs (e.g. the stages of a training continued
with ``--init_from``) are drawn as rows of one picture, each with its own step axis, because
their step and epoch counters are independent.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from utils.cli import DefaultsFormatter
from utils.files import atomic_write


def read_scalars(log_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0}).Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        ev = acc.Scalars(tag)
        out[tag] = (np.array([e.step for e in ev]), np.array([e.value for e in ev]))
    return out


def smooth(y: np.ndarray, k: int) -> np.ndarray:
    """Trailing moving average over k points, over fewer at the start (no zero padding)."""
    if k <= 1:
        return y
    c = np.cumsum(np.concatenate([[0.0], y]))
    n = np.minimum(np.arange(1, len(y) + 1), k)
    return (c[1:] - c[np.arange(1, len(y) + 1) - n]) / n


PANELS = ("loss/pixel", "loss/ssim", "loss/total", "val/psnr")


def plot(runs: dict[str, dict], out: Path, k: int) -> None:
    """One row of panels per run (name -> scalars); a run without validation leaves its last
    panel empty."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ncols = max(sum(t in scalars for t in PANELS) for scalars in runs.values())
    fig, axes = plt.subplots(len(runs), ncols, figsize=(4.2 * ncols, 3.4 * len(runs)), squeeze=False)
    for row, (name, scalars) in zip(axes, runs.items(), strict=True):
        for ax in row:
            ax.set_axis_off()
        for ax, tag in zip(row, [t for t in PANELS if t in scalars], strict=False):
            ax.set_axis_on()
            _panel(ax, tag, *scalars[tag], k, name if len(runs) > 1 else "")
    fig.tight_layout()
    atomic_write(out, lambda fh: fig.savefig(fh, dpi=110, format=Path(out).suffix[1:] or "png"))
    plt.close(fig)


def _panel(ax, tag: str, x: np.ndarray, y: np.ndarray, k: int, run_name: str) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and epochs: no "2.5" ticks
    if tag.startswith("loss/"):
        ax.plot(x, y, color="0.8", lw=0.6, label="raw")
        ax.plot(x, smooth(y, k), lw=1.4, label=f"mean of {k}")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    else:
        ax.plot(x, y, "o-", lw=1.4)
        ax.set_xlabel("epoch")
    title = {"loss/pixel": "pixel loss (MSE, 0-255)", "loss/ssim": "SSIM loss (1-SSIM)",
             "loss/total": "total loss", "val/psnr": "validation PSNR (dB)"}[tag]
    ax.set_title(f"{run_name}: {title}" if run_name else title, fontsize=9 if run_name else None)
    ax.grid(alpha=0.3)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Plot a training run's loss curves to PNG.",
                                formatter_class=DefaultsFormatter)
    p.add_argument("run", nargs="+", help="run folder(s) (with logs/) or their logs/ folders; "
                   "several runs are drawn as rows of one picture")
    p.add_argument("--out", help="output PNG; default <first run>/loss.png")
    p.add_argument("--smooth", type=int, default=25, help="moving-average window in logged points")
    args = p.parse_args(argv)
    runs, first = {}, None
    for run in map(Path, args.run):
        log_dir = run / "logs" if (run / "logs").is_dir() else run
        if not list(log_dir.glob("events.out.tfevents.*")):
            print(f"error: no TensorBoard event files in {log_dir}", file=sys.stderr)
            return 2
        scalars = read_scalars(log_dir)
        if "loss/total" not in scalars:
            print(f"error: {log_dir} has no loss/total scalars (not a run_train.py run?)", file=sys.stderr)
            return 2
        folder = log_dir.parent if log_dir.name == "logs" else log_dir
        first = first or folder
        runs[folder.name if folder.name not in runs else str(folder)] = scalars
    out = Path(args.out) if args.out else first / "loss.png"
    plot(runs, out, args.smooth)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
