"""Distributed data-parallel helpers (``torchrun`` environment, gloo on CPU, NCCL on CUDA).

Launch the same ``largekernel train`` command under ``torchrun``:

    torchrun --nproc_per_node=2 -m largekernel.cli train epochs=5          # one machine
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=4 \\
        --master_addr=HOST0 --master_port=29500 -m largekernel.cli train     # on each node

``batch_size`` is the *global* batch; each rank gets ``batch_size // world_size``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "sync_bn_stats",
           "all_reduce_sum", "barrier", "broadcast_object"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Rank layout of this process (``world_size == 1`` when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Initialise the process group from ``torchrun``'s environment, if present.

    Uses NCCL for CUDA devices and gloo otherwise. Without ``WORLD_SIZE`` > 1 in the environment
    this is a no-op returning a single-process :class:`DistInfo`.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        log.debug("initialised %s process group: rank %d/%d", backend, rank, world)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks (in place; a no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj, src: int = 0):
    """Broadcast a picklable object from ``src`` (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@torch.no_grad()
def sync_bn_stats(model: nn.Module) -> None:
    """Average BatchNorm running mean/var over ranks (before evaluation or reparameterisation).

    Each rank's BN saw a different shard of the data, so without this the ranks would
    evaluate (and fuse into deploy kernels) different statistics.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            for buf in (module.running_mean, module.running_var):
                if buf is not None:
                    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                    buf.div_(world)
