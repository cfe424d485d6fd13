"""The callback protocol: event names, the run modes, cancellation exceptions and the `Callback` base class."""

from __future__ import annotations

import contextlib
import difflib
import re
import warnings
from collections.abc import Iterator
from enum import Enum
from typing import Any

from ..utils import listify

__all__ = [
    "EVENTS",
    "RunMode",
    "Callback",
    "CancelFitException",
    "CancelEpochException",
    "CancelTrainException",
    "CancelValidException",
    "CancelBatchException",
    "CancelBackwardException",
    "CancelStepException",
    "TrainEvalCallback",
    "CallbackHost",
    "print_training_loop",
]

EVENTS = (
    "after_create before_fit before_epoch before_train before_batch after_pred after_loss "
    "before_backward after_cancel_backward after_backward before_step after_cancel_step after_step "
    "after_cancel_batch after_batch after_cancel_train after_train before_validate after_cancel_validate "
    "after_validate after_cancel_epoch after_epoch after_cancel_fit after_fit"
).split()


class RunMode(str, Enum):
    """What the learner is running; `Learner` sets `learn.run_mode` for the duration of each run (None between runs).

    `FIT` is a training run (`fit` and the fit policies); `LR_FIND` trains too, but only to measure losses
    and is undone afterwards; `VALIDATE` and `PREDICT` (`get_preds`, `predict`, `tta`) run the validation
    phase only. `learn.is_fitting` is True in `FIT` only: trackers, loggers and checkpoints act then.
    """

    FIT = "fit"
    VALIDATE = "validate"
    PREDICT = "predict"
    LR_FIND = "lr_find"

    @property
    def trains(self) -> bool:
        """True for the runs that take optimizer steps: `FIT` and `LR_FIND`."""
        return self in (RunMode.FIT, RunMode.LR_FIND)


class CancelFitException(Exception):
    """Raise in a callback to stop training; `after_cancel_fit` then `after_fit` run."""


class CancelEpochException(Exception):
    """Raise in a callback to skip the rest of the epoch."""


class CancelTrainException(Exception):
    """Raise in a callback to skip the rest of the training phase of this epoch."""


class CancelValidException(Exception):
    """Raise in a callback to skip the rest of the validation phase of this epoch."""


class CancelBatchException(Exception):
    """Raise in a callback to skip the rest of this batch (in `before_step` it also skips zero_grad)."""


class CancelBackwardException(Exception):
    """Raise in `before_backward` to skip the backward pass."""


class CancelStepException(Exception):
    """Raise in `before_step` to skip the optimizer step (zero_grad still runs)."""


def _snake(name: str) -> str:
    s = re.sub(r"Callback$", "", name) or name
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", s)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


class Callback:
    """Base class for training-loop hooks: override any event method; each one here does nothing.

    A callback reads the learner through `self.learn` (`self.learn.model`, `self.learn.opt`,
    `self.learn.loss`...). Reading an attribute the callback lacks falls through to the learner, so
    `self.epoch` works; assignments always stay on the callback (write `self.learn.x = ...` to change
    the learner). A method whose name looks like a misspelled event (`befor_fit`) raises at class
    creation with a "did you mean" hint. Assigning a public attribute the learner has but the callback
    does not (`self.epoch = 3`) warns that it shadows the learner's.

    Class attributes: `order` (callbacks run sorted by it, ties in insertion order), `run_train` and
    `run_valid` (skip the batch events of that phase when False), `run` (set it to False, e.g. in
    `before_fit`, to skip every event until the end of this fit; the learner resets it after `after_fit`).
    """

    order: int = 0
    run: bool = True
    run_train: bool = True
    run_valid: bool = True
    learn: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr, value in vars(cls).items():
            if attr.startswith("_") or attr in EVENTS or not callable(value):
                continue
            head = attr.split("_")[0]
            looks_like_event = difflib.get_close_matches(head, ("before", "after"), n=1, cutoff=0.7)
            close = difflib.get_close_matches(attr, EVENTS, n=1, cutoff=0.8) if looks_like_event else []
            if close:
                raise AttributeError(
                    f"{cls.__name__}.{attr} is not a callback event, so it would never be called. "
                    f"Did you mean `{close[0]}`? Events are: {', '.join(EVENTS)}."
                )

    @property
    def name(self) -> str:
        """Snake-case class name without the `Callback` suffix; the learner attribute it is stored under."""
        return _snake(type(self).__name__)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: fall through to the learner.
        if name != "learn" and not name.startswith("__") and self.learn is not None:
            return getattr(self.learn, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        learn = self.__dict__.get("learn")
        if (
            learn is not None
            and not name.startswith("_")
            and name not in self.__dict__
            and not hasattr(type(self), name)
            and hasattr(learn, name)
        ):
            warnings.warn(
                f"{type(self).__name__} sets `self.{name}`, which shadows `learn.{name}` for this callback; "
                f"write `self.learn.{name} = ...` to change the learner's.",
                stacklevel=2,
            )
        super().__setattr__(name, value)

    def __call__(self, event: str) -> None:
        """Run the method for `event` if this callback should run now."""
        if not self.run:
            return
        learn = self.learn
        training = getattr(learn, "training", True)
        if event in _BATCH_EVENTS and (
            (training and not self.run_train) or (not training and not self.run_valid)
        ):
            return
        getattr(self, event)()

    def __repr__(self) -> str:
        return type(self).__name__

    # Every event, documented no-ops.
    def after_create(self) -> None:
        """After the Learner is constructed."""

    def before_fit(self) -> None:
        """At the start of `fit`, before the first epoch."""

    def before_epoch(self) -> None:
        """At the start of each epoch."""

    def before_train(self) -> None:
        """At the start of the training phase of an epoch."""

    def before_batch(self) -> None:
        """After a batch is drawn (in `learn.xb`, `learn.yb`), before the forward pass."""

    def after_pred(self) -> None:
        """After the forward pass (`learn.pred` is set)."""

    def after_loss(self) -> None:
        """After the loss is computed (`learn.loss`, `learn.loss_grad`)."""

    def before_backward(self) -> None:
        """Before `loss.backward()` (training only)."""

    def after_cancel_backward(self) -> None:
        """When a `CancelBackwardException` was raised."""

    def after_backward(self) -> None:
        """After the backward pass, before the optimizer step."""

    def before_step(self) -> None:
        """Before the optimizer step."""

    def after_cancel_step(self) -> None:
        """When a `CancelStepException` was raised."""

    def after_step(self) -> None:
        """After the optimizer step, before zero_grad."""

    def after_cancel_batch(self) -> None:
        """When a `CancelBatchException` was raised."""

    def after_batch(self) -> None:
        """At the end of every batch (training and validation)."""

    def after_cancel_train(self) -> None:
        """When a `CancelTrainException` was raised."""

    def after_train(self) -> None:
        """At the end of the training phase."""

    def before_validate(self) -> None:
        """At the start of the validation phase."""

    def after_cancel_validate(self) -> None:
        """When a `CancelValidException` was raised."""

    def after_validate(self) -> None:
        """At the end of the validation phase."""

    def after_cancel_epoch(self) -> None:
        """When a `CancelEpochException` was raised."""

    def after_epoch(self) -> None:
        """At the end of each epoch."""

    def after_cancel_fit(self) -> None:
        """When a `CancelFitException` was raised."""

    def after_fit(self) -> None:
        """At the end of `fit`, always (also after an exception)."""


_BATCH_EVENTS = {
    "before_batch",
    "after_pred",
    "after_loss",
    "before_backward",
    "after_cancel_backward",
    "after_backward",
    "before_step",
    "after_cancel_step",
    "after_step",
    "after_cancel_batch",
    "after_batch",
}


class TrainEvalCallback(Callback):
    """Switch the model between train and eval mode and keep `train_iter`, `pct_train` and `training` current.

    Always present on a Learner (the loop depends on it). `pct_train` is computed in closed form,
    `(epoch + iter/n_iter) / n_epoch` before each training batch, so skipped epochs (`start_epoch`)
    count towards schedule positions.
    """

    order = -10
    run_valid = False

    def after_create(self) -> None:
        """Start with `n_epoch = 1`, `training = False`."""
        self.learn.n_epoch, self.learn.training = 1, False

    def before_fit(self) -> None:
        """Reset the counters (for a training run; validate/get_preds leave them alone)."""
        if self.learn.run_mode.trains:
            self.learn.epoch, self.learn.train_iter, self.learn.pct_train = 0, 0, 0.0

    def before_train(self) -> None:
        """Put the model in train mode."""
        self.learn.pct_train = self.learn.epoch / self.learn.n_epoch
        self.learn.training = True
        self.learn.model.train()

    def before_batch(self) -> None:
        """Set `pct_train` to the position of this batch in the whole fit."""
        learn = self.learn
        n_iter = learn.n_iter or 1
        learn.pct_train = (learn.epoch + learn.iter / n_iter) / learn.n_epoch

    def after_batch(self) -> None:
        """Count the training batch and move `pct_train` past it."""
        learn = self.learn
        learn.train_iter += 1
        learn.pct_train = (learn.epoch + (learn.iter + 1) / (learn.n_iter or 1)) / learn.n_epoch

    def before_validate(self) -> None:
        """Put the model in eval mode."""
        self.learn.training = False
        self.learn.model.eval()


_LOOP_OUTLINE = """Start Fit
before_fit
Start Epoch Loop
before_epoch
Start Train
before_train
Start Batch Loop
before_batch after_pred after_loss before_backward after_cancel_backward after_backward before_step
after_cancel_step after_step after_cancel_batch after_batch
End Batch Loop
after_cancel_train after_train
End Train
Start Valid
before_validate
Start Batch Loop
**CBs same as train batch**
End Batch Loop
after_cancel_validate after_validate
End Valid
after_cancel_epoch after_epoch
End Epoch Loop
after_cancel_fit after_fit
End Fit"""


def print_training_loop(event_cbs: dict[str, list[Callback]]) -> None:
    """Print the loop's events, indented by level, each with the callbacks (in run order) implementing it."""
    indent = 0
    for line in _LOOP_OUTLINE.split("\n"):
        if line.startswith("Start"):
            print(" " * indent + line)
            indent += 2
        elif line.startswith("End"):
            indent -= 2
            print(" " * indent + line)
        elif line.startswith("**"):
            print(" " * indent + " - " + line)
        else:
            for event in line.split():
                print(" " * indent + f" - {event:21}: {[type(c).__name__ for c in event_cbs.get(event, [])]}")


_CANCELS = (
    CancelFitException,
    CancelEpochException,
    CancelTrainException,
    CancelValidException,
    CancelBatchException,
    CancelBackwardException,
    CancelStepException,
)


def _wrap_error(e: Exception, cb: Callback, event: str) -> Exception:
    msg = f"Exception occurred in `{type(cb).__name__}` when calling event `{event}`:\n\t{type(e).__name__}: {e}"
    try:
        new = type(e)(msg)
    except Exception:
        new = RuntimeError(msg)
    new._fastvision_wrapped = True  # type: ignore[attr-defined]
    return new


def _implements(cb: Callback, event: str) -> bool:
    if type(cb).__call__ is not Callback.__call__:  # fastai's `VerboseCallback` idiom: it sees every event
        return True
    return getattr(type(cb), event, None) is not getattr(Callback, event) or event in vars(cb)


class CallbackHost:
    """The callback half of `Learner`: keep callbacks sorted by `order`, fire events, add and remove them.

    Each callback is stored as an attribute under `cb.name` (`learn.recorder`). Firing an event calls
    only the callbacks that override it (a callback that overrides `__call__` is called for every
    event). A callback of a class in `unique_cbs` replaces the one of the same class already there
    (for the block only, with `added_cbs`). A non-cancel exception from a callback is re-raised, same
    type when possible, with "Exception occurred in `<Cb>` when calling event `<event>`" and the
    original chained as its cause; `Cancel*Exception`s pass through untouched.
    """

    cbs: list[Callback]
    unique_cbs: tuple[type[Callback], ...] = ()

    def _init_callbacks(self) -> None:
        self.cbs = []
        self._event_cbs: dict[str, list[Callback]] = {e: [] for e in EVENTS}

    def add_cb(self, cb: Callback | type[Callback]) -> Any:
        """Add a callback (an instance, or a class to instantiate); it becomes `learn.<cb.name>`."""
        if isinstance(cb, type):
            cb = cb()
        if not isinstance(cb, Callback):
            raise TypeError(f"Callbacks must subclass fastvision Callback, got {type(cb).__name__}.")
        existing = getattr(self, cb.name, None)
        if existing is not None and not isinstance(existing, Callback):
            raise ValueError(
                f"Callback {type(cb).__name__} would be stored as `learn.{cb.name}`, which is a Learner "
                "attribute; rename the callback class."
            )
        self.remove_cbs(self._displaced_by(cb))
        cb.learn = self
        setattr(self, cb.name, cb)
        self.cbs.append(cb)
        self._sort_cbs()
        return self

    def _displaced_by(self, cb: Callback) -> list[Callback]:
        """The callbacks `cb` replaces: those of its class when that class is in `unique_cbs`."""
        unique = next((u for u in self.unique_cbs if isinstance(cb, u)), None)
        if unique is None:
            return []
        return [c for c in self.cbs if isinstance(c, unique) and c is not cb]

    def add_cbs(self, cbs: Any) -> Any:
        """Add several callbacks."""
        for cb in listify(cbs):
            self.add_cb(cb)
        return self

    def remove_cb(self, cb: Callback | type[Callback]) -> Any:
        """Remove a callback (or every callback of a class)."""
        targets = [c for c in self.cbs if isinstance(c, cb)] if isinstance(cb, type) else [cb]
        for c in targets:
            if c in self.cbs:
                self.cbs.remove(c)
                if getattr(self, c.name, None) is c:
                    delattr(self, c.name)
                c.learn = None
        self._sort_cbs()
        return self

    def remove_cbs(self, cbs: Any) -> Any:
        """Remove several callbacks."""
        for cb in listify(cbs):
            self.remove_cb(cb)
        return self

    @contextlib.contextmanager
    def added_cbs(self, cbs: Any) -> Iterator[Any]:
        """Add `cbs` for the duration of the block."""
        cbs = [c() if isinstance(c, type) else c for c in listify(cbs)]
        displaced = [d for c in cbs for d in self._displaced_by(c)]
        self.add_cbs(cbs)
        try:
            yield self
        finally:
            self.remove_cbs(cbs)
            self.add_cbs([d for d in displaced if d not in self.cbs])

    @contextlib.contextmanager
    def removed_cbs(self, cbs: Any) -> Iterator[Any]:
        """Remove `cbs` for the duration of the block."""
        cbs = [c for c in listify(cbs) if c in self.cbs]
        self.remove_cbs(cbs)
        try:
            yield self
        finally:
            self.add_cbs(cbs)

    def _sort_cbs(self) -> None:
        self.cbs.sort(key=lambda c: c.order)  # stable: ties keep insertion order
        self._event_cbs = {e: [c for c in self.cbs if _implements(c, e)] for e in EVENTS}

    def ordered_cbs(self, event: str) -> list[Callback]:
        """Return the callbacks that implement `event`, in the order they run."""
        self._check_event(event)
        return list(self._event_cbs[event])

    def _check_event(self, event: str) -> None:
        if event not in self._event_cbs:
            close = difflib.get_close_matches(event, EVENTS, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise ValueError(f"{event!r} is not a callback event.{hint} Events are: {', '.join(EVENTS)}.")

    def __call__(self, event: str) -> None:
        """Fire `event` on every callback implementing it."""
        cbs = self._event_cbs.get(event)
        if cbs is None:
            self._check_event(event)  # raises: not an event
            return
        for cb in cbs:
            try:
                cb(event)
            except _CANCELS:
                raise
            except Exception as e:
                if getattr(e, "_fastvision_wrapped", False):
                    raise
                raise _wrap_error(e, cb, event) from e
        if event == "after_fit":
            for cb in self.cbs:
                cb.run = True

    def show_training_loop(self) -> None:
        """Print the loop's events, indented by level, with the callbacks that implement each."""
        print_training_loop(self._event_cbs)
