"""One optimisation step: Adam with the biases' learning rate of ``--pixel_range``, the
gradients of a batch accumulated over micro-batches, and each rank's part of a global batch
under torchrun."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from utils import distributed as D

#: Learning rate of a fine-tuning run (--init_from without --lr): the shipped recipe's second
#: stage. The from-scratch default (1e-4) moves every weight of a trained network by ~1e-4 in
#: Adam's first steps, which wrecked the shipped weights (validation 68.6 -> 39.4 dB in 2 steps).
FINETUNE_LR = 5e-5


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
               world: int = 1, amp: str = "off", scaler=None) -> tuple[float, float, float]:
    """Gradients of the batch's mean loss, accumulated over micro-batches of ``micro`` images
    (each weighted by its share of the batch, so loss and gradients equal the whole batch's up
    to float rounding). Returns (total, pixel, ssim) losses; the caller steps the optimizer.

    Under DDP ``batch`` is this rank's part, ``share`` its fraction of the global batch, of
    ``world`` ranks: DDP averages gradients over the ranks, so each rank's loss is scaled by
    ``share * world`` to make that average the global batch mean's gradient (also when the last
    batch splits unevenly); the returned losses are weighted by ``share``, so their sum over
    ranks is the global batch's. Gradients are synchronised once, after the last micro-batch.
    ``amp="bf16"``: the network runs under bfloat16 autocast (no loss scaling: bf16 has fp32's
    exponent range); the loss, SSIM included, is computed in float32 on its float32 output.
    ``amp="fp16"`` (CUDA): float16 autocast, the loss scaled by ``scaler`` (a ``GradScaler``)."""
    optimizer.zero_grad(set_to_none=True)
    out = np.zeros(3)
    chunks = batch.split(micro)
    for i, chunk in enumerate(chunks):
        w = share * len(chunk) / len(batch)
        later_sync = i < len(chunks) - 1 and hasattr(model, "no_sync")
        with model.no_sync() if later_sync else contextlib.nullcontext():
            with torch.autocast(chunk.device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16,
                                enabled=amp != "off"):
                y = model(chunk)
            total, pixel, ssim_loss = criterion(y.float(), chunk)
            loss = total * (w * world)
            (scaler.scale(loss) if scaler is not None else loss).backward()
        out += w * np.array([total.item(), pixel.item(), ssim_loss.item()])
    return tuple(out.tolist())


#: Below this many images per epoch, decoding workers cost more to start than they save.
MIN_IMAGES_FOR_WORKERS = 256


def auto_workers(prepared: bool, epoch_size: int, cpus: int | None = None, world: int = 1) -> int:
    """``--num_workers -1``: no worker processes for prepared data (a memmap slice is faster read
    in the training process than passed between processes) or for a small epoch; else one per
    core this rank has (cores / ranks), at most 8, leaving one to the training step."""
    import os
    cpus = cpus or os.cpu_count() or 1
    if prepared or epoch_size < MIN_IMAGES_FOR_WORKERS:
        return 0
    return max(1, min(8, cpus // world - 1))


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
