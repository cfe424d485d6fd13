"""Small helpers shared across the package, written once: devices and moving batches to them."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["default_device", "to_device"]


def default_device() -> torch.device:
    """Return CUDA if available, else Apple MPS if available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def to_device(b: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    """Move every tensor (or object with a `.to(device)`, e.g. a pending batch) in a nested batch to `device`.

    Tuples and lists come back as tuples, dicts as dicts; anything else is returned unchanged.
    """
    if isinstance(b, torch.Tensor) or (hasattr(b, "to") and hasattr(b, "pin_memory")):
        return b.to(device, non_blocking=non_blocking)
    if isinstance(b, (tuple, list)):
        return tuple(to_device(o, device, non_blocking) for o in b)
    if isinstance(b, dict):
        return {k: to_device(v, device, non_blocking) for k, v in b.items()}
    return b
