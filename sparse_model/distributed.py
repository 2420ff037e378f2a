"""Training one model in several processes: PyTorch DistributedDataParallel, started by torchrun.

    torchrun --standalone --nproc_per_node 2 $(which circuits) train --preset demo --out runs/demo

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE in each process; `Replicas.from_env()` reads them
(without them, or with WORLD_SIZE 1, it is the ordinary single process and costs nothing).

How the recipe stays one recipe (docs/method.md, "Training in several processes"):
- every rank draws the same global batch from the generator seeded with (seed, step) and takes its
  own contiguous slice of batch_size / world_size sequences (data sharded by rank);
- DDP averages the gradients, so each rank holds the gradient of the global batch's mean loss,
  the same on every rank; the RMS rescaling, AdamW and the top-k projection that follow are
  deterministic, so the weights stay identical on every rank. That is checked after every step
  (`check_identical`: each rank's per-tensor sums, gathered and compared exactly);
- only rank 0 writes: run.json, tokenizer, token caches, checkpoints, progress, the store. The
  others wait for rank 0's data at a barrier, and resume from the same checkpoint.

The backend is gloo on CPU (the one CI tests) and NCCL on CUDA.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch
import torch.distributed as dist

from .errors import UserError


def env_rank() -> int:
    """This process's rank under torchrun (0 when not started by torchrun)."""
    return int(os.environ.get("RANK", "0") or 0)


@dataclass
class Replicas:
    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls, device: torch.device | None = None) -> "Replicas":
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return cls()
        if not dist.is_available():
            raise UserError("this torch build has no torch.distributed; train in one process (without torchrun)")
        if not dist.is_initialized():
            backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
            try:
                dist.init_process_group(backend=backend)
            except (RuntimeError, ValueError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
                raise UserError(f"could not join the other training processes ({first}); start them with "
                                f"`torchrun --standalone --nproc_per_node N $(which circuits) train ...`") from None
        return cls(rank=env_rank(), world_size=world)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def local_batch_size(self, batch_size: int) -> int:
        if batch_size % self.world_size:
            raise UserError(f"the batch of {batch_size} sequences does not split evenly over {self.world_size} "
                            f"processes; use a number of processes that divides it")
        return batch_size // self.world_size

    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's contiguous slice of the global batch."""
        if not self.active:
            return x, y
        n = self.local_batch_size(x.shape[0])
        return x[self.rank * n:(self.rank + 1) * n], y[self.rank * n:(self.rank + 1) * n]

    def wrap(self, model: torch.nn.Module, loss: Callable) -> tuple[Callable, Callable[[], ContextManager]]:
        """(loss function over a batch slice, context that skips the gradient all-reduce): through
        DDP when there are several processes, the model's own loss otherwise."""
        if not self.active:
            return loss, nullcontext
        ddp = torch.nn.parallel.DistributedDataParallel(_LossOf(model, loss))  # the model has no buffers
        return ddp, ddp.no_sync

    def mean(self, value: float) -> float:
        """The mean of a number over all ranks (each rank's batch loss -> the global batch's)."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t) / self.world_size

    def check_identical(self, model: torch.nn.Module, step: int) -> None:
        """Raise if any rank's weights differ from rank 0's (compared by exact per-tensor sums)."""
        if not self.active:
            return
        with torch.no_grad():
            mine = torch.stack([p.detach().double().sum() for p in model.parameters()]).cpu()
        gathered = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine)
        for r, theirs in enumerate(gathered):
            if not torch.equal(theirs, gathered[0]):
                raise UserError(f"after step {step} the weights of process {r} differ from process 0's; "
                                f"the processes diverged (report this as a bug)")

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


class _LossOf(torch.nn.Module):
    """The model with its loss as forward, so DDP sees (and synchronises) the loss computation."""

    def __init__(self, model: torch.nn.Module, loss: Callable):
        super().__init__()
        self.model = model
        self._loss = loss

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._loss(x, y)
