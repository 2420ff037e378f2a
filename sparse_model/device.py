"""Where torch runs: `--device auto|cpu|cuda|mps`, and the precision that goes with it.

auto is CUDA when torch sees a CUDA device, else CPU (MPS is never picked by auto: AbsTopK's
`topk` and the fused optimizer are slower or missing there; ask for it by name). Under torchrun
each process takes the CUDA device of its LOCAL_RANK.

Mixed precision: on CUDA devices that support bfloat16 the forward and backward run under bf16
autocast (weights, gradients and the optimizer stay float32, so checkpoints are the same format);
on CPU and MPS autocast is off. `Precision.describe()` is what a run records.

Checkpoints are always written from CPU tensors, so a model trained on one device loads on any.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, ContextManager

from .errors import UserError

if TYPE_CHECKING:  # torch is imported where it is used, so the CLI starts without it
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def device_name(name: str | None = "auto") -> str:
    """A --device value checked and lowercased, without importing torch; one clear line if unknown."""
    name = (name or "auto").lower()
    if name not in DEVICES:
        raise UserError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    return name


def resolve_device(name: str | None = "auto") -> torch.device:
    """The torch device for a --device value; one clear line if it is not there."""
    import torch

    name = device_name(name)
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: torch sees no CUDA device (this torch build or machine has none); "
                            "use --device cpu or auto")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError("--device mps: torch sees no Apple-silicon GPU here; use --device cpu or auto")
        return torch.device("mps")
    return torch.device("cpu")


@dataclass(frozen=True)
class Precision:
    device: torch.device
    autocast_dtype: torch.dtype | None

    @classmethod
    def for_device(cls, device: torch.device) -> "Precision":
        import torch

        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return cls(device, torch.bfloat16 if bf16 else None)

    def autocast(self) -> ContextManager:
        if self.autocast_dtype is None:
            return nullcontext()
        import torch

        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def describe(self) -> dict:
        return {"device": self.device.type, "autocast": None if self.autocast_dtype is None else "bf16"}
