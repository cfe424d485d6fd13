"""Exact resume: whole-state checkpoints (`ResumableCheckpoint`), `fit(..., resume=...)`, interrupt hints.

A resumable checkpoint is a dict of tensors and plain data (read back with `weights_only=True`):
the loop position (epoch, batches of that epoch done, training batches of the fit done, `n_epoch`,
batches per epoch), the global RNG states (torch CPU and CUDA, python `random`, numpy), and the
`state_dict()` of each component that owns state: the model, the optimizer, the gradient scaler, each
fastvision DataLoader (its generator as the running epoch started and the batches of that epoch drawn),
the Recorder (lrs, smoothed losses, epoch rows), the `ParamScheduler`s and the trackers.

`fit(..., resume=file)` (and `fit_one_cycle`, or `cbs=ResumeFrom(file)` for the other policies) loads
all of that in `before_fit`, after the callbacks that reset their own state there (order 66), and moves
the loop with `learn.resume_at`: it starts at the saved epoch; the training loader continues that epoch
after the batches already done, without loading them (`learn.iter` starts after them). The RNG states
are set last.
`resume=True` takes the newest checkpoint; one that cannot be read (truncated by a crash) is skipped
for the previous one, with a warning naming both. With deterministic settings (`num_workers=0` or deterministic item transforms, deterministic
kernels, one process) the per-batch lrs and losses and the final weights equal an uninterrupted run's.
Under DDP the model, optimizer, position and the seed-based shards resume exactly; the RNG states are
rank 0's.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import torch

from ..checkpoint import atomic_save
from ..distributed import rank_distrib
from ..utils import get_rng_states, set_rng_states, unwrap_model
from .core import Callback
from .schedule import ParamScheduler
from .tracker import TrackerCallback

__all__ = ["ResumableCheckpoint", "ResumeFrom", "latest_checkpoint", "training_state", "RESUME_FORMAT"]

RESUME_FORMAT = "fastvision-resume-3"


def _loaders(learn: Any) -> list[Any]:
    """The learner's loaders that can save and restore their position (fastvision DataLoaders)."""
    return [dl for dl in getattr(learn.dls, "loaders", []) if callable(getattr(dl, "state_dict", None))]


def training_state(learn: Any) -> dict[str, Any]:
    """Return everything needed to continue the running fit after the current training batch."""
    rec = getattr(learn, "recorder", None)
    scaler = getattr(learn, "scaler", None)
    return {
        "format": RESUME_FORMAT,
        "model": unwrap_model(learn.model).state_dict(),
        "opt": learn.opt.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and hasattr(scaler, "state_dict") else None,
        "loop": {
            "epoch": learn.epoch,
            "iter": learn.iter + 1,
            "train_iter": learn.train_iter,
            "n_epoch": learn.n_epoch,
            "n_iter": learn.n_iter,
        },
        "rng": get_rng_states(),
        "loaders": [dl.state_dict() for dl in _loaders(learn)],
        "recorder": None if rec is None else rec.state_dict(),
        "schedulers": [cb.state_dict() for cb in learn.cbs if isinstance(cb, ParamScheduler)],
        "trackers": [cb.state_dict() for cb in learn.cbs if isinstance(cb, TrackerCallback)],
    }


_NUMBERED = re.compile(r"_(\d+)\.pth$")


def latest_checkpoint(folder: str | Path, fname: str = "resume") -> Path | None:
    """Return the `ResumableCheckpoint` file `folder/{fname}_<batches>.pth` with the most batches, or None."""
    files = [
        (int(m.group(1)), p) for p in Path(folder).glob(f"{fname}_*.pth") if (m := _NUMBERED.search(p.name))
    ]
    return max(files)[1] if files else None


class ResumableCheckpoint(Callback):
    """Write a resumable checkpoint (see the module docstring) every `every_n_iters` training batches.

    Files are `learn.path/learn.model_dir/{fname}_{n:07d}.pth`, `n` counting the training batches of
    the fit (a resumed fit continues the count), written atomically and by rank 0 only. A file of that
    name that this callback did not write in this fit is never replaced: a `FileExistsError` says so,
    unless `overwrite=True`.

    Args:
        every_n_iters: batches between checkpoints (100).
        fname: file name prefix ('resume').
        keep_last: keep only the newest N files this callback wrote (3); None keeps all.
        overwrite: allow replacing files from an earlier run (False).
    """

    order = 65

    def __init__(
        self,
        every_n_iters: int = 100,
        fname: str = "resume",
        keep_last: int | None = 3,
        overwrite: bool = False,
    ) -> None:
        if every_n_iters < 1:
            raise ValueError(f"every_n_iters must be at least 1, got {every_n_iters}.")
        self.every_n_iters, self.fname, self.keep_last, self.overwrite = (
            every_n_iters,
            fname,
            keep_last,
            overwrite,
        )
        self.written: list[Path] = []
        self.last: Path | None = None

    def before_fit(self) -> None:
        """Forget the files of an earlier fit; remove temp files left by a killed save."""
        if not self.learn.is_fitting:
            return
        self.written, self.last = [], None
        folder = Path(self.learn.path) / self.learn.model_dir
        if rank_distrib() == 0 and folder.is_dir():
            for tmp in folder.glob(f".{self.fname}_*.pth.*.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def after_batch(self) -> None:
        """Save every `every_n_iters` training batches."""
        learn = self.learn
        if learn.training and learn.is_fitting and learn.train_iter % self.every_n_iters == 0:
            self.save()

    def save(self) -> Path:
        """Write a checkpoint of the current state now (after a training batch); return its file."""
        learn = self.learn
        file = Path(learn.path) / learn.model_dir / f"{self.fname}_{learn.train_iter:07d}.pth"
        if rank_distrib() != 0:
            return file
        if file.exists() and file not in self.written and not self.overwrite:
            raise FileExistsError(
                f"{file} already exists (written by an earlier run, e.g. the one this fit resumed from a "
                "point before). Refusing to replace it: pass ResumableCheckpoint(overwrite=True), another "
                "fname, or resume from the newest checkpoint (resume=True)."
            )
        atomic_save(training_state(learn), file)
        self.written.append(file)
        self.last = file
        while self.keep_last is not None and len(self.written) > self.keep_last:
            with contextlib.suppress(OSError):
                self.written.pop(0).unlink()
        return file


class ResumeFrom(Callback):
    """Continue the fit from a `ResumableCheckpoint` file (what `fit(..., resume=file)` adds).

    Args:
        file: a checkpoint path, a name under `learn.path/learn.model_dir`, or True for the newest
            `resume_<n>.pth` there.
    """

    order = 66

    def __init__(self, file: str | Path | Literal[True] = True) -> None:
        self.file = file

    def _candidates(self) -> list[Path]:
        """The file to resume from; for `True`, every `resume_<n>.pth` of the folder, newest first."""
        learn = self.learn
        folder = Path(learn.path) / learn.model_dir
        if self.file is True:
            found = sorted(
                (
                    (int(m.group(1)), p)
                    for p in folder.glob("resume_*.pth")
                    if (m := _NUMBERED.search(p.name))
                ),
                reverse=True,
            )
            if not found:
                raise FileNotFoundError(f"resume=True found no resume_<n>.pth in {folder}; pass the file.")
            return [p for _, p in found]
        file = Path(self.file)
        for cand in (file, folder / file, folder / f"{file}.pth"):
            if cand.is_file():
                return [cand]
        raise FileNotFoundError(f"No resumable checkpoint at {str(file)!r} (nor in {str(folder)!r}).")

    def _load(self) -> tuple[Path, dict[str, Any]]:
        """Read the checkpoint; with `True`, fall back to an older one when the newest cannot be read."""
        files = self._candidates()
        for i, file in enumerate(files):
            try:
                state = torch.load(file, map_location="cpu", weights_only=True)  # RNG states stay on the CPU
            except (RuntimeError, OSError, EOFError, ValueError) as e:
                if i + 1 < len(files):
                    warnings.warn(
                        f"Cannot read the newest checkpoint {str(file)!r} ({str(e).splitlines()[0]}): resuming "
                        f"from the previous one, {str(files[i + 1])!r}.",
                        stacklevel=3,
                    )
                    continue
                raise ValueError(
                    f"Cannot read the checkpoint {str(file)!r} ({e}): it is damaged (e.g. truncated by a crash)."
                    + (" No older checkpoint is readable either." if len(files) > 1 else "")
                ) from e
            break
        if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
            raise ValueError(
                f"{file} is not a resumable checkpoint of this fastvision version (format "
                f"{state.get('format') if isinstance(state, dict) else None!r}, expected {RESUME_FORMAT!r}). "
                "Write them with ResumableCheckpoint."
            )
        return file, state

    def before_fit(self) -> None:
        """Load the saved state and set the loop to continue after the saved batch."""
        learn = self.learn
        if not learn.is_fitting:
            return
        file, state = self._load()
        loop = state["loop"]
        n_iter = len(learn.dls.train)
        if (loop["n_epoch"], loop["n_iter"]) != (learn.n_epoch, n_iter):
            raise ValueError(
                f"{file.name} was written during a fit of {loop['n_epoch']} epochs of {loop['n_iter']} batches; "
                f"this fit has {learn.n_epoch} epochs of {n_iter}. Resume with the same call and data as the "
                "interrupted run."
            )
        unwrap_model(learn.model).load_state_dict(state["model"])
        learn.opt.load_state_dict(state["opt"])
        if state["scaler"] is not None and getattr(learn, "scaler", None) is not None:
            learn.scaler.load_state_dict(state["scaler"])
        skip, train = loop["iter"], learn.dls.train
        if skip and not callable(getattr(train, "load_state_dict", None)):
            warnings.warn(
                f"Cannot skip the {skip} batches already done with a {type(train).__name__}: epoch "
                f"{loop['epoch']} restarts from its first batch. Use fastvision DataLoaders to resume exactly.",
                stacklevel=2,
            )
            skip = 0
        learn.resume_at(loop["epoch"], skip, loop["train_iter"])
        rec = getattr(learn, "recorder", None)
        if rec is not None and state["recorder"] is not None:
            rec.load_state_dict(state["recorder"])
        _load_each(learn, ParamScheduler, state["schedulers"])
        _load_each(learn, TrackerCallback, state["trackers"])
        for dl, s in zip(_loaders(learn), state["loaders"]):
            dl.load_state_dict(s)
        set_rng_states(state["rng"])


def _load_each(learn: Any, kind: type[Any], states: list[dict[str, Any]]) -> None:
    """Load `states` into the learner's callbacks of class `kind`, in their order."""
    for cb, s in zip([c for c in learn.cbs if isinstance(c, kind)], states):
        cb.load_state_dict(s)


def resume_callbacks(resume: str | Path | bool | None) -> list[Callback]:
    """Return `[ResumeFrom(resume)]`, or `[]` when `resume` is None or False."""
    return [] if resume is None or resume is False else [ResumeFrom(resume)]


def warn_interrupted(learn: Any, error: BaseException) -> None:
    """After a KeyboardInterrupt in fit (other errors: nothing): drop the partial gradients, say how to continue."""
    if not isinstance(error, KeyboardInterrupt):
        return
    if getattr(learn, "opt", None) is not None:
        learn.opt.zero_grad(set_to_none=True)
    ckpt = next((c.last for c in learn.cbs if isinstance(c, ResumableCheckpoint) and c.last), None)
    where = f"epoch {learn.epoch} (of {learn.n_epoch}), batch {learn.iter}"
    if ckpt is not None:
        how = (
            f"To continue exactly from the last checkpoint, repeat the same call with resume='{ckpt}' "
            f"(e.g. learn.fit_one_cycle(..., resume='{ckpt}'))."
        )
    else:
        how = (
            "No resumable checkpoint was written: add cbs=ResumableCheckpoint(every_n_iters=...) to be able "
            f"to continue with resume=...; or continue approximately with start_epoch={learn.epoch}."
        )
    warnings.warn(
        f"Training interrupted (KeyboardInterrupt) at {where}. The learner is usable again (bars closed, "
        f"model unwrapped, gradients cleared). {how}",
        UserWarning,
        stacklevel=3,
    )
