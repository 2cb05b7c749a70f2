"""Where this training process sits in an `accelerate launch` / torchrun job (DDP or FSDP).

The launcher sets RANK / WORLD_SIZE / LOCAL_RANK (and ACCELERATE_USE_FSDP for an FSDP config)
before Python starts, so they are read from the environment: no process group is needed to know
who writes the run folder. One process (rank 0) writes metrics, status, checkpoints' metadata and
the adapter; the others only train, so a run folder looks the same with 1 process or 64.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    """This process's rank among `world_size` training processes."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    fsdp: bool = False

    @property
    def is_main(self) -> bool:
        """The one process that writes the run folder."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def read_placement(environ=os.environ) -> Placement:
    """This process's placement as the launcher describes it (a plain `python -m tuning train` is rank 0 of 1)."""
    return Placement(
        rank=int(environ.get("RANK", 0)),
        local_rank=int(environ.get("LOCAL_RANK", 0)),
        world_size=int(environ.get("WORLD_SIZE", 1)),
        fsdp=environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true"),
    )


def effective_batch(batch_size: int, grad_accum: int, world_size: int, gpus: int = 1) -> int:
    """Conversations per optimizer step: each process's batch (batch_size per GPU it splits over), accumulated,
    times the processes."""
    return batch_size * gpus * grad_accum * world_size


def gpus_per_process(placement: Placement) -> int:
    """The GPUs a process's batch is sized for: one per launched process; every GPU a plain process sees, as
    the Trainer then takes batch_size per GPU (DataParallel; a 4-bit model even trains that whole batch on one).
    The app pins its plain runs to one GPU (tuning/runs/queue.py); a plain run from the shell may see several."""
    import torch

    if placement.distributed or not torch.cuda.is_available():
        return 1
    return max(1, torch.cuda.device_count())


def any_process(flag: bool) -> bool:
    """True on every process when it is True on any (so all stop at the same step, none waits forever)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
