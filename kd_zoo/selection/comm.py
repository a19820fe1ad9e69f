"""The few collective operations scoring needs, for one plain process or an Accelerate launch.

Statistics are summed in float64 across processes; everything that must be identical on every process (an
eigenbasis, whose signs are arbitrary, or a Cholesky factor) is computed on the main process and broadcast.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate.utils import broadcast, gather_object
from torch import Tensor


class Comm:
    """Sum, broadcast and gather across the processes of an `accelerate.Accelerator`, or no-ops without one.

    Args:
        accelerator: the run's Accelerator, or None for one process.
        device: the device to compute on without an Accelerator (default CPU).
    """

    def __init__(self, accelerator: Any | None = None, device: torch.device | str | None = None):
        self.accelerator = accelerator
        if accelerator is not None:
            self.num_processes = accelerator.num_processes
            self.process_index = accelerator.process_index
            self.device = accelerator.device
        else:
            self.num_processes, self.process_index = 1, 0
            self.device = torch.device(device if device is not None else "cpu")

    @property
    def is_main(self) -> bool:
        return self.process_index == 0

    def sum(self, tensor: Tensor) -> Tensor:
        """The element-wise sum over processes (float64 stays float64)."""
        if self.num_processes == 1:
            return tensor
        return self.accelerator.reduce(tensor.contiguous(), reduction="sum")

    def broadcast(self, tensor: Tensor) -> Tensor:
        """The main process's `tensor` on every process (the others pass a tensor of the same shape and dtype)."""
        if self.num_processes == 1:
            return tensor
        return broadcast(tensor.contiguous(), from_process=0)

    def gather_object(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in process order, on every process."""
        if self.num_processes == 1:
            return [obj]
        return gather_object([obj])
