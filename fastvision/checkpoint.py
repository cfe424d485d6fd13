"""Checkpoints: model and optimizer state dicts written atomically and read back with `weights_only=True`."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .distributed import distrib_barrier, rank_distrib

__all__ = ["atomic_save", "save_checkpoint", "load_checkpoint", "unwrap_model"]


def atomic_save(obj: Any, file: str | Path) -> Path:
    """`torch.save` to a temp file in the same folder, fsync it, then `os.replace` it over `file`.

    A crash or error while writing leaves any previous `file` intact (and no temp file behind).
    """
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return file


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the model inside DDP/DataParallel (`.module`) and `torch.compile` (`._orig_mod`) wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and isinstance(
            getattr(model, "_orig_mod", None), nn.Module
        ):
            model = model._orig_mod
        else:
            return model


def _match_keys(weights: dict, model: nn.Module) -> dict:
    """Drop the `module.` / `_orig_mod.` prefixes a wrapped model's state dict had, when `model` has none."""
    want = model.state_dict().keys()
    for p in ("module.", "_orig_mod."):
        if weights and all(k.startswith(p) for k in weights) and not any(k.startswith(p) for k in want):
            weights = {k[len(p) :]: v for k, v in weights.items()}
    return weights


def save_checkpoint(file: str | Path, model: nn.Module, opt: torch.optim.Optimizer | None = None) -> Path:
    """Save the (unwrapped) model's state dict, or `{'model': ..., 'opt': opt.state_dict()}` with `opt`; return the file.

    Under DDP only rank 0 writes; the other processes return the file name.
    """
    if rank_distrib() != 0:
        return Path(file)
    state: Any = unwrap_model(model).state_dict()
    if opt is not None:
        state = {"model": state, "opt": opt.state_dict()}
    return atomic_save(state, file)


def load_checkpoint(
    file: str | Path,
    model: nn.Module,
    opt: torch.optim.Optimizer | None = None,
    device: Any = None,
    with_opt: bool = True,
    strict: bool | str = True,
) -> None:
    """Load a file written by `save_checkpoint` into `model` (and `opt` when `with_opt`), `weights_only=True`.

    Under DDP every process waits at a barrier first (for rank 0's save), so call it on every process.
    """
    distrib_barrier()
    file = Path(file)
    if not file.is_file():
        avail = sorted(p.stem for p in file.parent.glob("*.pth")) if file.parent.is_dir() else []
        raise FileNotFoundError(
            f"No checkpoint at {str(file)!r}. Checkpoints in {str(file.parent)!r}: {avail or 'none'}. "
            "Write one with `learn.save(name)`."
        )
    state = torch.load(file, map_location=device, weights_only=True)
    has_opt = isinstance(state, dict) and set(state) == {"model", "opt"}
    weights = state["model"] if has_opt else state
    model = unwrap_model(model)
    weights = _match_keys(weights, model) if isinstance(weights, dict) else weights
    if strict == "head":  # a checkpoint trained for another class count: keep this model's head
        from .vision.learner import load_state_dict_head

        if load_state_dict_head(model, weights):
            return  # the optimizer state belongs to the other head's shapes
    else:
        model.load_state_dict(weights, strict=strict)
    if not with_opt or opt is None:
        return
    if not has_opt:
        warnings.warn(
            f"{file.name} doesn't contain an optimizer state; only the model was loaded.", stacklevel=3
        )
        return
    try:
        opt.load_state_dict(state["opt"])
    except (ValueError, KeyError, RuntimeError) as e:
        warnings.warn(f"Could not load the optimizer state from {file.name}: {e}", stacklevel=3)
