"""Train the DenseFuse autoencoder (paper Sec. III-B) on natural images.

    python run_train.py --image_path /data/coco2014/train --ssim_weight 100
    torchrun --nproc_per_node 4 run_train.py --image_path ... --batch_size 8   # DDP, 4 GPUs

Only the encoder/decoder are trained, to reconstruct their input; the fusion strategy is not
part of training. Loss = 255^2 * MSE + lambda * (1 - SSIM) (see utils/losses.py).
Outputs go to ``<output_dir>/<run_name>/``: ``logs/`` (TensorBoard) and ``checkpoints/``
(``epoch_<k>.pt``, ``last.pt``, ``best.pt``; resume with ``--resume_path``). The work lives in
``utils/training.py``; this file is the command line and the order of things. Under torchrun
every process runs this script; --batch_size is the global batch (utils/distributed.py).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path

from configs import TrainConfig
from utils.cli import DefaultsFormatter


def add_data_flags(p: argparse.ArgumentParser, d: TrainConfig) -> None:
    p = p.add_argument_group("training images")
    p.add_argument("--image_path", default=d.image_path,
                   help="folder of training images, searched recursively for "
                        "jpg/jpeg/png/bmp/tif/tiff (the paper: MS-COCO 2014 train)")
    p.add_argument("--gray", action=argparse.BooleanOptionalAction, default=d.gray,
                   help="train the paper's 1-channel network on grayscale images; --no-gray trains the "
                        "3-channel (RGB) network on colour images (gray files replicated), same loss")
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


def add_optimisation_flags(p: argparse.ArgumentParser, d: TrainConfig) -> None:
    p = p.add_argument_group("optimisation and loss")
    p.add_argument("--batch_size", type=int, default=d.batch_size,
                   help="images per step, in total: under torchrun each of N processes takes batch/N")
    p.add_argument("--micro_batch", type=int, default=d.micro_batch,
                   help="split each batch into chunks of this size and accumulate gradients "
                        "(same loss and update, bounded memory: at batch 16 on CPU, 0.8 GB peak "
                        "instead of 3.5 GB, at the same speed); 0 = 2 on CPU, the whole batch on GPU")
    p.add_argument("--num_epochs", type=int, default=d.num_epochs, help="number of epochs")
    p.add_argument("--epoch_size", type=int, default=d.epoch_size,
                   help="images per epoch (repeats shuffled passes when larger than the data "
                        "set); default: one pass over the data set")
    p.add_argument("--lr", type=float, default=d.lr,
                   help="Adam learning rate; default: 1e-4 (the paper), or 5e-5 with --init_from (the "
                        "shipped recipe's fine-tuning stage: 1e-4 wrecks trained weights in a few steps)")
    p.add_argument("--lr_decay", type=float, default=d.lr_decay,
                   help="learning rate multiplied by this after every epoch")
    p.add_argument("--pixel_range", type=float, default=d.pixel_range,
                   help="train as if pixels were 0..R, as the official code fed 0-255 values: with "
                        "Adam that is the same as dividing the biases' initial values and learning "
                        "rate by R, which keeps biases small next to the signal (the L1-norm "
                        "strategy's activity maps depend on that); 1 = plain [0,1] training")
    p.add_argument("--ssim_weight", type=number, default=d.ssim_weight,
                   help="lambda, the weight of the SSIM loss: any positive number (the paper's: 1, 10, 100, "
                        "1000; a sweep may take others)")


def add_run_flags(p: argparse.ArgumentParser, d: TrainConfig) -> None:
    p = p.add_argument_group("run folder, resume and devices")
    p.add_argument("--init_from", default=d.init_from,
                   help="start a new run from these weights (fine-tuning: fresh optimizer, schedule and "
                        "step count): a run_train.py checkpoint or a shipped/exported weights file")
    p.add_argument("--resume_path", default=d.resume_path,
                   help="checkpoint to continue, inside its run folder (same folder, epoch, step, lr, "
                        "optimizer; --num_epochs extends a finished run); 'auto' with --run_name: that "
                        "run's last.pt if it has one, else a new run (torchrun --max-restarts)")
    p.add_argument("--num_workers", type=int, default=d.num_workers,
                   help="DataLoader worker processes; 0 = load in the main process; -1 = automatic: none for "
                        "prepared data or under 256 images per epoch, else one per core of this process "
                        "less one (at most 8)")
    p.add_argument("--device", default=d.device,
                   help="auto (cuda if available), cpu, cuda, cuda:1; under torchrun each process takes "
                        "the GPU of its local rank")
    p.add_argument("--amp", choices=("off", "bf16", "fp16"), default=d.amp,
                   help="bf16: the network in bfloat16 autocast (faster on recent GPUs and CPUs with AMX); fp16: "
                        "float16 autocast with loss scaling (CUDA only); the loss and checkpoints stay float32")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network (a C++ compiler on CPU; minutes of compilation first: "
                        "docs/performance.md says what it gained)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed for weights, data order and augmentation")
    p.add_argument("--output_dir", default=d.output_dir, help="folder for run folders")
    p.add_argument("--run_name", default=d.run_name,
                   help="run folder name; default: densefuse_l<lambda>_<date-time>_<random>")
    p.add_argument("--val_path", default=d.val_path,
                   help="folder of IR/visible pairs for the per-epoch validation images "
                        "(reconstruction PSNR, one fused pair); skipped if missing")
    p.add_argument("--log_every", type=int, default=d.log_every,
                   help="TensorBoard scalars every N steps")
    p.add_argument("--save_every", type=int, default=d.save_every,
                   help="also write last.pt every N steps (0 = only at epoch ends)")


def number(text: str) -> int | float:
    """A number as typed: ``50`` stays the int 50 (run names, records), ``0.5`` a float."""
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        description="Train the DenseFuse autoencoder (pixel MSE + lambda*(1-SSIM)).",
        epilog="Several GPUs or machines: torchrun --nproc_per_node N run_train.py ... trains with "
               "DistributedDataParallel (one GPU per process; gloo on CPU); --batch_size stays the global "
               "batch. See docs/distributed.md.",
        formatter_class=DefaultsFormatter)
    add_data_flags(p, d)
    add_optimisation_flags(p, d)
    add_run_flags(p, d)
    return p


def prepare(cfg: TrainConfig, explicit: frozenset[str]):
    """Everything checked before anything is created: (config, device, images, init, resume)."""
    from utils import training as T
    from utils.devices import resolve_device
    if cfg.resume_path == "auto":
        cfg.resume_path = T.auto_resume_path(cfg)
        explicit = explicit - {"resume_path"} if cfg.resume_path is None else explicit
    resume = T.load_resume(cfg.resume_path) if cfg.resume_path else None
    if resume is not None:
        cfg = T.merged_config(cfg, explicit, resume)
    problems = cfg.problems()
    if problems:
        T.fail("\nerror: ".join(problems))  # one "error:" line each
    try:
        device = resolve_device(cfg.device)
    except ValueError as e:
        T.fail(str(e))
    if cfg.amp == "fp16" and device.type != "cuda":
        T.fail(f"--amp fp16 needs a CUDA device (float16 with loss scaling); on {device} use --amp bf16")
    init = T.initial_weights(cfg) if cfg.init_from and resume is None else None
    if cfg.lr is None:
        cfg.lr = T.FINETUNE_LR if init is not None else 1e-4
    return cfg, device, T.training_images(cfg, resume), init, resume


def print_header(trainer, cfg: TrainConfig, run_dir: Path) -> None:
    from utils.log import log
    log.info("=" * 60)
    log.info("DenseFuse training")
    for k, v in trainer.config.items():
        if k != "device":
            log.info(f"  {k:>12}: {v}")
    asked = f" (--device {cfg.device})" if cfg.device != str(trainer.device) else ""
    world = trainer.ctx.world
    log.info(f"  {'device':>12}: {trainer.device}{asked}"
          + (f"; {world} processes (torchrun), batch {cfg.batch_size} per step in all" if world > 1 else ""))
    log.info(f"  {'run folder':>12}: {run_dir}")
    log.info("=" * 60)
    log.info(f"Loaded {len(trainer.paths)} images ({trainer.steps_per_epoch} steps per epoch).")
    if cfg.resume_path:
        log.info(f"Resuming from {cfg.resume_path}: epoch {trainer.progress.epoch + 1}, step {trainer.progress.step}.")
    log.info(f"TensorBoard: tensorboard --logdir {run_dir / 'logs'}")


def train(cfg: TrainConfig, explicit: frozenset[str] = frozenset()) -> int:
    from utils import distributed as D
    from utils.log import log
    auto = cfg.resume_path == "auto"
    cfg, device, paths, init, resume = prepare(cfg, explicit)
    if resume is not None and resume["epoch"] >= cfg.num_epochs:
        log.info(f"{cfg.resume_path}: this run already finished its {resume['epoch']} epoch(s); nothing to do. "
              f"Pass --num_epochs N (N > {resume['epoch']}) to extend it.")
        return 0
    ctx, device = D.start(device)
    try:
        return train_on(cfg, device, paths, init, resume, auto, ctx)
    finally:
        D.stop(ctx)


def train_on(cfg: TrainConfig, device, paths, init, resume, auto: bool, ctx) -> int:
    """The run itself, on this process's device, as one of ``ctx.world`` ranks."""
    from utils import training as T
    from utils.devices import keep_freed_memory
    from utils.log import log
    problems = T.distributed_problems(cfg.batch_size, cfg.epoch_size or len(paths), ctx.world)
    if problems:
        T.fail("\nerror: ".join(problems))
    run_dir, run_id = T.open_run_once(cfg, resume, auto, ctx)
    keep_freed_memory(large_blocks=True)  # faster CPU steps (utils/devices.py)
    trainer = T.Trainer(cfg, device, paths, run_dir, run_id, init, resume, ctx)
    if resume is not None:
        trainer.progress.best = T.best_of_history(trainer.ckpt_dir, trainer.progress.best)
    print_header(trainer, cfg, run_dir)
    t0 = time.time()
    try:
        with T.StopFlag() as stop:
            for epoch in range(trainer.progress.epoch, cfg.num_epochs):
                if not trainer.train_epoch(epoch, stop):
                    trainer.writer.close()
                    log.info(f"\n{stop.requested or 'stop on another rank'}: stopped at step {trainer.progress.step}; "
                          f"checkpoint written. "
                          f"Resume with:\n  python run_train.py --resume_path {trainer.ckpt_dir / 'last.pt'}")
                    return 130
                log.info(trainer.end_epoch(epoch))
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, even in the middle of a save
        kept = T.latest_checkpoint(trainer.ckpt_dir)
        log.warning("\ninterrupted at once (second signal); "
                    + (f"resume from the last complete checkpoint:\n  python run_train.py --resume_path {kept}"
                       if kept else "no checkpoint had been written yet"), extra={"plain": True})
        return 130
    except RuntimeError as e:  # gloo/nccl raise RuntimeError subclasses; ours are reported by main()
        if ctx.world == 1 or isinstance(e, T.TrainingError):
            raise
        log.error(peer_failure(e, ctx, T.latest_checkpoint(trainer.ckpt_dir)), extra={"every_rank": True})
        return 2
    trainer.writer.close()
    log.info(f"Done in {time.time() - t0:.1f} s; best {'validation' if trainer.val_pairs else 'training'} "
          f"loss {trainer.progress.best:.4f}. Checkpoints: {trainer.ckpt_dir}")
    return 0


def peer_failure(e: RuntimeError, ctx, kept: Path | None) -> str:
    """One line for a collective that failed under torchrun: almost always another process of the
    job died (killed, out of memory), which torchrun's own report names; the checkpoints are
    written atomically, so the last one is whole and the run resumes from it."""
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    resume = (f"resume with: torchrun --nproc_per_node {ctx.world} run_train.py --resume_path {kept}" if kept
              else "no checkpoint had been written yet")
    return (f"rank {ctx.rank}: a collective operation failed ({reason}); usually another process of this "
            f"job died (torchrun's report names it). {resume}")


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
    from utils.log import log
    from utils.training import TrainingError
    try:
        return train(cfg, explicit)
    except TrainingError as e:  # every rank meets the same error; rank 0 reports it
        log.error(str(e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
