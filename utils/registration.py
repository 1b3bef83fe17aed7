"""Bringing sources of different cameras into one frame: estimated (``--align``), known
(``--transform FILE``) or a plain resampling of sources that share a field of view (``--resize``).

Matrices are 3x3 and map a source's pixel coordinates (x right, y down, pixel centres at
integers) to the reference source's; the reference's own is the identity. Estimation works
between modalities (thermal and visible share edges, not intensities): both images become
gradient-magnitude maps at a working resolution (the reference's longer side ~ :data:`WORK_SIDE`
pixels); a search over uniform scales with normalised cross-correlation (OpenCV's
``matchTemplate``) finds the scale and shift, initialised from the images' extents; OpenCV's ECC
(Evangelidis & Psarakis, TPAMI 2008; ``findTransformECC``) then refines an affine map (or a
homography, or a rotation at the searched scale for ``similarity``), coarse to fine.
``quality["ecc"]`` is ECC's final correlation of the gradient maps; a registration below
:data:`MIN_ECC` or with less than :data:`MIN_OVERLAP` of the reference covered is poor
(docs/registration.md has the measured values on real and synthetic pairs).

Needs OpenCV (``pip install -r requirements-align.txt``); imported only when registering.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MODELS = ("similarity", "affine", "homography")
#: The working resolution of the estimate: the reference's longer side in pixels.
WORK_SIDE = 480
#: Below this ECC correlation of the gradient maps a registration is called poor. Measured
#: (docs/registration.md): the twelve real RoadScene pairs, all right, give 0.51-0.68; wrong
#: answers (two different scenes, TNO pairs whose edges differ too much) 0.15-0.34.
MIN_ECC = 0.4
#: The least fraction of the reference that every warped source must cover.
MIN_OVERLAP = 0.5
#: Relative scales searched around the extents' ratio (source and reference framing the same scene).
SCALES = np.geomspace(0.5, 2.0, 57)
#: How many of the scale search's best scales ECC tries.
CANDIDATES = 8


class RegistrationError(ValueError):
    """A transform that cannot be used (a malformed ``--transform`` file, a singular matrix)."""


@dataclass
class Registration:
    """How the sources of one set were brought into the reference's frame (the record's form)."""
    reference: int
    model: str
    matrices: list[np.ndarray]
    crop: tuple[int, int, int, int] | None = None
    quality: dict = field(default_factory=dict)
    source: str = "estimated"  # or "file: <path>", "resize"

    def record(self) -> dict:
        return {"reference": self.reference, "model": self.model, "source": self.source,
                "matrices": [np.round(m, 8).tolist() for m in self.matrices],
                "crop": list(self.crop) if self.crop else None, "quality": self.quality}

    @classmethod
    def from_record(cls, r: dict) -> Registration:
        """The registration :meth:`record` wrote (to apply it again: the crop and matrices as found)."""
        return cls(r["reference"], r["model"], [np.asarray(m, np.float64) for m in r["matrices"]],
                   tuple(r["crop"]) if r.get("crop") else None, dict(r.get("quality") or {}), r.get("source", ""))

    def poor(self) -> str | None:
        """Why this registration is not to be trusted, or None."""
        q = self.quality
        if q.get("ecc") is not None and q["ecc"] < MIN_ECC:
            return f"edge correlation {q['ecc']:.2f} < {MIN_ECC}"
        if q.get("overlap") is not None and q["overlap"] < MIN_OVERLAP:
            return f"the sources overlap on {100 * q['overlap']:.0f} % of the reference (< {100 * MIN_OVERLAP:.0f} %)"
        return None


def cv2():
    try:
        import cv2 as cv
    except ImportError:
        raise RegistrationError("registration needs OpenCV: pip install -r requirements-align.txt") from None
    return cv


def as_gray(img: np.ndarray) -> np.ndarray:
    """(H,W) float32 [0,1]; colour reduced to BT.601 luma."""
    if img.ndim == 2:
        return img.astype(np.float32)
    return (img[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)


def edges(gray: np.ndarray, scale: float) -> np.ndarray:
    """Gradient magnitude of ``gray`` resized by ``scale`` (blurred first), normalised to its
    99th percentile: what a thermal and a visible image of one scene have in common."""
    cv = cv2()
    h, w = gray.shape
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    small = cv.resize(gray, size, interpolation=cv.INTER_AREA if scale < 1 else cv.INTER_LINEAR)
    small = cv.GaussianBlur(small, (0, 0), 1.0)
    mag = np.hypot(cv.Sobel(small, cv.CV_32F, 1, 0, ksize=3), cv.Sobel(small, cv.CV_32F, 0, 1, ksize=3))
    return np.minimum(mag / max(float(np.percentile(mag, 99)), 1e-6), 1.0).astype(np.float32)


def scale_search(src: np.ndarray, ref: np.ndarray, base: float, keep: int = 3) -> list[tuple]:
    """The ``keep`` best ``(score, scale, tx, ty)``, at scales apart (local maxima over scale):
    the uniform scale (from ``base * SCALES``) and shift that map the edge map ``src`` onto
    ``ref`` by normalised cross-correlation. The smaller of the two (after scaling) slides over
    the larger, padded by a quarter so that partial overlaps count."""
    cv = cv2()
    found = []
    for s in base * SCALES:
        h, w = round(src.shape[0] * s), round(src.shape[1] * s)
        if min(h, w) < 16:
            continue
        moving = cv.resize(src, (w, h), interpolation=cv.INTER_AREA if s < 1 else cv.INTER_LINEAR)
        big, small, flip = (moving, ref, True) if h * w >= ref.size else (ref, moving, False)
        py, px = small.shape[0] // 4, small.shape[1] // 4
        big = cv.copyMakeBorder(big, py, py, px, px, cv.BORDER_CONSTANT, value=0)
        if big.shape[0] < small.shape[0] or big.shape[1] < small.shape[1]:
            continue
        score = cv.matchTemplate(big, small, cv.TM_CCOEFF_NORMED)
        # A window of constant values (the padding) has no correlation: OpenCV scores it 1.
        mean = cv.boxFilter(big, -1, small.shape[::-1], anchor=(0, 0), borderType=cv.BORDER_CONSTANT)
        mean_sq = cv.boxFilter(big * big, -1, small.shape[::-1], anchor=(0, 0), borderType=cv.BORDER_CONSTANT)
        flat = (mean_sq - mean * mean)[:score.shape[0], :score.shape[1]] < 1e-4
        score[flat | ~np.isfinite(score)] = -1.0
        _, v, _, (x, y) = cv.minMaxLoc(score)
        tx, ty = (px - x, py - y) if flip else (x - px, y - py)  # where small's origin lies in big
        found.append((float(v), float(s), float(tx), float(ty)))
    peaks = [f for i, f in enumerate(found)
             if all(f[0] >= found[j][0] for j in (i - 1, i + 1) if 0 <= j < len(found))]
    return sorted(peaks, reverse=True)[:keep] or [(-2.0, base, 0.0, 0.0)]


def refine(src: np.ndarray, ref: np.ndarray, init: np.ndarray, model: str,
           iterations: int = 200) -> tuple[np.ndarray, float]:
    """ECC refinement of ``init`` (3x3, src -> ref coordinates at the working scale); returns the
    refined matrix and ECC's correlation (-1 if it did not converge)."""
    cv = cv2()
    motion = {"affine": cv.MOTION_AFFINE, "homography": cv.MOTION_HOMOGRAPHY,
              "similarity": cv.MOTION_EUCLIDEAN}[model]
    if model == "similarity":  # ECC has no scale-only model: refine rotation and shift at the searched scale
        s = float(np.sqrt(abs(np.linalg.det(init[:2, :2]))))
        h, w = round(src.shape[0] * s), round(src.shape[1] * s)
        src = cv.resize(src, (w, h), interpolation=cv.INTER_AREA if s < 1 else cv.INTER_LINEAR)
        pre = np.diag([s, s, 1.0])
        init = init @ np.linalg.inv(pre)
    warp = np.linalg.inv(init)  # ECC's warp maps template (ref) coordinates to input (src) ones
    warp = (warp / warp[2, 2]).astype(np.float32)
    warp = warp if motion == cv.MOTION_HOMOGRAPHY else warp[:2]
    criteria = (cv.TERM_CRITERIA_EPS | cv.TERM_CRITERIA_COUNT, iterations, 1e-6)
    try:
        rho, warp = cv.findTransformECC(ref, src, warp, motion, criteria, None, 5)
    except cv.error:
        return init if model != "similarity" else init @ pre, -1.0
    full = warp if warp.shape[0] == 3 else np.vstack([warp, [0, 0, 1]])
    out = np.linalg.inv(full.astype(np.float64))
    return (out @ pre if model == "similarity" else out), float(rho)


#: How far ECC may move the searched uniform scale: each axis within this factor of it, and the
#: two axes' scales within it of each other (RoadScene's cameras differ by 1.1 between axes).
MAX_SCALE_CHANGE = 1.3


def plausible(m: np.ndarray, s: float, shape: tuple[int, int]) -> bool:
    """Whether ECC's refinement of the searched scale ``s`` stayed a camera-like change: the
    local scales (singular values of the Jacobian at the reference's centre) near ``s``."""
    h, w = shape
    c = np.linalg.inv(m) @ np.array([w / 2, h / 2, 1.0])  # the source point that lands at the centre
    x, y, z = m @ c
    jac = (m[:2, :2] * z - np.outer([x, y], m[2, :2])) / z ** 2
    hi, lo = np.linalg.svd(jac, compute_uv=False)
    f = MAX_SCALE_CHANGE
    return bool(lo > 0 and s / f <= lo and hi <= s * f and hi / lo <= f)


def estimate(src: np.ndarray, ref: np.ndarray, model: str = "affine") -> tuple[np.ndarray, dict]:
    """The 3x3 matrix mapping ``src``'s pixels to ``ref``'s (both float [0,1], gray or colour,
    any sizes) and its quality (``ecc``, ``search`` score)."""
    g_src, g_ref = as_gray(src), as_gray(ref)
    k = WORK_SIDE / max(g_ref.shape)  # working scale of the reference
    e_ref = edges(g_ref, k)
    k_src = k * max(g_ref.shape) / max(g_src.shape)  # the source at a like resolution
    e_src = edges(g_src, k_src)
    base = float(np.sqrt((e_ref.shape[0] / e_src.shape[0]) * (e_ref.shape[1] / e_src.shape[1])))
    # The search's best score is not always the right scale (repeated structure, an edge-poor
    # sky): a short ECC at half resolution from each of its best candidates decides, then a full one.
    cv = cv2()
    half = [cv.resize(e, None, fx=0.5, fy=0.5, interpolation=cv.INTER_AREA) for e in (e_src, e_ref)]
    d = np.diag([0.5, 0.5, 1.0])  # working -> half-resolution coordinates
    trials = []
    for score, s, tx, ty in scale_search(e_src, e_ref, base, keep=CANDIDATES):
        init = np.array([[s, 0, tx], [0, s, ty], [0, 0, 1]], np.float64)
        m, rho = refine(*half, d @ init @ np.linalg.inv(d), model, iterations=40)
        m = np.linalg.inv(d) @ m @ d
        trials.append((rho if plausible(m, s, e_ref.shape) else rho - 1, score, s, m))
    _, score, s, m_coarse = max(trials, key=lambda t: t[0])
    m_work, rho = refine(e_src, e_ref, m_coarse, model)
    if not plausible(m_work, s, e_ref.shape):  # ECC ran off (zoomed into one textured patch, sheared)
        rho = min(rho, -0.5)
    # Working coordinates -> full resolution: x_ref = A_ref^-1 M x_src_work, x_src_work = A_src x_src.
    to_work_src, to_work_ref = np.diag([k_src, k_src, 1.0]), np.diag([k, k, 1.0])
    return np.linalg.inv(to_work_ref) @ m_work @ to_work_src, {"ecc": round(rho, 4), "search": round(score, 4)}


def warp(img: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``img`` resampled into a frame of ``size`` (w, h) by ``matrix`` (bilinear; area-averaged
    first when it shrinks by more than 2) and the mask of pixels it covers."""
    cv = cv2()
    m = matrix / matrix[2, 2]
    shrink = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))
    if shrink < 0.5:  # antialias: pre-shrink by area averaging, then warp the rest
        f = shrink * 2
        h, w = img.shape[:2]
        img = cv.resize(img, (max(2, round(w * f)), max(2, round(h * f))), interpolation=cv.INTER_AREA)
        m = m @ np.diag([w / img.shape[1], h / img.shape[0], 1.0])
    flags = cv.INTER_LINEAR
    ones = np.ones(img.shape[:2], np.float32)
    if abs(m[2, 0]) < 1e-12 and abs(m[2, 1]) < 1e-12:
        out = cv.warpAffine(img, m[:2], size, flags=flags, borderMode=cv.BORDER_CONSTANT, borderValue=0)
        mask = cv.warpAffine(ones, m[:2], size, flags=cv.INTER_NEAREST, borderValue=0)
    else:
        out = cv.warpPerspective(img, m, size, flags=flags, borderMode=cv.BORDER_CONSTANT, borderValue=0)
        mask = cv.warpPerspective(ones, m, size, flags=cv.INTER_NEAREST, borderValue=0)
    return np.clip(out, 0, 1).astype(np.float32), mask > 0.5


def largest_rectangle(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """An axis-aligned rectangle (x0, y0, x1, y1), end exclusive, inside ``mask``: the bounding
    box shrunk, one border row or column at a time (the one with most uncovered pixels), until
    every pixel is covered. Exact for the convex regions warps give, up to a pixel."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    while x1 - x0 >= 2 and y1 - y0 >= 2:
        sub = ~mask[y0:y1, x0:x1]
        if not sub.any():
            return int(x0), int(y0), int(x1), int(y1)
        sides = [sub[0].sum(), sub[-1].sum(), sub[:, 0].sum(), sub[:, -1].sum()]
        k = int(np.argmax(sides))
        y0, y1, x0, x1 = y0 + (k == 0), y1 - (k == 1), x0 + (k == 2), x1 - (k == 3)
    return None


def apply(images: list[np.ndarray], reg: Registration, fill: bool = False) -> list[np.ndarray]:
    """The sources in the reference's frame: cropped to ``reg.crop`` (set here from the common
    coverage when None and not ``fill``), or at the reference's full size with uncovered pixels
    black (``fill``)."""
    ref = images[reg.reference]
    size = (ref.shape[1], ref.shape[0])
    if reg.model == "scale":  # --resize: the same field of view, resampled as cv2.resize does
        cv = cv2()
        reg.quality["overlap"] = 1.0
        return [im if im.shape[:2] == ref.shape[:2] else np.clip(cv.resize(
            im, size, interpolation=cv.INTER_AREA if im.shape[1] > size[0] else cv.INTER_LINEAR), 0, 1)
            for im in images]
    out, covered = [], np.ones(ref.shape[:2], bool)
    for k, (img, m) in enumerate(zip(images, reg.matrices, strict=True)):
        if k == reg.reference:
            out.append(img)
            continue
        w, mask = warp(img, m, size)
        out.append(w)
        covered &= mask
    reg.quality["overlap"] = round(float(covered.mean()), 4)
    if fill:
        return out
    if reg.crop is None:
        reg.crop = largest_rectangle(covered)
        if reg.crop is None or (reg.crop[2] - reg.crop[0]) < 2 or (reg.crop[3] - reg.crop[1]) < 2:
            raise RegistrationError("the registered sources do not overlap")
    x0, y0, x1, y1 = reg.crop
    return [im[y0:y1, x0:x1] for im in out]


def register(images: list[np.ndarray], reference: int, model: str) -> Registration:
    """Estimate every source's matrix to ``images[reference]``."""
    mats, quality = [], {}
    for k, img in enumerate(images):
        if k == reference:
            mats.append(np.eye(3))
            continue
        m, q = estimate(img, images[reference], model)
        mats.append(m)
        quality = q if not quality else {key: min(quality[key], q[key]) for key in q}
    return Registration(reference, model, mats, quality=quality)


def resize_registration(images: list[np.ndarray], reference: int) -> Registration:
    """``--resize``: each source scaled to the reference's size (the same field of view)."""
    h, w = images[reference].shape[:2]
    # cv2.resize's pixel-centre convention: x_ref = (x_src + 0.5) * W / w - 0.5
    mats = [np.array([[w / im.shape[1], 0, 0.5 * w / im.shape[1] - 0.5],
                      [0, h / im.shape[0], 0.5 * h / im.shape[0] - 0.5], [0, 0, 1]]) for im in images]
    return Registration(reference, "scale", mats, crop=None, source="resize")


def read_transform(path: Path) -> dict:
    """A ``--transform`` file: ``{"reference": k, "model": ..., "matrices": [3x3 per source]}``
    (what ``--write_transform`` writes; ``model`` is informative)."""
    try:
        data = json.loads(Path(path).read_text())
        mats = [np.asarray(m, np.float64) for m in data["matrices"]]
        reference = int(data.get("reference", 0))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RegistrationError(f"{path}: not a transform file ({e}); expected JSON with \"matrices\": "
                                f"one 3x3 list per source") from None
    if not mats or any(m.shape != (3, 3) or not np.isfinite(m).all() or abs(np.linalg.det(m)) < 1e-12
                       for m in mats):
        raise RegistrationError(f"{path}: every matrix must be a finite, invertible 3x3 list")
    if not 0 <= reference < len(mats):
        raise RegistrationError(f"{path}: reference {reference} is not one of the {len(mats)} sources")
    return {"reference": reference, "model": str(data.get("model", "homography")), "matrices": mats}


def write_transform(path: Path, reg: Registration) -> None:
    from utils.files import write_text
    write_text(path, json.dumps({k: v for k, v in reg.record().items() if k in ("reference", "model", "matrices")},
                                indent=1))


@dataclass(frozen=True)
class AlignSpec:
    """What a run asked for: ``mode`` ``align`` (estimate), ``transform`` (``matrices`` from a
    file) or ``resize``; the ``reference`` source (0-based); the ``model`` to estimate; ``fill``
    the reference's whole frame (uncovered pixels black) instead of cropping to the overlap."""
    mode: str
    reference: int = 1
    model: str = "affine"
    fill: bool = False
    matrices: tuple = ()
    transform_file: str = ""

    def settings(self) -> dict:
        """What the record keeps of it (what decided the pixels)."""
        out = {"mode": self.mode, "reference": self.reference, "fill": self.fill}
        if self.mode == "align":
            out["model"] = self.model
        if self.mode == "transform":
            out["matrices"] = [np.round(m, 8).tolist() for m in self.matrices]
        return out

    def register(self, images: list[np.ndarray]) -> Registration:
        """The registration of one set's decoded sources (a RegistrationError if unusable)."""
        if self.reference >= len(images):
            raise RegistrationError(f"the reference is source {self.reference + 1}, but the set has {len(images)}")
        if self.mode == "resize":
            return resize_registration(images, self.reference)
        if self.mode == "transform":
            if len(self.matrices) != len(images):
                raise RegistrationError(f"{self.transform_file} holds {len(self.matrices)} matrices for "
                                        f"{len(images)} sources")
            return Registration(self.reference, "file", [np.asarray(m) for m in self.matrices],
                                source=f"file: {self.transform_file}")
        return register(images, self.reference, self.model)
