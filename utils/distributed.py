"""Several processes under ``torchrun``: PyTorch's own engine (torch.distributed, env://
rendezvous, DistributedDataParallel), nothing home-made.

``torchrun --nproc_per_node N run_train.py ...`` (or run_infer.py, run_eval.py) starts N copies
of the script with RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address in their environment.
:func:`start` joins them into one process group: ``nccl`` with one GPU per local rank on CUDA,
``gloo`` on CPU. A plain ``python run_train.py`` has none of those variables, gets the
single-process :data:`SINGLE` and runs no distributed code at all.

Rank 0 alone prints, shows progress bars and writes shared files (checkpoints, TensorBoard,
``fusion_settings.json``, tables); the others print nothing but their own tracebacks.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# torch is imported by the functions that need it: main_process() runs
# before argparse's errors and cost nothing.


@dataclass(frozen=True)
class Context:
    """This process's place in the group: ``rank`` of ``world``, ``local_rank`` on its machine,
    and the device the collectives run on (``cpu`` for gloo, this rank's GPU for nccl)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group is running (never in a plain process, which skips the import)."""
        if self is SINGLE:
            return False
        import torch.distributed as dist
        return dist.is_available() and dist.is_initialized()


SINGLE = Context()
_GROUP_NUMBERS = itertools.count(1)  # process groups this process starts (see attempt_store)


def launched() -> bool:
    """True in a process started by torchrun (or anything else setting its variables)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def start(device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group when launched by torchrun; returns the context and the device this
    rank computes on (``cuda:LOCAL_RANK`` when ``device`` is a CUDA device, else ``device``).
    Without torchrun: ``(SINGLE, device)``, nothing initialised."""
    if not launched():
        return SINGLE, device
    import torch
    import torch.distributed as dist
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(f"local rank {local} has no GPU: this machine has {torch.cuda.device_count()}; "
                             f"start at most that many processes per node (--nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, store=attempt_store(world), rank=rank, world_size=world,
                                device_id=device if backend == "nccl" else None)  # store None: env://
    return Context(rank, world, local, str(device) if backend == "nccl" else "cpu"), device


def attempt_store(world: int):
    """The rendezvous store, with a key prefix of its own for each torchrun attempt.

    Why: torchrun (2.13) shares its agent's TCPStore with the workers, and workers restarted by
    ``--max-restarts`` find the keys the failed attempt left there: gloo then dials the dead
    processes' addresses ("connectFullMesh failed ... Connection refused"). A prefix per
    ``TORCHELASTIC_RESTART_COUNT`` keeps each attempt's keys apart, and one per process group
    the keys of a second group in one process (run_infer.main, then run_eval.main). Returns None
    (torch's own env:// store) for launchers that do not share a store;
    ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` also avoids the problem, at the cost of a store per round."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    import datetime

    import torch.distributed as dist
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                          timeout=datetime.timedelta(minutes=30))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"densefuse/attempt_{attempt}/group_{next(_GROUP_NUMBERS)}", store)


def main_process() -> bool:
    """Whether this process speaks for the group: rank 0 under torchrun, or a plain process.
    Known from the environment, before (or without) :func:`start`."""
    return os.environ.get("RANK", "0") == "0" or not launched()


def stop(ctx: Context) -> None:
    if ctx.distributed:
        import torch.distributed as dist
        dist.destroy_process_group()


def shard(items: list, ctx: Context) -> list:
    """This rank's share of ``items``: every ``world``-th one from ``rank`` (order kept)."""
    return items[ctx.rank::ctx.world]


def unshard(parts: list[list], n: int) -> list:
    """Inverse of :func:`shard`: the full list of ``n`` items from every rank's share."""
    out = [None] * n
    for rank, part in enumerate(parts):
        out[rank::len(parts)] = part
    return out


def sum_over_ranks(values: list[float], ctx: Context) -> list[float]:
    """Elementwise sum of ``values`` over all ranks (float64), the same list on every rank."""
    if not ctx.distributed:
        return list(values)
    import torch
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def gather(obj, ctx: Context) -> list:
    """Every rank's ``obj`` in rank order, on every rank (picklable objects)."""
    if not ctx.distributed:
        return [obj]
    import torch.distributed as dist
    out = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def from_main(obj, ctx: Context):
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    import torch.distributed as dist
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn, ctx: Context, errors: type[Exception] | tuple = ()):
    """``fn()`` on rank 0 alone (work that claims, moves or removes files), its result on every
    rank; an exception of the ``errors`` types it raises is raised on every rank (so all stop on
    the one report)."""
    result = None
    if ctx.main:
        try:
            result = fn()
        except errors as e:
            result = e
    result = from_main(result, ctx)
    if isinstance(result, BaseException):
        raise result
    return result


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        import torch.distributed as dist
        dist.barrier()
