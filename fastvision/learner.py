"""`Learner`: the training loop and its events, fit policies, freezing, inference and checkpoints.

The loop (fastai's; `learn.show_training_loop()` prints it): `fit` fires `before_fit`, then per epoch
a train and a validation phase, each a loop of batches. A `Cancel*Exception` raised by a callback is
caught at its own level only, then `after_cancel_<level>` and `after_<level>` fire. Any other
exception from a callback is re-raised naming the callback and event; `after_fit` still fires so
callbacks can restore what they changed.

`learn.run_mode` (a `RunMode`: fit, validate, predict or lr_find; None between runs) says what is running,
and `learn.is_fitting` whether it is a real fit. `evaluate` is the one evaluation pass that `validate`,
`get_preds`, `predict`, `tta`, interpretation and `summary` run. Only this module touches the loop's
private state; callbacks and the other modules use public methods (`resume_at`, `prepare_device`, ...).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from fastcore.meta import delegates
from torch import nn

from . import checkpoint, distributed, inference, setup_checks, summary
from .callback import schedule
from .callback.core import (
    Callback,
    CallbackHost,
    CancelBackwardException,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelStepException,
    CancelTrainException,
    CancelValidException,
    RunMode,
    TrainEvalCallback,
)
from .callback.fp16 import ChannelsLast, MixedPrecision
from .callback.progress import ProgressCallback, _noop
from .callback.recorder import Recorder
from .callback.resume import resume_callbacks, warn_interrupted
from .callback.tracker import TerminateOnNaNCallback
from .metrics import AvgMetric
from .optimizer import DEFAULT_LR, Adam, build_optimizer, freeze_groups, set_hyper, trainable_params
from .utils import listify, to_device

__all__ = ["Learner", "RunMode", "default_callbacks"]

# Loop state put back after a validate/get_preds called from inside a running fit (e.g. by a callback).
_LOOP_STATE = (
    "dl xb yb pred loss loss_grad iter n_iter training epoch train_iter pct_train final_record".split()
)


def default_callbacks() -> list[Callback]:
    """Return the callbacks every Learner gets by default: Recorder, ProgressCallback, TerminateOnNaNCallback."""
    return [Recorder(), ProgressCallback(), TerminateOnNaNCallback()]


# One instance each at most: adding another replaces the current one (for the block, with `added_cbs`).
_UNIQUE_CBS = (
    TrainEvalCallback,
    Recorder,
    ProgressCallback,
    TerminateOnNaNCallback,
    MixedPrecision,
    ChannelsLast,
)


class Learner(CallbackHost):
    """Group data, model, loss and optimizer, and train them with callbacks.

    Args:
        dls: `DataLoaders`, or any object with `.train`/`.valid` iterables of tuples; batches go to
            `dls.device` (else the model's) and split into `xb = b[:n_inp]`, `yb = b[n_inp:]` (n_inp 1).
        model: any `nn.Module`.
        loss_func: any loss; None takes `dls.loss_func`.
        opt_func: `Adam` (default), `SGD`, or any `torch.optim` class/factory, called `opt_func(groups, lr=lr)`.
        lr: default learning rate (1e-3).
        splitter: `model -> parameter groups` (default: one group).
        cbs: extra callbacks (a `Recorder`, `ProgressCallback`... replaces the default one).
        metrics: `Metric`s, classes, or functions (wrapped in `AvgMetric`).
        path: checkpoints go to `path/model_dir` (default `dls.path`, else '.').
        model_dir: the checkpoint folder under `path` ('models').
        wd: weight decay of every fit (None keeps the optimizer's, 0.01 for `Adam`).
        wd_bn_bias: also decay norm-layer parameters and biases (False).
        train_bn: norm layers train in frozen groups (True).
        moms: one-cycle momentum (0.95, 0.85, 0.95).
        default_cbs: add `Recorder`, `ProgressCallback`, `TerminateOnNaNCallback` (`TrainEvalCallback`,
            which the loop needs, is always there).
    """

    unique_cbs = _UNIQUE_CBS
    # the running pass and batch (None outside them)
    dl: Any
    n_iter: int | None
    loss_grad: Any
    # set by `vision_learner` (fastai's attributes); other learners have none of them
    arch: str
    normalize: bool
    n_out: int
    pretrained: bool

    def __init__(
        self,
        dls: Any,
        model: nn.Module,
        loss_func: Callable[..., torch.Tensor] | None = None,
        opt_func: Callable[..., torch.optim.Optimizer] = Adam,
        lr: float = DEFAULT_LR,
        splitter: Callable[[nn.Module], Any] = trainable_params,
        cbs: Any = None,
        metrics: Any = None,
        path: str | Path | None = None,
        model_dir: str | Path = "models",
        wd: float | None = None,
        wd_bn_bias: bool = False,
        train_bn: bool = True,
        moms: tuple[float, float, float] = (0.95, 0.85, 0.95),
        default_cbs: bool = True,
    ) -> None:
        loss_func = setup_checks.check_learner_args(dls, model, loss_func, opt_func)
        setup_checks.check_lr(lr)
        setup_checks.warn_model_loss_mismatch(dls, model, loss_func)
        self.dls, self.model, self.loss_func = dls, model, loss_func
        self.opt_func, self.lr, self.splitter = opt_func, lr, splitter
        self.path = Path(path if path is not None else getattr(dls, "path", "."))
        self.model_dir = Path(model_dir)
        self.wd, self.wd_bn_bias, self.train_bn, self.moms = wd, wd_bn_bias, train_bn, moms
        self.metrics = metrics
        self.opt: torch.optim.Optimizer | None = None
        self.logger: Callable[..., Any] = print
        self.autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
        self.scaler: Any = None
        self.run_mode: RunMode | None = None  # what is running (None between runs)
        self.epoch, self.n_epoch, self.iter, self.n_iter, self.train_iter, self.pct_train = 0, 1, 0, 0, 0, 0.0
        self.training, self.dl = False, None
        self.xb, self.yb = (), ()  # tuples: inputs and targets of the current batch
        self.pred = self.loss = self.loss_grad = self.smooth_loss = self.final_record = None
        self._device: torch.device | None = None
        self._groups: list[list[nn.Parameter]] = []
        self._force_train: set[int] = set()
        self.frozen_idx, self._start_epoch, self._first_iter = 0, 0, 0  # set by fit and `resume_at`
        self._init_callbacks()
        self.add_cb(TrainEvalCallback())
        cbs = [c() if isinstance(c, type) else c for c in listify(cbs)]
        if default_cbs:  # a passed Recorder (ProgressCallback...) replaces the default one
            passed = {type(c) for c in cbs}
            self.add_cbs([c for c in default_callbacks() if type(c) not in passed])
        self.add_cbs(cbs)
        self("after_create")

    @property
    def metrics(self) -> list[Any]:
        """The metrics (each with `reset`, `accumulate(learn)`, `value`, `name`)."""
        return self._metrics

    @metrics.setter
    def metrics(self, ms: Any) -> None:
        out = []
        for m in listify(ms):
            if isinstance(m, type):
                m = m()
            elif not hasattr(m, "accumulate"):
                m = AvgMetric(m)
            out.append(m)
        self._metrics = out

    @contextlib.contextmanager
    def no_logging(self) -> Iterator[Learner]:
        """Silence the per-epoch table (and the bars) for the duration of the block."""
        old, self.logger = self.logger, _noop
        try:
            yield self
        finally:
            self.logger = old

    def no_bar(self) -> contextlib.AbstractContextManager:
        """Remove the progress bars for the duration of the block."""
        return self.removed_cbs([c for c in self.cbs if isinstance(c, ProgressCallback)])

    @property
    def is_fitting(self) -> bool:
        """True while a real fit runs (`run_mode` is `RunMode.FIT`): not in lr_find, validate or get_preds."""
        return self.run_mode is RunMode.FIT

    @property
    def device(self) -> torch.device | None:
        """The device batches are moved to (the model's, after `prepare_device`); None before the first run."""
        return self._device

    @contextlib.contextmanager
    def _running(self, mode: RunMode) -> Iterator[Learner]:
        saved = {k: getattr(self, k) for k in _LOOP_STATE} if self.run_mode is not None else None
        was_training = self.model.training
        old_mode, self.run_mode = self.run_mode, mode
        try:
            yield self
        finally:
            self.run_mode = old_mode
            if saved is not None:  # nested inside a running fit: put the outer loop's state back
                for k, v in saved.items():
                    setattr(self, k, v)
                self.model.train(was_training)

    def loss_not_reduced(self) -> contextlib.AbstractContextManager:
        """Make `loss_func` return one loss per item (`reduction='none'`) for the duration of the block."""
        return inference.loss_not_reduced(self)

    def prepare_device(self) -> None:
        """Move the model (and a module loss) to `dls.device` when set; batches then go to the model's device."""
        dev = getattr(self.dls, "device", None)
        if dev is not None:
            self.model.to(dev)
            if isinstance(self.loss_func, nn.Module):
                self.loss_func.to(dev)
        p = next(self.model.parameters(), None)
        self._device = p.device if p is not None else (torch.device(dev) if dev is not None else None)

    def create_opt(self) -> torch.optim.Optimizer:
        """Build the optimizer: one logical group per splitter group, no weight decay on norm params and biases."""
        self.prepare_device()
        self.opt, self._groups, self._force_train = build_optimizer(
            self.model, self.splitter, self.opt_func, self.lr, self.wd_bn_bias, self.train_bn
        )
        return self.opt

    @property
    def _opt(self) -> torch.optim.Optimizer:
        """The optimizer, which `fit` builds before the first batch."""
        if self.opt is None:
            raise RuntimeError("The learner has no optimizer yet: call learn.create_opt() (fit does).")
        return self.opt

    def freeze_to(self, n: int) -> None:
        """Freeze parameter groups `[:n]` (negative counts from the end); norm layers train if `train_bn`.

        Like fastai, this clears the optimizer state (Adam moments restart).
        """
        opt = self.opt if self.opt is not None else self.create_opt()
        freeze_groups(self._groups, n, self._force_train)
        self.frozen_idx = n if n >= 0 else max(len(self._groups) + n, 0)
        opt.state.clear()

    def freeze(self) -> None:
        """Freeze every parameter group but the last (the head); warns when there is only one group."""
        if self.opt is None:
            self.create_opt()
        if len(self._groups) < 2:
            msg = "freeze() does nothing: the model has one parameter group. Pass a `splitter` returning"
            warnings.warn(f"{msg} [body_params, head_params] (vision_learner does this).", stacklevel=2)
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        """Make every parameter group trainable (clears the optimizer state)."""
        self.freeze_to(0)

    def _with_events(self, f: Callable[[], None], name: str, exc: type[Exception]) -> None:
        try:
            self(f"before_{name}")
            f()
        except exc:
            self(f"after_cancel_{name}")
        self(f"after_{name}")

    def _run(self, body: Callable[[], None]) -> None:
        """The `fit` level: `after_fit` fires after a cancel, a normal end, and also after an error."""
        try:
            self("before_fit")
            body()
        except CancelFitException:
            self("after_cancel_fit")
        except BaseException as e:
            try:
                self("after_fit")
            except Exception as cleanup_error:
                warnings.warn(f"after_fit failed while handling another error: {cleanup_error}", stacklevel=2)
            self._end_cleanup()
            warn_interrupted(self, e)
            raise
        self("after_fit")
        self._end_cleanup()

    def _end_cleanup(self) -> None:  # keeps `loss` (the last batch's) for inspection
        self.dl, self.xb, self.yb, self.pred, self.loss_grad = None, (), (), None, None

    def _do_fit(self) -> None:
        for epoch in range(self._start_epoch, self.n_epoch):
            self.epoch = epoch
            self._with_events(self._do_epoch, "epoch", CancelEpochException)

    def _set_dl(self, dl: Any) -> None:
        """Make `dl` the current loader and set `n_iter` before `before_train`/`before_validate` fire."""
        self.dl = dl
        try:
            self.n_iter = len(dl)
        except TypeError:
            self.n_iter = None

    def _do_epoch(self) -> None:
        self._set_dl(self.dls.train)
        self._with_events(self._all_batches, "train", CancelTrainException)
        self._do_epoch_validate(self.dls.valid)

    def _do_epoch_validate(self, dl: Any) -> None:
        self._set_dl(dl)
        with torch.no_grad():
            self._with_events(self._all_batches, "validate", CancelValidException)

    def _all_batches(self) -> None:
        dl = self.dl
        n_inp = getattr(dl, "n_inp", None) or getattr(self.dls, "n_inp", None) or 1
        first, self._first_iter = self._first_iter, 0
        for i, b in enumerate(dl, first):
            self.iter = i
            b = self._to_device(setup_checks.batch_as_tuple(b))
            self.xb, self.yb = tuple(b[:n_inp]), tuple(b[n_inp:])
            self._with_events(self._do_one_batch, "batch", CancelBatchException)

    def _to_device(self, b: Any) -> Any:
        return to_device(b, self._device, non_blocking=True)

    def _do_one_batch(self) -> None:
        with self.autocast():
            try:
                self.pred = self.model(*self.xb)
            except RuntimeError as e:
                if isinstance(e, torch.OutOfMemoryError):
                    raise
                err = setup_checks.input_dtype_error(self.xb, e)
                if err is None:
                    raise
                raise err from e
            self("after_pred")
            if self.yb:
                try:
                    self.loss_grad = self.loss_func(self.pred, *self.yb)
                except (ValueError, RuntimeError) as e:
                    if isinstance(e, torch.OutOfMemoryError):
                        raise
                    raise setup_checks.loss_error(self.loss_func, self.pred, self.yb, e) from e
                self.loss = self.loss_grad.detach()
            else:
                self.loss_grad = self.loss = None
        self("after_loss")
        if not self.training:
            return
        if self.loss_grad is None:  # no target, and no callback computed a loss
            raise setup_checks.no_target_error(self.xb, len(self.xb))
        self._with_events(self._do_backward, "backward", CancelBackwardException)
        self._with_events(self._do_step, "step", CancelStepException)
        self._opt.zero_grad(set_to_none=True)

    def _do_backward(self) -> None:
        loss = self.loss_grad if self.scaler is None else self.scaler.scale(self.loss_grad)
        loss.backward()

    def _do_step(self) -> None:
        if self.scaler is None:
            self._opt.step()
            return
        self.scaler.step(self._opt)
        self.scaler.update()

    def evaluate(self, dl: Any, cbs: Any = None, run_mode: RunMode = RunMode.VALIDATE) -> list[Any] | None:
        """Run one validation pass over `dl` (no gradients, eval mode, no logging or bars); return `final_record`.

        The events are `before_fit`, `before_epoch`, the validation phase, `after_epoch`, `after_fit`.
        Called from inside a running fit (e.g. by a callback), the fit's loop state is put back afterwards.

        Args:
            dl: any iterable of batches (tuples: inputs first, then targets if any).
            cbs: callbacks added for this pass only.
            run_mode: `RunMode.VALIDATE` (default) or `RunMode.PREDICT`, as `learn.run_mode` during the pass.
        """
        if run_mode.trains:
            raise ValueError(
                f"evaluate runs no training; got run_mode={run_mode!r}, expected VALIDATE or PREDICT."
            )
        with self.added_cbs(cbs), self.no_logging(), self.no_bar(), self._running(run_mode):
            self.prepare_device()
            validate = lambda: self._do_epoch_validate(dl)  # noqa: E731
            self._run(lambda: self._with_events(validate, "epoch", CancelEpochException))
            return self.final_record

    def resume_at(self, epoch: int, iter: int = 0, train_iter: int | None = None) -> None:
        """Make the fit that is starting continue at batch `iter` of `epoch` (call it in a callback's `before_fit`).

        The loop runs epochs `epoch..n_epoch-1`; the first training phase numbers its batches from `iter`
        (the loader, restored with its `load_state_dict`, yields the remaining ones). `train_iter`: the
        training batches of the fit already done (default `epoch * n_iter + iter`).
        """
        if not self.is_fitting:
            raise RuntimeError("resume_at moves a running fit: call it from a callback's before_fit, in fit.")
        if train_iter is None:
            train_iter = epoch * len(self.dls.train) + iter
        self.epoch, self._start_epoch, self._first_iter, self.train_iter = epoch, epoch, iter, train_iter

    def fit(
        self,
        n_epoch: int,
        lr: Any = None,
        wd: float | None = None,
        cbs: Any = None,
        reset_opt: bool = False,
        start_epoch: int = 0,
        resume: str | Path | bool | None = None,
    ) -> None:
        """Train for `n_epoch` epochs at a constant lr (`self.lr` if None; a slice spreads it over groups).

        Args:
            wd: weight decay (None: `self.wd`, else the optimizer's own).
            cbs: callbacks added for this fit only.
            reset_opt: rebuild the optimizer (drop its state) first.
            start_epoch: skip epochs before it (resume); schedules still count them.
            resume: a `ResumableCheckpoint` file (True: the newest) to continue exactly (callback/resume.py).
        """
        setup_checks.check_n_epoch(n_epoch)
        setup_checks.check_lr(self.lr if lr is None else lr, "learn.lr" if lr is None else "lr")
        if not 0 <= start_epoch <= n_epoch:
            raise ValueError(f"start_epoch={start_epoch} must be between 0 and n_epoch={n_epoch}.")
        if start_epoch < n_epoch:
            setup_checks.check_train_batches(self.dls)
        cbs = [*listify(cbs), *distributed.auto_callbacks(self), *resume_callbacks(resume)]
        self._fit(n_epoch, lr, wd, cbs, reset_opt, start_epoch, RunMode.FIT)

    def _fit(
        self,
        n_epoch: int,
        lr: Any,
        wd: float | None,
        cbs: list,
        reset_opt: bool,
        start_epoch: int,
        mode: RunMode,
    ) -> None:
        with self.added_cbs(cbs), self._running(mode):
            if reset_opt or self.opt is None:
                self.create_opt()
            else:
                self.prepare_device()
            wd = self.wd if wd is None else wd
            if wd is not None:
                set_hyper(self._opt, "wd", wd)
            set_hyper(self._opt, "lr", self.lr if lr is None else lr)
            self.n_epoch, self._start_epoch = n_epoch, start_epoch
            self._run(self._do_fit)

    def fit_one_cycle(
        self,
        n_epoch: int,
        lr_max: Any = None,
        div: float = 25.0,
        div_final: float = 1e5,
        pct_start: float = 0.25,
        wd: float | None = None,
        moms: tuple[float, float, float] | None = None,
        cbs: Any = None,
        reset_opt: bool = False,
        start_epoch: int = 0,
        resume: str | Path | bool | None = None,
    ) -> None:
        """Train with the 1cycle policy: lr from `lr_max/div` up to `lr_max` (cosine, first `pct_start`), then
        down to `lr_max/div_final`; momentum `moms` (default `self.moms`) goes the opposite way. `resume`: as `fit`."""
        cbs = [*listify(cbs), *resume_callbacks(resume)]
        schedule.fit_one_cycle(
            self, n_epoch, lr_max, div, div_final, pct_start, wd, moms, cbs, reset_opt, start_epoch
        )

    def fit_flat_cos(
        self,
        n_epoch: int,
        lr: Any = None,
        div_final: float = 1e5,
        pct_start: float = 0.75,
        wd: float | None = None,
        cbs: Any = None,
        reset_opt: bool = False,
        start_epoch: int = 0,
    ) -> None:
        """Train at a flat lr for `pct_start` of the batches, then cosine-anneal it to `lr/div_final`."""
        schedule.fit_flat_cos(self, n_epoch, lr, div_final, pct_start, wd, cbs, reset_opt, start_epoch)

    def fit_sgdr(
        self,
        n_cycles: int,
        cycle_len: int,
        lr_max: Any = None,
        cycle_mult: int = 2,
        cbs: Any = None,
        reset_opt: bool = False,
        wd: float | None = None,
        start_epoch: int = 0,
    ) -> None:
        """Train with cosine annealing and warm restarts (cycle i lasts `cycle_len * cycle_mult**i` epochs)."""
        schedule.fit_sgdr(self, n_cycles, cycle_len, lr_max, cycle_mult, cbs, reset_opt, wd, start_epoch)

    @delegates(fit_one_cycle, but=["lr_max", "pct_start", "div"])
    def fine_tune(
        self,
        epochs: int,
        base_lr: float = 2e-3,
        freeze_epochs: int = 1,
        lr_mult: float = 100,
        pct_start: float = 0.3,
        div: float = 5.0,
        **kwargs: Any,
    ) -> None:
        """Fine-tune: `freeze()` and one-cycle `freeze_epochs` at `slice(base_lr)` (pct_start 0.99); then
        `unfreeze()` and one-cycle `epochs` at `slice(base_lr/2/lr_mult, base_lr/2)`. kwargs go to both fits."""
        schedule.fine_tune(self, epochs, base_lr, freeze_epochs, lr_mult, pct_start, div, **kwargs)

    def lr_find(
        self,
        start_lr: Any = 1e-7,
        end_lr: Any = 10,
        num_it: int = 100,
        stop_div: bool = True,
        show_plot: bool = True,
        suggest_funcs: Any = (schedule.valley,),
    ) -> Any:
        """Run the lr range test, restore weights/optimizer/RNG exactly, and return `SuggestedLRs`.

        It trains like `fit` (with `run_mode` `RunMode.LR_FIND`: trackers, loggers and checkpoints stay off)
        with an `LRFinder`, which puts every state back afterwards, so a later `fit` trains as if it never ran.
        """
        finder, n_epoch = schedule.lr_finder(self, start_lr, end_lr, num_it, stop_div)
        cbs = [finder, *distributed.auto_callbacks(self)]
        with self.no_logging():
            self._fit(n_epoch, None, None, cbs, False, 0, RunMode.LR_FIND)
        return schedule.lr_find_result(self, finder, start_lr, show_plot, suggest_funcs)

    def validate(self, ds_idx: int = 1, dl: Any = None, cbs: Any = None) -> list[Any]:
        """Return `[valid_loss, *metrics]` on `dls[ds_idx]` (or `dl`), without logging or bars."""
        return inference.validate(self, ds_idx, dl, cbs)

    def get_preds(
        self,
        ds_idx: int = 1,
        dl: Any = None,
        with_input: bool = False,
        with_decoded: bool = False,
        with_loss: bool = False,
        act: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cbs: Any = None,
    ) -> tuple[Any, ...]:
        """Return `([inputs], preds, targets, [decoded], [losses])` for `dls[ds_idx]` or `dl`, in dataset order.

        `act` defaults to the loss's activation (softmax for cross entropy, sigmoid for BCE-with-logits,
        `loss_func.activation` if defined, identity otherwise); `decoded` to its decodes (argmax / > 0.5).
        """
        return inference.get_preds(self, ds_idx, dl, with_input, with_decoded, with_loss, act, cbs)

    def predict(self, item: Any) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Return `(decoded label, decoded index tensor, probabilities)` for one item (via `dls.test_dl`)."""
        return inference.predict(self, item)

    def tta(
        self, ds_idx: int = 1, dl: Any = None, n: int = 4, beta: float | None = 0.25, use_max: bool = False
    ) -> tuple[Any, Any]:
        """Return `(preds, targets)` averaging `n` passes with training augmentation and one plain pass."""
        return inference.tta(self, ds_idx, dl, n, beta, use_max)

    def show_results(self, ds_idx: int = 1, max_n: int = 9, **kwargs: Any) -> Any:
        """Show a grid of images titled 'pred/actual', green when right and red when wrong."""
        return inference.show_results(self, ds_idx, max_n, **kwargs)

    def summary(self) -> str:
        """Return the layer table, parameter counts, optimizer, loss, frozen state and callbacks (print it)."""
        return summary.learner_summary(self)

    def to_fp16(self, **kwargs: Any) -> Learner:
        """Train with float16 autocast and loss scaling (adds `MixedPrecision(**kwargs)`)."""
        self.remove_cb(MixedPrecision)
        return self.add_cb(MixedPrecision(**kwargs))

    def to_bf16(self) -> Learner:
        """Train with bfloat16 autocast (adds `MixedPrecision(amp_mode='bf16')`)."""
        return self.to_fp16(amp_mode="bf16")

    def to_channels_last(self) -> Learner:
        """Train in the channels-last memory format (adds `ChannelsLast`; faster convolutions with AMP on GPUs)."""
        return self.remove_cb(ChannelsLast).add_cb(ChannelsLast())

    def compile(self, **kwargs: Any) -> Learner:
        """Compile the model in place (`model.compile(**kwargs)`): the same module, state-dict keys and freezing."""
        self.model.compile(**kwargs)
        return self

    def distrib_ctx(self, sync_bn: bool = True, **ddp_kwargs: Any) -> contextlib.AbstractContextManager:
        """Train with DDP in the block when torchrun started several processes (no-op otherwise); see distributed.py."""
        return distributed.distrib_ctx(self, sync_bn, **ddp_kwargs)

    def to_fp32(self) -> Learner:
        """Go back to full precision (removes `MixedPrecision`)."""
        return self.remove_cb(MixedPrecision)

    def save(self, name: str | Path, with_opt: bool = True) -> Path:
        """Write the model (and optimizer) state dicts to `path/model_dir/name.pth`, atomically; return the file."""
        return checkpoint.save_checkpoint(self._file(name), self.model, self.opt if with_opt else None)

    def load(
        self, name: str | Path, device: Any = None, with_opt: bool = True, strict: bool | str = True
    ) -> Learner:
        """Load a `save`d checkpoint (`weights_only=True`), or the weights of an export (its `.json`) to train
        further; `strict='head'` re-initialises a mismatched head (e.g. other classes)."""
        if str(name).endswith((".json", ".safetensors")):
            return self._load_export(name, strict)
        if self.opt is None:
            self.create_opt()
        device = getattr(self.dls, "device", None) if device is None else device
        checkpoint.load_checkpoint(self._file(name), self.model, self.opt, device, with_opt, strict)
        return self

    def _load_export(self, name: str | Path, strict: bool | str) -> Learner:
        """Load an export's weights (no optimizer state); refuse another vocab unless `strict='head'`."""
        from .export import export_weights

        weights, desc = export_weights(name)
        theirs, ours = desc.get("vocab"), getattr(self.dls, "vocab", None)
        if strict is True and theirs is not None and ours is not None and list(theirs) != list(ours):
            raise ValueError(
                f"{Path(name).name} was trained for the classes {_few(theirs)} and these DataLoaders have "
                f"{_few(ours)}: its head would give the wrong names. Pass strict='head' to keep its body and "
                "train a new head for these classes."
            )
        # stacklevel 4: a new head's warning names the line that called learn.load
        checkpoint.load_weights(self.model, weights, strict, stacklevel=4)
        return self

    def export(self, fname: str | Path = "export", model_kwargs: dict | None = None) -> Path:
        """Write pickle-free `<fname>.json` + `<fname>.<hash>.safetensors` for `load_learner`; return the JSON path."""
        from .export import export

        return export(self, fname, model_kwargs)

    def _file(self, name: str | Path) -> Path:
        return self.path / self.model_dir / (str(name) if str(name).endswith(".pth") else f"{name}.pth")

    def __repr__(self) -> str:
        return f"Learner(model={type(self.model).__name__}, loss_func={self.loss_func!r}, cbs={self.cbs})"

    def export_onnx(self, fname: str | Path = "export.onnx", **kwargs: Any) -> Path:
        """Write the model as ONNX with its input preprocessing and activation (`fastvision.export.export_onnx`); return the path."""
        from .export import export_onnx

        return export_onnx(self, fname, **kwargs)


def _few(names: Sequence[Any], n: int = 6) -> str:
    """`[a, b, ...]` for error messages: the first `n` names and how many more."""
    shown = ", ".join(repr(str(x)) for x in list(names)[:n])
    return f"[{shown}{f', ... ({len(names) - n} more)' if len(names) > n else ''}]"
