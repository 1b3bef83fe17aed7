"""The ``video`` part of run_scripts/benchmark.py: fusing a sequence as a stream against fusing its
frames as images, peak memory against length, and flicker per output mode.

- Speed: a generated 640x512 clip (utils/synthetic_video.py: a window panning across TNO's first
  pair, a hot square crossing the infrared) of ``FRAMES`` frames, whole processes: ``run_infer.py
  --videos`` (decode, fuse, encode H.264) against ``run_infer.py --test_path`` on the same frames
  as PNG pairs (one process, the model loaded once, as the stream does) and against one
  ``run_infer.py --ir --vis`` process per frame (what a script looping over frames would do).
  Both ``run_infer.py`` runs use the same output mode (minmax), so the fused pixels agree.
- Memory: the stream's peak resident memory for 30 and 600 frames at 256x192 (it must not grow
  with the length).
- Flicker (``utils.sequences.flicker``) of the fused 256x192 sequence in each output mode beside
  the sources', and every frame's brightness (docs/video.md's figure).
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from configs import TEST_DATA
from utils.benchmarking_deploy import process_figure, process_figures, run_measured

FRAMES = 16
SPEED_SIZE = (640, 512)
MEMORY_SIZE, MEMORY_FRAMES = (256, 192), (30, 600)
FLICKER_FRAMES = 60


def have_pyav() -> bool:
    try:
        import av  # noqa: F401 - whether it is installed
    except ImportError:
        return False
    return True


def write_clip(folder: Path, n: int, size: tuple[int, int], pngs: bool = False) -> tuple[Path, Path]:
    """IR.mp4 and VIS.mp4 of the generated sequence (and with ``pngs`` the same frames as ir/ + vi/ PNGs)."""
    from utils.images import load_image
    from utils.synthetic_video import panning_pair, write_frames, write_video
    ir, vis = load_image(TEST_DATA / "Tno" / "IR1.png"), load_image(TEST_DATA / "Tno" / "VIS1.png")
    folder.mkdir(parents=True, exist_ok=True)
    write_video(folder / "IR.mp4", (a for a, _ in panning_pair(ir, vis, n, size)))
    write_video(folder / "VIS.mp4", (b for _, b in panning_pair(ir, vis, n, size)))
    if pngs:
        write_frames(folder / "pairs" / "ir", (a for a, _ in panning_pair(ir, vis, n, size)))
        write_frames(folder / "pairs" / "vi", (b for _, b in panning_pair(ir, vis, n, size)))
    return folder / "IR.mp4", folder / "VIS.mp4"


def bench_video(smoke: bool) -> dict:
    """The figures of the module docstring (``smoke``: tiny clips, meaningless numbers)."""
    py = sys.executable
    n, size = (4, (64, 48)) if smoke else (FRAMES, SPEED_SIZE)
    mem_size, mem_frames = ((64, 48), (5, 20)) if smoke else (MEMORY_SIZE, MEMORY_FRAMES)
    row: dict = {"size": f"{size[0]}x{size[1]}", "frames": n}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        log = tmp / "stderr.txt"
        ir, vis = write_clip(tmp / "clip", n, size, pngs=True)
        common = ["--output_mode", "minmax", "--device", "cpu", "--overwrite"]
        stream = [py, "run_infer.py", "--videos", str(ir), str(vis), "--output_path", str(tmp / "s"), *common]
        folder = [py, "run_infer.py", "--test_path", str(tmp / "clip" / "pairs"), "--output_path", str(tmp / "f"),
                  *common]
        one = [py, "run_infer.py", "--ir", str(tmp / "clip" / "pairs" / "ir" / "frame1.png"), "--vis",
               str(tmp / "clip" / "pairs" / "vi" / "frame1.png"), "--output_path", str(tmp / "o"), *common]
        for name, cmd in (("stream", stream), ("images_one_process", folder), ("image_per_process", one)):
            row[name] = process_figures(cmd, 1, log)
        row["stream_loop_fps"] = json.loads((tmp / "s" / "video_add_minmax" / "IR_VIS.json").read_text())[
            "frames_per_second"]
        row["stream_fps"] = n / row["stream"]["seconds"]
        row["images_fps"] = n / row["images_one_process"]["seconds"]
        row["image_per_process_fps"] = 1 / row["image_per_process"]["seconds"]
        row["memory"] = {"size": f"{mem_size[0]}x{mem_size[1]}"}
        for k in mem_frames:
            ir, vis = write_clip(tmp / f"m{k}", k, mem_size)
            row["memory"][k] = run_measured([py, "run_infer.py", "--videos", str(ir), str(vis), "--output_path",
                                             str(tmp / f"m{k}" / "out")], log)[1]
        row["flicker"] = flicker_by_mode(tmp / "flicker", 12 if smoke else FLICKER_FRAMES, mem_size)
    return row


def flicker_by_mode(folder: Path, n: int, size: tuple[int, int]) -> dict:
    """Per output mode: the fused sequence's flicker and each frame's brightness; and the sources'."""
    import run_infer
    from utils.sequences import brightness, flicker
    from utils.video import open_sequence
    ir, vis = write_clip(folder, n, size)
    out: dict = {"frames": n, "size": f"{size[0]}x{size[1]}"}
    for k, src in (("infrared", ir), ("visible", vis)):
        b = [brightness(f) for f in open_sequence(src).frames()]
        out[k] = {"flicker": flicker(b), "brightness": b}
    for mode in ("minmax", "sequence", "clip"):
        if run_infer.main(["--videos", str(ir), str(vis), "--output_path", str(folder / mode), "--write", "frames",
                           "--output_mode", mode]) != 0:
            raise RuntimeError(f"run_infer.py --output_mode {mode} failed")
        frames = next((folder / mode).glob("video*/IR_VIS"))
        b = [brightness(f) for f in open_sequence(frames).frames()]
        out[mode] = {"flicker": flicker(b), "brightness": b}
    return out


def print_video(r: dict) -> None:
    def fig(name):
        return process_figure(r[name], 1)
    print(f"\nvideo, {r['frames']} frames of {r['size']}, whole processes: run_infer.py --videos {fig('stream')} "
          f"({r['stream_fps']:.2f} frames/s; after start-up and model load {r['stream_loop_fps']:.2f}) | the frames as "
          f"PNG pairs in one run_infer.py {fig('images_one_process')} ({r['images_fps']:.2f} frames/s) | one "
          f"run_infer.py per frame {fig('image_per_process')} ({r['image_per_process_fps']:.2f} frames/s): the "
          f"stream at x{r['stream_fps'] / r['images_fps']:.2f} and x{r['stream_fps'] / r['image_per_process_fps']:.2f} "
          f"their speed")
    m = r["memory"]
    counts = [k for k in m if k != "size"]
    print(f"  peak memory of the stream at {m['size']}: " + ", ".join(f"{k} frames {m[k]:.0f} MiB" for k in counts)
          + f" ({100 * (m[counts[-1]] / m[counts[0]] - 1):+.1f} %)")
    f = r["flicker"]
    print(f"  flicker, {f['frames']} frames of {f['size']} (mean |brightness change| per frame, levels): sources "
          f"{f['infrared']['flicker']:.2f} / {f['visible']['flicker']:.2f}; fused minmax {f['minmax']['flicker']:.2f}, "
          f"sequence {f['sequence']['flicker']:.2f}, clip {f['clip']['flicker']:.2f}")
