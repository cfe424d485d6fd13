"""Exact resume: whole-state checkpoints (`ResumableCheckpoint`), `fit(..., resume=...)`, interrupt hints.

A resumable checkpoint is a dict of tensors and plain data (read back with `weights_only=True`):
the model and optimizer state dicts, the gradient scaler's state, the loop position (epoch, batches
of that epoch done, training batches of the fit done, `n_epoch`, batches per epoch), the RNG states
(torch CPU and CUDA, python `random`, numpy, and each fastvision DataLoader's sampler, worker and
transform generators: the training sampler's as it was when the epoch started, so the epoch's order
is drawn again), the Recorder's history (lrs, smoothed losses, epoch rows), the `ParamScheduler`
records and the trackers' best values.

`fit(..., resume=file)` (and `fit_one_cycle`, or `cbs=ResumeFrom(file)` for the other policies) loads
all of that in `before_fit`, after the callbacks that reset their own state there (order 66). The
loop starts at the saved epoch; the batches of that epoch already done are skipped without being
loaded (the sampler draws their indices, `learn.iter` starts after them). The RNG states are set
last. With deterministic settings (`num_workers=0` or deterministic item transforms, deterministic
kernels, one process) the per-batch lrs and losses and the final weights equal an uninterrupted run's.
Under DDP the model, optimizer, position and the seed-based shards resume exactly; the RNG states are
rank 0's.
"""

from __future__ import annotations

import contextlib
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import atomic_save, unwrap_model
from ..distributed import rank_distrib
from .core import Callback
from .schedule import ParamScheduler
from .tracker import TrackerCallback, _fitting

__all__ = ["ResumableCheckpoint", "ResumeFrom", "latest_checkpoint", "training_state", "RESUME_FORMAT"]

RESUME_FORMAT = "fastvision-resume-1"
_TRACKED = ("best", "best_epoch", "wait", "saved", "scale")  # tracker attributes worth carrying over


def _loaders(learn: Any) -> list[Any]:
    """The learner's fastvision loaders (the ones with their own generators)."""
    return [dl for dl in getattr(learn.dls, "loaders", []) if hasattr(dl, "_sample_gen")]


def _rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
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


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["random"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError, IndexError):  # fewer GPUs than when saved
            torch.cuda.set_rng_state_all(state["cuda"])


def training_state(learn: Any, epoch_start: torch.Tensor | None = None) -> dict[str, Any]:
    """Return everything needed to continue the running fit after the current training batch.

    Args:
        epoch_start: the training loader's sampler generator state at the start of this epoch
            (None: its current state).
    """
    rec = getattr(learn, "recorder", None)
    loaders = []
    for dl in _loaders(learn):
        sample = (
            epoch_start if (dl is learn.dls.train and epoch_start is not None) else dl._sample_gen.get_state()
        )
        loaders.append(
            {
                "sample": sample,
                "worker": dl._worker_gen.get_state(),
                "rng": dl._rng.state,
                "rng_cuda": dl._rng.cuda_state,
            }
        )
    scaler = getattr(learn, "scaler", None)
    return {
        "format": RESUME_FORMAT,
        "model": unwrap_model(learn.model).state_dict(),
        "opt": learn.opt.state_dict(),
        "scaler": scaler.state_dict() if hasattr(scaler, "state_dict") else None,
        "loop": {
            "epoch": learn.epoch,
            "iter": learn.iter + 1,
            "train_iter": learn.train_iter,
            "n_epoch": learn.n_epoch,
            "n_iter": learn.n_iter,
        },
        "rng": _rng_state(),
        "loaders": loaders,
        "recorder": None
        if rec is None
        else {
            "lrs": list(rec.lrs),
            "losses": list(rec.losses),
            "iters": list(rec.iters),
            "values": [list(v) for v in rec.values],
            "smooth": (rec.smooth_loss.count, rec.smooth_loss.val),
        },
        "hps": [cb.hps for cb in learn.cbs if isinstance(cb, ParamScheduler) and hasattr(cb, "hps")],
        "trackers": [
            {k: getattr(cb, k) for k in _TRACKED if k in vars(cb)}
            for cb in learn.cbs
            if isinstance(cb, TrackerCallback)
        ],
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
        self._epoch_start: torch.Tensor | None = None

    def before_fit(self) -> None:
        """Forget the files of an earlier fit; remove temp files left by a killed save."""
        if not _fitting(self.learn):
            return
        self.written, self.last = [], None
        folder = Path(self.learn.path) / self.learn.model_dir
        if rank_distrib() == 0 and folder.is_dir():
            for tmp in folder.glob(f".{self.fname}_*.pth.*.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def before_train(self) -> None:
        """Remember the training sampler's generator state as the epoch starts."""
        gen = getattr(self.learn.dls.train, "_sample_gen", None)
        self._epoch_start = gen.get_state() if gen is not None and _fitting(self.learn) else None

    def after_batch(self) -> None:
        """Save every `every_n_iters` training batches."""
        learn = self.learn
        if learn.training and _fitting(learn) and learn.train_iter % self.every_n_iters == 0:
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
        atomic_save(training_state(learn, self._epoch_start), file)
        self.written.append(file)
        self.last = file
        while self.keep_last is not None and len(self.written) > self.keep_last:
            with contextlib.suppress(OSError):
                self.written.pop(0).unlink()
        return file


class _SkipBatches:
    """A batch sampler that draws all of `inner`'s batches but yields them from the `k`-th on; same length."""

    def __init__(self, inner: Any, k: int) -> None:
        self.inner, self.k = inner, k

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Any:
        for i, b in enumerate(self.inner):
            if i >= self.k:
                yield b


class ResumeFrom(Callback):
    """Continue the fit from a `ResumableCheckpoint` file (what `fit(..., resume=file)` adds).

    Args:
        file: a checkpoint path, a name under `learn.path/learn.model_dir`, or True for the newest
            `resume_<n>.pth` there.
    """

    order = 66

    def __init__(self, file: str | Path | bool = True) -> None:
        self.file = file
        self._skip: int | None = None

    def _resolve(self) -> Path:
        learn = self.learn
        folder = Path(learn.path) / learn.model_dir
        if self.file is True:
            found = latest_checkpoint(folder)
            if found is None:
                raise FileNotFoundError(f"resume=True found no resume_<n>.pth in {folder}; pass the file.")
            return found
        file = Path(self.file)
        for cand in (file, folder / file, folder / f"{file}.pth"):
            if cand.is_file():
                return cand
        raise FileNotFoundError(f"No resumable checkpoint at {str(file)!r} (nor in {str(folder)!r}).")

    def before_fit(self) -> None:
        """Load the saved state and set the loop to continue after the saved batch."""
        learn = self.learn
        if getattr(learn, "mode", "fit") != "fit":
            return
        file = self._resolve()
        state = torch.load(file, map_location="cpu", weights_only=True)  # RNG states must stay on the CPU
        if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
            raise ValueError(f"{file} is not a resumable checkpoint (write them with ResumableCheckpoint).")
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
        learn._start_epoch, learn.epoch, learn.train_iter = loop["epoch"], loop["epoch"], loop["train_iter"]
        self._skip = loop["iter"]
        self._restore_records(learn, state)
        for dl, s in zip(_loaders(learn), state["loaders"]):
            dl._sample_gen.set_state(s["sample"])
            dl._worker_gen.set_state(s["worker"])
            dl._rng.state, dl._rng.cuda_state = s["rng"], s["rng_cuda"]
        _set_rng_state(state["rng"])

    @staticmethod
    def _restore_records(learn: Any, state: dict[str, Any]) -> None:
        rec, r = getattr(learn, "recorder", None), state["recorder"]
        if rec is not None and r is not None:
            rec.lrs, rec._losses, rec.iters, rec.values = r["lrs"], r["losses"], r["iters"], r["values"]
            count, val = r["smooth"]
            dev = getattr(learn, "_device", None)
            rec.smooth_loss.count, rec.smooth_loss.val = (
                count,
                val.to(dev) if dev is not None and val is not None else val,
            )
            learn.smooth_loss = rec.smooth_loss.value
        for cb, hps in zip([c for c in learn.cbs if isinstance(c, ParamScheduler)], state["hps"]):
            cb.hps = hps
        for cb, attrs in zip([c for c in learn.cbs if isinstance(c, TrackerCallback)], state["trackers"]):
            for k, v in attrs.items():
                setattr(cb, k, v)

    def before_train(self) -> None:
        """In the first epoch, skip the batches done before the checkpoint."""
        if self._skip is None or getattr(self.learn, "mode", "fit") != "fit":
            return
        k, self._skip = self._skip, None
        dl = self._dl = self.learn.dl
        if k and hasattr(dl, "_sampler"):
            dl._sampler, dl._torch_dl = _SkipBatches(dl._sampler, k), None
            self.learn._first_iter = k
        elif k:
            warnings.warn(
                f"Cannot skip the {k} batches already done with a {type(dl).__name__}: epoch "
                f"{self.learn.epoch} restarts from its first batch. Use fastvision DataLoaders to resume exactly.",
                stacklevel=2,
            )

    def after_train(self) -> None:
        """Put the loader's sampler back."""
        dl = getattr(self, "_dl", None)
        if isinstance(getattr(dl, "_sampler", None), _SkipBatches):
            dl._sampler, dl._torch_dl = dl._sampler.inner, None

    def after_fit(self) -> None:
        """Put the sampler back also when the first epoch did not finish (an error or interrupt)."""
        self.after_train()
        self._dl = None


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
