"""Hyper-parameter schedules as pure functions of position, `ParamScheduler`, the fit policies and `lr_find`.

A schedule maps `pos` in [0, 1] (the fraction of all training batches of the fit done so far) to a
value; `start`/`end` may be numpy arrays to give one value per parameter group. The `fit_*`
functions here are what `Learner.fit_one_cycle`, `fit_flat_cos`, `fit_sgdr`, `fine_tune` and
`lr_find` run.
"""

from __future__ import annotations

import bisect
import copy
import math
import time
import warnings
from collections import namedtuple
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, cast

import numpy as np
import torch

from ..distributed import num_distrib
from ..optimizer import get_hyper, set_hyper
from ..setup_checks import check_lr, check_n_epoch, check_train_batches
from ..utils import get_rng_states, listify, set_rng_states
from .core import Callback, CancelFitException, CancelTrainException, CancelValidException

__all__ = [
    "sched_lin",
    "sched_cos",
    "sched_no",
    "sched_exp",
    "SchedLin",
    "SchedCos",
    "SchedNo",
    "SchedExp",
    "SchedPoly",
    "combine_scheds",
    "combined_cos",
    "ParamScheduler",
    "TimeBudget",
    "LRFinder",
    "minimum",
    "steep",
    "valley",
    "slide",
    "SuggestedLRs",
]

Sched = Callable[[float], Any]


def sched_lin(start: Any, end: Any, pos: float) -> Any:
    """Linear from `start` to `end`."""
    return start + pos * (end - start)


def sched_cos(start: Any, end: Any, pos: float) -> Any:
    """Half-cosine from `start` to `end`: `start + (1 + cos(pi*(1-pos))) * (end-start) / 2`."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def sched_no(start: Any, end: Any, pos: float) -> Any:
    """Constant `start`."""
    return start


def sched_exp(start: Any, end: Any, pos: float) -> Any:
    """Exponential from `start` to `end`: `start * (end/start) ** pos`."""
    return start * (end / start) ** pos


def SchedLin(start: Any, end: Any) -> Sched:  # noqa: N802 - fastai's public name
    """Return `pos -> sched_lin(start, end, pos)`."""
    return partial(sched_lin, start, end)


def SchedCos(start: Any, end: Any) -> Sched:  # noqa: N802
    """Return `pos -> sched_cos(start, end, pos)`."""
    return partial(sched_cos, start, end)


def SchedNo(start: Any, end: Any = None) -> Sched:  # noqa: N802
    """Return `pos -> start`."""
    return partial(sched_no, start, end)


def SchedExp(start: Any, end: Any) -> Sched:  # noqa: N802
    """Return `pos -> sched_exp(start, end, pos)`."""
    return partial(sched_exp, start, end)


def _poly(start: Any, end: Any, power: float, pos: float) -> Any:
    return start + (end - start) * pos**power


def SchedPoly(start: Any, end: Any, power: float) -> Sched:  # noqa: N802
    """Return `pos -> start + (end - start) * pos ** power`."""
    return partial(_poly, start, end, power)


def _combined(bounds: list[float], scheds: list[Sched], pos: float) -> Any:
    i = max(0, min(len(scheds) - 1, bisect.bisect_right(bounds, pos) - 1))
    width = bounds[i + 1] - bounds[i]
    return scheds[i]((pos - bounds[i]) / width if width > 0 else 1.0)


def combine_scheds(pcts: Sequence[float], scheds: Sequence[Sched]) -> Sched:
    """Chain `scheds`, the i-th running over a fraction `pcts[i]` of the position (`pcts` sums to 1)."""
    if len(pcts) != len(scheds):
        raise ValueError(
            f"combine_scheds got {len(pcts)} pcts for {len(scheds)} schedules; pass one per schedule."
        )
    if abs(sum(pcts) - 1) > 1e-6 or any(p < 0 for p in pcts):
        raise ValueError(f"combine_scheds pcts must be non-negative and sum to 1, got {list(pcts)}.")
    bounds = [0.0, *np.cumsum(pcts).tolist()]
    bounds[-1] = 1.0
    return partial(_combined, bounds, list(scheds))


def combined_cos(pct: float, start: Any, middle: Any, end: Any) -> Sched:
    """Cosine from `start` to `middle` over the first `pct` of the position, then cosine to `end`."""
    return combine_scheds([pct, 1 - pct], [SchedCos(start, middle), SchedCos(middle, end)])


class ParamScheduler(Callback):
    """Set each scheduled hyper-parameter from `pct_train` before every training batch and record it.

    Args:
        scheds: `{'lr': sched, 'mom': sched, ...}`; a schedule may return an array (one value per group).
    """

    order, run_valid = 60, False

    def __init__(self, scheds: dict[str, Sched]) -> None:
        self.scheds = scheds

    def before_fit(self) -> None:
        """Start empty per-batch records (`hps`)."""
        self.hps: dict[str, list[Any]] = {k: [] for k in self.scheds}

    def before_batch(self) -> None:
        """Set every hyper-parameter for the current position."""
        self._update_val(self.learn.pct_train)

    def _update_val(self, pct: float) -> None:
        for name, f in self.scheds.items():
            set_hyper(self.learn.opt, name, f(pct))

    def after_batch(self) -> None:
        """Record the last group's value of each hyper-parameter."""
        for name in self.scheds:
            self.hps[name].append(get_hyper(self.learn.opt, name)[-1])

    def after_fit(self) -> None:
        """Hand the records to the Recorder (`learn.recorder.hps`)."""
        rec = getattr(self.learn, "recorder", None)
        if rec is not None and hasattr(self, "hps"):
            rec.hps = self.hps

    def state_dict(self) -> dict[str, Any]:
        """Return what this scheduler carries between batches: the per-batch records (`hps`).

        The values themselves are a pure function of the position (`learn.pct_train`), so nothing else.
        """
        return {"hps": {k: list(v) for k, v in getattr(self, "hps", {}).items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the records of `state_dict()`."""
        self.hps = {k: list(v) for k, v in state["hps"].items()}


class TimeBudget(Callback):
    """End the fit after `seconds` of wall time, with the schedules spread over that time, not over epochs.

    Before each training batch `pct_train` becomes the fraction of `seconds` elapsed since the fit began
    (validation included), so `fit_one_cycle`'s warm-up and annealing span the budget whatever the
    machine's speed; `n_epoch` is only an upper bound. When the time left would not cover another batch
    and the validation after it (both as long as the last ones), the epoch's training phase stops, its
    validation runs, and the fit ends: the last epoch is usually a partial one. Estimating the epoch count
    up front from a timing pass instead misses by the machine's swings in speed (10-20 % over minutes on
    a shared 2-core machine), which either wastes the budget or overruns it.

    Args:
        seconds: wall time for the whole fit.
        clock: the time source in seconds (`time.perf_counter`; tests pass a fake one).
    """

    order = -5  # after TrainEvalCallback sets `pct_train`, before the schedulers (60) read it

    def __init__(self, seconds: float, clock: Callable[[], float] = time.perf_counter):
        if not seconds > 0:
            raise ValueError(f"TimeBudget(seconds={seconds!r}): pass the fit's wall time in seconds, > 0.")
        self.seconds, self.clock = seconds, clock

    def before_fit(self) -> None:
        """Start the clock."""
        self.start = self.clock()
        self.t_batch = self.t_valid = 0.0
        self._last: float | None = None
        self.stopped = False

    def _no_time_left(self, now: float) -> bool:
        """Whether another batch and a validation, as long as the last ones, would end past the budget."""
        return now - self.start + self.t_batch + self.t_valid >= self.seconds

    def before_train(self) -> None:
        """Start timing batches anew (the validation came in between)."""
        self._last = None

    def before_batch(self) -> None:
        """Put the schedules at the fraction of the budget used, or stop when a batch would not fit.

        The stop comes before the batch starts, so every batch that ran had all its events; the time of
        a batch is the interval between the last two `before_batch` calls (loading included).
        """
        if not self.learn.training:
            return
        now = self.clock()
        if self._last is not None:
            self.t_batch = now - self._last
        self._last = now
        if self.learn.train_iter > 0 and self._no_time_left(now):
            self.stopped = True
            raise CancelTrainException()
        self.learn.pct_train = min((now - self.start) / self.seconds, 1.0)

    def before_validate(self) -> None:
        """Time the validation phase."""
        self._v0 = self.clock()

    def after_validate(self) -> None:
        """Keep the validation's duration; end the fit here if another batch and validation would not fit."""
        now = self.clock()
        self.t_valid = now - self._v0
        self.stopped = self.stopped or self._no_time_left(now)

    def before_epoch(self) -> None:
        """End the fit after the epoch whose training phase ran out of time (once it is recorded)."""
        if self.stopped:
            self.learn.epoch -= 1  # this epoch never starts: `epoch` stays the last one that ran
            raise CancelFitException()


def _snapshot(obj: Any) -> Any:
    """Deep copy with every tensor cloned to the CPU (nothing written to disk)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(v) for v in obj)
    return copy.deepcopy(obj)


def _loaders(learn: Any) -> list[Any]:
    """The learner's loaders (train, valid)."""
    return [learn.dls.train, learn.dls.valid]


def _loader_states(learn: Any) -> list[tuple[Any, Any]]:
    """`(loader, state)` for each loader that owns one: `state_dict()` (fastvision) or a torch `generator`."""
    states = []
    for dl in _loaders(learn):
        if callable(getattr(dl, "state_dict", None)):
            states.append((dl, dl.state_dict()))
        elif isinstance(getattr(dl, "generator", None), torch.Generator):
            states.append((dl.generator, dl.generator.get_state()))
    return states


def _load_loader_states(states: list[tuple[Any, Any]]) -> None:
    for owner, state in states:
        if isinstance(owner, torch.Generator):
            owner.set_state(state)
        else:
            owner.load_state_dict(state)


class LRFinder(ParamScheduler):
    """Raise the lr exponentially each batch; stop on divergence; restore everything afterwards, in memory.

    `before_fit` snapshots the state dicts of the model (weights and BatchNorm buffers), the optimizer,
    the gradient scaler and the loaders (`DataLoader.state_dict()`, or a torch loader's generator), and
    the torch/CUDA/python/numpy RNG states; `after_fit` loads them back, so `lr_find` leaves no trace on a
    later `fit`. Nothing is written to disk.

    Args:
        start_lr: start of the range (1e-7; a list gives per-group values).
        end_lr: end of the range (10; a list gives per-group values).
        num_it: number of batches (at least 6).
        stop_div: stop when the smoothed loss exceeds 4x the best one, or is not finite.
    """

    def __init__(
        self, start_lr: Any = 1e-7, end_lr: Any = 10, num_it: int = 100, stop_div: bool = True
    ) -> None:
        _check_range(start_lr, end_lr, num_it)
        if isinstance(start_lr, (list, tuple)):
            start_lr, end_lr = np.array(start_lr, dtype=float), np.array(end_lr, dtype=float)
        super().__init__({"lr": SchedExp(start_lr, end_lr)})
        self.num_it, self.stop_div = max(num_it, 6), stop_div
        self.diverged = False

    def before_fit(self) -> None:
        """Snapshot model, optimizer and RNG states."""
        super().before_fit()
        learn = self.learn
        scaler = getattr(learn, "scaler", None)
        self._saved = {
            "model": _snapshot(learn.model.state_dict()),
            "opt": _snapshot(learn.opt.state_dict()),
            "scaler": (scaler, _snapshot(scaler.state_dict()))
            if scaler is not None and hasattr(scaler, "state_dict")
            else None,
            "loaders": _loader_states(learn),
            "rng": get_rng_states(),
        }
        self.best_loss = float("inf")
        self.diverged = False

    def before_batch(self) -> None:
        """Set the lr for this iteration."""
        self._update_val(self.learn.train_iter / self.num_it)

    def after_batch(self) -> None:
        """Track the best smoothed loss; stop when done or diverging (one host read per batch)."""
        super().after_batch()
        loss = float(self.learn.smooth_loss)
        if not math.isfinite(loss):
            if self.stop_div:
                self.diverged = True
                raise CancelFitException()
        elif loss < self.best_loss:
            self.best_loss = loss
        if self.stop_div and loss > 4 * self.best_loss:
            self.diverged = True
            raise CancelFitException()
        if self.learn.train_iter >= self.num_it:
            raise CancelFitException()

    def before_validate(self) -> None:
        """Skip validation."""
        raise CancelValidException()

    def after_fit(self) -> None:
        """Restore the snapshot (also after an error or interrupt)."""
        learn, saved = self.learn, getattr(self, "_saved", None)
        super().after_fit()
        if saved is None:
            return
        learn.opt.zero_grad(set_to_none=True)
        learn.model.load_state_dict(saved["model"])
        learn.opt.load_state_dict(saved["opt"])
        if saved["scaler"] is not None:
            scaler, state = saved["scaler"]
            scaler.load_state_dict(state)
        _load_loader_states(saved["loaders"])
        set_rng_states(saved["rng"])
        del self._saved


def _check_range(start_lr: Any, end_lr: Any, num_it: Any) -> None:
    """Raise a `ValueError` naming the argument unless 0 < start_lr < end_lr (finite) and num_it >= 1."""
    if isinstance(num_it, bool) or not isinstance(num_it, (int, np.integer)) or num_it < 1:
        raise ValueError(
            f"num_it={num_it!r} must be an int >= 1 (the number of batches to try), e.g. num_it=100."
        )
    try:
        lo, hi = np.asarray(start_lr, dtype=float), np.asarray(end_lr, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(
            f"lr_find needs numbers (or one per parameter group): got start_lr={start_lr!r}, end_lr={end_lr!r}."
        ) from None
    if not np.isfinite(lo).all() or (lo <= 0).any():
        raise ValueError(
            f"start_lr={start_lr!r} must be finite and > 0 (the range is exponential), e.g. 1e-7."
        )
    try:
        ordered = bool(np.isfinite(hi).all() and (hi > lo).all())
    except ValueError:  # lists of different lengths
        ordered = False
    if not ordered:
        raise ValueError(
            f"end_lr={end_lr!r} must be finite and greater than start_lr={start_lr!r} (one value per group "
            "when lists), e.g. end_lr=10."
        )


def _nearest_loss(lrs: np.ndarray, losses: np.ndarray, lr: float) -> float:
    return float(losses[int(np.argmin(np.abs(lrs - lr)))])


def minimum(lrs: Any, losses: Any, num_it: int) -> tuple[float, tuple[float, float]]:
    """Suggest a tenth of the lr at the minimum loss; returns `(lr, (x, y) marker)`."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    lr_min = float(lrs[int(np.argmin(losses))])
    return lr_min / 10, (lr_min, _nearest_loss(lrs, losses, lr_min))


def steep(lrs: Any, losses: Any, num_it: int) -> tuple[float, tuple[float, float]]:
    """Suggest the lr where the loss falls fastest against log(lr)."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    if len(lrs) < 2:
        return minimum(lrs, losses, num_it)
    grads = (losses[1:] - losses[:-1]) / (np.log(lrs[1:]) - np.log(lrs[:-1]))
    lr = float(lrs[int(np.argmin(grads))])
    return lr, (lr, _nearest_loss(lrs, losses, lr))


def valley(lrs: Any, losses: Any, num_it: int) -> tuple[float, tuple[float, float]]:
    """Suggest the lr about half-way down the longest decreasing stretch of the loss curve."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx]), (float(lrs[idx]), float(losses[idx]))


def slide(
    lrs: Any, losses: Any, num_it: int, lr_diff: int = 15, thresh: float = 0.005, adjust_value: float = 1.0
) -> tuple[float, tuple[float, float]]:
    """Suggest the lr where the loss gradient stops changing, scanning from the right (short runs are fine)."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    if len(losses) < 3:
        return minimum(lrs, losses, num_it)
    lr_diff = min(lr_diff, len(losses) - 1)
    loss_grad = np.gradient(losses)
    r_idx, l_idx = -1, -1 - lr_diff
    local_min_lr = lrs[l_idx]
    while l_idx >= -len(losses) and abs(loss_grad[r_idx] - loss_grad[l_idx]) > thresh:
        local_min_lr = lrs[l_idx]
        r_idx -= 1
        l_idx -= 1
    suggestion = float(local_min_lr) * adjust_value
    y = float(np.interp(np.log10(suggestion), np.log10(lrs), losses))
    return suggestion, (suggestion, y)


def SuggestedLRs(names: Sequence[str], values: Sequence[float]) -> tuple:  # noqa: N802
    """Return a namedtuple `SuggestedLRs` with one field per suggestion function name."""
    cls = cast(Any, namedtuple("SuggestedLRs", list(names)))  # field names known only at run time
    return cls(*values)


def suggest(
    lrs: Sequence[float], losses: Sequence[float], num_it: int, funcs: Sequence[Callable]
) -> tuple[tuple, list[tuple[float, float]]]:
    """Apply suggestion `funcs` to the recorded curve: skip the first tenth and last 5 points, cut at non-finite."""
    lrs_a, losses_a = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    cut = np.flatnonzero(~np.isfinite(losses_a))
    if len(cut):
        lrs_a, losses_a = lrs_a[: cut[0]], losses_a[: cut[0]]
    lo, hi = num_it // 10, len(losses_a) - 5
    if hi - lo >= 3:  # enough points after trimming; short (diverged) runs use all finite points
        lrs_a, losses_a = lrs_a[lo:hi], losses_a[lo:hi]
    if len(losses_a) == 0:
        nan = float("nan")
        return SuggestedLRs([_fname(f) for f in funcs], [nan] * len(funcs)), [(nan, nan)] * len(funcs)
    res = [f(lrs_a, losses_a, num_it) for f in funcs]
    return SuggestedLRs([_fname(f) for f in funcs], [r[0] for r in res]), [r[1] for r in res]


def _fname(f: Callable) -> str:
    while isinstance(f, partial):
        f = f.func
    return getattr(f, "__name__", type(f).__name__)


def _never_improved(losses: Sequence[float]) -> bool:
    """True when the finite start of the smoothed-loss curve is empty or lowest at its first point."""
    losses_a = np.asarray(losses, dtype=float)
    bad = np.flatnonzero(~np.isfinite(losses_a))
    finite = losses_a[: bad[0]] if len(bad) else losses_a
    return len(finite) == 0 or int(np.argmin(finite)) == 0


def _group_lrs(opt: Any) -> Any:
    """The per-group lrs: a float when all groups agree (cheaper to schedule), else a numpy array."""
    lrs = get_hyper(opt, "lr")
    return float(lrs[0]) if len(set(lrs)) == 1 else np.array(lrs, dtype=float)


# The fit policies. `Learner` methods of the same names delegate here; their defaults live there only.
def _set_lrs(learn: Any, lr: Any, name: str = "lr_max") -> Any:
    """Spread `lr` (number, slice or list; None: `learn.lr`) over the groups and return the per-group lrs."""
    check_lr(learn.lr if lr is None else lr, "learn.lr" if lr is None else name)
    if learn.opt is None:
        learn.create_opt()
    set_hyper(learn.opt, "lr", learn.lr if lr is None else lr)
    return _group_lrs(learn.opt)


def _fit_scheduled(
    learn: Any, n_epoch: int, scheds: dict, cbs: Any, reset_opt: bool, wd: Any, start_epoch: int
) -> None:
    learn.fit(
        n_epoch,
        cbs=[ParamScheduler(scheds), *listify(cbs)],
        reset_opt=reset_opt,
        wd=wd,
        start_epoch=start_epoch,
    )


def fit_one_cycle(
    learn: Any,
    n_epoch: int,
    lr_max: Any,
    div: float,
    div_final: float,
    pct_start: float,
    wd: float | None,
    moms: Sequence[float] | None,
    cbs: Any,
    reset_opt: bool,
    start_epoch: int,
) -> None:
    """Fit with the 1cycle policy: lr cosine up from `lr_max/div` then down to `lr_max/div_final`, moms inverse."""
    lr_max = _set_lrs(learn, lr_max)
    moms = learn.moms if moms is None else moms
    scheds = {
        "lr": combined_cos(pct_start, lr_max / div, lr_max, lr_max / div_final),
        "mom": combined_cos(pct_start, *moms),
    }
    _fit_scheduled(learn, n_epoch, scheds, cbs, reset_opt, wd, start_epoch)


def fit_flat_cos(
    learn: Any,
    n_epoch: int,
    lr: Any,
    div_final: float,
    pct_start: float,
    wd: float | None,
    cbs: Any,
    reset_opt: bool,
    start_epoch: int,
) -> None:
    """Fit at a flat lr for `pct_start` of the batches, then cosine-anneal to `lr/div_final`."""
    lr = _set_lrs(learn, lr, "lr")
    _fit_scheduled(
        learn,
        n_epoch,
        {"lr": combined_cos(pct_start, lr, lr, lr / div_final)},
        cbs,
        reset_opt,
        wd,
        start_epoch,
    )


def fit_sgdr(
    learn: Any,
    n_cycles: int,
    cycle_len: int,
    lr_max: Any,
    cycle_mult: int,
    cbs: Any,
    reset_opt: bool,
    wd: float | None,
    start_epoch: int,
) -> None:
    """Fit with cosine annealing warm restarts: `n_cycles` cycles, the first `cycle_len` epochs, each `cycle_mult` x longer."""
    lr_max = _set_lrs(learn, lr_max)
    lens = [cycle_len * cycle_mult**i for i in range(n_cycles)]
    n_epoch = sum(lens)
    scheds = {"lr": combine_scheds([n / n_epoch for n in lens], [SchedCos(lr_max, 0) for _ in lens])}
    _fit_scheduled(learn, n_epoch, scheds, cbs, reset_opt, wd, start_epoch)


def fine_tune(
    learn: Any,
    epochs: int,
    base_lr: float,
    freeze_epochs: int,
    lr_mult: float,
    pct_start: float,
    div: float,
    **kwargs: Any,
) -> None:
    """Fine-tune a pretrained model: train the head frozen, then everything with discriminative lrs."""
    check_lr(base_lr, "base_lr")
    check_n_epoch(epochs, "epochs")
    check_n_epoch(freeze_epochs, "freeze_epochs")
    learn.freeze()
    learn.fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99, **kwargs)
    base_lr /= 2
    learn.unfreeze()
    learn.fit_one_cycle(epochs, slice(base_lr / lr_mult, base_lr), pct_start=pct_start, div=div, **kwargs)


def lr_finder(learn: Any, start_lr: Any, end_lr: Any, num_it: int, stop_div: bool) -> tuple[LRFinder, int]:
    """Check the arguments and the learner for `Learner.lr_find`; return the `LRFinder` and the epochs to run."""
    if getattr(learn, "recorder", None) is None:
        raise RuntimeError("lr_find reads the losses from `learn.recorder`; add a Recorder() callback.")
    _check_range(start_lr, end_lr, num_it)
    check_train_batches(learn.dls)
    # under DDP each process runs its shard of the batches
    n_iter = max(1, len(learn.dls.train) // num_distrib())
    return LRFinder(start_lr, end_lr, num_it, stop_div), num_it // n_iter + 1


def lr_find_result(
    learn: Any,
    finder: LRFinder,
    start_lr: Any,
    show_plot: bool,
    suggest_funcs: Sequence[Callable] | Callable | None,
) -> tuple | None:
    """Return the suggestions (`SuggestedLRs`) from the curve `finder` recorded, and plot it if `show_plot`."""
    if suggest_funcs is None:
        return None
    funcs = [suggest_funcs] if callable(suggest_funcs) else list(suggest_funcs)
    rec = learn.recorder
    if finder.diverged and _never_improved(rec.losses):
        warnings.warn(
            f"lr_find: the loss diverged from the first step (start_lr={start_lr}) and never went down, so there "
            "is no learning rate to suggest (every field is nan). Check the model, the loss and the data (e.g. "
            "targets matching the loss, normalised inputs), or pass a smaller start_lr.",
            stacklevel=3,
        )
        if show_plot:
            rec.plot_lr_find()
        return SuggestedLRs([_fname(f) for f in funcs], [float("nan")] * len(funcs))
    sugg, points = suggest(rec.lrs, rec.losses, finder.num_it, funcs)
    if show_plot:
        rec.plot_lr_find(suggestions=sugg, points=points)
    return sugg
