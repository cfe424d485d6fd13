"""The exact ordered list of events fired by fit, validate, get_preds, lr_find and under cancellation."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastvision.callback.core import (
    EVENTS,
    Callback,
    CancelBatchException,
    CancelFitException,
    CancelStepException,
    CancelTrainException,
    RunMode,
)
from fastvision.learner import Learner


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread hand-off costs more than it saves on a busy machine
    yield
    torch.set_num_threads(n)


class DLs:
    def __init__(self, train, valid):
        self.train, self.valid = train, valid


def _log_cls():
    def make(e):
        def f(self):
            self.events.append(e)

        return f

    return type("EventLog", (Callback,), {e: make(e) for e in EVENTS})


EventLog = _log_cls()


def make_learner(**kwargs):
    """8 train items (2 batches of 4), 4 valid items (1 batch)."""
    torch.manual_seed(0)
    x, y = torch.randn(12, 3), torch.randint(0, 2, (12,))
    dls = DLs(
        DataLoader(TensorDataset(x[:8], y[:8]), batch_size=4),
        DataLoader(TensorDataset(x[8:], y[8:]), batch_size=4),
    )
    log = EventLog()
    log.events = []
    learn = Learner(dls, nn.Linear(3, 2), loss_func=nn.CrossEntropyLoss(), cbs=[log], **kwargs)
    return learn, log


TRAIN_BATCH = [
    "before_batch",
    "after_pred",
    "after_loss",
    "before_backward",
    "after_backward",
    "before_step",
    "after_step",
    "after_batch",
]
VALID_BATCH = ["before_batch", "after_pred", "after_loss", "after_batch"]
VALID_PHASE = ["before_validate", *VALID_BATCH, "after_validate"]


def test_after_create_fires_at_construction():
    _, log = make_learner()
    assert log.events == ["after_create"]


def test_fit_events():
    learn, log = make_learner()
    log.events.clear()
    learn.fit(1)
    expected = [
        "before_fit",
        "before_epoch",
        "before_train",
        *TRAIN_BATCH,
        *TRAIN_BATCH,
        "after_train",
        *VALID_PHASE,
        "after_epoch",
        "after_fit",
    ]
    assert log.events == expected


@pytest.mark.parametrize("cb", ["MixUp", "CutMix"])
def test_mix_callbacks_keep_the_event_order(cb):
    from fastvision.callback import mixup

    x, y = torch.randn(12, 1, 4, 4), torch.randint(0, 2, (12,))  # images: CutMix pastes boxes
    events = []
    for extra in ([], [getattr(mixup, cb)()]):
        learn, log = make_learner()
        learn.dls = DLs(
            DataLoader(TensorDataset(x[:8], y[:8]), batch_size=4),
            DataLoader(TensorDataset(x[8:], y[8:]), batch_size=4),
        )
        learn.model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        learn.add_cbs(extra)
        log.events.clear()
        learn.fit(1)
        events.append(list(log.events))
    assert events[1] == events[0] and events[0][:3] == ["before_fit", "before_epoch", "before_train"]


def test_validate_and_get_preds_events():
    learn, log = make_learner()
    expected = ["before_fit", "before_epoch", *VALID_PHASE, "after_epoch", "after_fit"]
    log.events.clear()
    learn.validate()
    assert log.events == expected
    log.events.clear()
    learn.get_preds()
    assert log.events == expected


def test_lr_find_events():
    learn, log = make_learner()
    log.events.clear()
    learn.lr_find(num_it=6, stop_div=False, show_plot=False, suggest_funcs=None)  # 6 iters = 3 epochs of 2
    skipped_valid = ["before_validate", "after_cancel_validate", "after_validate"]
    epoch = [
        "before_epoch",
        "before_train",
        *TRAIN_BATCH,
        *TRAIN_BATCH,
        "after_train",
        *skipped_valid,
        "after_epoch",
    ]
    # LRFinder (order 60) cancels the fit in the after_batch of the 6th batch (3rd epoch), after EventLog ran.
    last = ["before_epoch", "before_train", *TRAIN_BATCH, *TRAIN_BATCH]
    assert log.events == ["before_fit", *epoch, *epoch, *last, "after_cancel_fit", "after_fit"]


class CancelFirstStep(Callback):
    def before_fit(self):
        self.n = 0

    def before_step(self):
        self.n += 1
        if self.n == 1:
            self.grad_seen = self.learn.model.weight.grad.clone()
            raise CancelBatchException()


def test_cancel_batch_in_before_step_skips_step_and_zero_grad():
    learn, log = make_learner()
    canceller = CancelFirstStep()
    w0 = learn.model.weight.detach().clone()
    log.events.clear()
    learn.fit(1, cbs=[canceller])
    first = ["before_batch", "after_pred", "after_loss", "before_backward", "after_backward", "before_step"]
    expected = [
        "before_fit",
        "before_epoch",
        "before_train",
        *first,
        "after_cancel_batch",
        "after_batch",
        *TRAIN_BATCH,
        "after_train",
        *VALID_PHASE,
        "after_epoch",
        "after_fit",
    ]
    assert log.events == expected
    assert not torch.equal(learn.model.weight, w0)  # the second batch stepped


def test_cancel_batch_keeps_gradients_for_accumulation():
    learn, _ = make_learner(default_cbs=False)

    class Accumulate(Callback):
        def before_step(self):
            if self.learn.iter == 0:
                self.g0 = self.learn.model.weight.grad.clone()
                raise CancelBatchException()
            self.g1 = self.learn.model.weight.grad.clone()

    acc = Accumulate()
    w0 = learn.model.weight.detach().clone()
    learn.fit(1, cbs=[acc])
    assert not torch.equal(acc.g1, acc.g0)  # the second batch added to the kept gradient...
    assert not torch.equal(learn.model.weight, w0)


def test_cancel_step_skips_step_but_zero_grad_runs():
    learn, log = make_learner(default_cbs=False)

    class NoStep(Callback):
        def before_step(self):
            raise CancelStepException()

    w0 = learn.model.weight.detach().clone()
    log.events.clear()
    learn.fit(1, cbs=[NoStep()])
    assert torch.equal(learn.model.weight, w0)
    assert learn.model.weight.grad is None  # zero_grad(set_to_none=True) ran
    batch = [*TRAIN_BATCH[:5], "before_step", "after_cancel_step", "after_step", "after_batch"]
    assert log.events[3 : 3 + len(batch)] == batch


def test_cancel_train_goes_to_validation_and_cancel_fit_skips_inner_after_events():
    learn, log = make_learner()

    class StopTrain(Callback):
        def after_pred(self):
            if self.learn.training:
                raise CancelTrainException()

    log.events.clear()
    learn.fit(1, cbs=[StopTrain()])
    expected = [
        "before_fit",
        "before_epoch",
        "before_train",
        "before_batch",
        "after_pred",
        "after_cancel_train",
        "after_train",
        *VALID_PHASE,
        "after_epoch",
        "after_fit",
    ]
    assert log.events == expected

    class StopFit(Callback):
        order = -100

        def before_validate(self):
            raise CancelFitException()

    log.events.clear()
    learn.fit(1, cbs=[StopFit()])
    assert log.events[-3:] == ["after_train", "after_cancel_fit", "after_fit"]
    assert "after_epoch" not in log.events


def test_after_fit_fires_after_an_error():
    learn, log = make_learner()

    class Boom(Callback):
        def after_loss(self):
            raise KeyError("boom")

    log.events.clear()
    with pytest.raises(KeyError, match="Exception occurred in `Boom` when calling event `after_loss`"):
        learn.fit(1, cbs=[Boom()])
    assert log.events[-1] == "after_fit"
    assert not any(isinstance(c, Boom) for c in learn.cbs)  # temporary callbacks removed


def test_n_iter_and_dl_are_set_before_the_phase_starts():
    """Issue #12.7: before_train/before_validate see this phase's loader length (progress bar totals)."""
    seen = []

    class Lengths(Callback):
        def before_train(self):
            seen.append(("train", self.learn.n_iter, self.learn.dl is self.learn.dls.train))

        def before_validate(self):
            seen.append(("valid", self.learn.n_iter, self.learn.dl is self.learn.dls.valid))

    learn, _ = make_learner()
    learn.add_cb(Lengths())
    with learn.no_logging():
        learn.fit(2)
    assert seen == [("train", 2, True), ("valid", 1, True)] * 2


def test_progress_bar_totals_match_each_phase(monkeypatch):
    """Issue #12.7: the console bars' totals are the phase's batch count from epoch 2 on too."""
    from fastprogress import fastprogress

    from fastvision.callback.progress import ProgressCallback

    totals = []
    real = fastprogress.ConsoleProgressBar.__init__

    def spy(self, gen, total=None, *args, **kwargs):
        if kwargs.get("parent") is not None:  # the phase bars, not the master bar
            totals.append(total)
        real(self, gen, total, *args, **kwargs)

    monkeypatch.setattr(fastprogress.ConsoleProgressBar, "__init__", spy)
    learn, _ = make_learner()
    learn.add_cb(ProgressCallback(mode="bar"))  # replaces the default one
    learn.fit(2)
    assert totals == [2, 1, 2, 1]


class ModeLog(Callback):
    """Record `(run_mode, is_fitting)` at before_fit, before_batch and after_fit."""

    def __init__(self):
        self.seen = []

    def _note(self, event):
        self.seen.append((event, self.learn.run_mode, self.learn.is_fitting))

    def before_fit(self):
        self._note("before_fit")

    def before_batch(self):
        self._note("before_batch")

    def after_fit(self):
        self._note("after_fit")


@pytest.mark.parametrize(
    "call,mode",
    [
        (lambda learn: learn.fit(1), RunMode.FIT),
        (lambda learn: learn.fit_one_cycle(1), RunMode.FIT),
        (lambda learn: learn.validate(), RunMode.VALIDATE),
        (lambda learn: learn.get_preds(), RunMode.PREDICT),
        (lambda learn: learn.lr_find(num_it=6, show_plot=False, suggest_funcs=None), RunMode.LR_FIND),
    ],
)
def test_run_mode_is_set_for_the_whole_run_and_cleared_after(call, mode):
    learn, _ = make_learner()
    log = ModeLog()
    learn.add_cb(log)
    assert learn.run_mode is None and not learn.is_fitting
    with learn.no_logging():
        call(learn)
    assert log.seen and all(m is mode and fitting == (mode is RunMode.FIT) for _, m, fitting in log.seen)
    assert learn.run_mode is None and not learn.is_fitting
    assert RunMode(mode.value) is mode and mode == mode.value  # a str enum: 'fit', 'validate', ...


def test_a_validate_nested_in_fit_has_its_own_mode_and_puts_the_fit_back():
    seen = []

    class NestedValidate(Callback):
        order = 55

        def after_epoch(self):
            if self.learn.is_fitting:
                seen.append(("before", self.learn.run_mode, self.learn.epoch, self.learn.training))
                res = self.learn.validate()
                seen.append(("result", len(res), self.learn.final_record is not res))
                seen.append(("after", self.learn.run_mode, self.learn.epoch, self.learn.training))

        def before_batch(self):
            if not self.learn.training:
                seen.append(("inner", self.learn.run_mode))

    learn, _ = make_learner()
    with learn.no_logging():
        learn.fit(1, cbs=[NestedValidate()])
    assert seen == [
        ("inner", RunMode.FIT),  # the fit's own validation phase
        ("before", RunMode.FIT, 0, False),
        ("inner", RunMode.VALIDATE),
        ("result", 1, True),  # [valid_loss] of the nested pass, not the fit's [train_loss, valid_loss]
        ("after", RunMode.FIT, 0, False),
    ]


def test_evaluate_runs_one_validation_pass_and_rejects_training_modes():
    learn, log = make_learner()
    x, y = torch.randn(6, 3), torch.randint(0, 2, (6,))
    log.events.clear()
    res = learn.evaluate([(x[:4], y[:4]), (x[4:], y[4:])])
    phase = ["before_validate", *VALID_BATCH, *VALID_BATCH, "after_validate"]
    assert log.events == ["before_fit", "before_epoch", *phase, "after_epoch", "after_fit"]
    expected = nn.functional.cross_entropy(learn.model(x), y).item()
    assert res[0] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="evaluate runs no training; got run_mode=<RunMode.FIT"):
        learn.evaluate([(x, y)], run_mode=RunMode.FIT)
