"""Callbacks that watch a recorded value: stop on NaN, save the best model, stop early, lower the lr.

What these read from the learner (see docs/design.md): `learn.loss`, `learn.iter`, `learn.epoch`,
`learn.training`, `learn.opt.param_groups`, `learn.model`, `learn.cbs`, `learn.save`/`learn.load`,
and the recorder's `metric_names` (fastai layout: 'epoch', 'train_loss', 'valid_loss', metrics...,
'time') and `values` (one list per epoch, without 'epoch' and 'time'). They only act inside `fit`
(between their own `before_fit` and `after_fit`, while `learn.is_fitting`) and stay off in the other run
modes, so `lr_find`, `validate` and `get_preds` never save, stop or change the lr.
"""

from __future__ import annotations

import difflib
import operator
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .core import Callback, CancelFitException

__all__ = [
    "TerminateOnNaNCallback",
    "TrackerCallback",
    "SaveModelCallback",
    "EarlyStoppingCallback",
    "ReduceLROnPlateau",
]

_NOT_VALUES = ("epoch", "time")
MONITOR = "valid_loss"  # the trackers' default recorder column
MIN_DELTA = 0.0  # the trackers' default margin of improvement


def _lr(learn: Any) -> float:
    return float(learn.opt.param_groups[-1]["lr"])


def _finite_weights(model: Any) -> bool:
    """True when every floating-point parameter of `model` is finite (read once, when training stops)."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point())


def _status(learn: Any, msg: str) -> None:
    """Send a status line to `learn.logger` (the progress table; silenced by `learn.no_logging()`)."""
    learn.logger(msg)


def recorded_names(recorder: Any) -> list[str]:
    """Return the names of the values the recorder stores each epoch (metric_names minus epoch and time)."""
    return [n for n in recorder.metric_names if n not in _NOT_VALUES]


def last_record(recorder: Any) -> dict[str, Any]:
    """Return the recorder's last epoch as `{name: value}` (empty before the first epoch)."""
    values = getattr(recorder, "values", None)
    if not values:
        return {}
    row = list(values[-1])
    names = recorded_names(recorder)
    if len(row) != len(names):  # values aligned with metric_names[1:] (time included)
        names = list(recorder.metric_names[1:])
    return dict(zip(names, row))


class TerminateOnNaNCallback(Callback):
    """Stop training when the training loss becomes NaN or infinite, saying where and at which lr.

    The check keeps a flag on the loss's device and reads it every `check_every` training batches
    and at the end of each training phase, so on a GPU it costs no host sync per batch (None: every
    batch on CPU, where reading is free, and every 16 on accelerators). Stopping a few batches late
    changes nothing: the weights are already non-finite after the first bad step.
    """

    order = -9
    run_valid = False

    def __init__(self, check_every: int | None = None) -> None:
        self.check_every = check_every
        self.message: str | None = None
        self._bad: torch.Tensor | None = None
        self._n = 0

    def before_fit(self) -> None:
        """Reset the device flags (only for a real fit: a nested `validate` keeps them)."""
        if not self.learn.is_fitting:
            return
        self._bad, self._n, self.message = None, 0, None

    def after_batch(self) -> None:
        """Record (on the device) whether this batch's loss is finite; check every `check_every` batches."""
        loss = self.learn.loss
        if loss is None or not self.learn.is_fitting:
            return
        if not isinstance(loss, torch.Tensor):
            loss = torch.tensor(float(loss))
        loss = loss.detach().float().sum()  # non-finite if any element is (reduction='none')
        bad = ~torch.isfinite(loss)
        if self._bad is None:
            self._bad, self._val = torch.zeros_like(bad), loss.clone()
            self._epoch = torch.zeros((), dtype=torch.long, device=loss.device)
            self._iter, self._lr = self._epoch.clone(), torch.zeros((), device=loss.device)
        first = bad & ~self._bad
        self._val = torch.where(first, loss, self._val)
        self._epoch = torch.where(first, self.learn.epoch, self._epoch)
        self._iter = torch.where(first, self.learn.iter, self._iter)
        self._lr = torch.where(first, _lr(self.learn), self._lr)
        self._bad = self._bad | bad
        self._n += 1
        every = self.check_every or (1 if loss.device.type == "cpu" else 16)
        if self._n % every == 0:
            self._check()

    def after_train(self) -> None:
        """Check the flag at the end of the training phase."""
        self._check()

    def _check(self) -> None:
        if self._bad is None or not bool(self._bad):
            return
        kind = "nan" if torch.isnan(self._val) else "inf"
        msg = f"Loss became {kind} at epoch {int(self._epoch)}, step {int(self._iter)} (lr {float(self._lr):.1e}): training stopped."
        if _finite_weights(self.learn.model):
            msg += " The weights are still finite (check the inputs and targets for nan/inf)."
        else:
            restorer = self._restorer()
            msg += " The model's weights are now nan/inf, so it is unusable as is: " + (
                f"{restorer} loads the last finite weights back at the end of fit."
                if restorer
                else "reload a checkpoint (learn.load(name)) or re-create the model before using it, and add "
                "SaveModelCallback() to keep the best finite weights automatically."
            )
        self.message = msg + (
            " Lower the learning rate (try learn.lr_find()) or use gradient clipping (GradientClip)."
        )
        warnings.warn(self.message, RuntimeWarning, stacklevel=2)
        raise CancelFitException(self.message)

    def _restorer(self) -> str | None:
        """Name the callback that will load finite weights back in `after_fit`, if any."""
        for cb in getattr(self.learn, "cbs", ()):
            if isinstance(cb, SaveModelCallback) and cb.saved and not cb.every_epoch and not cb.at_end:
                return f"SaveModelCallback (the model saved at epoch {cb.best_epoch} as {cb.fname!r})"
            if (
                isinstance(cb, EarlyStoppingCallback)
                and cb.restore_best_weights
                and cb.best_state is not None
            ):
                return (
                    f"EarlyStoppingCallback(restore_best_weights=True) (the weights of epoch {cb.best_epoch})"
                )
        return None


class TrackerCallback(Callback):
    """Track the recorded value `monitor` each epoch and flag improvements (`self.new_best`, `self.best`).

    Args:
        monitor: a recorder column, e.g. 'valid_loss', 'accuracy' ('valid_loss').
        comp: comparison returning True when the first argument is better (None: less-is-better if
            the name contains 'loss' or 'error', else greater-is-better).
        min_delta: how much better a value must be to count as an improvement (0.).
        reset_on_fit: forget the best value at the start of each fit (True).
    """

    order = 60

    def __init__(
        self,
        monitor: str = MONITOR,
        comp: Callable[[Any, Any], bool] | None = None,
        min_delta: float = MIN_DELTA,
        reset_on_fit: bool = True,
    ) -> None:
        if comp is None:
            comp = operator.lt if ("loss" in monitor or "error" in monitor) else operator.gt
        if comp(0, 1):  # less is better: an improvement must be at least min_delta lower
            min_delta = -abs(min_delta)
        self.monitor, self.comp, self.min_delta, self.reset_on_fit = monitor, comp, min_delta, reset_on_fit
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.new_best = False
        self.active = False

    def before_fit(self) -> None:
        """Check `monitor` is recorded, and reset `best` when `reset_on_fit` (only for a real fit)."""
        if not self.learn.is_fitting:
            return  # lr_find, validate, get_preds (maybe nested in a fit): leave the state alone
        self.active = True
        recorder = getattr(self.learn, "recorder", None)
        if recorder is None:
            raise ValueError(
                f"{type(self).__name__} needs a Recorder on the learner to read {self.monitor!r}."
            )
        available = recorded_names(recorder)
        if self.monitor not in available:
            close = difflib.get_close_matches(self.monitor, available, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"monitor={self.monitor!r} is not recorded; available: {available}.{hint}")
        if self.reset_on_fit or self.best is None:
            self.best = float("inf") if self.comp(0, 1) else -float("inf")
            self.best_epoch = None
        self.new_best = False

    def after_epoch(self) -> None:
        """Compare the epoch's `monitor` value with the best so far."""
        self.new_best = False
        if not self._live():
            return
        value = last_record(self.learn.recorder).get(self.monitor)
        if value is None:
            return
        value = float(value)
        if self.best is None or self.comp(value - self.min_delta, self.best):  # None: before_fit not run
            self.best, self.best_epoch, self.new_best = value, self.learn.epoch, True

    def after_fit(self) -> None:
        """Stop tracking until the next fit."""
        if self.learn.is_fitting:
            self.active = False

    def _live(self) -> bool:
        """True between this fit's `before_fit` and `after_fit`, outside nested validate/get_preds."""
        return self.active and self.learn.is_fitting

    _state_attrs: tuple[str, ...] = ("best", "best_epoch")

    def state_dict(self) -> dict[str, Any]:
        """Return what this tracker carries from epoch to epoch (`best`, `best_epoch`, and its counters)."""
        return {k: vars(self)[k] for k in self._state_attrs if k in vars(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` (call it after `before_fit`, which resets the state)."""
        for k, v in state.items():
            if k not in self._state_attrs:
                raise KeyError(
                    f"{type(self).__name__} has no state {k!r}; expected some of {self._state_attrs}."
                )
            setattr(self, k, v)


class SaveModelCallback(TrackerCallback):
    """Save the model whenever `monitor` improves, and load the best one back at the end of fit.

    Args:
        fname: file name under `learn.path/learn.model_dir` ('model').
        every_epoch: save every epoch (True) or every N epochs (int) as `f'{fname}_{epoch}'` instead.
        at_end: save once, at the end of fit, instead of reloading the best.
        with_opt: save/load the optimizer state too (False).
        Others as `TrackerCallback`.
    """

    order = 61
    _state_attrs = ("best", "best_epoch", "saved")

    def __init__(
        self,
        monitor: str = MONITOR,
        comp: Callable[[Any, Any], bool] | None = None,
        min_delta: float = MIN_DELTA,
        fname: str = "model",
        every_epoch: bool | int = False,
        at_end: bool = False,
        with_opt: bool = False,
        reset_on_fit: bool = True,
    ) -> None:
        super().__init__(monitor=monitor, comp=comp, min_delta=min_delta, reset_on_fit=reset_on_fit)
        if every_epoch and at_end:
            raise ValueError(
                "SaveModelCallback got every_epoch and at_end; they are exclusive. Pass one of them."
            )
        self.fname, self.every_epoch, self.at_end, self.with_opt = fname, every_epoch, at_end, with_opt
        self.saved = False

    def before_fit(self) -> None:
        """As `TrackerCallback`; also forget whether a best model was saved."""
        super().before_fit()
        if self.learn.is_fitting:
            self.saved = False

    def after_epoch(self) -> None:
        """Save on improvement (or every N epochs with `every_epoch`)."""
        super().after_epoch()
        if not self._live():
            return
        if self.every_epoch:
            if self.learn.epoch % int(self.every_epoch) == 0:
                self.learn.save(f"{self.fname}_{self.learn.epoch}", with_opt=self.with_opt)
        elif self.new_best:
            _status(
                self.learn,
                f"Better model found at epoch {self.learn.epoch} with {self.monitor} value: {self.best}.",
            )
            self.learn.save(self.fname, with_opt=self.with_opt)
            self.saved = True

    def after_fit(self) -> None:
        """Save (`at_end`) or reload the best saved model."""
        if self._live():
            if self.at_end and not _finite_weights(self.learn.model):
                warnings.warn(
                    f"SaveModelCallback(at_end=True) did not save {self.fname!r}: the weights are nan/inf "
                    "(training diverged). The previous file, if any, is kept.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            elif self.at_end:
                self.learn.save(self.fname, with_opt=self.with_opt)
            elif not self.every_epoch and self.saved:
                self.learn.load(self.fname, with_opt=self.with_opt)
        super().after_fit()


class ReduceLROnPlateau(TrackerCallback):
    """Divide every parameter group's lr by `factor` after `patience` epochs without improvement.

    With plain `fit` the lowered lr stays in `learn.opt.param_groups`. When a scheduler (e.g.
    `fit_one_cycle`'s ParamScheduler, order 60) rewrites the lr each batch, this callback (order 62)
    multiplies whatever lr the scheduler set by the accumulated reduction, so the reduction holds on
    top of the schedule instead of being silently overwritten.

    Args:
        patience: epochs without improvement before reducing (1).
        factor: divisor of the lr (10.).
        min_lr: floor of the lr (0).
        Others as `TrackerCallback`.
    """

    order = 62
    _state_attrs = ("best", "best_epoch", "wait", "scale", "_written")

    def __init__(
        self,
        monitor: str = MONITOR,
        comp: Callable[[Any, Any], bool] | None = None,
        min_delta: float = MIN_DELTA,
        patience: int = 1,
        factor: float = 10.0,
        min_lr: float = 0,
        reset_on_fit: bool = True,
    ) -> None:
        super().__init__(monitor=monitor, comp=comp, min_delta=min_delta, reset_on_fit=reset_on_fit)
        self.patience, self.factor, self.min_lr = patience, factor, min_lr
        self.scale = 1.0
        self._written: list[float] | None = None

    def before_fit(self) -> None:
        """As `TrackerCallback`; also reset the wait count (and the reduction when `reset_on_fit`)."""
        super().before_fit()
        if self.learn.is_fitting:
            self.wait = 0
            if self.reset_on_fit:
                self.scale, self._written = 1.0, None

    def before_batch(self) -> None:
        """Re-apply the reduction on top of an lr that a scheduler rewrote since our last write."""
        if not (self._written and self.learn.training and self._live()):
            return
        for group, written in zip(self.learn.opt.param_groups, self._written):
            if group["lr"] != written:
                group["lr"] = max(group["lr"] * self.scale, self.min_lr)
        self._written = [g["lr"] for g in self.learn.opt.param_groups]

    def after_epoch(self) -> None:
        """Count bad epochs; after `patience` of them lower every group's lr."""
        super().after_epoch()
        if not self._live():
            return
        if self.new_best:
            self.wait = 0
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        self.wait = 0
        groups = self.learn.opt.param_groups
        old = groups[-1]["lr"]
        for g in groups:
            g["lr"] = max(g["lr"] / self.factor, self.min_lr)
        self.scale /= self.factor
        self._written = [g["lr"] for g in groups]
        if groups[-1]["lr"] < old:
            _status(self.learn, f"Epoch {self.learn.epoch}: reducing lr to {groups[-1]['lr']}")


class EarlyStoppingCallback(TrackerCallback):
    """Stop training after `patience` epochs without improvement of `monitor`.

    With `restore_best_weights=True` the weights of the best epoch (kept as a CPU copy of the state
    dict) are loaded back at the end of fit, whether or not training stopped early.

    Args:
        patience: epochs without improvement before stopping (1).
        restore_best_weights: load the best epoch's weights at the end of fit (False).
        Others as `TrackerCallback`.
    """

    order = 63
    _state_attrs = ("best", "best_epoch", "wait", "best_state")

    def __init__(
        self,
        monitor: str = MONITOR,
        comp: Callable[[Any, Any], bool] | None = None,
        min_delta: float = MIN_DELTA,
        patience: int = 1,
        reset_on_fit: bool = True,
        restore_best_weights: bool = False,
    ) -> None:
        super().__init__(monitor=monitor, comp=comp, min_delta=min_delta, reset_on_fit=reset_on_fit)
        self.patience, self.restore_best_weights = patience, restore_best_weights
        self.best_state: dict[str, torch.Tensor] | None = None

    def before_fit(self) -> None:
        """As `TrackerCallback`; also reset the wait count and the kept weights, and warn about a
        `SaveModelCallback` that restores a different monitor's best (this callback loads last, so wins)."""
        super().before_fit()
        if self.learn.is_fitting:
            self.wait = 0
            if self.reset_on_fit:
                self.best_state = None
            if self.restore_best_weights:
                self._warn_conflicts()

    def _warn_conflicts(self) -> None:
        for cb in self.learn.cbs:
            restores = isinstance(cb, SaveModelCallback) and not cb.every_epoch and not cb.at_end
            if restores and cb.monitor != self.monitor:
                warnings.warn(
                    f"SaveModelCallback(monitor={cb.monitor!r}) and EarlyStoppingCallback(monitor={self.monitor!r}, "
                    "restore_best_weights=True) both load their best weights at the end of fit; "
                    f"EarlyStoppingCallback runs last, so the model ends with the best {self.monitor!r} epoch, "
                    f"not the best {cb.monitor!r} one saved in {cb.fname!r}. Use the same monitor for both, "
                    "or drop restore_best_weights.",
                    UserWarning,
                    stacklevel=2,
                )

    def after_epoch(self) -> None:
        """Keep the best weights if asked; raise `CancelFitException` after `patience` bad epochs."""
        super().after_epoch()
        if not self._live():
            return
        if self.new_best:
            self.wait = 0
            if self.restore_best_weights:
                self.best_state = {
                    k: v.detach().to("cpu", copy=True) for k, v in self.learn.model.state_dict().items()
                }
            return
        self.wait += 1
        if self.wait >= self.patience:
            _status(self.learn, f"No improvement since epoch {self.learn.epoch - self.wait}: early stopping")
            raise CancelFitException()

    def after_fit(self) -> None:
        """Load the best weights back when `restore_best_weights`."""
        if self._live() and self.restore_best_weights and self.best_state is not None:
            self.learn.model.load_state_dict(self.best_state)
            if self.best_epoch != self.learn.epoch:
                _status(
                    self.learn,
                    f"Restored the weights of epoch {self.best_epoch} ({self.monitor} {self.best}).",
                )
        super().after_fit()
