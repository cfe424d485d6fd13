"""Small helpers shared across the package, each written once: devices, moving batches, lists, models, RNGs,
time, signatures."""

from __future__ import annotations

import contextlib
import difflib
import inspect
import random
from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
import torch
from torch import nn

__all__ = [
    "default_device",
    "to_device",
    "listify",
    "unwrap_model",
    "get_rng_states",
    "set_rng_states",
    "set_seed",
    "format_time",
    "signature_defaults",
    "unexpected_kwargs",
]


def default_device() -> torch.device:
    """Return CUDA if available, else Apple MPS if available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _movable(o: Any) -> bool:
    return isinstance(o, torch.Tensor) or (hasattr(o, "to") and hasattr(o, "pin_memory"))


def to_device(b: Any, device: torch.device | str | None, non_blocking: bool = False) -> Any:
    """Move every tensor (or object with a `.to(device)`, e.g. a pending batch) in a nested batch to `device`.

    Tuples, lists and dicts come back as the same type; anything else is returned unchanged, and so is
    everything when `device` is None. A flat tuple or list of tensors already on `device` is returned as is.
    """
    if device is None:
        return b
    device = torch.device(device)
    if isinstance(b, torch.Tensor) and b.device == device:
        return b
    if _movable(b):
        return b.to(device, non_blocking=non_blocking)
    if isinstance(b, (tuple, list)):
        if all(type(o) is torch.Tensor and o.device == device for o in b):
            return b
        return type(b)(to_device(o, device, non_blocking) for o in b)
    if isinstance(b, dict):
        return {k: to_device(v, device, non_blocking) for k, v in b.items()}
    return b


def listify(x: Any) -> list[Any]:
    """Return `x` as a list: `[]` for None, the items of a list, tuple, set or iterator, else `[x]`."""
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple, set, frozenset, Iterator)) else [x]


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the model inside DDP/DataParallel (`.module`) and `torch.compile` (`._orig_mod`) wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and isinstance(
            getattr(model, "_orig_mod", None), nn.Module
        ):
            model = cast(nn.Module, model._orig_mod)
        else:
            return model


def get_rng_states() -> dict[str, Any]:
    """Return the global RNG states (torch CPU and CUDA, python `random`, numpy) as tensors and plain data.

    The result can be saved with `torch.save` and read back with `weights_only=True`.
    """
    _, keys, pos, has_gauss, gauss = cast(tuple, np.random.get_state())  # legacy=True: the 5-tuple
    state = {
        "torch": torch.get_rng_state(),
        "random": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_seed(s: int, reproducible: bool = False) -> None:
    """Seed every global RNG a run draws from: python `random`, NumPy, torch on the CPU and on every GPU.

    As fastai's `set_seed`. With `reproducible=True` cuDNN also picks deterministic kernels and stops
    benchmarking them (slower on a GPU; nothing changes on the CPU). fastvision's loaders and `RandomSplitter`
    take their own `seed`, so they do not depend on this; the model's initial weights and anything else drawn
    from the global RNGs do.
    """
    if not isinstance(s, int) or isinstance(s, bool):
        raise TypeError(f"set_seed: the seed must be an int, got {s!r} ({type(s).__name__}).")
    random.seed(s)
    np.random.seed(s % 2**32)  # NumPy's legacy seed takes 0 <= s < 2**32
    torch.manual_seed(s)  # the CPU generator and every CUDA device's
    if reproducible:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def set_rng_states(state: dict[str, Any]) -> None:
    """Set the global RNG states from `get_rng_states()` (CUDA ones only when the GPUs are still there)."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["random"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError, IndexError):  # fewer GPUs than when saved
            torch.cuda.set_rng_state_all(state["cuda"])


def format_time(t: float) -> str:
    """Format seconds as `mm:ss` (or `h:mm:ss`)."""
    t = int(t)
    h, m, s = t // 3600, (t // 60) % 60, t % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def signature_defaults(f: Callable) -> dict[str, Any]:
    """The keyword defaults of `f`'s signature (as `inspect.signature` shows them)."""
    return {k: p.default for k, p in inspect.signature(f).parameters.items() if p.default is not p.empty}


def unexpected_kwargs(fname: str, given: Any, known: Any) -> TypeError:
    """A TypeError naming the unexpected keyword arguments of `fname` and the closest known ones."""
    hints = {k: difflib.get_close_matches(k, list(known), n=1) for k in sorted(given)}
    said = ", ".join(f"{k!r}" + (f" (did you mean {v[0]!r}?)" if v else "") for k, v in hints.items())
    return TypeError(
        f"{fname}() got unexpected keyword arguments: {said}. See help({fname}) for the arguments."
    )
