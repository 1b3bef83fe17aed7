"""The input check of a fusion run: every source decoded once, before anything is fused or
written, so that a bad pair 40 is reported before pairs 1-39 are fused; every problem of every
set reported at once. The decoded images are kept (up to a budget) for the fusion itself.
"""
from __future__ import annotations

from pathlib import Path

from utils.errors import JobError
from utils.jobs import FuseSet
from utils.log import log


class Decoded:
    """Images decoded (and registered) by the input check, kept for the fusion so that no input
    is decoded twice; up to ``budget`` bytes (a set of thousands of pairs is decoded again
    instead, and registered again with the transform found by the check: ``registrations``)."""

    def __init__(self, budget: int = 1 << 30, fill: bool = False):
        self.images, self.budget, self.fill = {}, budget, fill
        self.registrations: dict = {}

    def load(self, pair):
        from utils.images import load_image
        if pair in self.images:
            return self.images.pop(pair)
        images = tuple(load_image(f) for f in pair.sources)
        if pair in self.registrations:
            from utils.registration import apply
            return tuple(apply(list(images), self.registrations[pair], self.fill))
        return images

    def keep_only(self, pairs: set) -> None:
        """Forget the images of pairs this process will not fuse (another rank's share)."""
        for pair in set(self.images) - pairs:
            self.budget += sum(im.nbytes for im in self.images.pop(pair))

    def keep(self, pair, images) -> None:
        size = sum(im.nbytes for im in images)
        if size <= self.budget:
            self.images[pair], self.budget = images, self.budget - size


def run_inputs(sets: list[FuseSet]) -> set[Path]:
    """Every input file of the run, links followed: never written over, never removed."""
    from utils.files import resolved
    return {resolved(f) for s in sets for p in s.pairs for f in p.sources}


def read_sources(pair, report: bool = True) -> tuple:
    """Every source of ``pair`` decoded; what the reader warns about (a multi-frame file) is
    printed as one ``warning:`` line each if ``report`` (the main process)."""
    import warnings

    from utils.images import ImageWarning, load_image
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImageWarning)
        images = tuple(load_image(f) for f in pair.sources)
    for w in caught if report else ():  # ImageWarning and anything else the decoders said
        log.warning(str(w.message))
    return images


def pair_problems(pair, out_dir: Path, every_input: set[Path], report: bool,
                  align=None) -> tuple[list[str], tuple, object]:
    """What is wrong with one pair (unreadable files, sizes that differ, a registration that
    failed or is poor, an output that would write over an input or a folder), its decoded (and,
    with ``align``, registered) images and the registration."""
    from utils.files import resolved
    from utils.images import ImageReadError, exif_rotated
    from utils.records import output_file
    found, images, reg = [], (), None
    try:
        images = read_sources(pair, report)
        if align is not None:
            images, reg, problem = registered(pair, images, align)
            found += [problem] if problem else []
        elif len({im.shape[:2] for im in images}) > 1:
            sizes = (f"{f} ({im.shape[1]}x{im.shape[0]}{', after its EXIF rotation' if exif_rotated(f) else ''})"
                     for f, im in zip(pair.sources, images, strict=True))
            found.append(" and ".join(sizes) + ": sizes differ (--resize if they show the same field of view, "
                                               "--align to register them)")
    except ImageReadError as e:
        found.append(str(e))
    target = resolved(output_file(out_dir, pair.name))
    if target in {resolved(f) for f in pair.sources}:
        found.append(f"{target}: output would overwrite an input; choose another --output_path")
    elif target in every_input:  # an input of another pair of the run (links, .., folders)
        found.append(f"{target}: is an input of this run; choose another --output_path")
    elif target.is_dir() or (target.exists() and not target.is_file()):
        found.append(f"{target}: the output's name is taken by a folder (or another non-file); "
                     f"move it or choose another --output_path")
    return found, images, reg


def registered(pair, images: tuple, align) -> tuple[tuple, object, str | None]:
    """The sources in the reference's frame, the registration, and why it cannot be trusted."""
    from utils.registration import RegistrationError, apply
    try:
        reg = align.register(list(images))
        out = tuple(apply(list(images), reg, align.fill))
    except RegistrationError as e:
        return images, None, f"pair {pair.name} ({' + '.join(map(str, pair.sources))}): {e}"
    poor = reg.poor() if align.mode == "align" else None
    if poor:
        return out, reg, f"pair {pair.name} ({' + '.join(map(str, pair.sources))}): poor registration ({poor})"
    return out, reg, None


def check_inputs(sets: list[FuseSet], decoded: Decoded, unpaired: list[str], skip_bad: bool,
                 report: bool = True, align=None) -> tuple[list[FuseSet], bool]:
    """Decode (and with ``align``, register) and check every input of every set; print all
    problems at once (if ``report``), with the files without a partner, and stop (JobError)
    unless ``skip_bad``. Returns the sets with their good pairs only, and whether any input was
    bad; the registrations are kept in ``decoded.registrations``."""
    from utils.log import progress_bar
    bad: list[str] = list(unpaired)
    checked = []
    every_input = run_inputs(sets)
    for s in sets:
        good = []
        for pair in progress_bar(s.pairs, desc="checking inputs", leave=False,
                                 disable=True if len(s.pairs) < 20 else None):
            problems, images, reg = pair_problems(pair, s.out_dir, every_input, report, align)
            bad += problems
            if not problems:
                good.append(pair)
                decoded.keep(pair, images)
                if reg is not None:
                    decoded.registrations[pair] = reg
        checked.append(s._replace(pairs=good))
    if bad:
        for line in [f"{len(bad)} problem(s) with the inputs:", *(f"  {b}" for b in bad)] if report else ():
            log.warning(line, extra={"plain": True})  # under torchrun every rank found the same; one reports
        if not skip_bad:
            raise JobError("nothing was fused; fix the files above or pass --skip_bad")
    return checked, bool(bad)


def check_source_counts(sets: list[FuseSet], scoring: bool, onnx_meta: dict | None, weights: Path | None) -> None:
    """Sets of more than two sources cannot be scored (``scoring``: the standard metrics are defined
    for two), and an ONNX graph fuses the number of sources it was exported with."""
    counts = sorted({len(p.sources) for s in sets for p in s.pairs})
    if scoring and counts and counts[-1] > 2:
        raise JobError(f"--eval scores two-source results (the standard metrics are defined for two sources); "
                       f"these sets have {'/'.join(map(str, counts))} images")
    if onnx_meta is not None and counts and counts != [onnx_meta["sources"]]:
        raise JobError(f"{weights} fuses {onnx_meta['sources']} images; these sets have "
                       f"{'/'.join(map(str, counts))} (export a graph with --sources N for each count)")
