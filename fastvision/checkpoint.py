"""Checkpoints: model and optimizer state dicts written atomically and read back with `weights_only=True`."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from .distributed import distrib_barrier, rank_distrib
from .utils import unwrap_model

__all__ = [
    "atomic_write",
    "load_state_dict_head",
    "remove_stale_temps",
    "atomic_save",
    "save_checkpoint",
    "load_checkpoint",
    "full_disk_error",
    "unwrap_model",  # defined in utils.py; re-exported here, where checkpoints need it
]

_TMP_PID = re.compile(r"\.(\d+)-[^.]*\.tmp$")  # `.<name>.<pid>-<random>.tmp`
_STALE_AGE = 24 * 3600  # a temp file without a pid (older versions) is stale after a day


def _umask() -> int:
    """Return the process umask without changing it (Linux: /proc; elsewhere set and restore it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists but belongs to someone else
        return True
    return True


def remove_stale_temps(folder: str | Path, name_pattern: str) -> None:
    """Remove the temp files `atomic_write` left in `folder` for names matching the glob `name_pattern`
    when the process that wrote them is gone (killed, or a power cut); a live writer's are kept."""
    for tmp in Path(folder).glob(f".{name_pattern}.*.tmp"):
        m = _TMP_PID.search(tmp.name)
        with contextlib.suppress(OSError):
            stale = not _alive(int(m.group(1))) if m else time.time() - tmp.stat().st_mtime > _STALE_AGE
            if stale:
                tmp.unlink()


def full_disk_error(e: BaseException) -> OSError | None:
    """The full-disk `OSError` (ENOSPC, EDQUOT) that `e` is or chains (e.g. under torch's `enforce fail`), else None."""
    seen: BaseException | None = e
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _disk_full(e: BaseException) -> bool:
    """True if `e` (or an exception it chains) is a full disk."""
    return full_disk_error(e) is not None


def atomic_write(file: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(f)` on a temp file next to `file`, fsync it, then `os.replace` it over `file`.

    Whatever happens while writing (an error, a full disk, a kill), a previous `file` stays intact. The
    file gets the permissions a plain `open` would give (0666 minus the umask). Temp files left by a
    killed earlier save of the same file are removed first. A full disk raises `OSError(ENOSPC)` naming
    the file.
    """
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(file.parent, glob.escape(file.name))
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.{os.getpid()}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, file)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if _disk_full(e):
            free = shutil.disk_usage(file.parent).free
            raise OSError(
                errno.ENOSPC,
                f"No space left on the disk while writing {str(file)!r} ({free:,} bytes free there). "
                f"{'The previous file is intact. ' if file.exists() else ''}Free some space or write elsewhere.",
            ) from e
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(file.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return file


def atomic_save(obj: Any, file: str | Path) -> Path:
    """`torch.save` `obj` to `file` atomically (see `atomic_write`): a crash leaves any previous `file` intact."""
    return atomic_write(file, lambda f: torch.save(obj, f))


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


def load_state_dict_head(
    model: nn.Module, state_dict: dict[str, torch.Tensor], head_prefix: str = "1.", stacklevel: int = 2
) -> list[str]:
    """Load `state_dict` into `model`, keeping the model's own head when the head's shapes differ.

    For `Sequential(body, head)` models (`head_prefix='1.'`) whose checkpoint was trained with another
    number of classes: the body must match exactly; head weights load when every shape matches, else
    the whole head keeps its fresh initialisation (with a warning, `stacklevel` as `warnings.warn`'s).
    Returns the keys not loaded.
    """
    own = model.state_dict()
    body_missing = [k for k in own if k not in state_dict and not k.startswith(head_prefix)]
    body_extra = [k for k in state_dict if k not in own and not k.startswith(head_prefix)]
    body_bad = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and not k.startswith(head_prefix) and v.shape != own[k].shape
    ]
    if body_missing or body_extra or body_bad:
        raise ValueError(
            "The checkpoint's body does not match the model: "
            f"missing {body_missing[:5]}, unexpected {body_extra[:5]}, shape mismatches {body_bad[:5]}. "
            "Only the head (keys starting with {head_prefix!r}) may differ; check the architecture and n_in."
        )
    head_keys = {k for k in own if k.startswith(head_prefix)}
    head_ok = all(k in state_dict and state_dict[k].shape == own[k].shape for k in head_keys) and not any(
        k.startswith(head_prefix) and k not in own for k in state_dict
    )
    if head_ok:
        model.load_state_dict(state_dict)
        return []
    skipped = sorted(k for k in state_dict if k.startswith(head_prefix))
    model.load_state_dict(
        {k: v for k, v in state_dict.items() if not k.startswith(head_prefix)}, strict=False
    )
    shapes = {
        k: tuple(state_dict[k].shape) for k in skipped if k in own and state_dict[k].shape != own[k].shape
    }
    warnings.warn(
        f"The checkpoint's head does not fit this model (e.g. another number of classes: {shapes or skipped}); "
        "the head keeps its fresh initialisation and the body weights are loaded.",
        stacklevel=stacklevel,
    )
    return skipped


def load_weights(
    model: nn.Module, weights: dict, strict: bool | str = True, stacklevel: int = 2
) -> list[str]:
    """Load a state dict into `model` (unwrapped from DDP or compile); return the head keys re-initialised.

    `strict='head'`: weights trained for another class count keep this model's head (see
    `load_state_dict_head`; its warning points `stacklevel` frames up from here); otherwise `strict` goes
    to `load_state_dict` and nothing is re-initialised.
    """
    model = unwrap_model(model)
    weights = _match_keys(weights, model) if isinstance(weights, dict) else weights
    if strict == "head":
        return load_state_dict_head(model, weights, stacklevel=stacklevel + 1)
    model.load_state_dict(weights, strict=bool(strict))
    return []


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
    if load_weights(model, weights, strict, stacklevel=4):  # the warning points at learn.load's caller
        return  # a new head: the optimizer state belongs to the other head's shapes
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
