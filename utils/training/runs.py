"""Run folders and resume: a run lives in one folder, ``<output_dir>/<run_name>/``, claimed
atomically by its ``run.json``; every checkpoint records the run's id, so a resume continues
the run the checkpoint belongs to, in that run's own folder, or is refused."""
from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import time
from dataclasses import fields
from pathlib import Path

import torch

from configs import TrainConfig
from models.densefuse import DenseFuse
from utils import distributed as D
from utils.checkpoint import FORMAT, WeightsError, load_model, torch_load
from utils.training.errors import TrainingError, fail

RUN_FILE = "run.json"
#: The run folder's list of its training images, relative to --image_path, in training order.
IMAGES_FILE = "images.txt"
#: Settings a resumed run may change when given explicitly on the command line.
#: ``image_path`` may change when the training images moved: :func:`check_same_images` then
#: requires the same files by name.
RESUMABLE_OVERRIDES = {"num_epochs", "device", "num_workers", "log_every", "save_every", "micro_batch", "amp",
                       "compile", "image_path"}


def merged_config(cfg: TrainConfig, explicit: frozenset[str], resume: dict) -> TrainConfig:
    """The resumed run's own settings, except the few given explicitly that may change."""
    saved = resume["config"]

    def same(value, recorded):  # --zoom is a list from argparse, a tuple in TrainConfig
        seqs = isinstance(value, (list, tuple)) and isinstance(recorded, (list, tuple))
        return [*value] == [*recorded] if seqs else value == recorded
    # Flags that repeat the run's own values (a torchrun restart's --resume_path auto) are not news.
    ignored = sorted(k for k in explicit - RESUMABLE_OVERRIDES - {"resume_path"}
                     if not same(getattr(cfg, k), saved.get(k)))
    if ignored:
        from utils.log import log
        log.warning(f"resuming keeps the run's own settings; ignored: --{', --'.join(ignored)}")
    override = explicit & RESUMABLE_OVERRIDES | {"resume_path"}
    saved.setdefault("pixel_range", 1.0)  # checkpoints from before --pixel_range
    return TrainConfig(**{f.name: getattr(cfg, f.name) if f.name in override
                          else saved.get(f.name, getattr(cfg, f.name)) for f in fields(TrainConfig)})


def load_resume(path: str) -> dict:
    try:
        resume = torch_load(path)
    except WeightsError as e:
        fail(str(e))
    keys = ("model", "optimizer", "scheduler", "config", "epoch", "step")
    if not isinstance(resume, dict) or resume.get("format") != FORMAT or any(resume.get(k) is None for k in keys):
        fail(f"{path}: not a resumable training checkpoint of this project")
    if not isinstance(resume["config"], dict):
        fail(f"{path}: its config is malformed (damaged checkpoint?)")
    return resume


def check_same_images(resume: dict, resume_path: str, root: Path, paths: list[Path],
                      undecodable: list[Path] = ()) -> None:
    """A resume trains on the files it started with: the same names (relative to the image
    folder, which may have moved) in the same order, else one error saying what differs
    (``undecodable``: files present that no longer decode). The run folder's ``images.txt``
    names the files; older checkpoints have no record to check."""
    from utils.data import image_record, relative_names
    recorded = resume.get("images")
    if not isinstance(recorded, dict) or image_record(root, paths) == recorded:
        return
    listing = Path(resume_path).resolve().parent.parent / IMAGES_FILE
    why = f"{recorded.get('count')} recorded, {len(paths)} found"
    try:
        names = listing.read_text().splitlines()
    except OSError:
        names = None
    if names is not None:
        now = relative_names(root, paths)
        broken = set(relative_names(root, list(undecodable)))
        gone, new = sorted(set(names) - set(now) - broken), sorted(set(now) - set(names))
        why += "".join(f"; {label}: {', '.join(n[:3])}{', ...' if len(n) > 3 else ''}"
                       for label, n in (("missing", gone), ("not in the run", new),
                                        ("no longer decodable", sorted(broken & set(names)))) if n)
    fail(f"the images under {root} are not the run's training images ({why}); pass --image_path "
         f"with the run's own images (moved folders are fine: the names below it must match)")


def resume_run_dir(path: str, resume: dict) -> tuple[Path, str]:
    """The folder and id of the run ``resume`` belongs to: the checkpoint must sit in that run's
    ``checkpoints/`` folder, whose ``run.json`` carries the same run id. Anything else (a copy
    elsewhere, another run's folder) is refused: a resume must never write over other files.
    A run from before run ids (no id in the checkpoint, no run.json) is resumed where it lies and
    given a run.json, so that its next checkpoints resume in turn."""
    ckpt = Path(path).resolve()
    run_dir = ckpt.parent.parent
    run_id = resume.get("run_id")
    marker = run_dir / RUN_FILE
    try:
        recorded = json.loads(marker.read_text()).get("run_id") if marker.is_file() else None
    except (OSError, ValueError, AttributeError):
        recorded = None
    if run_id is None and ckpt.parent.name == "checkpoints" and not marker.exists():
        return run_dir, write_run_file(run_dir)
    if ckpt.parent.name != "checkpoints" or run_id is None or recorded != run_id:
        fail(f"{path} belongs to run {run_id or '(unrecorded)'}, but {run_dir} is not that run's folder "
             f"(no matching {RUN_FILE}); resume from the checkpoint inside its own run folder "
             f"(<run>/checkpoints/), or start a new run from it with --init_from {path}")
    return run_dir, run_id


def write_run_file(run_dir: Path) -> str:
    """Create ``run_dir/run.json`` exclusively (O_EXCL) with a new run id, and return the id.
    Raises FileExistsError if the folder already has one."""
    run_id = secrets.token_hex(8)
    fd = os.open(run_dir / RUN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "w") as fh:
        json.dump({"run_id": run_id, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "pid": os.getpid()}, fh)
    return run_id


def auto_resume_path(cfg: TrainConfig) -> str | None:
    """``--resume_path auto``: the named run's ``last.pt`` if it has one, else None (a new run).
    What a restarted torchrun worker needs: the same command line continues where it stopped."""
    if not cfg.run_name:
        fail("--resume_path auto needs --run_name NAME (the run to continue, or to start if it has no "
             "checkpoint yet)")
    last = Path(cfg.output_dir) / cfg.run_name / "checkpoints" / "last.pt"
    return str(last) if last.is_file() else None


def adopt_run_dir(run_dir: Path) -> str | None:
    """The id of a claimed run folder that holds no checkpoint yet (a ``--resume_path auto`` run
    stopped before its first one: there is nothing to lose), else None."""
    try:
        run_id = json.loads((run_dir / RUN_FILE).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None
    return run_id if run_id and not any((run_dir / "checkpoints").glob("*.pt")) else None


def claim_run_dir(cfg: TrainConfig, adopt: bool = False) -> tuple[Path, str]:
    """Claim the run folder by creating its ``run.json`` exclusively: of two runs started with the
    same name, one gets the folder and the other an error naming it. Default names carry the
    time and a random suffix, so runs started in the same second never collide. ``adopt``: take
    over a claimed folder without checkpoints (see :func:`adopt_run_dir`)."""
    name = cfg.run_name or f"densefuse_l{cfg.ssim_weight}_{time.strftime('%Y%m%d-%H%M%S')}_{secrets.token_hex(2)}"
    run_dir = Path(cfg.output_dir) / name
    if adopt and (run_id := adopt_run_dir(run_dir)):
        return run_dir, run_id
    earlier = sorted((run_dir / "checkpoints").glob("*.pt"))
    hint = (f"; continue it with --resume_path {run_dir / 'checkpoints' / 'last.pt'}"
            if (run_dir / "checkpoints" / "last.pt").is_file() else "")
    if earlier:  # a folder from before run.json: still never written over
        fail(f"{run_dir} already holds a run ({earlier[0].name}, ...); choose another --run_name{hint}")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir, write_run_file(run_dir)
    except FileExistsError:
        fail(f"{run_dir} already holds a run ({RUN_FILE}); choose another --run_name{hint}")
    except OSError as e:
        fail(f"cannot write to {run_dir}: {e.strerror or e}")


def set_aside_later_checkpoints(ckpt_dir: Path, step: int) -> Path | None:
    """Resuming from an earlier checkpoint than the run's latest: move every checkpoint written
    after ``step`` (later ``epoch_k.pt``, ``last.pt``) into ``superseded/<time>/`` instead of
    overwriting them. ``best.pt`` stays: it is the best of the whole run's history."""
    later = []
    for p in sorted(ckpt_dir.glob("*.pt")):
        if p.name == "best.pt":
            continue
        try:
            # mmap: the step is read from the pickle; the tensors stay on disk
            if torch.load(p, map_location="cpu", weights_only=True, mmap=True).get("step", -1) > step:
                later.append(p)
        except Exception:  # an unreadable file is left where it is
            continue
    if not later:
        return None
    dest = ckpt_dir / "superseded" / time.strftime("%Y%m%d-%H%M%S")
    dest.mkdir(parents=True, exist_ok=True)
    for p in later:
        shutil.move(str(p), dest / p.name)
    return dest


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The run's checkpoint to resume from: ``last.pt`` if it exists, else None."""
    last = ckpt_dir / "last.pt"
    return last if last.is_file() else None


def best_of_history(ckpt_dir: Path, best: float) -> float:
    """The lower of ``best`` and the loss recorded in the run's ``best.pt``."""
    path = ckpt_dir / "best.pt"
    try:
        recorded = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("best_loss", math.inf)
    except Exception:
        return best
    return min(best, float(recorded))


def initial_weights(cfg: TrainConfig) -> DenseFuse:
    """The model of ``--init_from``; the authors' weights (original or converted) are refused:
    through the importer's scaling (first layer x255, last /255, exact for fusion) Adam diverged
    at once (loss 0.2 -> 49,050 in the first steps)."""
    try:
        init, info = load_model(cfg.init_from, cfg.ssim_weight)
    except WeightsError as e:
        fail(str(e))
    kind = info["kind"] if info["kind"].startswith("official") else str(info.get("config", {}).get("kind", ""))
    if kind.startswith("official"):
        fail(f"{cfg.init_from}: {kind}; --init_from takes this project's weights "
             f"(a run_train.py checkpoint or a shipped/exported file), not the authors' (their imported "
             f"scaling makes Adam diverge at once)")
    channels, wanted = init.model_args()["channels"], 1 if cfg.gray else 3
    if channels != wanted:
        fix = "pass --no-gray" if channels == 3 else "leave out --no-gray"
        fail(f"{cfg.init_from}: a {channels}-channel network; this run trains a {wanted}-channel one; {fix}")
    return init


def open_run(cfg: TrainConfig, resume: dict | None, auto: bool) -> tuple[Path, str]:
    """The run folder (claimed for a new run; the checkpoint's own for a resume) and the run id."""
    from utils.files import check_writable, remove_stale_temps
    from utils.log import log
    run_dir, run_id = (resume_run_dir(cfg.resume_path, resume) if resume is not None
                       else claim_run_dir(cfg, adopt=auto))
    problem = check_writable(run_dir / "checkpoints")  # about the size of two checkpoints
    if problem:
        fail(problem)
    if stale := remove_stale_temps(run_dir / "checkpoints"):
        log.info(f"Removed {len(stale)} partial checkpoint file(s) of a killed save ({stale[0].name}, ...)")
    if resume is not None and (moved := set_aside_later_checkpoints(run_dir / "checkpoints", resume["step"])):
        log.info(f"Resuming from an earlier checkpoint: the later ones were moved to {moved}")
    return run_dir, run_id


def open_run_once(cfg: TrainConfig, resume: dict | None, auto: bool, ctx) -> tuple[Path, str]:
    """:func:`open_run` on rank 0 alone (it claims and moves files); the others take its answer,
    or stop with its error."""
    return D.on_main(lambda: open_run(cfg, resume, auto), ctx, TrainingError)
