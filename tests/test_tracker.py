"""Tracker callbacks, first against a fake learner (the logic in isolation), then in a real `fit`."""

import contextlib
import operator
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fastvision.callback.core import Callback, CancelFitException
from fastvision.callback.tracker import (
    EarlyStoppingCallback,
    ReduceLROnPlateau,
    SaveModelCallback,
    TerminateOnNaNCallback,
    TrackerCallback,
    last_record,
)

NAMES = ["epoch", "train_loss", "valid_loss", "accuracy", "time"]


def fake_learner(lr=0.1, **kw):
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    recorder = SimpleNamespace(metric_names=NAMES, values=[])
    saved = []
    learn = SimpleNamespace(
        model=model,
        opt=opt,
        recorder=recorder,
        epoch=0,
        iter=0,
        training=True,
        cbs=[],
        loss=None,
        saved=saved,
        is_fitting=True,
        logged=[],
    )
    learn.logger = learn.logged.append
    learn.save = lambda fname, with_opt=False: saved.append(
        ("save", fname, {k: v.clone() for k, v in model.state_dict().items()})
    )
    learn.load = lambda fname, with_opt=False: saved.append(("load", fname))
    for k, v in kw.items():
        setattr(learn, k, v)
    return learn


def attach(cb, learn):
    cb.learn = learn
    learn.cbs.append(cb)
    return cb


def simulate(cb, learn, valid_losses, accuracies=None, on_epoch=None):
    """Run before_fit, one after_epoch per value (a recorder row each), then after_fit; return epochs run."""
    epochs = 0
    cb.before_fit()
    try:
        for epoch, v in enumerate(valid_losses):
            learn.epoch = epoch
            if on_epoch:
                on_epoch(epoch)
            acc = accuracies[epoch] if accuracies else 0.5
            learn.recorder.values.append([1.0, v, acc])
            epochs += 1
            cb.after_epoch()
    except CancelFitException:
        pass
    finally:
        cb.after_fit()
    return epochs


def test_last_record():
    rec = SimpleNamespace(metric_names=NAMES, values=[[1.0, 2.0, 0.5]])
    assert last_record(rec) == {"train_loss": 1.0, "valid_loss": 2.0, "accuracy": 0.5}
    assert last_record(SimpleNamespace(metric_names=NAMES, values=[])) == {}


def test_monitor_not_recorded_raises_at_fit_start():
    learn = fake_learner()
    cb = attach(EarlyStoppingCallback(monitor="val_loss"), learn)
    msg = r"monitor='val_loss' is not recorded; available: \['train_loss', 'valid_loss', 'accuracy'\]. Did you mean 'valid_loss'\?"
    with pytest.raises(ValueError, match=msg):
        cb.before_fit()


def test_comp_inferred_from_name():
    assert TrackerCallback("valid_loss").comp is operator.lt
    assert TrackerCallback("error_rate").comp is operator.lt
    assert TrackerCallback("accuracy").comp is operator.gt
    assert TrackerCallback("valid_loss", min_delta=0.1).min_delta == -0.1
    assert TrackerCallback("accuracy", min_delta=0.1).min_delta == 0.1


def test_tracker_best_and_min_delta():
    learn = fake_learner()
    cb = attach(TrackerCallback(min_delta=0.05), learn)
    bests = []
    cb.before_fit()
    for epoch, v in enumerate([1.0, 0.97, 0.9, float("nan"), 0.5]):
        learn.epoch = epoch
        learn.recorder.values.append([1.0, v, 0.5])
        cb.after_epoch()
        bests.append(cb.new_best)
    assert bests == [True, False, True, False, True]  # 0.97 is not 0.05 better; nan never is
    assert cb.best == 0.5 and cb.best_epoch == 4


def test_early_stopping_stops_after_patience():
    learn = fake_learner()
    cb = attach(EarlyStoppingCallback(patience=2), learn)
    assert simulate(cb, learn, [1.0, 0.8, 0.9, 0.95, 0.7, 0.6]) == 4
    assert learn.logged == ["No improvement since epoch 1: early stopping"]


def test_early_stopping_monitor_accuracy():
    learn = fake_learner()
    cb = attach(EarlyStoppingCallback(monitor="accuracy", patience=1), learn)
    assert simulate(cb, learn, [1, 1, 1, 1], accuracies=[0.5, 0.6, 0.6, 0.9]) == 3


@pytest.mark.parametrize("stops_early", [True, False])
def test_early_stopping_restores_best_weights(stops_early):
    learn = fake_learner()
    cb = attach(EarlyStoppingCallback(patience=2 if stops_early else 10, restore_best_weights=True), learn)

    def set_weights(epoch):
        with torch.no_grad():
            learn.model.weight.fill_(float(epoch))

    simulate(cb, learn, [1.0, 0.5, 0.9, 0.8, 0.7], on_epoch=set_weights)
    assert torch.all(learn.model.weight == 1.0)  # weights of epoch 1, the best, whether or not it stopped


def test_save_model_saves_on_improvement_and_reloads():
    learn = fake_learner()
    cb = attach(SaveModelCallback(fname="best"), learn)
    simulate(cb, learn, [1.0, 0.5, 0.9])
    kinds = [(k[0], k[1]) for k in learn.saved]
    assert kinds == [("save", "best"), ("save", "best"), ("load", "best")]
    out = "\n".join(learn.logged)
    assert "Better model found at epoch 0 with valid_loss value: 1.0." in out
    assert "Better model found at epoch 1 with valid_loss value: 0.5." in out


def test_save_model_every_epoch_and_at_end():
    learn = fake_learner()
    cb = attach(SaveModelCallback(every_epoch=2), learn)
    simulate(cb, learn, [1.0, 0.5, 0.9, 0.4, 0.3])
    assert [k[1] for k in learn.saved] == ["model_0", "model_2", "model_4"]
    learn = fake_learner()
    cb = attach(SaveModelCallback(at_end=True, fname="last"), learn)
    simulate(cb, learn, [1.0, 0.5])
    assert [(k[0], k[1]) for k in learn.saved] == [("save", "last"), ("save", "last"), ("save", "last")]
    with pytest.raises(ValueError, match="every_epoch and at_end"):
        SaveModelCallback(every_epoch=True, at_end=True)


def test_save_model_does_not_reload_when_nothing_saved():
    learn = fake_learner()
    cb = attach(SaveModelCallback(), learn)
    simulate(cb, learn, [float("nan")])
    assert learn.saved == []


def test_reduce_lr_on_plateau_plain_fit():
    learn = fake_learner(lr=0.1)
    cb = attach(ReduceLROnPlateau(patience=1, factor=10, min_lr=1e-4), learn)
    lrs = []
    simulate(
        cb, learn, [1.0, 1.1, 1.2, 1.3, 1.4], on_epoch=lambda e: lrs.append(learn.opt.param_groups[0]["lr"])
    )
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.001, 1e-4])
    assert "Epoch 1: reducing lr to 0.01" in learn.logged


def test_reduce_lr_on_plateau_on_top_of_a_schedule():
    learn = fake_learner(lr=0.1)
    cb = attach(ReduceLROnPlateau(patience=1, factor=10), learn)
    cb.before_fit()
    seen = []
    for epoch, v in enumerate([1.0, 1.1, 1.2]):
        learn.epoch = epoch
        for i in range(2):
            learn.opt.param_groups[0]["lr"] = 0.5 + epoch + i  # a scheduler rewriting the lr each batch
            cb.before_batch()
            seen.append(learn.opt.param_groups[0]["lr"])
        learn.recorder.values.append([1.0, v, 0.5])
        cb.after_epoch()
    assert seen == pytest.approx([0.5, 1.5, 1.5, 2.5, 0.25, 0.35])  # reduced after epoch 1


def test_trackers_off_during_lr_find_and_outside_fit():
    learn = fake_learner(is_fitting=False)  # lr_find, validate, get_preds
    cb = attach(EarlyStoppingCallback(monitor="nope"), learn)
    cb.before_fit()  # no monitor error: lr_find does not record it
    learn = fake_learner()
    cb = attach(SaveModelCallback(), learn)
    learn.recorder.values.append([1.0, 0.1, 0.5])
    cb.after_epoch()  # a validate/get_preds without before_fit: nothing saved
    cb.after_fit()
    assert learn.saved == []


def run_nan_batches(cb, learn, losses, lrs=None):
    cb.before_fit()
    for i, loss in enumerate(losses):
        learn.iter, learn.loss = i, torch.tensor(loss)
        if lrs:
            learn.opt.param_groups[0]["lr"] = lrs[i]
        cb.after_batch()
    cb.after_train()


def test_terminate_on_nan_message():
    learn = fake_learner(epoch=1)
    cb = attach(TerminateOnNaNCallback(), learn)
    with pytest.warns(
        RuntimeWarning, match=r"Loss became nan at epoch 1, step 2 \(lr 3\.2e-01\): training stopped"
    ):
        with pytest.raises(CancelFitException, match="Lower the learning rate"):
            run_nan_batches(cb, learn, [1.0, 2.0, float("nan"), 3.0], lrs=[0.1, 0.2, 0.32, 0.4])
    learn = fake_learner()
    cb = attach(TerminateOnNaNCallback(), learn)
    with pytest.warns(RuntimeWarning, match="Loss became inf at epoch 0, step 0"):
        with pytest.raises(CancelFitException):
            run_nan_batches(cb, learn, [float("inf")])


def test_terminate_on_nan_checks_every_n_batches():
    learn = fake_learner()
    cb = attach(TerminateOnNaNCallback(check_every=3), learn)
    cb.before_fit()
    for i, loss in enumerate([float("nan"), 1.0]):
        learn.iter, learn.loss = i, torch.tensor(loss)
        cb.after_batch()  # not checked yet: no host read
    with pytest.warns(RuntimeWarning, match="step 0"), pytest.raises(CancelFitException):
        cb.after_train()  # the end of the phase always checks
    learn = fake_learner()
    cb = attach(TerminateOnNaNCallback(), learn)
    run_nan_batches(cb, learn, [1.0, 0.5])  # finite: nothing raised
    assert cb.message is None


# ---------------------------------------------------------------------------- with a real Learner


def tiny_learner(tmp_path, model=None, **kwargs):
    from torch.utils.data import TensorDataset

    from fastvision.data.load import DataLoaders
    from fastvision.learner import Learner
    from fastvision.losses import CrossEntropyLossFlat
    from fastvision.metrics import accuracy
    from fastvision.testing import make_tensor_data

    torch.manual_seed(0)
    x, y = make_tensor_data(48, 3, size=4)
    dls = DataLoaders.from_dsets(
        TensorDataset(x[:32], y[:32]), TensorDataset(x[32:], y[32:]), bs=8, num_workers=0, path=tmp_path
    )
    model = model or nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    kwargs.setdefault("metrics", accuracy)
    return Learner(dls, model, loss_func=CrossEntropyLossFlat(), path=tmp_path, **kwargs)


class BlowUpAfter(Callback):
    """From epoch `start` on, train at a huge lr so the validation loss gets worse."""

    def __init__(self, start):
        self.start = start

    def before_epoch(self):
        if self.learn.epoch >= self.start:
            for g in self.learn.opt.param_groups:
                g["lr"] = 50.0


def test_fit_early_stopping_restores_best_weights(tmp_path):
    learn = tiny_learner(tmp_path)
    es = EarlyStoppingCallback(patience=2, restore_best_weights=True)
    learn.fit(6, lr=0.1, cbs=[BlowUpAfter(2), es])
    assert len(learn.recorder.values) == 4  # epochs 2 and 3 got worse: stopped after epoch 3
    assert es.best_epoch == 1
    assert learn.validate()[0] == pytest.approx(es.best, rel=1e-5)  # the model is the best epoch's


def test_fit_save_model_reloads_best(tmp_path):
    learn = tiny_learner(tmp_path)
    sm = SaveModelCallback(monitor="accuracy", fname="best")
    learn.fit(4, lr=0.1, cbs=[BlowUpAfter(2), sm])
    assert (tmp_path / "models" / "best.pth").exists()
    best_epoch = max(range(4), key=lambda e: learn.recorder.values[e][2])
    assert sm.best_epoch == best_epoch
    assert learn.validate()[1] == pytest.approx(sm.best)


def test_fit_reduce_lr_on_plateau_lowers_lr(tmp_path):
    learn = tiny_learner(tmp_path)
    cb = ReduceLROnPlateau(min_delta=100.0, patience=1, factor=10.0)  # nothing after epoch 0 counts as better
    learn.fit(3, lr=0.1, cbs=cb)
    assert learn.opt.param_groups[0]["lr"] == pytest.approx(0.001)
    lrs = learn.recorder.lrs  # per training batch: 4 batches per epoch
    assert lrs == pytest.approx([0.1] * 8 + [0.01] * 4)  # the epoch after the plateau trains at lr/10


def test_fit_one_cycle_reduce_lr_scales_the_schedule(tmp_path):
    plain = tiny_learner(tmp_path)
    plain.fit_one_cycle(3, 0.1)
    learn = tiny_learner(tmp_path)
    learn.fit_one_cycle(3, 0.1, cbs=ReduceLROnPlateau(min_delta=100.0, patience=1))
    expected = plain.recorder.lrs[:8] + [lr / 10 for lr in plain.recorder.lrs[8:]]
    assert learn.recorder.lrs == pytest.approx(expected)


def test_fit_monitor_typo_fails_before_training(tmp_path):
    learn = tiny_learner(tmp_path)
    w0 = learn.model[1].weight.detach().clone()
    with pytest.raises(ValueError, match="monitor='val_loss' is not recorded.*Did you mean 'valid_loss'"):
        learn.fit(1, cbs=SaveModelCallback(monitor="val_loss"))
    assert torch.equal(learn.model[1].weight, w0)


class NaNAfter(nn.Module):
    """A linear model whose output turns NaN from its `n`-th training call."""

    def __init__(self, n):
        super().__init__()
        self.lin, self.n, self.calls = nn.Linear(16, 3), n, 0

    def forward(self, x):
        out = self.lin(x.flatten(1))
        if self.training:
            self.calls += 1
            if self.calls > self.n:
                out = out * float("nan")
        return out


def test_fit_terminates_on_nan_with_position_and_lr(tmp_path):
    learn = tiny_learner(tmp_path, model=NaNAfter(6), metrics=())  # 4 batches per epoch: epoch 1, step 2
    assert any(isinstance(cb, TerminateOnNaNCallback) for cb in learn.cbs)  # a default callback
    with pytest.warns(RuntimeWarning, match=r"Loss became nan at epoch 1, step 2 \(lr 2\.0e-02\)"):
        learn.fit(5, lr=0.02)
    assert len(learn.recorder.values) == 1


def test_trackers_ignore_lr_find_and_get_preds(tmp_path):
    learn = tiny_learner(tmp_path, cbs=[SaveModelCallback(), EarlyStoppingCallback()])
    learn.lr_find(num_it=6, show_plot=False)
    learn.get_preds()
    learn.validate()
    assert not (tmp_path / "models").exists()


class ValidateEachEpoch(Callback):
    """Calls `learn.validate()` from inside the fit (a nested before_fit ... after_fit)."""

    order = 55

    def after_epoch(self):
        if self.learn.is_fitting:  # validate fires after_epoch too
            self.learn.validate()


def test_nested_validate_does_not_disturb_trackers(tmp_path):
    from fastvision.callback.fp16 import MixedPrecision
    from fastvision.callback.loggers import CSVLogger

    learn = tiny_learner(tmp_path)
    sm, es, csv = SaveModelCallback(fname="best"), EarlyStoppingCallback(patience=10), CSVLogger()
    learn.fit(3, lr=0.1, cbs=[ValidateEachEpoch(), sm, es, csv, MixedPrecision("bf16")])
    assert sm.saved and sm.best_epoch is not None and es.wait == 2 - es.best_epoch
    assert len(csv.read_log()) == 3
    assert learn.autocast is contextlib.nullcontext


# ---------------------------------------------------------------------------- issue #12
def test_nan_stop_says_the_weights_are_gone(tmp_path):
    learn = tiny_learner(tmp_path, model=NaNAfter(6), metrics=())
    with pytest.warns(
        RuntimeWarning, match=r"weights are now nan/inf.*reload a checkpoint \(learn.load\(name\)\)"
    ):
        learn.fit(5, lr=0.02)
    assert not all(torch.isfinite(p).all() for p in learn.model.parameters())


def test_nan_stop_restores_the_saved_model(tmp_path):
    learn = tiny_learner(tmp_path, model=NaNAfter(6), metrics=())
    sm = SaveModelCallback(fname="best")
    with pytest.warns(
        RuntimeWarning, match=r"SaveModelCallback \(the model saved at epoch 0 as 'best'\) loads"
    ):
        learn.fit(5, lr=0.02, cbs=sm)
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())  # epoch 0's weights are back
    saved = torch.load(tmp_path / "models" / "best.pth", weights_only=True)
    saved = saved.get("model", saved)
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in saved.items())


@pytest.mark.filterwarnings("ignore:Loss became nan")
def test_save_model_at_end_does_not_save_nan_weights(tmp_path):
    learn = tiny_learner(tmp_path, model=NaNAfter(6), metrics=())
    with pytest.warns(RuntimeWarning, match=r"at_end=True\) did not save 'last'"):
        learn.fit(5, lr=0.02, cbs=SaveModelCallback(fname="last", at_end=True))
    saved = torch.load(tmp_path / "models" / "last.pth", weights_only=True)  # epoch 0's, finite
    saved = saved.get("model", saved)
    assert all(torch.isfinite(v).all() for v in saved.values())


def test_save_model_and_early_stopping_on_different_monitors_warn(tmp_path):
    learn = tiny_learner(tmp_path)
    cbs = [
        SaveModelCallback(monitor="accuracy"),
        EarlyStoppingCallback(patience=5, restore_best_weights=True),
    ]
    with pytest.warns(
        UserWarning, match=r"ends with the best 'valid_loss' epoch, not the best 'accuracy' one"
    ):
        with learn.no_logging():
            learn.fit(1, lr=0.1, cbs=cbs)
    same = [SaveModelCallback(), EarlyStoppingCallback(patience=5, restore_best_weights=True)]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with learn.no_logging():
            learn.fit(1, lr=0.1, cbs=same)


def test_status_messages_go_through_the_logger(tmp_path, capsys):
    learn = tiny_learner(tmp_path)
    cbs = [SaveModelCallback(), ReduceLROnPlateau(min_delta=100.0, patience=1)]
    with learn.no_logging():
        learn.fit(2, lr=0.1, cbs=cbs)
    assert capsys.readouterr().out == ""  # silenced with the table
    learn.fit(2, lr=0.1, cbs=[SaveModelCallback(), ReduceLROnPlateau(min_delta=100.0, patience=1)])
    out = capsys.readouterr().out
    assert "Better model found at epoch 0" in out and "Epoch 1: reducing lr to" in out


def test_tracker_state_dicts_carry_best_and_counters(tmp_path):
    learn = fake_learner()
    early = attach(EarlyStoppingCallback(patience=3, restore_best_weights=True), learn)
    early.before_fit()
    for epoch, v in enumerate([1.0, 0.5, 0.7]):
        learn.epoch = epoch
        learn.recorder.values.append([1.0, v, 0.5])
        early.after_epoch()
    state = early.state_dict()
    assert set(state) == {"best", "best_epoch", "wait", "best_state"}
    assert (state["best"], state["best_epoch"], state["wait"]) == (0.5, 1, 1)
    torch.save(state, tmp_path / "t.pth")
    fresh = attach(EarlyStoppingCallback(patience=3, restore_best_weights=True), fake_learner())
    fresh.before_fit()  # resets, then the loaded state wins (what ResumeFrom does)
    fresh.load_state_dict(torch.load(tmp_path / "t.pth", weights_only=True))
    assert (fresh.best, fresh.best_epoch, fresh.wait) == (0.5, 1, 1)
    assert all(torch.equal(fresh.best_state[k], v) for k, v in early.best_state.items())
    plateau = ReduceLROnPlateau()
    assert set(plateau.state_dict()) == {"best", "best_epoch", "scale", "_written"}  # no `wait` before a fit
    with pytest.raises(KeyError, match="SaveModelCallback has no state 'wait'"):
        SaveModelCallback().load_state_dict({"wait": 2})


def test_tracker_defaults_are_written_once():
    import inspect

    from fastvision.callback.tracker import MIN_DELTA, MONITOR

    for cls in (TrackerCallback, SaveModelCallback, EarlyStoppingCallback, ReduceLROnPlateau):
        params = inspect.signature(cls).parameters
        assert params["monitor"].default == MONITOR == "valid_loss"
        assert params["min_delta"].default == MIN_DELTA == 0.0 and params["comp"].default is None
        assert list(params)[:3] == ["monitor", "comp", "min_delta"]  # fastai's positional order
