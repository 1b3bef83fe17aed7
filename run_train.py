"""Train the DenseFuse autoencoder (paper Sec. III-B) on natural images.

    python run_train.py --image_path /data/coco2014/train --ssim_weight 100

Only the encoder/decoder are trained, to reconstruct their input; the fusion strategy is not
part of training. Loss = 255^2 * MSE + lambda * (1 - SSIM) (see utils/losses.py).
Outputs go to ``<output_dir>/<run_name>/``: ``logs/`` (TensorBoard) and ``checkpoints/``
(``epoch_<k>.pt``, ``last.pt``, ``best.pt``; resume with ``--resume_path``).
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from configs import SSIM_WEIGHTS, TrainConfig
from models.densefuse import DenseFuse
from utils.checkpoint import FORMAT, WeightsError, load_model, save_checkpoint, torch_load
from utils.cli import DefaultsFormatter
from utils.data import NaturalImages, check_readable, epoch_order, list_images
from utils.devices import keep_freed_memory, resolve_device
from utils.files import check_writable
from utils.fusion import fuse_images
from utils.images import ImageReadError, load_image, to_uint8
from utils.losses import DenseFuseLoss
from utils.pairs import PairError, find_pairs


class TrainingError(RuntimeError):
    """A problem reported as one ``error:`` line and a non-zero exit."""


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        description="Train the DenseFuse autoencoder (pixel MSE + lambda*(1-SSIM)).",
        formatter_class=DefaultsFormatter)
    p.add_argument("--image_path", default=d.image_path,
                   help="folder of training images, searched recursively for "
                        "jpg/jpeg/png/bmp/tif/tiff (the paper: MS-COCO 2014 train)")
    p.add_argument("--gray", action=argparse.BooleanOptionalAction, default=d.gray,
                   help="train on grayscale images (the released DenseFuse is gray; "
                        "--no-gray is not supported yet)")
    p.add_argument("--train_num", type=int, default=d.train_num,
                   help="use at most this many images (first in sorted order); default: all")
    p.add_argument("--image_size", type=int, default=d.image_size,
                   help="training images are resized to SxS (the paper: 256)")
    p.add_argument("--crop", action="store_true", default=d.crop,
                   help="take random SxS crops instead of resizing")
    p.add_argument("--flip", action="store_true", default=d.flip,
                   help="random horizontal and vertical flips")
    p.add_argument("--zoom", type=float, nargs=2, default=d.zoom, metavar=("MIN", "MAX"),
                   help="with --crop: each crop covers S/z source pixels, z uniform in [MIN, MAX], "
                        "resized to SxS (z > 1 magnifies, z < 1 shrinks)")
    p.add_argument("--batch_size", type=int, default=d.batch_size, help="images per step")
    p.add_argument("--micro_batch", type=int, default=d.micro_batch,
                   help="split each batch into chunks of this size and accumulate gradients "
                        "(same loss and update, bounded memory: at batch 16 on CPU, 0.8 GB peak "
                        "instead of 3.5 GB, at the same speed); 0 = 2 on CPU, the whole batch on GPU")
    p.add_argument("--num_epochs", type=int, default=d.num_epochs, help="number of epochs")
    p.add_argument("--epoch_size", type=int, default=d.epoch_size,
                   help="images per epoch (repeats shuffled passes when larger than the data "
                        "set); default: one pass over the data set")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--lr_decay", type=float, default=d.lr_decay,
                   help="learning rate multiplied by this after every epoch")
    p.add_argument("--pixel_range", type=float, default=d.pixel_range,
                   help="train as if pixels were 0..R, as the official code fed 0-255 values: with "
                        "Adam that is the same as dividing the biases' initial values and learning "
                        "rate by R, which keeps biases small next to the signal (the L1-norm "
                        "strategy's activity maps depend on that); 1 = plain [0,1] training")
    p.add_argument("--ssim_weight", type=int, choices=SSIM_WEIGHTS, default=d.ssim_weight,
                   help="lambda, the weight of the SSIM loss (paper: 1, 10, 100, 1000)")
    p.add_argument("--init_from", default=d.init_from,
                   help="start a new run from these weights (fine-tuning: fresh optimizer, schedule and "
                        "step count): a run_train.py checkpoint or a shipped/exported weights file")
    p.add_argument("--resume_path", default=d.resume_path,
                   help="checkpoint to continue (same run folder, epoch, step, lr, optimizer)")
    p.add_argument("--num_workers", type=int, default=d.num_workers,
                   help="DataLoader worker processes (0 = load in the main process)")
    p.add_argument("--device", default=d.device, help="auto (cuda if available), cpu, cuda, cuda:1")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed for weights, data order and augmentation")
    p.add_argument("--output_dir", default=d.output_dir, help="folder for run folders")
    p.add_argument("--run_name", default=d.run_name,
                   help="run folder name; default: densefuse_l<lambda>_<date-time>")
    p.add_argument("--val_path", default=d.val_path,
                   help="folder of IR/visible pairs for the per-epoch validation images "
                        "(reconstruction PSNR, one fused pair); skipped if missing")
    p.add_argument("--log_every", type=int, default=d.log_every,
                   help="TensorBoard scalars every N steps")
    p.add_argument("--save_every", type=int, default=d.save_every,
                   help="also write last.pt every N steps (0 = only at epoch ends)")
    return p


def fail(msg: str):
    raise TrainingError(msg)


def load_validation(val_path: str | None, max_pairs: int = 2):
    """A few fixed (IR, VIS) gray pairs for validation; [] if the folder is absent."""
    if not val_path or not Path(val_path).is_dir():
        return []
    try:
        _, pairs = find_pairs(val_path)
        return [(load_image(p.ir, gray=True), load_image(p.vis, gray=True)) for p in pairs[:max_pairs]]
    except (PairError, ImageReadError) as e:
        print(f"warning: no validation images ({e})", file=sys.stderr)
        return []


@torch.no_grad()
def validate(model, criterion, pairs, device, writer, epoch) -> tuple[float, float] | None:
    """(mean loss, mean PSNR on 0-255) of the validation reconstructions; logs images."""
    if not pairs:
        return None
    model.eval()
    losses, psnrs, tiles = [], [], []
    for ir, vis in pairs:
        for img in (ir, vis):
            x = torch.from_numpy(img)[None, None].to(device)
            y = model(x)
            losses.append(float(criterion(y, x)[0]))
            mse = float(torch.mean((to_levels(y) - to_levels(x)) ** 2))
            psnrs.append(10 * math.log10(255.0 ** 2 / max(mse, 1e-12)))
            tiles.append(np.concatenate([img, y[0, 0].clamp(0, 1).cpu().numpy()], axis=1))
    for i, t in enumerate(tiles):
        writer.add_image(f"reconstruction/{i}", to_uint8(t), epoch, dataformats="HW")
    fused = fuse_images(model, *pairs[0], strategy="add", output_mode="minmax", device=device)
    writer.add_image("fused/add_minmax", fused, epoch, dataformats="HW")
    writer.add_scalar("val/psnr", float(np.mean(psnrs)), epoch)
    writer.add_scalar("val/loss", float(np.mean(losses)), epoch)
    model.train()
    return float(np.mean(losses)), float(np.mean(psnrs))


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """[0,1] -> 8-bit levels as the files would store them (for PSNR on 0-255)."""
    return torch.floor(x.clamp(0, 1) * 255.0 + 0.5)


def build_optimizer(model: torch.nn.Module, lr: float, pixel_range: float) -> torch.optim.Adam:
    """Adam with the biases' learning rate divided by ``pixel_range``.

    A network fed 0..R pixels is this one fed [0,1] pixels with every bias multiplied by R
    (ReLU and the convolutions are positively homogeneous) and the same weights. Adam's
    updates do not depend on the gradient's scale, so training it moves each bias by ~lr,
    i.e. by ~lr/R in our units. Adam's eps is multiplied by R for the biases because their
    gradients are R times larger here; then the two trainings match step for step
    (tests/test_train.py). With plain [0,1] training (R = 1) the biases alone gave a third of
    the encoder's activity on a mid-grey image, which flattens the L1-norm strategy's weights
    (README, "--pixel_range").
    """
    if pixel_range == 1:
        return torch.optim.Adam(model.parameters(), lr=lr)
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    weights = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    return torch.optim.Adam([{"params": weights, "lr": lr},
                             {"params": biases, "lr": lr / pixel_range, "eps": 1e-8 * pixel_range}])


def config_problems(cfg: TrainConfig) -> list[str]:
    """Every out-of-range setting, one message each naming its flag (checked before anything is
    created, so a typo costs no run folder and no traceback)."""
    checks = [
        (cfg.batch_size >= 1, f"--batch_size must be >= 1, got {cfg.batch_size}"),
        (cfg.micro_batch >= 0, f"--micro_batch must be >= 0 (0 = automatic), got {cfg.micro_batch}"),
        (cfg.image_size >= 16, f"--image_size must be >= 16 (the SSIM window is 11), got {cfg.image_size}"),
        (cfg.num_epochs >= 1, f"--num_epochs must be >= 1, got {cfg.num_epochs}"),
        (cfg.epoch_size is None or cfg.epoch_size >= 1, f"--epoch_size must be >= 1, got {cfg.epoch_size}"),
        (cfg.train_num is None or cfg.train_num >= 1, f"--train_num must be >= 1, got {cfg.train_num}"),
        (cfg.lr >= 0, f"--lr must be >= 0, got {cfg.lr}"),
        (cfg.lr_decay > 0, f"--lr_decay must be > 0, got {cfg.lr_decay}"),
        (cfg.pixel_range > 0, f"--pixel_range must be positive, got {cfg.pixel_range}"),
        (0 < cfg.zoom[0] <= cfg.zoom[1], f"--zoom MIN MAX needs 0 < MIN <= MAX, got {cfg.zoom[0]} {cfg.zoom[1]}"),
        (cfg.num_workers >= 0, f"--num_workers must be >= 0, got {cfg.num_workers}"),
        (cfg.log_every >= 1, f"--log_every must be >= 1, got {cfg.log_every}"),
        (cfg.save_every >= 0, f"--save_every must be >= 0 (0 = only at epoch ends), got {cfg.save_every}"),
    ]
    return [msg for ok, msg in checks if not ok]


def default_micro_batch(device: torch.device | str, batch_size: int) -> int:
    """2 on a CPU, which bounds memory at any batch size (README, Performance); else the batch."""
    return 2 if torch.device(device).type == "cpu" else batch_size


def train_step(model, criterion, optimizer, batch: torch.Tensor, micro: int) -> tuple[float, float, float]:
    """Gradients of the batch's mean loss, accumulated over micro-batches of ``micro`` images
    (each weighted by its share of the batch, so loss and gradients equal the whole batch's up
    to float rounding). Returns (total, pixel, ssim) losses; the caller steps the optimizer."""
    optimizer.zero_grad(set_to_none=True)
    out = np.zeros(3)
    for chunk in batch.split(micro):
        w = len(chunk) / len(batch)
        total, pixel, ssim_loss = criterion(model(chunk), chunk)
        (total * w).backward()
        out += w * np.array([total.item(), pixel.item(), ssim_loss.item()])
    return tuple(out.tolist())


class StopFlag:
    """SIGINT/SIGTERM set a flag so the current step finishes and a checkpoint is written;
    a second signal stops at once."""

    def __init__(self):
        self.requested = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


#: Settings a resumed run may change when given explicitly on the command line.
RESUMABLE_OVERRIDES = {"num_epochs", "device", "num_workers", "log_every", "save_every", "micro_batch"}


def train(cfg: TrainConfig, explicit: frozenset[str] = frozenset()) -> int:
    if not cfg.gray:
        fail("--no-gray: colour training is not supported; the DenseFuse network is gray")
    resume = None
    if cfg.resume_path:
        try:
            resume = torch_load(cfg.resume_path)
        except WeightsError as e:
            fail(str(e))
        if not isinstance(resume, dict) or resume.get("format") != FORMAT or resume.get("optimizer") is None:
            fail(f"{cfg.resume_path}: not a resumable training checkpoint of this project")
        saved = resume["config"]
        ignored = sorted(explicit - RESUMABLE_OVERRIDES - {"resume_path"})
        if ignored:
            print(f"warning: resuming keeps the run's own settings; ignored: --{', --'.join(ignored)}",
                  file=sys.stderr)
        # The run's own settings win, except the few given explicitly that may change.
        override = explicit & RESUMABLE_OVERRIDES | {"resume_path"}
        saved.setdefault("pixel_range", 1.0)  # checkpoints from before --pixel_range
        cfg = TrainConfig(**{f.name: getattr(cfg, f.name) if f.name in override
                             else saved.get(f.name, getattr(cfg, f.name)) for f in fields(TrainConfig)})
        run_dir = Path(cfg.resume_path).resolve().parent.parent
    else:
        name = cfg.run_name or f"densefuse_l{cfg.ssim_weight}_{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(cfg.output_dir) / name
        earlier = sorted((run_dir / "checkpoints").glob("*.pt"))
        if earlier:  # a new run would overwrite them and mix its logs into theirs
            fail(f"{run_dir} already holds a run ({earlier[0].name}, ...); choose another --run_name, "
                 f"or continue it with --resume_path {run_dir / 'checkpoints' / 'last.pt'}")

    problems = config_problems(cfg)
    if problems:
        fail("\nerror: ".join(problems))  # one "error:" line each
    try:
        device = resolve_device(cfg.device)
    except ValueError as e:
        fail(str(e))
    init = None
    if cfg.init_from and resume is None:
        try:
            init, info = load_model(cfg.init_from, cfg.ssim_weight)
        except WeightsError as e:
            fail(str(e))
        if info["kind"].startswith("official"):
            # The importer rescales their first and last layers for [0,1] inputs: exact for fusion,
            # but with Adam's fixed step size a fine-tuning run from it diverged at once.
            fail(f"{cfg.init_from}: {info['kind']}; --init_from takes this project's weights "
                 f"(a run_train.py checkpoint or a shipped/exported file)")

    image_root = Path(cfg.image_path)
    if not image_root.is_dir():
        fail(f"image folder {image_root} not found; pass --image_path DIR with training images "
             f"(jpg/jpeg/png/bmp/tif/tiff)")
    paths = list_images(image_root)
    if not paths:
        fail(f"no images (jpg/jpeg/png/bmp/tif/tiff) found under {image_root}; pass --image_path DIR")
    paths, bad = check_readable(paths)
    for p, why in bad:
        print(f"warning: skipping unreadable image {p} ({why})", file=sys.stderr)
    if bad:
        print(f"Skipped {len(bad)} unreadable image(s).")
    if not paths:
        fail(f"none of the images under {image_root} could be read")
    if cfg.train_num:
        paths = paths[:cfg.train_num]

    ckpt_dir = run_dir / "checkpoints"
    problem = check_writable(ckpt_dir)  # about the size of two checkpoints
    if problem:
        fail(problem)
    keep_freed_memory(large_blocks=True)  # faster CPU steps (utils/devices.py)
    torch.manual_seed(cfg.seed)
    # Channels-last lets oneDNN/cuDNN pick their fastest convolutions (run_scripts/benchmark.py).
    model = DenseFuse().to(device).to(memory_format=torch.channels_last)
    if resume is None and not cfg.init_from and cfg.pixel_range != 1:
        with torch.no_grad():  # default initial biases, in 0..R units (see build_optimizer)
            for name, param in model.named_parameters():
                if name.endswith("bias"):
                    param /= cfg.pixel_range
    optimizer = build_optimizer(model, cfg.lr, cfg.pixel_range)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.lr_decay)
    criterion = DenseFuseLoss(cfg.ssim_weight)
    epoch0, step, best = 0, 0, math.inf
    if init is not None:
        model.load_state_dict(init.state_dict())
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        epoch0, step, best = resume["epoch"], resume["step"], resume.get("best_loss", math.inf)

    dataset = NaturalImages(paths, cfg.image_size, cfg.crop, cfg.flip, cfg.seed, tuple(cfg.zoom))
    epoch_size = cfg.epoch_size or len(paths)
    micro = cfg.micro_batch or default_micro_batch(device, cfg.batch_size)
    steps_per_epoch = math.ceil(epoch_size / cfg.batch_size)
    val_pairs = load_validation(cfg.val_path)

    from torch.utils.tensorboard import SummaryWriter  # heavy import, only when training
    writer = SummaryWriter(str(run_dir / "logs"))
    config = asdict(cfg)
    print("=" * 60)
    print("DenseFuse training")
    for k, v in config.items():
        print(f"  {k:>12}: {v}")
    print(f"  {'device':>12}: {device}")
    print(f"  {'run folder':>12}: {run_dir}")
    print("=" * 60)
    print(f"Loaded {len(paths)} images ({steps_per_epoch} steps per epoch).")
    if resume is not None:
        print(f"Resuming from {cfg.resume_path}: epoch {epoch0 + 1}, step {step}.")
    print(f"TensorBoard: tensorboard --logdir {run_dir / 'logs'}")

    def save(path: Path, epoch: int) -> None:
        save_checkpoint(path, model, config, epoch, step, optimizer, scheduler, best_loss=best)

    t0 = time.time()
    model.train()
    with StopFlag() as stop:
        for epoch in range(epoch0, cfg.num_epochs):
            dataset.set_epoch(epoch)
            done = step - epoch * steps_per_epoch  # batches of this epoch already trained
            order = epoch_order(len(paths), epoch_size, cfg.seed, epoch)[done * cfg.batch_size:]
            loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=order,
                                num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.num_epochs}", initial=done,
                       total=steps_per_epoch, dynamic_ncols=True)
            sums = np.zeros(3)
            for batch in bar:
                batch = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                vals = train_step(model, criterion, optimizer, batch, micro)
                if not all(map(math.isfinite, vals)):
                    fail(f"non-finite loss ({vals[0]}) at step {step + 1}; stopped without "
                         f"saving. The last good checkpoint is in {ckpt_dir}")
                optimizer.step()
                step += 1
                sums += vals
                lr = optimizer.param_groups[0]["lr"]
                bar.set_postfix(pixel=f"{vals[1]:.3g}", ssim=f"{vals[2]:.4f}", lr=f"{lr:.2e}")
                if step % cfg.log_every == 0 or step == 1:
                    writer.add_scalar("loss/total", vals[0], step)
                    writer.add_scalar("loss/pixel", vals[1], step)
                    writer.add_scalar("loss/ssim", vals[2], step)
                    writer.add_scalar("lr", lr, step)
                if cfg.save_every and step % cfg.save_every == 0:
                    save(ckpt_dir / "last.pt", epoch)
                if stop.requested:
                    bar.close()
                    save(ckpt_dir / "last.pt", epoch)
                    writer.close()
                    print(f"\n{stop.requested}: stopped at step {step}; checkpoint written. Resume with:\n"
                          f"  python run_train.py --resume_path {ckpt_dir / 'last.pt'}")
                    return 130
            bar.close()
            scheduler.step()
            mean_loss = float(sums[0] / max(1, steps_per_epoch - done))
            val = validate(model, criterion, val_pairs, device, writer, epoch + 1)
            score = val[0] if val else mean_loss
            msg = f"epoch {epoch + 1}: mean loss {mean_loss:.4f}"
            if val:
                msg += f", validation loss {val[0]:.4f}, PSNR {val[1]:.2f} dB"
            is_best = score < best
            best = min(best, score)
            save(ckpt_dir / f"epoch_{epoch + 1}.pt", epoch + 1)
            save(ckpt_dir / "last.pt", epoch + 1)
            if is_best:
                save(ckpt_dir / "best.pt", epoch + 1)
            tqdm.write(msg)
    writer.close()
    print(f"Done in {time.time() - t0:.1f} s; best {'validation' if val_pairs else 'training'} "
          f"loss {best:.4f}. Checkpoints: {ckpt_dir}")
    return 0


def parse(parser: argparse.ArgumentParser, argv) -> tuple[argparse.Namespace, frozenset[str]]:
    """Parse, and also return which options were given explicitly: argparse only fills in a
    default where the namespace has no value yet, so a sentinel marks the untouched ones."""
    unset = object()
    dests = [a.dest for a in parser._actions if a.dest != "help"]
    ns = parser.parse_args(argv, namespace=argparse.Namespace(**dict.fromkeys(dests, unset)))
    explicit = frozenset(d for d in dests if getattr(ns, d) is not unset)
    for a in parser._actions:
        if a.dest != "help" and getattr(ns, a.dest) is unset:
            setattr(ns, a.dest, a.default)
    return ns, explicit


def main(argv=None) -> int:
    args, explicit = parse(build_parser(), argv)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    try:
        return train(cfg, explicit)
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
