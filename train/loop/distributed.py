"""Several training processes (torchrun / bstrain fit --nproc): process group setup and the
few collectives the trainer needs. One process is the plain single-process case."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """(…) on every rank -> (world, …) on every rank (CPU tensors)."""
        if not self.active:
            return t.unsqueeze(0)
        dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else t.device
        x = t.to(dev)
        out = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(out, x)
        return torch.stack(out).cpu()


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local), device


def teardown(d: Dist, together: bool = True) -> None:
    """together: the run ended normally on every rank, so leave the group at a barrier (a
    rank that tears its connections down while another still writes the checkpoint can
    abort the process on gloo). After an error, leave at once: the others may never reach a
    barrier."""
    if d.active and dist.is_initialized():
        try:
            if together:
                dist.barrier()
        finally:
            dist.destroy_process_group()
