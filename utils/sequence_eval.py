"""Scoring a fused sequence (``run_eval.py --sequence FUSED``): the metrics of every N-th frame
against its sources (``--every N``), averaged over the frames, and the flicker figure
(``utils.sequences.flicker``) of the whole fused sequence beside its sources'.

The sources, their pairing and registration come from the record ``run_infer.py`` wrote beside
the fused sequence (``<name>.json``), or from ``--inputs`` for a sequence fused elsewhere (then
paired one to one). Registered results are scored against the registered source frames, as
images are. A fused MP4 is scored as decoded (H.264 at CRF 18: a level or so from the fused
pixels); a frames folder is exact.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from utils.evaluation import EvalError


def record_of(fused: Path) -> dict | None:
    """The run record beside a fused video (``name.mp4`` -> ``name.json``) or frames folder."""
    path = fused.with_suffix(".json") if fused.is_file() else fused.parent / f"{fused.name}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EvalError(f"{path}: not a readable run record ({e})") from None


def sources_of(fused: Path, inputs: list[str] | None):
    """The source sequences, their pairing and the registration (or None) of ``fused``."""
    from utils.errors import JobError
    from utils.video import Pairing, open_sequence, pair_frames
    record = record_of(fused)
    if not inputs and record is None:
        raise EvalError(f"{fused}: no run record beside it ({fused.stem}.json); name its sources with --inputs")
    paths = [Path(p) for p in inputs] if inputs else [Path(s["path"]) for s in record["inputs"]]
    try:
        seqs = [open_sequence(p) for p in paths]
        pairing = pair_frames(seqs, trim=bool(record and record.get("pairing") == "trimmed")) if record else None
    except JobError as e:
        raise EvalError(str(e)) from None
    if pairing is None:  # not ours: one to one
        pairing = Pairing.one_to_one(min(s.count for s in seqs), len(seqs), "one-to-one", seqs[0].rate or 25)
    reg = None
    if not inputs and record.get("registration"):
        from utils.registration import Registration
        reg = Registration.from_record(record["registration"])
    fill = bool(record and record.get("align", {}).get("fill"))
    return seqs, pairing, reg, fill


def evaluate_sequence(fused: Path, inputs: list[str] | None, profile: str, metrics: list[str] | None,
                      every: int = 1, progress: bool = True) -> tuple[list[dict], bool, dict]:
    """Rows (``pair`` = ``frame<t>``, 1-based) of every ``every``-th frame, whether the fused
    frames are colour, and ``{"fused": flicker, "sources": [...]}`` over all frames."""
    from utils.errors import JobError
    from utils.evaluation import image_levels, metric_table, score
    from utils.log import progress_bar
    from utils.metrics import COLOUR_AS_STORED
    from utils.sequences import Stream, brightness, flicker
    from utils.video import open_sequence
    table, stored = metric_table(profile, metrics), profile in COLOUR_AS_STORED
    seqs, pairing, reg, fill = sources_of(fused, inputs)
    try:
        out = open_sequence(fused)
    except JobError as e:
        raise EvalError(str(e)) from None
    if out.count != len(pairing):
        raise EvalError(f"{fused}: {out.count} frames, but its sources pair into {len(pairing)}")
    if len(seqs) != 2:
        raise EvalError(f"the metrics are defined for two sources; {fused} has {len(seqs)}")
    stream = Stream(seqs, pairing, None, None, registration=reg, fill=fill)
    rows, colour, fused_b, source_b = [], False, [], []
    frames = zip(out.frames(), stream.frames(), strict=True)
    try:
        for t, (f, sources) in enumerate(progress_bar(frames, total=out.count, desc=f"scoring {fused.name}",
                                                      unit="frame", disable=None if progress else True)):
            fused_b.append(brightness(f))
            source_b.append([brightness(s) for s in sources])
            if t % every:
                continue
            (a, _), (b, _), (fl, c) = (image_levels(x, stored) for x in (*sources, f))
            if a.shape[:2] != fl.shape[:2]:
                raise EvalError(f"frame {t + 1}: fused {fl.shape[1]}x{fl.shape[0]}, sources "
                                f"{a.shape[1]}x{a.shape[0]} (registered results need their record)")
            colour |= c
            rows.append(score(table, f"frame{t + 1}", a, b, fl)[0])
    except JobError as e:
        raise EvalError(str(e)) from None
    return rows, colour, {"fused": flicker(fused_b), "sources": [flicker(c) for c in np.asarray(source_b).T]}



def report_sequence(rows: list[dict], colour: bool, flick: dict, fused: Path, profile: str, every: int,
                    csv: str | None = None, json_file: str | None = None) -> None:
    """Print the mean row and the flicker figures; write the per-frame rows to ``csv``/``json_file``
    (each atomically; an OSError names the file)."""
    from utils.evaluation import format_row, mean_row, write_csv, write_json
    from utils.log import log
    from utils.metrics import CONVENTIONS
    from utils.sequences import flicker_line
    what = f"{fused}, mean of {len(rows)} frames" + (f" (1 in {every})" if every > 1 else "")
    rows = [*rows, mean_row(rows)]
    colour_note = "; colour scored on luma Y" if colour and profile != "vifb" else ""
    log.info(format_row(rows[-1], f"profile {profile}: {what}{colour_note}", arrows=True))
    log.info(flicker_line(flick))
    if csv:
        write_csv(rows, Path(csv))
    if json_file:
        conventions = {k: CONVENTIONS[profile][k] for k in rows[0] if k != "pair"}
        write_json(rows, Path(json_file), {"profile": profile, "sequence": str(fused), "every": every,
                                           "flicker": flick, "conventions": conventions})
