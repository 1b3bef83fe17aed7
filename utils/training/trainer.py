"""The epoch loop of one run: model, optimizer, schedule, loss, TensorBoard writer, checkpoints."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from configs import TrainConfig
from models.densefuse import DenseFuse
from utils import distributed as D
from utils.checkpoint import save_checkpoint
from utils.files import atomic_write, copy_file
from utils.losses import DenseFuseLoss
from utils.training.errors import fail
from utils.training.runs import IMAGES_FILE, latest_checkpoint
from utils.training.signals import StopFlag
from utils.training.steps import auto_workers, build_optimizer, default_micro_batch, rank_batches, train_step
from utils.training.validation import load_validation, validate


@dataclass
class Progress:
    """Where a run stands: epoch and step done, best score so far, and the loss sums of the
    epoch in progress (saved mid-epoch, so that an interrupted epoch's mean loss, and hence the
    choice of best.pt, is exactly that of an uninterrupted run)."""
    epoch: int = 0
    step: int = 0
    best: float = math.inf
    epoch_sums: tuple[float, float, float] = (0.0, 0.0, 0.0)


class Speed:
    """An epoch's training speed on this rank: global images per second, and the fraction of the
    time the step waited for its batch (from the end of one step to the next batch's arrival)."""

    def __init__(self):
        self.images, self.wait, self.start = 0, 0.0, time.perf_counter()
        self.mark = self.start

    def batch_arrived(self, size: int) -> None:
        self.wait += time.perf_counter() - self.mark
        self.images += size

    def step_done(self) -> None:
        self.mark = time.perf_counter()

    def rate(self) -> float:
        return self.images / max(self.mark - self.start, 1e-9)

    def wait_fraction(self) -> float:
        return self.wait / max(self.mark - self.start, 1e-9)


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
        self.speed = Speed()
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
        if cfg.compile:  # what trains is compiled; what is saved and validated stays the bare module
            self.net = torch.compile(self.net)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
        if self.scaler is not None and resume is not None and "grad_scaler" in resume:
            self.scaler.load_state_dict(resume["grad_scaler"])  # the loss scale reached, for an exact resume
        from utils.prepared import PreparedImages, is_prepared
        self.dataset = (PreparedImages(Path(cfg.image_path), cfg.image_size, cfg.crop, cfg.flip, cfg.seed)
                        if is_prepared(cfg.image_path) else
                        NaturalImages(paths, cfg.image_size, cfg.crop, cfg.flip, cfg.seed, tuple(cfg.zoom), cfg.gray))
        self.epoch_size = cfg.epoch_size or len(paths)
        self.steps_per_epoch = math.ceil(self.epoch_size / cfg.batch_size)
        self.micro = cfg.micro_batch or default_micro_batch(device, cfg.batch_size // ctx.world)
        self.workers = cfg.num_workers if cfg.num_workers >= 0 else auto_workers(
            is_prepared(cfg.image_path), self.epoch_size, world=ctx.world)
        self.val_pairs = load_validation(cfg.val_path, gray=cfg.gray) if ctx.main else []
        self.writer = SummaryWriter(str(run_dir / "logs")) if ctx.main else NullWriter()
        self.config = asdict(cfg)
        self.images = image_record(cfg.image_path, paths)
        if ctx.main and not (run_dir / IMAGES_FILE).exists():
            listing = "".join(f"{n}\n" for n in relative_names(cfg.image_path, paths)).encode()
            atomic_write(run_dir / IMAGES_FILE, lambda fh: fh.write(listing))

    def save(self, name: str, epoch: int, *also: str) -> None:
        """Write checkpoint ``name`` (rank 0), serialised once; each of ``also`` is a copy of its
        bytes, so an epoch end serialises its state once, not three times."""
        if not self.ctx.main:
            return
        p = self.progress
        target = self.ckpt_dir / name
        try:
            save_checkpoint(target, self.model, self.config, epoch, p.step, self.optimizer,
                            self.scheduler, best_loss=p.best, run_id=self.run_id, epoch_sums=list(p.epoch_sums),
                            images=self.images,
                            **({"grad_scaler": self.scaler.state_dict()} if self.scaler is not None else {}))
            for other in also:
                target = self.ckpt_dir / other
                copy_file(self.ckpt_dir / name, target)
        except OSError as e:  # a full disk: the atomic write left the previous file intact
            kept = latest_checkpoint(self.ckpt_dir)
            fail(f"cannot write checkpoint {target}: {e.strerror or e}; "
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
                            num_workers=self.workers, pin_memory=self.device.type == "cuda")
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
        self.speed = Speed()
        for batch, size in zip(bar, sizes, strict=True):
            self.speed.batch_arrived(size)
            batch = batch.to(self.device, non_blocking=True)
            if batch.dtype == torch.uint8:  # prepared samples: converted on the device, a quarter of the bytes moved
                batch = batch.float().div_(255.0)
            batch = batch.contiguous(memory_format=torch.channels_last)
            vals = train_step(self.net, self.criterion, self.optimizer, batch, self.micro, len(batch) / size,
                              self.ctx.world, self.cfg.amp, self.scaler)
            # One collective per step: the global batch's losses, and whether any rank was asked to
            # stop, so that every rank stops (or fails on a non-finite loss) at the same step.
            *vals, stops = D.sum_over_ranks([*vals, float(stop.requested is not None)], self.ctx)
            if not all(map(math.isfinite, vals)):
                fail(f"non-finite loss ({vals[0]}) at step {p.step + 1}; stopped without "
                     f"saving. The last good checkpoint is in {self.ckpt_dir}")
            if self.scaler is not None:  # fp16: skips a step whose scaled gradients overflowed
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            p.step += 1
            p.epoch_sums = tuple(float(s + v) for s, v in zip(p.epoch_sums, vals, strict=True))
            lr = self.optimizer.param_groups[0]["lr"]
            bar.set_postfix(pixel=f"{vals[1]:.3g}", ssim=f"{vals[2]:.4f}", lr=f"{lr:.2e}")
            self.log(vals, lr)
            if self.cfg.save_every and p.step % self.cfg.save_every == 0:
                self.save("last.pt", epoch)
            self.speed.step_done()
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
        if self.speed.images:
            msg += f", {self.speed.rate():.1f} images/s, data wait {100 * self.speed.wait_fraction():.1f} %"
            self.writer.add_scalar("speed/images_per_s", self.speed.rate(), epoch + 1)
            self.writer.add_scalar("speed/data_wait_fraction", self.speed.wait_fraction(), epoch + 1)
        if val:
            msg += f", validation loss {val[0]:.4f}, PSNR {val[1]:.2f} dB"
        is_best = score < p.best
        p.best = min(p.best, score)
        p.epoch_sums = (0.0, 0.0, 0.0)
        self.save(f"epoch_{epoch + 1}.pt", epoch + 1, "last.pt", *(["best.pt"] if is_best else []))
        return msg
