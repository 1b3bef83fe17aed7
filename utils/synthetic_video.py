"""Generated test sequences for video fusion (tests, the benchmark's ``video`` part, the flicker
figure of docs/video.md): a window panning across a registered infrared/visible pair, both
modalities moving together, and in the infrared a hot square (level 1.0) that enters from the
left a third of the way through and crosses the view. Small and deterministic; nothing is
downloaded. Frames are float32 [0, 1] as images are.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def panning_pair(ir: np.ndarray, vis: np.ndarray, n: int, size: tuple[int, int], square: bool = True):
    """``n`` (infrared, visible) frames of ``size`` (w, h) cut from the registered ``ir`` and ``vis``
    (same shape; resampled up by repetition where smaller than ``size``) by a window moving
    right and down and back; with ``square``, the moving hot square in the infrared."""
    w, h = size
    reps = (max(1, -(-(h + 8) // ir.shape[0])), max(1, -(-(w + 8) // ir.shape[1])))
    if reps != (1, 1):  # a small source: tile it (mirrored, so the pattern has no seams)
        ir, vis = (np.pad(a, [(0, a.shape[0] * (reps[0] - 1)), (0, a.shape[1] * (reps[1] - 1))]
                          + [(0, 0)] * (a.ndim - 2), mode="symmetric") for a in (ir, vis))
    span_x, span_y = ir.shape[1] - w, ir.shape[0] - h
    side = max(4, h // 6)
    for t in range(n):
        phase = np.sin(np.pi * t / max(1, n - 1))  # out and back
        x0, y0 = round(float(phase) * span_x), round(0.5 * float(phase) * span_y)
        a = ir[y0:y0 + h, x0:x0 + w].copy()
        b = vis[y0:y0 + h, x0:x0 + w].copy()
        if square and t >= n // 3:
            sx = -side + int((t - n // 3) * (w + side) / max(1, n - n // 3))
            a[h // 3:h // 3 + side, max(0, sx):max(0, sx + side)] = 1.0
        yield a, b


def write_video(path: Path, frames, rate: float = 25, offset: int = 0) -> int:
    """Write float [0, 1] frames (all gray or all RGB) as an H.264 MP4 with PyAV, timestamps from
    ``offset``; returns the frame count. Not atomic: for tests and figures."""
    import av

    from utils.images import to_uint8
    n = 0
    with av.open(str(path), "w") as c:
        st = None
        for f in frames:
            img = to_uint8(f)
            if st is None:
                st = c.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
                st.width, st.height, st.pix_fmt = img.shape[1], img.shape[0], "yuv420p"
                st.options = {"crf": "10", "preset": "ultrafast"}
            frame = av.VideoFrame.from_ndarray(img, format="rgb24" if img.ndim == 3 else "gray")
            frame.pts = offset + n
            c.mux(st.encode(frame))
            n += 1
        c.mux(st.encode())
    return n


def write_frames(folder: Path, frames, name: str = "frame{:d}.png") -> int:
    """Write frames as numbered PNGs (``frame1.png`` ... : natural, not zero-padded, order)."""
    from utils.images import save_image
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for n, f in enumerate(frames, 1):
        save_image(folder / name.format(n), f)
    return n
