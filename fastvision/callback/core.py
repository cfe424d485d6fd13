"""The callback protocol: event names, cancellation exceptions and the `Callback` base class."""

from __future__ import annotations

import difflib
import re
from typing import Any

__all__ = [
    "EVENTS",
    "Callback",
    "CancelFitException",
    "CancelEpochException",
    "CancelTrainException",
    "CancelValidException",
    "CancelBatchException",
    "CancelBackwardException",
    "CancelStepException",
]

EVENTS = (
    "after_create before_fit before_epoch before_train before_batch after_pred after_loss "
    "before_backward after_cancel_backward after_backward before_step after_cancel_step after_step "
    "after_cancel_batch after_batch after_cancel_train after_train before_validate after_cancel_validate "
    "after_validate after_cancel_epoch after_epoch after_cancel_fit after_fit"
).split()


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
    creation with a "did you mean" hint.

    Class attributes: `order` (callbacks run sorted by it, ties in insertion order), `run_train` and
    `run_valid` (skip the batch events of that phase when False).
    """

    order: int = 0
    run_train: bool = True
    run_valid: bool = True
    learn: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr, value in vars(cls).items():
            if attr.startswith("_") or attr in EVENTS or not callable(value):
                continue
            close = difflib.get_close_matches(attr, EVENTS, n=1, cutoff=0.8)
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

    def __call__(self, event: str) -> None:
        """Run the method for `event` if this callback should run now."""
        learn = self.learn
        training = getattr(learn, "training", True)
        if event in _BATCH_EVENTS and ((training and not self.run_train) or (not training and not self.run_valid)):
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
