"""Reading and writing frame sequences: video files (PyAV, ``pip install -r requirements-video.txt``)
and folders of frames; and pairing the frames of two or more sequences.

Frames are float32 in [0, 1], (H,W) gray or (H,W,3) RGB, as images are (``utils.images``). A video
is gray when its first frame's three channels agree within :data:`GRAY_TOLERANCE` levels (a gray
camera's H.264 stream carries neutral chroma; codecs round it by a level or two); its frames are
then read as the decoder's luma; a video stored as gray of more than 8 bits (``gray16le``,
``gray12le``, ... as thermal cores record in FFV1) is read at 16 bits and scaled by 1/65535, as 16-bit
images are. Nothing here holds more than one frame per sequence: readers
decode as they are iterated and writers encode as they are given frames.

Output video: H.264 (libx264, bundled with PyAV's wheels: no system ffmpeg), yuv420p for players
everywhere, CRF :data:`CRF` (visually lossless), written to a temporary file renamed into place
when complete, so an interrupted run leaves the finished file or none.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from utils.errors import JobError
from utils.files import current_umask

#: File extensions read as video (anything PyAV's FFmpeg demuxes would do; these are checked).
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".wmv")
#: Largest channel difference (8-bit levels) of a first frame still counted as gray.
GRAY_TOLERANCE = 2
#: x264's constant rate factor: 18 is about visually lossless; lower is larger and closer.
CRF = 18
#: Frame rate of a video made from frame folders (they carry no timing), unless ``--fps``.
DEFAULT_FPS = 25


def av():
    """PyAV, or a JobError saying how to install it."""
    try:
        import av as module
    except ImportError:
        raise JobError("video needs PyAV: pip install -r requirements-video.txt") from None
    return module


@dataclass
class Sequence:
    """One input: a video file or a folder of frames. ``count`` frames of ``size`` (w, h);
    ``times``: each frame's presentation time in seconds (videos; None for folders); ``rate``:
    the video's average frame rate (None for folders); ``colour``: whether frames are RGB;
    ``deep``: a gray video of more than 8 bits, read at 16."""
    path: Path
    count: int
    size: tuple[int, int]
    colour: bool
    times: np.ndarray | None = None
    rate: Fraction | None = None
    files: tuple[Path, ...] = ()
    deep: bool = False

    @property
    def kind(self) -> str:
        return "video" if self.files == () else "frames"

    def describe(self) -> str:
        rate = f" at {float(self.rate):.3g} fps" if self.rate else ""
        kind = "colour" if self.colour else "16-bit gray" if self.deep else "gray"
        return f"{self.path}: {self.count} frames{rate}, {self.size[0]}x{self.size[1]}, {kind}"

    def frames(self):
        """Every frame in order, decoded one at a time; a JobError names a frame that cannot be read."""
        return read_folder(self) if self.files else read_video(self)


# ---- videos ------------------------------------------------------------------------------------

def open_video(path: Path) -> Sequence:
    """Probe a video: frame count and timestamps from its packets (no decoding), size, rate, and
    gray or colour from its first frame."""
    if not path.is_file():
        raise JobError(f"{path}: video not found")
    mod = av()
    try:
        with mod.open(str(path)) as c:
            if not c.streams.video:
                raise JobError(f"{path}: no video stream in it")
            st = c.streams.video[0]
            pts = [p.pts for p in c.demux(st) if p.size > 0]
            rate, base, pix = st.average_rate, st.time_base, st.codec_context.pix_fmt or ""
        with mod.open(str(path)) as c:
            first = next(c.decode(video=0), None)
    except mod.FFmpegError as e:
        raise JobError(f"{path}: not a video PyAV can read ({e})") from None
    if first is None or not pts:
        raise JobError(f"{path}: the video has no frames")
    rgb = first.to_ndarray(format="rgb24").astype(np.int16)
    colour = bool(np.abs(rgb - rgb[..., :1]).max() > GRAY_TOLERANCE)
    times = None if None in pts else np.sort(np.asarray(pts, np.float64)) * float(base)  # AVI may have none
    deep = pix.startswith("gray") and pix not in ("gray", "gray8")  # gray10le, gray12le, gray16le, ...
    return Sequence(path, len(pts), (first.width, first.height), colour and not deep, times,
                    Fraction(rate) if rate else None, deep=deep)


def read_video(seq: Sequence):
    mod = av()
    fmt = "rgb24" if seq.colour else "gray16le" if seq.deep else "gray"
    scale = np.float32(65535 if seq.deep else 255)
    n = 0
    try:
        with mod.open(str(seq.path)) as c:
            st = c.streams.video[0]
            st.thread_type = "AUTO"  # FFmpeg's own threads; decoding is ~1 % of a fused frame's time
            for frame in c.decode(st):
                a = frame.to_ndarray(format=fmt)
                if a.shape[1::-1] != seq.size:
                    raise JobError(f"{seq.path}: frame {n + 1} is {a.shape[1]}x{a.shape[0]}, the first "
                                   f"{seq.size[0]}x{seq.size[1]}; a video that changes size is not supported")
                n += 1
                yield a.astype(np.float32) / scale
    except mod.FFmpegError as e:
        raise JobError(f"{seq.path}: cannot decode frame {n + 1} ({e})") from None


# ---- folders of frames -------------------------------------------------------------------------

def open_folder(folder: Path) -> Sequence:
    """A folder of frames in natural order of file name; every header is read (cheap) so that a
    frame of another size is reported before anything is fused."""
    from utils.images import ImageReadError, image_size, is_image_file, load_image
    from utils.pairs import natural_key
    if not folder.is_dir():
        raise JobError(f"{folder}: folder not found")
    files = sorted((p for p in folder.iterdir() if p.is_file() and is_image_file(p)), key=lambda p: natural_key(p.name))
    if not files:
        raise JobError(f"{folder}: no images in it")
    try:
        first = load_image(files[0])
        size = (first.shape[1], first.shape[0])
        for f in files[1:]:
            if image_size(f) != size:
                w, h = image_size(f)
                raise JobError(f"{f}: {w}x{h}, but {files[0].name} is {size[0]}x{size[1]}; the frames of a "
                               f"sequence share one size")
    except ImageReadError as e:
        raise JobError(str(e)) from None
    return Sequence(folder, len(files), size, first.ndim == 3, files=tuple(files))


def read_folder(seq: Sequence):
    from utils.images import ImageReadError, as_rgb, load_image, rgb_to_gray
    for f in seq.files:
        try:
            im = load_image(f)
        except ImageReadError as e:
            raise JobError(str(e)) from None
        if im.shape[1::-1] != seq.size:
            raise JobError(f"{f}: {im.shape[1]}x{im.shape[0]}, the sequence's frames are {seq.size[0]}x{seq.size[1]}")
        yield (as_rgb(im) if seq.colour else im) if im.ndim == 2 else (im if seq.colour else rgb_to_gray(im))


def open_sequence(path: Path) -> Sequence:
    """A video file (by extension) or a folder of frames."""
    if path.is_dir():
        return open_folder(path)
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise JobError(f"{path}: not a folder of frames nor a video ({', '.join(VIDEO_EXTENSIONS)})")
    return open_video(path)


# ---- pairing -----------------------------------------------------------------------------------

@dataclass
class Pairing:
    """Which frame of each sequence makes each fused frame: ``indices[t][k]`` is sequence k's
    frame for output frame t (0-based, non-decreasing in t). ``how``: ``one-to-one``,
    ``timestamps``, ``names`` or ``trimmed``; ``rate`` the output's frame rate."""
    indices: np.ndarray
    how: str
    rate: Fraction

    def __len__(self) -> int:
        return len(self.indices)

    @classmethod
    def one_to_one(cls, n: int, sequences: int, how: str, rate) -> Pairing:
        """Frame t of every sequence for output frame t, ``t < n``."""
        return cls(np.repeat(np.arange(n)[:, None], sequences, axis=1), how, Fraction(rate))


def pair_frames(seqs: list[Sequence], trim: bool = False, fps: float | None = None) -> Pairing:
    """Equal frame counts pair one to one; different counts pair by timestamp when every sequence
    is a video (on the timeline of the one with the fewest frames: each of its frames takes the
    nearest frame of the others, and frames outside the others' time span are dropped), and by
    file name when every sequence is a frame folder and they share names; else ``trim`` fuses
    the first frames of each, as many as the shortest has, and without it the mismatch is a
    JobError stating every count."""
    counts = [s.count for s in seqs]
    rate = Fraction(fps).limit_denominator(1001) if fps else None
    if len(set(counts)) == 1:
        return Pairing.one_to_one(counts[0], len(seqs), "one-to-one", rate or seqs[0].rate or DEFAULT_FPS)
    if all(s.times is not None for s in seqs):
        return by_timestamps(seqs, rate)
    if all(s.files for s in seqs) and (named := by_names(seqs, rate)) is not None:
        return named
    listing = ", ".join(f"{s.path}: {s.count} frames" for s in seqs)
    if not trim:
        raise JobError(f"the sequences differ in length ({listing}), with no timestamps or shared file names to "
                       f"pair them by; pass --trim to fuse the first {min(counts)} frames of each, one to one")
    n = min(counts)
    return Pairing.one_to_one(n, len(seqs), "trimmed", rate or next((s.rate for s in seqs if s.rate), DEFAULT_FPS))


def by_timestamps(seqs: list[Sequence], rate: Fraction | None) -> Pairing:
    """:func:`pair_frames` for videos of different counts: nearest frame by presentation time."""
    lead = min(range(len(seqs)), key=lambda k: seqs[k].count)
    t = seqs[lead].times
    keep = np.ones(len(t), bool)
    cols = []
    for s in seqs:
        step = np.median(np.diff(s.times)) if s.count > 1 else 0.0
        keep &= (t >= s.times[0] - step / 2) & (t <= s.times[-1] + step / 2)
        j = np.clip(np.searchsorted(s.times, t), 1, s.count - 1) if s.count > 1 else np.zeros(len(t), int)
        nearer_before = (j > 0) & (np.abs(t - s.times[j - 1]) <= np.abs(s.times[j] - t))
        cols.append(np.where(nearer_before, j - 1, j))
    idx = np.stack(cols, axis=1)[keep]
    if not len(idx):
        raise JobError("the videos do not overlap in time: " + ", ".join(
            f"{s.path} {s.times[0]:.2f}-{s.times[-1]:.2f} s" for s in seqs))
    return Pairing(idx, "timestamps", rate or seqs[lead].rate or Fraction(DEFAULT_FPS))


def by_names(seqs: list[Sequence], rate: Fraction | None) -> Pairing | None:
    """:func:`pair_frames` for frame folders of different counts that share file names (``ir/``
    and ``vi/`` of a data set with a frame missing here or there): the frames whose name (without
    extension) is in every folder, in order; None when no name is shared."""
    names = [{f.stem: i for i, f in enumerate(s.files)} for s in seqs]
    common = sorted(set(names[0]).intersection(*names[1:]), key=lambda n: names[0][n])
    if not common:
        return None
    idx = np.array([[nm[n] for nm in names] for n in common])
    if (np.diff(idx, axis=0) < 0).any():  # the folders order the shared names differently
        return None
    return Pairing(idx, "names", rate or Fraction(DEFAULT_FPS))


def paired(seqs: list[Sequence], pairing: Pairing):
    """The frames of every sequence as the pairing asks, one tuple per output frame, streamed:
    each sequence is decoded once, in order; a frame used twice is not decoded twice."""
    streams = [pick(s.frames(), pairing.indices[:, k], s) for k, s in enumerate(seqs)]
    return zip(*streams, strict=True)


def pick(frames, wanted, seq: Sequence | None = None):
    """The frames of the iterator ``frames`` at the non-decreasing positions ``wanted``; a
    JobError when it ends first (a video whose last packets do not decode)."""
    pos, current = -1, None
    for i in wanted:
        while pos < i:
            current = next(frames, None)
            if current is None:
                where = f"{seq.path}: " if seq else ""
                raise JobError(f"{where}decoding ended after {pos + 1} frames; {int(i) + 1} or more were expected "
                               f"({seq.count if seq else '?'} packets): a damaged or truncated file")
            pos += 1
        yield current


# ---- writing -----------------------------------------------------------------------------------

class VideoWriter:
    """An H.264 MP4 written frame by frame (uint8 (H,W) or (H,W,3)) to a temporary file beside
    ``path``; :meth:`close` renames it into place, :meth:`abort` removes it. Odd sizes are padded
    by one replicated row or column (yuv420p needs even ones); a record says so."""

    def __init__(self, path: Path, rate: Fraction, size: tuple[int, int]):
        mod = av()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        self.path, self.tmp, self.count = path, Path(tmp), 0
        self.pad = (size[1] % 2, size[0] % 2)
        self.container = mod.open(str(self.tmp), "w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = size[0] + self.pad[1], size[1] + self.pad[0]
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(CRF), "preset": "veryfast"}

    def write(self, img: np.ndarray) -> None:
        if any(self.pad):
            img = np.pad(img, ((0, self.pad[0]), (0, self.pad[1])) + ((0, 0),) * (img.ndim - 2), mode="edge")
        frame = av().VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24" if img.ndim == 3 else "gray")
        frame.pts = self.count
        self.container.mux(self.stream.encode(frame))
        self.count += 1

    def close(self) -> None:
        self.container.mux(self.stream.encode())
        self.container.close()
        os.chmod(self.tmp, 0o666 & ~current_umask())  # mkstemp's 0600 -> what a plain open() gives
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # the file is being thrown away; its state does not matter
            self.container.close()
        self.tmp.unlink(missing_ok=True)
