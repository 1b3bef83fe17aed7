"""The flicker figure of docs/video.md: every frame's global brightness of the generated test
sequence (utils/synthetic_video.py: a pan across TNO's first pair, a hot square entering the
infrared a third of the way in), for the sources and the fused sequence in each output mode.

    python -m run_scripts.video_figure                                  # measure, then draw
    python -m run_scripts.video_figure --from_json bench.json           # the benchmark's video part
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from configs import ROOT
from utils.cli import DefaultsFormatter

STYLE = {"infrared": ("#888888", ":"), "visible": ("#bbbbbb", "--"), "minmax": ("#d62728", "-"),
         "sequence": ("#1f77b4", "-"), "clip": ("#2ca02c", "-")}


def draw(f: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    for name, (colour, line) in STYLE.items():
        b = f[name]["brightness"]
        label = f"{name} (flicker {f[name]['flicker']:.2f})" if name in ("infrared", "visible") else \
            f"fused, {name} (flicker {f[name]['flicker']:.2f})"
        ax.plot(range(1, len(b) + 1), b, line, color=colour, label=label, lw=1.6)
    ax.axvline(f["frames"] // 3 + 1, color="#999999", lw=0.8)
    ax.text(f["frames"] // 3 + 1.5, ax.get_ylim()[1], "hot square enters", va="top", fontsize=8, color="#555555")
    ax.set_xlabel("frame")
    ax.set_ylabel("mean level (0-255)")
    ax.set_title(f"Global brightness per frame, {f['frames']} frames of {f['size']} (flicker: mean |change| "
                 f"per frame)", fontsize=9)
    ax.legend(fontsize=7, loc="center", ncol=2)  # the empty band between the stretched and the clipped curves
    fig.tight_layout()
    fig.savefig(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=DefaultsFormatter)
    p.add_argument("--from_json", help="a run_scripts/benchmark.py --json file with its video part")
    p.add_argument("--out", default=str(ROOT / "docs" / "video_flicker.png"), help="PNG to write")
    args = p.parse_args(argv)
    if args.from_json:
        f = json.loads(Path(args.from_json).read_text())["video"]["flicker"]
    else:
        from utils.benchmarking_video import FLICKER_FRAMES, MEMORY_SIZE, flicker_by_mode
        with tempfile.TemporaryDirectory() as tmp:
            f = flicker_by_mode(Path(tmp), FLICKER_FRAMES, MEMORY_SIZE)
    draw(f, Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
