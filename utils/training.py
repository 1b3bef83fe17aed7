"""Training the DenseFuse autoencoder: the step, the optimiser, run folders, resume, validation.

``run_train.py`` is the command line around this module. A run lives in one folder,
``<output_dir>/<run_name>/``: ``run.json`` (claimed atomically when the run starts: two
processes can never share a folder), ``logs/`` (TensorBoard) and ``checkpoints/``
(``epoch_<k>.pt``, ``last.pt``, ``best.pt``). Every checkpoint records the run's id, so a
resume continues the run the checkpoint belongs to, in that run's own folder, or is refused.

Under torchrun (``utils/distributed.py``) the same loop runs on every rank with the model in
DistributedDataParallel: each rank takes its share of every global batch, gradients and logged
losses are those of the whole batch, and rank 0 alone writes the run folder.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from configs import TrainConfig, bundled_note
from models.densefuse import DenseFuse
from utils import distributed as D
from utils.checkpoint import FORMAT, WeightsError, load_model, save_checkpoint, torch_load
from utils.files import atomic_write
from utils.losses import DenseFuseLoss

RUN_FILE = "run.json"
#: The run folder's list of its training images, relative to --image_path, in training order.
IMAGES_FILE = "images.txt"
#: Settings a resumed run may change when given explicitly on the command line.
#: ``image_path`` may change when the training images moved: :func:`check_same_images` then
#: requires the same files by name.
RESUMABLE_OVERRIDES = {"num_epochs", "device", "num_workers", "log_every", "save_every", "micro_batch",
                       "image_path"}
#: Learning rate of a fine-tuning run (--init_from without --lr): the shipped recipe's second
#: stage. The from-scratch default (1e-4) moves every weight of a trained network by ~1e-4 in
#: Adam's first steps, which wrecked the shipped weights (validation 68.6 -> 39.4 dB in 2 steps).
FINETUNE_LR = 5e-5


class TrainingError(RuntimeError):
    """A problem reported as one ``error:`` line and a non-zero exit."""


def fail(msg: str):
    raise TrainingError(msg)


def config_problems(cfg: TrainConfig) -> list[str]:
    """Every out-of-range setting, one message each naming its flag (checked before anything is
    created, so a typo costs no run folder and no traceback)."""
    checks = [
        (cfg.batch_size >= 1, f"--batch_size must be >= 1, got {cfg.batch_size}"),
        (cfg.micro_batch >= 0, f"--micro_batch must be >= 0 (0 = automatic), got {cfg.micro_batch}"),
        (cfg.image_size >= 16, f"--image_size must be >= 16 (the SSIM window is 11), got {cfg.image_size}"),
        (cfg.image_size <= 8192, f"--image_size must be <= 8192 (a batch would not fit in memory), "
                                 f"got {cfg.image_size}"),
        (cfg.num_epochs >= 1, f"--num_epochs must be >= 1, got {cfg.num_epochs}"),
        (cfg.epoch_size is None or cfg.epoch_size >= 1, f"--epoch_size must be >= 1, got {cfg.epoch_size}"),
        (cfg.train_num is None or cfg.train_num >= 1, f"--train_num must be >= 1, got {cfg.train_num}"),
        (cfg.lr is None or cfg.lr >= 0, f"--lr must be >= 0, got {cfg.lr}"),
        (cfg.lr_decay > 0, f"--lr_decay must be > 0, got {cfg.lr_decay}"),
        (cfg.pixel_range > 0, f"--pixel_range must be positive, got {cfg.pixel_range}"),
        (0 < cfg.zoom[0] <= cfg.zoom[1], f"--zoom MIN MAX needs 0 < MIN <= MAX, got {cfg.zoom[0]} {cfg.zoom[1]}"),
        (cfg.num_workers >= 0, f"--num_workers must be >= 0, got {cfg.num_workers}"),
        (cfg.log_every >= 1, f"--log_every must be >= 1, got {cfg.log_every}"),
        (cfg.save_every >= 0, f"--save_every must be >= 0 (0 = only at epoch ends), got {cfg.save_every}"),
        (not cfg.val_path or Path(cfg.val_path).is_dir(),
         f"--val_path {cfg.val_path}: folder not found{bundled_note(cfg.val_path)}; pass --val_path DIR of "
         f"IR/visible pairs, or --val_path '' to train without validation"),
    ]
    return [msg for ok, msg in checks if not ok]


def default_micro_batch(device: torch.device | str, batch_size: int) -> int:
    """2 on a CPU, which bounds memory at any batch size (docs/performance.md); else the batch."""
    return 2 if torch.device(device).type == "cpu" else batch_size


def build_optimizer(model: torch.nn.Module, lr: float, pixel_range: float) -> torch.optim.Adam:
    """Adam with the biases' learning rate divided by ``pixel_range``.

    A network fed 0..R pixels is this one fed [0,1] pixels with every bias multiplied by R
    (ReLU and the convolutions are positively homogeneous) and the same weights. Adam's
    updates do not depend on the gradient's scale, so training it moves each bias by ~lr,
    i.e. by ~lr/R in our units. Adam's eps is multiplied by R for the biases because their
    gradients are R times larger here; then the two trainings match step for step
    (tests/test_train.py). With plain [0,1] training (R = 1) the biases alone gave a third of
    the encoder's activity on a mid-grey image, which flattens the L1-norm strategy's weights
    (docs/weights.md, "--pixel_range").
    """
    if pixel_range == 1:
        return torch.optim.Adam(model.parameters(), lr=lr)
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    weights = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    return torch.optim.Adam([{"params": weights, "lr": lr},
                             {"params": biases, "lr": lr / pixel_range, "eps": 1e-8 * pixel_range}])


def train_step(model, criterion, optimizer, batch: torch.Tensor, micro: int, share: float = 1.0,
               world: int = 1) -> tuple[float, float, float]:
    """Gradients of the batch's mean loss, accumulated over micro-batches of ``micro`` images
    (each weighted by its share of the batch, so loss and gradients equal the whole batch's up
    to float rounding). Returns (total, pixel, ssim) losses; the caller steps the optimizer.

    Under DDP ``batch`` is this rank's part, ``share`` its fraction of the global batch, of
    ``world`` ranks: DDP averages gradients over the ranks, so each rank's loss is scaled by
    ``share * world`` to make that average the global batch mean's gradient (also when the last
    batch splits unevenly); the returned losses are weighted by ``share``, so their sum over
    ranks is the global batch's. Gradients are synchronised once, after the last micro-batch."""
    optimizer.zero_grad(set_to_none=True)
    out = np.zeros(3)
    chunks = batch.split(micro)
    for i, chunk in enumerate(chunks):
        w = share * len(chunk) / len(batch)
        later_sync = i < len(chunks) - 1 and hasattr(model, "no_sync")
        with model.no_sync() if later_sync else contextlib.nullcontext():
            total, pixel, ssim_loss = criterion(model(chunk), chunk)
            (total * (w * world)).backward()
        out += w * np.array([total.item(), pixel.item(), ssim_loss.item()])
    return tuple(out.tolist())


def rank_batches(order: list[int], batch_size: int, ctx: D.Context) -> list[list[int]]:
    """This rank's part of each global batch of ``order`` (consecutive ``batch_size`` items):
    with N ranks, rank r takes the r-th of N near-equal consecutive slices of every batch, so N
    ranks together see exactly the batches one process sees."""
    out = []
    for i in range(0, len(order), batch_size):
        batch = order[i:i + batch_size]
        out.append([int(j) for j in np.array_split(np.asarray(batch), ctx.world)[ctx.rank]])
    return out


def distributed_problems(batch_size: int, epoch_size: int, world: int) -> list[str]:
    """What stops a run from being split over ``world`` ranks."""
    if world == 1:
        return []
    last = epoch_size % batch_size
    return [msg for bad, msg in (
        (batch_size % world != 0, f"--batch_size {batch_size} (the global batch) must be a multiple of the "
                                  f"{world} processes torchrun started"),
        (0 < last < world, f"the epoch's last batch has {last} image(s), fewer than the {world} processes; "
                           f"choose --epoch_size so that it has none or at least {world}")) if bad]


class StopFlag:
    """SIGINT/SIGTERM set a flag so the current step finishes and a checkpoint is written;
    a second signal stops at once. Seconds apart: Ctrl-C under torchrun reaches each worker
    twice at once (from the terminal and again from the launcher), which must not abort the
    checkpoint."""

    def __init__(self):
        self.requested = None
        self._first = 0.0
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested is not None:
            if time.monotonic() - self._first > 1.0:
                raise KeyboardInterrupt
            return
        self.requested, self._first = signal.Signals(signum).name, time.monotonic()

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


# ---- run folders and resume ---------------------------------------------------------------------

def merged_config(cfg: TrainConfig, explicit: frozenset[str], resume: dict) -> TrainConfig:
    """The resumed run's own settings, except the few given explicitly that may change."""
    saved = resume["config"]

    def same(value, recorded):  # --zoom is a list from argparse, a tuple in TrainConfig
        seqs = isinstance(value, (list, tuple)) and isinstance(recorded, (list, tuple))
        return [*value] == [*recorded] if seqs else value == recorded
    # Flags that repeat the run's own values (a torchrun restart's --resume_path auto) are not news.
    ignored = sorted(k for k in explicit - RESUMABLE_OVERRIDES - {"resume_path"}
                     if not same(getattr(cfg, k), saved.get(k)))
    if ignored and D.main_process():
        print(f"warning: resuming keeps the run's own settings; ignored: --{', --'.join(ignored)}",
              file=sys.stderr)
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
            if torch.load(p, map_location="cpu", weights_only=True).get("step", -1) > step:
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
        recorded = torch.load(path, map_location="cpu", weights_only=True).get("best_loss", math.inf)
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


# ---- validation ---------------------------------------------------------------------------------

def load_validation(val_path: str | None, max_pairs: int = 2, gray: bool = True):
    """A few fixed (IR, VIS) pairs for validation, gray or RGB (gray files replicated); [] if the
    folder is absent."""
    from utils.images import ImageReadError, as_rgb, load_image
    from utils.pairs import PairError, find_pairs
    if not val_path or not Path(val_path).is_dir():
        return []
    try:
        _, pairs = find_pairs(val_path)
        images = [(load_image(p.ir, gray=gray), load_image(p.vis, gray=gray)) for p in pairs[:max_pairs]]
        if gray:
            return images
        return [tuple(as_rgb(im) for im in pair) for pair in images]
    except (PairError, ImageReadError) as e:
        print(f"warning: no validation images ({e})", file=sys.stderr)
        return []


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """[0,1] -> 8-bit levels as the files would store them (for PSNR on 0-255)."""
    return torch.floor(x.clamp(0, 1) * 255.0 + 0.5)


@torch.no_grad()
def validate(model, criterion, pairs, device, writer, epoch) -> tuple[float, float] | None:
    """(mean loss, mean PSNR on 0-255) of the validation reconstructions; logs images."""
    from utils.fusion import FuseSettings, fuse_images
    from utils.images import to_uint8
    if not pairs:
        return None
    model.eval()
    losses, psnrs, tiles = [], [], []
    for ir, vis in pairs:
        for img in (ir, vis):
            x = torch.from_numpy(img[None] if img.ndim == 2 else img.transpose(2, 0, 1).copy())[None].to(device)
            y = model(x)
            losses.append(float(criterion(y, x)[0]))
            mse = float(torch.mean((to_levels(y) - to_levels(x)) ** 2))
            psnrs.append(10 * math.log10(255.0 ** 2 / max(mse, 1e-12)))
            out = y[0].clamp(0, 1).cpu().numpy()
            tiles.append(np.concatenate([img, out[0] if img.ndim == 2 else out.transpose(1, 2, 0)], axis=1))
    formats = "HW" if tiles[0].ndim == 2 else "HWC"  # colour images in colour
    for i, t in enumerate(tiles):
        writer.add_image(f"reconstruction/{i}", to_uint8(t), epoch, dataformats=formats)
    fused = fuse_images(model, *pairs[0], settings=FuseSettings("add", output_mode="minmax", device=str(device)))
    writer.add_image("fused/add_minmax", fused, epoch, dataformats="HW" if fused.ndim == 2 else "HWC")
    writer.add_scalar("val/psnr", float(np.mean(psnrs)), epoch)
    writer.add_scalar("val/loss", float(np.mean(losses)), epoch)
    model.train()
    return float(np.mean(losses)), float(np.mean(psnrs))


# ---- the training loop --------------------------------------------------------------------------

@dataclass
class Progress:
    """Where a run stands: epoch and step done, best score so far, and the loss sums of the
    epoch in progress (saved mid-epoch, so that an interrupted epoch's mean loss, and hence the
    choice of best.pt, is exactly that of an uninterrupted run)."""
    epoch: int = 0
    step: int = 0
    best: float = math.inf
    epoch_sums: tuple[float, float, float] = (0.0, 0.0, 0.0)


class NullWriter:
    """The TensorBoard writer of ranks other than 0: logs nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class Trainer:
    """Model, optimizer, schedule, loss and TensorBoard writer of one run, with the epoch loop.

    ``init``: starting weights of a fine-tuning run; ``resume``: a loaded checkpoint to continue;
    ``ctx``: this process's place under torchrun (``self.model`` stays the bare module, saved and
    validated as such; ``self.net`` is what trains: the DDP wrapper, or the model itself).
    """

    def __init__(self, cfg: TrainConfig, device: torch.device, paths: list[Path], run_dir: Path,
                 run_id: str, init: DenseFuse | None = None, resume: dict | None = None,
                 ctx: D.Context = D.SINGLE):
        from torch.utils.tensorboard import SummaryWriter  # heavy import, only when training

        from utils.data import NaturalImages, image_record, relative_names
        self.cfg, self.device, self.paths, self.run_id, self.ctx = cfg, device, paths, run_id, ctx
        self.ckpt_dir = run_dir / "checkpoints"
        torch.manual_seed(cfg.seed)
        # Channels-last lets oneDNN/cuDNN pick their fastest convolutions (run_scripts/benchmark.py).
        self.model = DenseFuse(channels=1 if cfg.gray else 3).to(device).to(memory_format=torch.channels_last)
        if init is None and resume is None and cfg.pixel_range != 1:
            with torch.no_grad():  # default initial biases, in 0..R units (see build_optimizer)
                for name, param in self.model.named_parameters():
                    if name.endswith("bias"):
                        param /= cfg.pixel_range
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.pixel_range)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=cfg.lr_decay)
        self.criterion = DenseFuseLoss(cfg.ssim_weight)
        self.progress = Progress()
        if init is not None:
            self.model.load_state_dict(init.state_dict())
        if resume is not None:
            self.model.load_state_dict(resume["model"])
            self.optimizer.load_state_dict(resume["optimizer"])
            self.scheduler.load_state_dict(resume["scheduler"])
            self.progress = Progress(resume["epoch"], resume["step"], resume.get("best_loss", math.inf),
                                     tuple(resume.get("epoch_sums", (0.0, 0.0, 0.0))))
        self.net = self.model
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel
            self.net = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.dataset = NaturalImages(paths, cfg.image_size, cfg.crop, cfg.flip, cfg.seed, tuple(cfg.zoom), cfg.gray)
        self.epoch_size = cfg.epoch_size or len(paths)
        self.steps_per_epoch = math.ceil(self.epoch_size / cfg.batch_size)
        self.micro = cfg.micro_batch or default_micro_batch(device, cfg.batch_size // ctx.world)
        self.val_pairs = load_validation(cfg.val_path, gray=cfg.gray) if ctx.main else []
        self.writer = SummaryWriter(str(run_dir / "logs")) if ctx.main else NullWriter()
        self.config = asdict(cfg)
        self.images = image_record(cfg.image_path, paths)
        if ctx.main and not (run_dir / IMAGES_FILE).exists():
            listing = "".join(f"{n}\n" for n in relative_names(cfg.image_path, paths)).encode()
            atomic_write(run_dir / IMAGES_FILE, lambda fh: fh.write(listing))

    def save(self, name: str, epoch: int) -> None:
        if not self.ctx.main:
            return
        p = self.progress
        try:
            save_checkpoint(self.ckpt_dir / name, self.model, self.config, epoch, p.step, self.optimizer,
                            self.scheduler, best_loss=p.best, run_id=self.run_id, epoch_sums=list(p.epoch_sums),
                            images=self.images)
        except OSError as e:  # a full disk: the atomic write left the previous file intact
            kept = latest_checkpoint(self.ckpt_dir)
            fail(f"cannot write checkpoint {self.ckpt_dir / name}: {e.strerror or e}; "
                 + (f"the last good checkpoint is {kept}" if kept else "no checkpoint was written"))

    def loader(self, epoch: int):
        """The rest of ``epoch``'s batches, in the order a pure function of (seed, epoch) gives
        (this rank's part of each, see :func:`rank_batches`), and each global batch's size."""
        from torch.utils.data import DataLoader

        from utils.data import epoch_order
        self.dataset.set_epoch(epoch)
        done = self.progress.step - epoch * self.steps_per_epoch  # batches of this epoch already trained
        b = self.cfg.batch_size
        order = epoch_order(len(self.paths), self.epoch_size, self.cfg.seed, epoch)[done * b:]
        sizes = [min(b, len(order) - i) for i in range(0, len(order), b)]
        loader = DataLoader(self.dataset, batch_sampler=rank_batches(order, b, self.ctx),
                            num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda")
        return done, loader, sizes

    def log(self, vals, lr: float) -> None:
        step = self.progress.step
        if step % self.cfg.log_every == 0 or step == 1:
            for name, v in zip(("total", "pixel", "ssim"), vals, strict=True):
                self.writer.add_scalar(f"loss/{name}", v, step)
            self.writer.add_scalar("lr", lr, step)

    def train_epoch(self, epoch: int, stop: StopFlag) -> bool:
        """Train the rest of ``epoch``; False if a stop was requested (``last.pt`` is written)."""
        from tqdm import tqdm
        done, loader, sizes = self.loader(epoch)
        p = self.progress
        if done == 0:
            p.epoch_sums = (0.0, 0.0, 0.0)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.cfg.num_epochs}", initial=done,
                   total=self.steps_per_epoch, dynamic_ncols=True, disable=None if self.ctx.main else True)
        for batch, size in zip(bar, sizes, strict=True):
            batch = batch.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            vals = train_step(self.net, self.criterion, self.optimizer, batch, self.micro, len(batch) / size,
                              self.ctx.world)
            # One collective per step: the global batch's losses, and whether any rank was asked to
            # stop, so that every rank stops (or fails on a non-finite loss) at the same step.
            *vals, stops = D.sum_over_ranks([*vals, float(stop.requested is not None)], self.ctx)
            if not all(map(math.isfinite, vals)):
                fail(f"non-finite loss ({vals[0]}) at step {p.step + 1}; stopped without "
                     f"saving. The last good checkpoint is in {self.ckpt_dir}")
            self.optimizer.step()
            p.step += 1
            p.epoch_sums = tuple(float(s + v) for s, v in zip(p.epoch_sums, vals, strict=True))
            lr = self.optimizer.param_groups[0]["lr"]
            bar.set_postfix(pixel=f"{vals[1]:.3g}", ssim=f"{vals[2]:.4f}", lr=f"{lr:.2e}")
            self.log(vals, lr)
            if self.cfg.save_every and p.step % self.cfg.save_every == 0:
                self.save("last.pt", epoch)
            if stops:
                bar.close()
                self.save("last.pt", epoch)
                return False
        bar.close()
        return True

    def end_epoch(self, epoch: int) -> str:
        """Schedule, validation, checkpoints; returns the epoch's summary line."""
        p = self.progress
        self.scheduler.step()
        mean_loss = p.epoch_sums[0] / self.steps_per_epoch
        val = validate(self.model, self.criterion, self.val_pairs, self.device, self.writer, epoch + 1)
        score = val[0] if val else mean_loss
        msg = f"epoch {epoch + 1}: mean loss {mean_loss:.4f}"
        if val:
            msg += f", validation loss {val[0]:.4f}, PSNR {val[1]:.2f} dB"
        is_best = score < p.best
        p.best = min(p.best, score)
        p.epoch_sums = (0.0, 0.0, 0.0)
        self.save(f"epoch_{epoch + 1}.pt", epoch + 1)
        self.save("last.pt", epoch + 1)
        if is_best:
            self.save("best.pt", epoch + 1)
        return msg
