"""Logging callbacks (`CSVLogger`, `TensorBoardCallback`) and training helpers that change the step
(`GradientAccumulation`, `GradientClip`, `ShortEpochCallback`).

The loggers read the recorder like the trackers do (`fastvision.callback.tracker.last_record`) and only
write inside `fit`, never during `lr_find`, `validate` or `get_preds`.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..optimizer import get_hyper
from ..utils import format_time
from .core import Callback, CancelBatchException, CancelTrainException, CancelValidException
from .tracker import last_record

__all__ = ["CSVLogger", "TensorBoardCallback", "GradientAccumulation", "GradientClip", "ShortEpochCallback"]


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    return str(v)


def _parse(s: str) -> Any:
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    return s


class CSVLogger(Callback):
    """Write one CSV line per epoch to `learn.path/fname`, flushed and fsynced as it comes.

    The header is the recorder's `metric_names`; floats are written with `str()` (full precision) and
    the time column as `mm:ss`, measured by this callback.

    Args:
        fname: file name, relative to `learn.path` ('history.csv').
        append: add to an existing file instead of overwriting it (False); the columns must match.
    """

    order = 60

    def __init__(self, fname: str | Path = "history.csv", append: bool = False) -> None:
        self.fname, self.append = Path(fname), append
        self.file: Any = None
        self.path: Path | None = None

    def _path(self) -> Path:
        return Path(getattr(self.learn, "path", ".")) / self.fname

    def before_fit(self) -> None:
        """Open the file and write the header (not during lr_find)."""
        if not self.learn.is_fitting:
            return
        self.path = self._path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        names = list(self.learn.recorder.metric_names)
        has_rows = self.append and self.path.exists() and self.path.stat().st_size > 0
        if has_rows:
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if header != names:
                raise ValueError(
                    f"CSVLogger(append=True): {self.path} has columns {header} but this fit records {names}. "
                    "Pass append=False or another fname."
                )
        self.file = self.path.open("a" if self.append else "w", newline="")
        self._writer = csv.writer(self.file)
        if not has_rows:
            self._write(names)

    def _write(self, row: list[Any]) -> None:
        self._writer.writerow([_cell(v) for v in row])
        self.file.flush()
        os.fsync(self.file.fileno())

    def before_epoch(self) -> None:
        """Start the epoch timer."""
        if self.file is None or not self.learn.is_fitting:
            return
        self._start = time.perf_counter()
        self._n_values = len(getattr(self.learn.recorder, "values", None) or ())

    def after_epoch(self) -> None:
        """Write the epoch's line (skipped when the recorder stored no row for it)."""
        recorder = self.learn.recorder
        if self.file is None or not self.learn.is_fitting or len(recorder.values or ()) == self._n_values:
            return
        record = {
            "epoch": self.learn.epoch,
            **last_record(recorder),
            "time": format_time(time.perf_counter() - self._start),
        }
        self._write([record.get(n) for n in recorder.metric_names])

    def after_fit(self) -> None:
        """Close the file (not at the end of a `validate` nested in the fit)."""
        if self.file is not None and self.learn.is_fitting:
            self.file.close()
            self.file = None

    def read_log(self, as_frame: bool = False) -> Any:
        """Return the logged rows as a list of dicts (numbers parsed), or a pandas DataFrame if `as_frame`."""
        path = self.path or self._path()
        if as_frame:
            import pandas as pd

            return pd.read_csv(path)
        with Path(path).open(newline="") as f:
            return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


class TensorBoardCallback(Callback):
    """Log the smoothed training loss and the lr (and momentum) of each parameter group per batch, and every
    recorded value of each epoch (valid loss, metrics, training metrics) to TensorBoard.

    Scalars: `train_loss`, `lr_<group>`, `mom_<group>` (every `log_every` training batches) and the
    recorder's columns (`valid_loss`, `accuracy`, `train_accuracy`, ...) at each epoch end, all against
    the number of training batches done.

    Needs the `tensorboard` package (`pip install tensorboard`). Only rank 0 writes when
    `torch.distributed` is initialised.

    Args:
        log_dir: where to write (None: `runs/<date>_<host>`, TensorBoard's default).
        trace_model: add the model graph, traced on the first training batch (False).
        log_every: write the per-batch values every N training batches (10); each write reads the
            loss from the device, so 1 costs a host sync per batch.
    """

    order = 51
    run_valid = False

    def __init__(
        self, log_dir: str | Path | None = None, trace_model: bool = False, log_every: int = 10
    ) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError(
                "TensorBoardCallback needs the tensorboard package, which is not installed. "
                "Install it with `pip install tensorboard`."
            ) from e
        self._writer_cls = SummaryWriter
        self.log_dir, self.trace_model, self.log_every = log_dir, trace_model, log_every
        self.writer: Any = None

    def before_fit(self) -> None:
        """Open the writer (not during lr_find, not on ranks other than 0)."""
        dist = torch.distributed
        rank0 = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
        if not self.learn.is_fitting:
            return
        self.writer = self._writer_cls(log_dir=self.log_dir) if rank0 else None
        self._traced = not self.trace_model

    def after_batch(self) -> None:
        """Log the smoothed loss and each parameter group's lr and momentum every `log_every` batches."""
        if self.writer is None or not self.learn.is_fitting:
            return
        step = self.learn.train_iter
        if not self._traced:
            self.writer.add_graph(self.learn.model, tuple(self.learn.xb))
            self._traced = True
        if step % self.log_every:
            return
        self.writer.add_scalar("train_loss", float(self.learn.smooth_loss), step)
        for name in ("lr", "mom"):
            for i, value in enumerate(get_hyper(self.learn.opt, name)):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{name}_{i}", value, step)

    def after_epoch(self) -> None:
        """Log the epoch's recorded values (the training loss is logged per batch)."""
        if self.writer is None or not self.learn.is_fitting:
            return
        for name, value in last_record(self.learn.recorder).items():
            if name != "train_loss" and value is not None:
                try:
                    self.writer.add_scalar(name, float(value), self.learn.train_iter)
                except (TypeError, ValueError):
                    continue

    def after_fit(self) -> None:
        """Close the writer."""
        if self.writer is not None and self.learn.is_fitting:
            self.writer.close()
            self.writer = None


class GradientAccumulation(Callback):
    """Accumulate gradients over batches until `n_acc` samples were seen, then step once.

    The loss of each batch is divided by `n_acc / bs`, so `n_acc // bs` batches of size `bs` give the
    gradient of one batch of `n_acc` (mean-reduced losses). `before_step` raises
    `CancelBatchException` (which skips the step and zero_grad) until `n_acc` samples are counted.

    Args:
        n_acc: samples per optimizer step (32), not batches.
    """

    order = 6
    run_valid = False

    def __init__(self, n_acc: int = 32) -> None:
        self.n_acc = n_acc
        self.count = 0

    def before_fit(self) -> None:
        """Reset the sample count (for a training run, not for a `validate` nested in the fit)."""
        if self.learn.run_mode.trains:
            self.count = 0

    def after_loss(self) -> None:
        """Scale the loss used for backward by `bs / n_acc` (`learn.loss`, which is logged, is untouched)."""
        bs = self.learn.yb[0].shape[0]
        self.learn.loss_grad = self.learn.loss_grad * (bs / self.n_acc)

    def before_step(self) -> None:
        """Skip the step (and zero_grad) until `n_acc` samples were accumulated."""
        self.count += self.learn.yb[0].shape[0]
        if self.count < self.n_acc:
            raise CancelBatchException()
        self.count = 0


class GradientClip(Callback):
    """Clip the gradient norm of the model's parameters before each step (unscaled first under fp16).

    Args:
        max_norm: the largest allowed norm (1.).
        norm_type: the p of the p-norm (2.0).
    """

    order = 11

    def __init__(self, max_norm: float = 1.0, norm_type: float = 2.0) -> None:
        self.max_norm, self.norm_type = max_norm, norm_type

    def before_step(self) -> None:
        """Unscale the gradients if a GradScaler is active, then clip their norm."""
        scaler = getattr(self.learn, "scaler", None)
        if scaler is not None:
            scaler.unscale_(self.learn.opt)
        nn.utils.clip_grad_norm_(self.learn.model.parameters(), self.max_norm, self.norm_type)


class ShortEpochCallback(Callback):
    """Cut each epoch short after `pct` of its batches (for quick smoke runs of a training setup).

    Args:
        pct: fraction of the batches to run (0.01).
        short_valid: also cut the validation phase short (True).
    """

    def __init__(self, pct: float = 0.01, short_valid: bool = True) -> None:
        self.pct, self.short_valid = pct, short_valid

    def after_batch(self) -> None:
        """Cancel the phase once `pct` of its batches ran."""
        if (self.learn.iter + 1) / self.learn.n_iter < self.pct:
            return
        if self.learn.training:
            raise CancelTrainException()
        if self.short_valid:
            raise CancelValidException()
