"""Fusing video and frame sequences (``run_infer.py --videos`` / ``--frames``), streamed: each
output frame is decoded, registered, fused and encoded before the next is read, so memory does
not grow with the length (docs/video.md has the measurements).

DenseFuse fuses frame by frame. The image path's default output, ``minmax``, stretches every
frame by its own extremes, so a hot object entering the infrared view dims the whole fused frame
and the video flickers. The ``sequence`` output mode (the default for sequences) stretches every
frame by one pair of limits: the least and greatest decoder output over the first
:data:`CALIBRATION_FRAMES` frames (``--calibrate K``), then clips. Those frames are fused twice
(once to fix the limits), so nothing is buffered. :func:`flicker` is the measure.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from configs import CALIBRATION_FRAMES, SEQUENCE_MODE
from utils.errors import JobError
from utils.log import log

#: Numbered output frames: 000001.png, ...
FRAME_NAME = "{:06d}.png"


def flicker(brightness) -> float:
    """Temporal instability of a sequence: the mean absolute change of its global brightness
    (mean 8-bit level; luma for colour) from one frame to the next, in levels per frame.
    0 for a still sequence; a per-frame stretch adds to it whatever the content does not."""
    b = np.asarray(brightness, np.float64)
    return float(np.abs(np.diff(b)).mean()) if len(b) > 1 else 0.0


def flicker_line(f: dict) -> str:
    """The flicker figures ``{"fused": x, "sources": [...]}`` as the scripts print them."""
    return (f"flicker (mean |change| of brightness per frame, 8-bit levels): fused {f['fused']:.2f}, sources "
            f"{' / '.join(f'{x:.2f}' for x in f['sources'])}")


def brightness(img: np.ndarray) -> float:
    """Mean level of an image on 0-255 (uint8 or float [0, 1]); BT.601 luma for colour."""
    x = img.astype(np.float64) * (1 if img.dtype == np.uint8 else 255)
    return float((x @ [0.299, 0.587, 0.114]).mean() if x.ndim == 3 else x.mean())


@dataclass
class Outputs:
    """Where one fused sequence goes: ``video`` (an MP4) and/or ``frames`` (a folder of numbered
    PNGs), and ``record`` (JSON: inputs, pairing, settings, registration, timing, flicker)."""
    video: Path | None
    frames: Path | None
    record: Path

    @property
    def scratch(self) -> Path:
        """Where torchrun's ranks put the frames of a video that is not also written as frames."""
        return self.record.parent / f".{self.record.stem}.frames.tmp"

    def existing(self) -> list[Path]:
        found = [p for p in (self.video, self.record) if p is not None and p.exists()]
        if self.frames is not None and self.frames.is_dir() and any(self.frames.glob("*.png")):
            found.append(self.frames)
        return found

    def prepare(self, overwrite: bool, inputs: tuple[Path, ...] = ()) -> None:
        """Refuse to replace earlier results unless ``overwrite`` (then clear the old frames), and
        any output that is one of the run's ``inputs`` (even with it); check the folder takes
        files, all before any frame is fused."""
        from utils.files import check_writable, resolved
        taken = {resolved(p) for p in inputs}
        for p in (self.video, self.frames, self.record):
            if p is not None and resolved(p) in taken:
                raise JobError(f"{p}: is an input of this run; choose another --output_path")
        if (found := self.existing()) and not overwrite:
            raise JobError(f"{', '.join(map(str, found))}: already there; pass --overwrite to replace "
                           f"{'it' if len(found) == 1 else 'them'} or choose another --output_path")
        if self.frames is not None and self.frames.is_dir():
            for p in self.frames.glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"):
                p.unlink()
        if self.scratch.is_dir():  # what a killed torchrun run left
            import shutil
            shutil.rmtree(self.scratch)
        if self.video is not None and self.video.parent.is_dir():  # a killed run's unfinished video
            from utils.files import TEMP_NAME
            for p in self.video.parent.glob(f".{self.video.name}.*.tmp"):
                if (m := TEMP_NAME.match(p.name)) and m["final"] == self.video.name and p.is_file():
                    p.unlink()
        if problem := check_writable(self.record.parent):
            raise JobError(problem)


@dataclass
class Stream:
    """What a run fuses: the sequences, their pairing, the network and settings, the output
    ``mode`` (``minmax``, ``clip`` or ``sequence``, whose ``limits`` :meth:`calibrated` finds),
    the registration (None: same size already); ``first``: the number of output frames before
    this pairing's (a rank's chunk under torchrun)."""
    seqs: list
    pairing: object
    network: object
    settings: object
    mode: str = SEQUENCE_MODE
    calibrate: int = CALIBRATION_FRAMES
    registration: object = None
    fill: bool = False
    limits: tuple | None = None
    first: int = 0

    def frames(self, limit: int | None = None):
        """The sources of each output frame, registered, streamed (the first ``limit`` only)."""
        from itertools import islice

        from utils.registration import apply
        from utils.video import paired
        for sources in islice(paired(self.seqs, self.pairing), limit):
            yield apply(list(sources), self.registration, self.fill) if self.registration else list(sources)

    def fused(self):
        """(fused uint8 frame, its sources) for every output frame, in order."""
        from utils.fusion import FusionError, finish_image, fuse_decoded
        if self.mode == SEQUENCE_MODE and self.limits is None:
            self.limits = self.calibrated()
        mode = "clip" if self.mode == SEQUENCE_MODE else self.mode
        for t, sources in enumerate(self.frames()):
            try:
                raw, ycc = fuse_decoded(self.network, *sources, settings=self.settings)
            except FusionError as e:
                raise JobError(f"frame {self.first + t + 1}: {e}") from None
            yield finish_image(raw, ycc, mode, self.limits if self.mode == SEQUENCE_MODE else None), sources

    def calibrated(self) -> tuple[float, float]:
        """The ``sequence`` mode's stretch: the extremes of the first frames' decoder outputs."""
        from utils.fusion import fuse_decoded
        lo, hi = np.inf, -np.inf
        for sources in self.frames(self.calibrate):
            raw = fuse_decoded(self.network, *sources, settings=self.settings)[0]
            lo, hi = min(lo, float(raw.min())), max(hi, float(raw.max()))
        return lo, hi


def fuse_stream(stream: Stream, video: Path | None, frames: Path | None, name: str, progress: bool = True) -> dict:
    """Fuse every frame of ``stream`` into ``video`` (an MP4) and/or ``frames`` (numbered PNGs from
    ``stream.first + 1``); returns the count and every frame's brightness (fused, sources). An
    interrupt or error removes the unfinished video (frames written so far are complete PNGs)."""
    from utils.images import save_image
    from utils.log import progress_bar
    from utils.video import VideoWriter
    n = len(stream.pairing)
    writer, fused_b, source_b, done = None, [], [], 0
    try:
        for img, sources in progress_bar(stream.fused(), total=n, desc=name, unit="frame",
                                         disable=None if progress else True):
            if video:  # opened on the first frame: registration's crop decides the size
                writer = writer or VideoWriter(video, stream.pairing.rate, (img.shape[1], img.shape[0]))
                writer.write(img)
            if frames:
                save_image(frames / FRAME_NAME.format(stream.first + done + 1), img)
            fused_b.append(brightness(img))
            source_b.append([brightness(s) for s in sources])
            done += 1
        if writer:
            writer.close()
    except BaseException as e:
        if writer:
            writer.abort()
        if isinstance(e, (KeyboardInterrupt, OSError)):
            raise written_error(e, done, n, frames) from None
        raise
    return {"frames": done, "fused": fused_b, "sources": source_b}


def written_error(e: BaseException, done: int, n: int, frames: Path | None) -> BaseException:
    """What a fault mid-stream says: how far it got and what is on disk."""
    what = f"; frames 1-{done} are in {frames}" if frames and done else ""
    if isinstance(e, KeyboardInterrupt):
        return JobError(f"interrupted after {done} of {n} frames; no video written{what}")
    if isinstance(e, OSError):
        return JobError(f"cannot write {getattr(e, 'filename', None) or 'the output'}: {e.strerror or e}{what}")
    return e


def encode_frames(folder: Path, n: int, video: Path, rate) -> None:
    """The MP4 of numbered PNG frames 1..n (torchrun: the ranks' chunks joined in order)."""
    from PIL import Image

    from utils.video import VideoWriter
    writer = None
    try:
        for k in range(1, n + 1):
            with Image.open(folder / FRAME_NAME.format(k)) as im:
                img = np.asarray(im)
            writer = writer or VideoWriter(video, rate, (img.shape[1], img.shape[0]))
            writer.write(img)
        writer.close()
    except BaseException:
        if writer:
            writer.abort()
        raise


# ---- a run_infer.py job ------------------------------------------------------------------------

def open_inputs(job) -> tuple[list, object]:
    """The job's sequences, probed, and their pairing; a JobError for counts or sizes that do not go."""
    from utils.video import open_sequence, pair_frames
    seqs = [open_sequence(p) for p in job.sequences]
    for s in seqs:
        log.info(s.describe())
    pairing = pair_frames(seqs, job.trim, job.fps)
    if pairing.how != "one-to-one":
        how = {"timestamps": "by timestamp", "names": "by file name", "trimmed": "one to one, trimmed (--trim)"}
        log.warning(f"{len(pairing)} frames paired {how[pairing.how]} ({' / '.join(str(s.count) for s in seqs)} "
                    f"frames in the inputs)")
    sizes = {s.size for s in seqs}
    if len(sizes) > 1 and job.align is None:
        raise JobError(f"frame sizes differ ({', '.join(f'{s.path}: {s.size[0]}x{s.size[1]}' for s in seqs)}); "
                       f"pass --resize (one field of view) or --align / --transform (different cameras)")
    return seqs, pairing


def register_once(stream: Stream, align, frame: int) -> tuple:
    """The transform estimated on output frame ``frame`` (1-based), for every frame, and its
    record (with the frame it came from). Poor registrations are refused."""
    from utils.registration import RegistrationError, apply
    if not 1 <= frame <= len(stream.pairing):
        raise JobError(f"--align_frame {frame}: the sequence has {len(stream.pairing)} frames")
    sources = None
    for sources in stream.frames(frame):  # noqa: B007 - the last one is the frame-th; one held at a time
        pass
    try:
        reg = align.register(sources)
        apply(sources, reg, align.fill)  # fixes the crop every frame then shares
    except RegistrationError as e:
        raise JobError(f"frame {frame}: {e}") from None
    if align.mode == "align" and (poor := reg.poor()):
        raise JobError(f"frame {frame}: poor registration ({poor}); try another --align_frame, or --transform "
                       f"with the rig's calibration")
    return reg, {**reg.record(), "frame": frame}


def outputs_for(job) -> tuple[str, Outputs]:
    """The run's name (what the inputs' names share) and its output files."""
    from utils.jobs import single_pair
    name = single_pair(*job.sequences).name
    tail = job.settings_tail(default_mode=SEQUENCE_MODE)
    folder = job.output_path / f"video{tail}"
    video = folder / f"{name}.mp4" if job.write in ("video", "both") else None
    frames = folder / name if job.write in ("frames", "both") else None
    return name, Outputs(video, frames, folder / f"{name}.json")


def chunk(n: int, ctx) -> tuple[int, int]:
    """This rank's contiguous share ``[first, last)`` of ``n`` output frames (sizes differ by at most 1)."""
    bounds = np.linspace(0, n, ctx.world + 1).round().astype(int)
    return int(bounds[ctx.rank]), int(bounds[ctx.rank + 1])


def fuse_job(job, load, ctx) -> int:
    """``run_infer.py --videos`` / ``--frames``: check everything, then ``load()`` the network
    (-> network, FuseSettings, the settings record) and stream the frames through it. Under
    torchrun rank 0 checks the outputs, registers and calibrates for all; each rank fuses a
    contiguous chunk of the frames into numbered PNGs, which rank 0 then encodes in order."""
    import shutil

    from utils import distributed as D
    seqs, pairing = open_inputs(job)
    name, out = outputs_for(job)
    D.on_main(lambda: out.prepare(job.overwrite, job.sequences), ctx, JobError)
    network, settings, record = load()
    stream = Stream(seqs, pairing, network, settings, job.output_mode, job.calibrate)
    t0 = time.perf_counter()
    if job.align is not None:
        stream.registration, record["registration"] = D.on_main(
            lambda: register_once(stream, job.align, job.align_frame), ctx, JobError)
        stream.fill, record["align"] = job.align.fill, job.align.settings()
        if job.write_transform and ctx.main:
            from utils.registration import write_transform
            write_transform(job.write_transform, stream.registration)
            log.info(f"{job.write_transform}: the transform of frame {job.align_frame}; reuse it with --transform")
    if job.output_mode == SEQUENCE_MODE:
        stream.limits = D.on_main(stream.calibrated, ctx, JobError)
        record["limits"] = [round(x, 6) for x in stream.limits]
    if ctx.world == 1:
        part = fuse_stream(stream, out.video, out.frames, name)
    else:
        first, last = chunk(len(pairing), ctx)
        stream.pairing, stream.first = replace(pairing, indices=pairing.indices[first:last]), first
        frames = out.frames or out.scratch
        parts = D.gather(fuse_stream(stream, None, frames, name, progress=ctx.main), ctx)
        if ctx.main and out.video:
            encode_frames(frames, len(pairing), out.video, pairing.rate)
        if ctx.main and not out.frames:
            shutil.rmtree(out.scratch)
        D.barrier(ctx)
        part = {k: [x for p in parts for x in p[k]] for k in ("fused", "sources")}
    if ctx.main:
        write_record(out, record, job, seqs, pairing, part, time.perf_counter() - t0, ctx.world)
    return 0


def write_record(out: Outputs, record: dict, job, seqs, pairing, part: dict, seconds: float, world: int) -> None:
    """The sequence's record (<name>.json), and the run's summary lines."""
    from utils.files import write_text
    from utils.records import software
    n = len(part["fused"])
    stats = {"frames": n, "seconds": round(seconds, 3), "frames_per_second": round(n / seconds, 3),
             "processes": world, "flicker": {"fused": round(flicker(part["fused"]), 4),
                                             "sources": [round(flicker(c), 4) for c in np.asarray(part["sources"]).T]}}
    inputs = [{"path": str(s.path), "frames": s.count, "size": list(s.size),
               "fps": float(s.rate) if s.rate else None} for s in seqs]
    calibration = {"calibration_frames": job.calibrate} if job.output_mode == SEQUENCE_MODE else {}
    write_text(out.record, json.dumps({**record, "output_mode": job.output_mode, "software": software(),
                                       "inputs": inputs, "pairing": pairing.how, "fps": float(pairing.rate),
                                       **calibration, **stats}, indent=1))
    f = stats["flicker"]
    log.info(f"{out.record.stem}: {n} frames fused in {seconds:.1f} s ({n / seconds:.2f} frames/s"
             f"{f', {world} processes' if world > 1 else ''}) -> "
             f"{', '.join(str(p) for p in (out.video, out.frames) if p)}")
    log.info(flicker_line(f))
