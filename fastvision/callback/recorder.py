"""`Recorder`: losses, metrics, learning rates and timings of a fit, kept on the device and read once per epoch."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..utils import format_time
from .core import Callback

__all__ = ["Recorder", "format_time"]


def _to_float(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    return v


def _batch_size(learn: Any) -> int:
    b = learn.yb[0] if learn.yb else learn.xb[0]
    return b.shape[0] if hasattr(b, "shape") and len(b.shape) else len(b)


def _scalar_loss(loss: Any) -> torch.Tensor:
    """The loss as a detached 0-d float32 tensor (mean of a per-item loss); no new op when it already is one."""
    if not isinstance(loss, torch.Tensor):
        return torch.tensor(float(loss))
    if loss.requires_grad:
        loss = loss.detach()
    return loss if loss.ndim == 0 and loss.dtype == torch.float32 else loss.float().mean()


class _SmoothLoss:
    """Exponential moving average of the training loss, debiased: `v = beta*v + (1-beta)*loss`, shown `v/(1-beta**n)`.

    The debiased value `s = v/(1-beta**n)` is kept directly, updated with one op per batch:
    `s = lerp(s, loss, w)` with `w = (1-beta)/(1-beta**n)` (`w = 1` for the first batch). `val`, the
    biased `v`, is derived from it (checkpoints store `(count, val)`).
    """

    name = "train_loss"

    def __init__(self, beta: float = 0.98) -> None:
        self.beta = beta
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self._debiased: torch.Tensor | None = None

    def accumulate(self, learn: Any) -> None:
        loss = _scalar_loss(learn.loss)
        self.count += 1
        if self._debiased is None:
            self._debiased = loss.clone()
        else:
            weight = (1 - self.beta) / (1 - self.beta**self.count)
            self._debiased = torch.lerp(self._debiased, loss, weight)

    @property
    def val(self) -> Any:
        """The biased moving average `v` (None before the first batch)."""
        if self._debiased is None:
            return None
        return self._debiased * (1 - self.beta**self.count)

    @val.setter
    def val(self, v: Any) -> None:
        if v is None or not self.count:
            self._debiased = None
        else:
            self._debiased = torch.as_tensor(v) / (1 - self.beta**self.count)

    @property
    def value(self) -> Any:
        return self._debiased if self.count else None


class _AvgLoss:
    """Batch-size weighted mean of the loss over a pass."""

    name = "loss"

    def reset(self) -> None:
        self.total: float | torch.Tensor = 0.0
        self.count = 0

    def accumulate(self, learn: Any) -> None:
        bs = _batch_size(learn)
        loss = _scalar_loss(learn.loss)
        if isinstance(self.total, torch.Tensor):  # one op per batch: total += loss * bs
            self.total = self.total.add(loss, alpha=bs)
        else:
            self.total = loss * bs + self.total if self.total else loss * bs
        self.count += bs

    @property
    def value(self) -> Any:
        if not self.count:
            return None
        if isinstance(self.total, torch.Tensor) and self.total.ndim == 0:
            return self.total.item() / self.count  # one read, no device op
        return self.total / self.count


class Recorder(Callback):
    """Record the smoothed train loss, valid loss, metrics, lrs and epoch times; send each epoch row to `learn.logger`.

    Per training batch it appends the last group's lr to `lrs` and the smoothed loss to `losses`
    (device tensors turned into floats in one read per epoch) and sets `learn.smooth_loss`. Each
    epoch `learn.final_record = [train_loss, valid_loss, *metrics]` is appended to `values`, and
    `[epoch, *final_record, time]` is passed to `learn.logger`. A run that is not a fit
    (`validate`, `get_preds`) computes `final_record` but leaves the history alone.

    Args:
        add_time: add the epoch time column (True).
        train_metrics: also compute the metrics on the training set (False).
        valid_metrics: compute them on the validation set (True).
        beta: smoothing of the train loss (0.98).
    """

    order = 50

    def __init__(
        self,
        add_time: bool = True,
        train_metrics: bool = False,
        valid_metrics: bool = True,
        beta: float = 0.98,
    ) -> None:
        self.add_time, self.train_metrics, self.valid_metrics = add_time, train_metrics, valid_metrics
        self.smooth_loss = _SmoothLoss(beta)
        self.loss = _AvgLoss()
        self.lrs: list[float] = []
        self._losses: list[Any] = []
        self._n_flushed = 0  # _losses[:_n_flushed] are floats already
        self.iters: list[int] = []
        self.values: list[list[Any]] = []
        self.hps: dict[str, list[Any]] = {}
        self.log: list[Any] = []

    @property
    def losses(self) -> list[float]:
        """Smoothed training loss of every batch of the last fit (floats)."""
        self._flush()
        return self._losses

    def _flush(self) -> None:
        """Turn the device losses appended since the last flush into floats (one read)."""
        start = min(self._n_flushed, len(self._losses))
        pending = [i for i in range(start, len(self._losses)) if isinstance(self._losses[i], torch.Tensor)]
        if len(pending) == 1:  # one batch per epoch (full-batch training): one read, no stack
            self._losses[pending[0]] = self._losses[pending[0]].item()
        elif pending:
            vals = torch.stack([self._losses[i] for i in pending]).tolist()
            for i, v in zip(pending, vals):
                self._losses[i] = v
        self._n_flushed = len(self._losses)

    @property
    def metric_names(self) -> list[str]:
        """Column names: `['epoch', 'train_loss', ('train_<m>'...), 'valid_loss', ('valid_<m>'...), 'time']`."""
        ms = [m.name for m in self.learn.metrics] if self.learn is not None else []
        names = ["train_loss"] + ([f"train_{n}" for n in ms] if self.train_metrics else [])
        names += ["valid_loss"] + (
            [f"valid_{n}" if self.train_metrics else n for n in ms] if self.valid_metrics else []
        )
        return ["epoch", *names] + (["time"] if self.add_time else [])

    def before_fit(self) -> None:
        """Reset the history and the smoothed loss (for a training run: fit or lr_find)."""
        if not self.learn.run_mode.trains:
            return
        self.lrs, self._losses, self.iters, self.values, self.hps = [], [], [], [], {}
        self._n_flushed = 0
        self.smooth_loss.reset()
        self.learn.smooth_loss = torch.tensor(float("nan"))

    def before_epoch(self) -> None:
        """Start the epoch timer and row."""
        self.start_epoch = time.perf_counter()
        self.log = [getattr(self.learn, "epoch", 0)]
        self._has_values = False
        self._valid_cancelled = False

    def before_train(self) -> None:
        """Reset the training metrics (not the smoothed loss: it runs across epochs)."""
        for m in self._train_mets[1:]:
            m.reset()

    def before_validate(self) -> None:
        """Reset the validation metrics."""
        for m in self._valid_mets:
            m.reset()

    @property
    def _train_mets(self) -> list[Any]:
        return [self.smooth_loss] + (list(self.learn.metrics) if self.train_metrics else [])

    @property
    def _valid_mets(self) -> list[Any]:
        return [self.loss] + (list(self.learn.metrics) if self.valid_metrics else [])

    def after_batch(self) -> None:
        """Accumulate losses and metrics on the device (no host sync)."""
        learn = self.learn
        if not learn.yb or learn.loss is None:
            return
        if learn.training:
            self.smooth_loss.accumulate(learn)
            for m in learn.metrics if self.train_metrics else ():
                m.accumulate(learn)
            self.lrs.append(learn.opt.param_groups[-1]["lr"])
            learn.smooth_loss = self.smooth_loss.value
            self._losses.append(learn.smooth_loss)
        else:
            for m in self._valid_mets:
                m.accumulate(learn)

    def after_cancel_validate(self) -> None:
        """Note the cancel: a validation phase cancelled before its first batch (`lr_find`) adds no columns."""
        self._valid_cancelled = True

    def after_train(self) -> None:
        """Read the training columns (one host read)."""
        self.log += [_to_float(m.value) for m in self._train_mets]
        self._has_values = True

    def after_validate(self) -> None:
        """Read the validation columns (none when the phase was cancelled before any batch, as fastai)."""
        if getattr(self, "_valid_cancelled", False) and not self.loss.count:
            return
        self.log += [_to_float(m.value) for m in self._valid_mets]
        self._has_values = True

    def after_epoch(self) -> None:
        """Store `final_record`, then log `[epoch, *values, time]` (fits only)."""
        self.learn.final_record = self.log[1:]
        if not self.learn.run_mode.trains or not self._has_values:
            return  # validate/get_preds, or an epoch cancelled before any phase ran
        self._flush()
        self.values.append(self.learn.final_record)
        row = list(self.log)
        if self.add_time:
            row.append(format_time(time.perf_counter() - self.start_epoch))
        self.learn.logger(row)
        self.iters.append(self.smooth_loss.count)

    def after_fit(self) -> None:
        """Turn the remaining device values into floats."""
        self._flush()

    def state_dict(self) -> dict[str, Any]:
        """Return the history of the fit (lrs, smoothed losses, epoch ends, rows, schedules) and the smoothing state."""
        return {
            "lrs": list(self.lrs),
            "losses": list(self.losses),
            "iters": list(self.iters),
            "values": [list(v) for v in self.values],
            "hps": {k: list(v) for k, v in self.hps.items()},
            "smooth": (self.smooth_loss.count, self.smooth_loss.val),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; the smoothed loss goes to the learner's device and to `learn.smooth_loss`."""
        self.lrs, self._losses, self.iters = list(state["lrs"]), list(state["losses"]), list(state["iters"])
        self._n_flushed = len(self._losses)
        self.values, self.hps = [list(v) for v in state["values"]], dict(state.get("hps", {}))
        count, val = state["smooth"]
        dev = getattr(self.learn, "device", None)
        self.smooth_loss.count = count
        self.smooth_loss.val = val.to(dev) if dev is not None and isinstance(val, torch.Tensor) else val
        if self.learn is not None:
            self.learn.smooth_loss = self.smooth_loss.value

    # ---- plots -------------------------------------------------------------------------------------
    def plot_loss(
        self,
        skip_start: int = 5,
        with_valid: bool = True,
        log: bool = False,
        show_epochs: bool = False,
        ax: Any = None,
    ) -> Any:
        """Plot the smoothed training loss per batch and the validation loss at each epoch end."""
        import matplotlib.pyplot as plt

        if ax is None:
            ax = plt.subplots()[1]
        losses = self.losses
        ax.plot(range(skip_start, len(losses)), losses[skip_start:], label="train")
        if show_epochs:
            for x in self.iters:
                ax.axvline(x, color="grey", ls=":")
        if with_valid:
            col = self.metric_names.index("valid_loss") - 1
            idx = [i for i, v in enumerate(self.values) if len(v) > col and v[col] is not None]
            ax.plot([self.iters[i] for i in idx], [self.values[i][col] for i in idx], label="valid")
            ax.legend()
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("batch")
        ax.set_ylabel("loss")
        return ax

    def plot_metrics(
        self, nrows: int | None = None, ncols: int | None = None, figsize: tuple[float, float] | None = None
    ) -> Any:
        """Plot every recorded column per epoch: train and valid loss together, then one axes per metric.

        Returns the figure (axes in `fig.axes`: 'loss' first, then the metrics in column order; unused
        grid cells are removed). Epochs whose value is missing (a cancelled validation) or not a number are left out.

        Args:
            nrows: rows of the grid (default: as many as the plots need).
            ncols: columns of the grid (default: 2, or fewer when there are fewer plots).
            figsize: the figure size (default: 4 x 3 inches per axes).
        """
        import matplotlib.pyplot as plt

        if not self.values:
            raise ValueError("plot_metrics: nothing recorded yet; run `learn.fit(...)` first.")
        names = [n for n in self.metric_names if n not in ("epoch", "time")]
        columns = {
            n: [(e, row[i]) for e, row in enumerate(self.values) if i < len(row)] for i, n in enumerate(names)
        }
        columns = {n: [(e, v) for e, v in pts if isinstance(v, (int, float))] for n, pts in columns.items()}
        losses = [n for n in names if n in ("train_loss", "valid_loss")]
        others = [n for n in names if n not in losses]
        n_plots = 1 + len(others)
        ncols = ncols or min(2, n_plots)
        nrows = nrows or -(-n_plots // ncols)
        if nrows * ncols < n_plots:
            raise ValueError(
                f"plot_metrics: a {nrows}x{ncols} grid cannot hold {n_plots} plots ({['loss', *others]})."
            )
        fig, axs = plt.subplots(nrows, ncols, figsize=figsize or (4 * ncols, 3 * nrows), squeeze=False)
        flat = list(axs.flat)
        for ax, group in zip(flat, [losses, *[[n] for n in others]]):
            for n in group:
                pts = columns[n]
                ax.plot(
                    [e for e, _ in pts], [v for _, v in pts], marker="." if len(pts) < 30 else None, label=n
                )
            ax.set_title("loss" if group is losses else group[0])
            ax.set_xlabel("epoch")
            if group is losses:
                ax.legend()
        for ax in flat[n_plots:]:
            ax.remove()
        fig.tight_layout()
        return fig

    def plot_sched(
        self, keys: Sequence[str] | None = None, figsize: tuple[float, float] | None = None
    ) -> Any:
        """Plot the scheduled hyper-parameters recorded by the last `ParamScheduler` (`hps`).

        After a fit without a schedule (plain `fit`, maybe with `ReduceLROnPlateau`) it plots the lr
        recorded at every training batch (`lrs`).
        """
        import matplotlib.pyplot as plt

        hps = self.hps or ({"lr": self.lrs} if self.lrs else {})
        keys = list(hps) if keys is None else list(keys)
        if not keys:
            raise ValueError("Nothing recorded to plot: run `fit` (or `fit_one_cycle`...) first.")
        missing = [k for k in keys if k not in hps]
        if missing:
            raise ValueError(f"plot_sched: {missing} not recorded; recorded: {sorted(hps)}.")
        fig, axs = plt.subplots(len(keys), 1, figsize=figsize or (6, 3 * len(keys)), squeeze=False)
        for k, ax in zip(keys, axs[:, 0]):
            ax.plot(hps[k])
            ax.set_ylabel(k)
        return fig

    def plot_lr_find(
        self, skip_end: int = 5, suggestions: Any = None, points: Sequence[tuple[float, float]] | None = None
    ) -> Any:
        """Plot loss against lr (log x); mark each suggestion at its `points` (x, y)."""
        import matplotlib.pyplot as plt

        lrs, losses = np.asarray(self.lrs, dtype=float), np.asarray(self.losses, dtype=float)
        if skip_end and len(lrs) > skip_end:
            lrs, losses = lrs[:-skip_end], losses[:-skip_end]
        fig, ax = plt.subplots()
        ax.plot(lrs, losses)
        ax.set_xscale("log")
        ax.set_xlabel("Learning Rate")
        ax.set_ylabel("Loss")
        if suggestions is not None:
            if points is None and len(lrs):  # mark each suggestion on the curve
                points = [(v, float(np.interp(np.log10(v), np.log10(lrs), losses))) for v in suggestions]
            for name, val, (x, y) in zip(suggestions._fields, suggestions, points or []):
                ax.plot(x, y, "o", label=f"{name}: {val:.2e}")
            ax.legend(loc="best")
        return fig
