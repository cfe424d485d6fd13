"""Learner helpers kept out of the loop module: argument checks (errors say what, what was expected, how to fix)
and moving batches to the device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["check_learner_args", "to_device"]


def check_learner_args(dls: Any, model: Any, loss_func: Callable | None, opt_func: Any) -> Callable:
    """Validate `Learner`'s main arguments and return the loss (inferred from `dls` when None)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"Learner expects `model` to be a torch.nn.Module, got {type(model).__name__}.")
    if not (hasattr(dls, "train") and hasattr(dls, "valid")):
        raise TypeError(
            f"Learner expects `dls` with `.train` and `.valid` loaders, got {type(dls).__name__}. "
            "Wrap plain loaders: `DataLoaders(train_dl, valid_dl)`."
        )
    if loss_func is None:
        loss_func = getattr(dls, "loss_func", None)
        if loss_func is None:
            raise TypeError(
                "Could not infer the loss function from the data (`dls.loss_func` is missing or None); "
                "pass one, e.g. `Learner(dls, model, loss_func=nn.CrossEntropyLoss())`."
            )
    if not callable(opt_func):
        raise TypeError(f"opt_func must be callable (e.g. Adam or torch.optim.SGD), got {opt_func!r}.")
    return loss_func


def to_device(b: Any, dev: torch.device | None) -> Any:
    """Move the tensors of batch `b` (nested tuples/lists) to `dev` without blocking; None leaves them."""
    ready = type(b) in (tuple, list) and all(type(o) is torch.Tensor and o.device == dev for o in b)
    if dev is None or ready:
        return b
    if isinstance(b, torch.Tensor):
        return b if b.device == dev else b.to(dev, non_blocking=True)
    if isinstance(b, (tuple, list)):
        return type(b)(to_device(o, dev) for o in b)
    return b
