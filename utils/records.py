"""The record of a fusion output folder (``fusion_settings.json``) and the guard built on it.

Each output folder records what decided the pixels of its fused images (the weights by name and
SHA-256, the strategy, L1 radius, output mode, the backend when not torch) and, per fused image,
the input files that made it. A run refuses a folder made otherwise unless told to
``overwrite`` it, and then removes the images it will not rewrite, so that no image sits beside
a record that does not describe it.

**The record is untrusted input.** A results folder can come from anyone (a shared drive, a
downloaded archive), so nothing it says is acted on unchecked: only entries whose name is a plain
file name are read from it, and the only files ever removed on its word are plain files
``<name>.png`` directly inside the folder that are not an input of the run (never through a link,
never ``..``, never an absolute path). Entries that fail the check are named in a warning.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from utils.files import atomic_write, resolved

#: Written into every output folder: what decided the pixels of the fused images in it.
SETTINGS_FILE = "fusion_settings.json"
#: What fusion writes into an output folder (its killed writes' temporary files are removed).
FUSION_FILES = re.compile(r".+\.png|" + re.escape(SETTINGS_FILE))


class RecordError(ValueError):
    """Results that this run would replace or mix with; the message says which and how to proceed."""


def output_file(out_dir: Path, name: str) -> Path:
    """``<out_dir>/<name>.png``; a name that would leave the folder is a RecordError."""
    path = out_dir / f"{name}.png"
    if not plain_name(name) or resolved(path).parent != resolved(out_dir):
        raise RecordError(f"pair name {name!r} would write outside {out_dir}")
    return path


def plain_name(name) -> bool:
    """A string usable as a file name inside a folder: no separator, not ``.``/``..``, no NUL."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "\0" not in name
            and not any(sep and sep in name for sep in (os.sep, os.altsep, "/", "\\")))


def read_record(out_dir: Path):
    """The folder's record: a dict, None if there is none, or ``False`` if it cannot be read
    (which counts as other settings)."""
    path = out_dir / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return record if isinstance(record, dict) else False


def recorded_inputs(record) -> tuple[dict[str, list[str]], list[str]]:
    """The record's ``inputs`` (fused image name -> its input files), keeping only entries of a
    plain name and a list of paths; and the names of those left out (to be warned about)."""
    inputs = record.get("inputs") if record else None
    if not isinstance(inputs, dict):
        return {}, ([] if inputs is None else [repr(inputs)[:60]])
    good = {k: v for k, v in inputs.items()
            if plain_name(k) and isinstance(v, list) and all(isinstance(f, str) for f in v)}
    return good, [repr(k) for k in inputs if k not in good]


#: Not settings: per fused image, the input files and the registration found for them; and the
#: software that wrote the folder (informative: a new torch or project version does not make
#: earlier results "other settings").
PER_IMAGE = ("inputs", "registration", "software")


def same_settings(record, settings: dict) -> bool:
    """Whether a folder's record was made with ``settings`` (its per-image entries aside)."""
    return bool(record) and {k: v for k, v in record.items() if k not in PER_IMAGE} == settings


def pair_inputs(pair) -> list[str]:
    return [str(resolved(f)) for f in pair.sources]


def replaced_results(pairs: list, out_dir: Path, settings: dict) -> str | None:
    """Why fusing ``pairs`` into ``out_dir`` with ``settings`` would replace or mix in with
    results made otherwise; None if it would not (a new folder, or the same settings again)."""
    record = read_record(out_dir)
    if record is not None:
        if same_settings(record, settings):
            return None
        shown = {k: v for k, v in (record or {}).items()
                 if v is not None and k not in (*PER_IMAGE, "weights_sha256") and isinstance(v, (str, int, float))}
        made = (", ".join(f"{k} {v}" for k, v in shown.items()) if record
                else f"settings it cannot read ({out_dir / SETTINGS_FILE})")
        return f"{out_dir} holds results made with {made}"
    earlier = [p for p in pairs if output_file(out_dir, p.name).exists()]
    if earlier:
        return f"{out_dir} holds {len(earlier)} fused image(s) of an earlier run ({earlier[0].name}.png ...)"
    return None


def input_clashes(pairs: list, out_dir: Path) -> list[str]:
    """Outputs that exist and were made from other input files than this run's pair of the same
    name (two data sets both called ``test``, two single pairs both named ``1``)."""
    made_from, _ = recorded_inputs(read_record(out_dir))
    return [f"{output_file(out_dir, p.name)} was made from {' + '.join(made_from[p.name])}, not from "
            f"{' + '.join(map(str, p.sources))}"
            for p in pairs if p.name in made_from and made_from[p.name] != pair_inputs(p)
            and output_file(out_dir, p.name).exists()]


def guard(jobs, settings: dict, overwrite: bool, inputs: set[Path]) -> list[str]:
    """Refuse (RecordError) or, with ``overwrite``, clear the results other settings or other
    inputs made in the jobs' folders (``utils.jobs.FuseSet``: ``pairs``, ``out_dir``).
    ``inputs``: every input of the run, resolved; none is ever removed. Returns warning lines
    (record entries not acted on)."""
    clashes = []
    for job in jobs:
        if job.pairs and (c := replaced_results(job.pairs, job.out_dir, settings)):
            clashes.append(c)
        if job.pairs:
            clashes += input_clashes(job.pairs, job.out_dir)
    if clashes and not overwrite:
        raise RecordError("\n  ".join([*clashes, "pass --output_path DIR for a new folder, or --overwrite to "
                                                 "replace them; nothing was written"]))
    warnings = []
    if overwrite:
        for job in jobs:
            warnings += remove_stale(job.out_dir, {p.name for p in job.pairs}, settings, inputs)
    return warnings


def remove_stale(out_dir: Path, names: set[str], settings: dict, inputs: set[Path]) -> list[str]:
    """With --overwrite under new settings: fused images that this run will not rewrite (pairs now
    skipped or gone) would sit beside a record that no longer describes them; remove them. Only
    plain files ``<name>.png`` directly in ``out_dir`` that are no input of the run; returns
    a warning naming the record's entries that were not acted on."""
    record = read_record(out_dir)
    if not record or same_settings(record, settings):
        return []
    listed, refused = recorded_inputs(record)
    folder = resolved(out_dir)
    for name in set(listed) - names:
        path = out_dir / f"{name}.png"
        if path.is_symlink() or not path.is_file():
            continue  # a link (its target is not ours to delete), a folder, or already gone
        if resolved(path).parent != folder or resolved(path) in inputs:
            refused.append(repr(name))
            continue
        path.unlink(missing_ok=True)
    if not refused:
        return []
    return [f"{out_dir / SETTINGS_FILE}: ignored {len(refused)} entr{'y' if len(refused) == 1 else 'ies'} that "
            f"name no plain file of this folder, or an input of this run ({', '.join(sorted(refused)[:4])}); "
            f"nothing outside the folder is touched"]


def write_record(out_dir: Path, settings: dict, pairs: list, registrations: dict | None = None) -> None:
    """The folder's record, before its images, so that an interrupted run's files are labelled too.
    Pairs fused earlier with the same settings stay listed beside this run's. ``registrations``
    (pair -> :class:`utils.registration.Registration`): how each pair's sources were registered."""
    record = read_record(out_dir)
    same = same_settings(record, settings)
    inputs = dict(recorded_inputs(record)[0]) if same else {}
    inputs.update({p.name: pair_inputs(p) for p in pairs})
    found = record.get("registration") if same and isinstance(record.get("registration"), dict) else {}
    found = {k: v for k, v in found.items() if k in inputs}
    found.update({p.name: registrations[p].record() for p in pairs if registrations and p in registrations})
    record = {**settings, "software": software(), "inputs": inputs, **({"registration": found} if found else {})}
    atomic_write(out_dir / SETTINGS_FILE, lambda fh: fh.write(json.dumps(record, indent=1).encode()))


def recorded_settings(weights: Path, info: dict, settings, backend: str = "torch") -> dict:
    """What decides the fused pixels: the weights (by name and content), the lambda taken from a
    release holding several, the fusion settings (tile size and device do not count: tiling
    is exact), and onnxruntime when it ran the network (its floats differ from torch's in the
    last bits, so the two backends' results are never mixed in one folder)."""
    record = {"weights": weights.name, "weights_sha256": info.get("sha256"),
              "ssim_weight": info.get("ssim_weight") or shipped_lambda(weights), **settings.pixels()}
    return {**record, "backend": backend} if backend != "torch" else record


def shipped_lambda(weights: Path) -> int | None:
    """λ of a shipped weights file (None for any other file: its λ is not known)."""
    from configs import SHIPPED_BY_LAMBDA, SHIPPED_RGB_BY_LAMBDA
    for table in (SHIPPED_BY_LAMBDA, SHIPPED_RGB_BY_LAMBDA):
        for lam, (path, _) in table.items():
            if resolved(path) == resolved(weights):
                return lam
    return None


def software() -> dict:
    """What wrote a folder: the project's and torch's versions (torch only if it is loaded)."""
    import sys

    from configs import VERSION
    torch = sys.modules.get("torch")
    return {"densefuse": VERSION, **({"torch": torch.__version__} if torch else {})}
