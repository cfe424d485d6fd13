"""Schedules against closed forms; one-cycle, fine_tune and lr spreading per group; lr_find suggestions and restore."""

import math
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastvision.callback.core import Callback
from fastvision.callback.schedule import (
    ParamScheduler,
    SchedCos,
    SchedExp,
    SchedLin,
    SchedNo,
    SchedPoly,
    TimeBudget,
    combine_scheds,
    combined_cos,
    minimum,
    sched_cos,
    sched_exp,
    sched_lin,
    slide,
    steep,
    suggest,
    valley,
)
from fastvision.learner import Learner
from fastvision.optimizer import get_hyper, spread_hyper


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread hand-off costs more than it saves on a busy machine
    yield
    torch.set_num_threads(n)


class DLs:
    def __init__(self, train, valid):
        self.train, self.valid = train, valid


def three_group_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)
    )


def three_groups(m):
    return [
        list(m[0].parameters()) + list(m[1].parameters()),
        list(m[3].parameters()),
        list(m[5].parameters()),
    ]


def make_learner(n=32, bs=8, model=None, shuffle=True, **kwargs):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
    dls = DLs(
        DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=shuffle),
        DataLoader(TensorDataset(x, y), batch_size=bs),
    )
    model = model if model is not None else three_group_model()
    kwargs.setdefault("cbs", None)
    return Learner(dls, model, loss_func=nn.CrossEntropyLoss(), **kwargs)


class LogLrs(Callback):
    """Per train batch: each logical group's lr and mom, read right before the step."""

    def __init__(self):
        self.lrs, self.moms = [], []  # set here: reads of missing attributes fall through to the learner

    def before_step(self):
        self.lrs.append(get_hyper(self.learn.opt, "lr"))
        self.moms.append(get_hyper(self.learn.opt, "mom"))


# ---- pure schedules -----------------------------------------------------------------------------------------
def test_sched_functions_closed_form():
    for pos in (0.0, 0.25, 0.5, 0.9, 1.0):
        assert sched_lin(1, 3, pos) == pytest.approx(1 + 2 * pos)
        assert sched_cos(1, 3, pos) == pytest.approx(1 + (1 + math.cos(math.pi * (1 - pos))) * 2 / 2)
        assert sched_exp(1e-4, 1e-2, pos) == pytest.approx(1e-4 * 100**pos)
        assert SchedNo(5)(pos) == 5
        assert SchedPoly(0, 2, 2)(pos) == pytest.approx(2 * pos**2)
    assert SchedLin(0, 1)(0.3) == pytest.approx(0.3)
    assert SchedCos(0, 1)(0.5) == pytest.approx(0.5)
    assert SchedExp(1, 100)(0.5) == pytest.approx(10)
    arr = SchedCos(np.array([1.0, 2.0]), np.array([3.0, 4.0]))(1.0)
    np.testing.assert_allclose(arr, [3.0, 4.0])


def test_combine_scheds():
    f = combine_scheds([0.3, 0.7], [SchedLin(0, 1), SchedLin(1, 0)])
    assert f(0) == 0 and f(0.15) == pytest.approx(0.5) and f(0.3) == pytest.approx(1)
    assert f(0.65) == pytest.approx(0.5) and f(1.0) == pytest.approx(0)
    g = combined_cos(0.25, 1, 10, 0)
    assert g(0) == pytest.approx(1) and g(0.25) == pytest.approx(10) and g(1) == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError, match="sum to 1"):
        combine_scheds([0.3, 0.3], [SchedLin(0, 1), SchedLin(1, 0)])


def test_spread_hyper_slices():
    np.testing.assert_allclose(spread_hyper(slice(2e-3), 3), [2e-4, 2e-4, 2e-3])
    np.testing.assert_allclose(spread_hyper(slice(1e-5, 1e-3), 3), [1e-5, 1e-4, 1e-3])
    assert spread_hyper(slice(1e-5, 1e-3), 1) == [1e-3]
    assert spread_hyper(0.1, 3) == [0.1] * 3
    assert spread_hyper([1, 2, 3], 3) == [1, 2, 3]
    with pytest.raises(ValueError, match="one value per group"):
        spread_hyper([1, 2], 3)


def test_fit_spreads_lr_over_groups():
    learn = make_learner(splitter=three_groups, default_cbs=False)
    learn.fit(1, lr=slice(2e-3))
    np.testing.assert_allclose(get_hyper(learn.opt, "lr"), [2e-4, 2e-4, 2e-3])
    learn.fit(1, lr=slice(1e-5, 1e-3))
    np.testing.assert_allclose(get_hyper(learn.opt, "lr"), [1e-5, 1e-4, 1e-3])
    # the no-weight-decay torch groups (bias, BatchNorm) follow their logical group
    for pg in learn.opt.param_groups:
        assert pg["lr"] == pytest.approx([1e-5, 1e-4, 1e-3][pg["group"]])


# ---- one cycle ---------------------------------------------------------------------------------------------
def one_cycle_lr(pos, lr_max, div=25.0, div_final=1e5, pct=0.25):
    if pos < pct:
        return sched_cos(lr_max / div, lr_max, pos / pct)
    return sched_cos(lr_max, lr_max / div_final, (pos - pct) / (1 - pct))


def one_cycle_mom(pos, pct=0.25, moms=(0.95, 0.85, 0.95)):
    if pos < pct:
        return sched_cos(moms[0], moms[1], pos / pct)
    return sched_cos(moms[1], moms[2], (pos - pct) / (1 - pct))


def test_one_cycle_lrs_and_moms_closed_form():
    log = LogLrs()
    learn = make_learner(default_cbs=False)  # 4 batches per epoch
    learn.fit_one_cycle(2, 1e-2, cbs=[log])
    total = 8
    assert len(log.lrs) == total
    for i in range(total):
        assert log.lrs[i][0] == pytest.approx(one_cycle_lr(i / total, 1e-2), rel=1e-9)
        assert log.moms[i][0] == pytest.approx(one_cycle_mom(i / total), rel=1e-9)
    assert log.lrs[0][0] == pytest.approx(1e-2 / 25)
    assert log.lrs[2][0] == pytest.approx(1e-2)  # pos 0.25: the peak
    assert log.moms[2][0] == pytest.approx(0.85)


def test_one_cycle_records_hps_and_start_epoch_keeps_positions():
    full = make_learner()
    full.fit_one_cycle(3, 1e-2)
    lrs = full.recorder.hps["lr"]
    assert len(lrs) == 12 and full.recorder.lrs == pytest.approx(lrs)
    resumed = make_learner()
    resumed.fit_one_cycle(3, 1e-2, start_epoch=2)
    assert resumed.recorder.hps["lr"] == pytest.approx(lrs[8:])
    assert len(resumed.recorder.values) == 1


def test_fine_tune_phases_per_group():
    log = LogLrs()
    learn = make_learner(splitter=three_groups, default_cbs=False)
    states = []

    class Frozen(Callback):
        def before_fit(self):
            m = self.learn.model
            states.append((m[0].weight.requires_grad, m[1].weight.requires_grad, m[3].weight.requires_grad))

    learn.fine_tune(1, base_lr=2e-3, freeze_epochs=1, cbs=[log, Frozen()])
    assert states == [(False, True, False), (True, True, True)]  # BatchNorm trains while frozen (train_bn)
    phase1, phase2 = log.lrs[:4], log.lrs[4:]
    # phase 1: slice(2e-3) -> maxima [2e-4, 2e-4, 2e-3], div 25, pct_start 0.99
    maxima1 = np.array([2e-4, 2e-4, 2e-3])
    np.testing.assert_allclose(phase1[0], maxima1 / 25)
    for i, lrs in enumerate(phase1):
        np.testing.assert_allclose(lrs, [one_cycle_lr(i / 4, m, pct=0.99) for m in maxima1])
    # phase 2: base_lr/2 = 1e-3, slice(1e-5, 1e-3) -> geometric, div 5, pct_start 0.3
    maxima2 = np.array([1e-5, 1e-4, 1e-3])
    np.testing.assert_allclose(phase2[0], maxima2 / 5)
    for i, lrs in enumerate(phase2):
        np.testing.assert_allclose(lrs, [one_cycle_lr(i / 4, m, div=5.0, pct=0.3) for m in maxima2])


def test_fit_flat_cos_and_sgdr():
    learn = make_learner()
    learn.fit_flat_cos(2, lr=1e-2)
    lrs = learn.recorder.hps["lr"]
    assert lrs[:6] == pytest.approx([1e-2] * 6) and lrs[-1] < 1e-2
    learn = make_learner()
    learn.fit_sgdr(2, 1, lr_max=1e-2)  # cycles of 1 and 2 epochs
    assert learn.n_epoch == 3
    lrs = learn.recorder.hps["lr"]
    assert lrs[0] == pytest.approx(1e-2) and lrs[4] == pytest.approx(1e-2)  # restart after the first cycle


# ---- lr_find ----------------------------------------------------------------------------------------------------
def test_suggestion_functions():
    lrs = np.logspace(-6, 0, 60)
    losses = np.concatenate([np.full(20, 2.0), np.linspace(2.0, 0.5, 25), np.linspace(0.5, 5.0, 15)])
    for f in (minimum, steep, valley, slide):
        lr, (x, y) = f(lrs, losses, 60)
        assert 1e-7 < lr < 1 and math.isfinite(y)
    assert minimum(lrs, losses, 60)[0] == pytest.approx(lrs[44] / 10)
    # short runs (fastai's slide raises IndexError with fewer than 16 points)
    for f in (minimum, steep, valley, slide):
        assert math.isfinite(f(lrs[:5], losses[:5], 5)[0])


def test_suggest_drops_non_finite_and_handles_short_runs():
    lrs = list(np.logspace(-6, 0, 40))
    losses = list(np.linspace(2, 1, 30)) + [float("nan")] * 10
    sugg, points = suggest(lrs, losses, 40, [valley, minimum])
    assert sugg._fields == ("valley", "minimum")
    assert all(math.isfinite(v) and v <= lrs[29] for v in sugg)
    sugg, _ = suggest(lrs[:4], [1.0, 0.9, float("inf"), 2.0], 100, [valley, slide])
    assert all(math.isfinite(v) for v in sugg)


def _snapshot(learn):
    return (
        {k: v.clone() for k, v in learn.model.state_dict().items()},
        torch.get_rng_state(),
        random.getstate(),
        np.random.get_state()[1].copy(),
    )


def test_lr_find_restores_everything_in_memory(tmp_path):
    learn = make_learner(path=tmp_path)
    learn.fit(1)  # optimizer state exists; lr_find after a fit must work
    opt_state = {
        k: {n: t.clone() for n, t in v.items() if torch.is_tensor(t)} for k, v in learn.opt.state.items()
    }
    before = _snapshot(learn)
    sugg = learn.lr_find(num_it=12, show_plot=False)
    after = _snapshot(learn)
    for k in before[0]:  # weights and BatchNorm buffers (running stats, num_batches_tracked)
        assert torch.equal(before[0][k], after[0][k]), k
    assert torch.equal(before[1], after[1]) and before[2] == after[2] and np.array_equal(before[3], after[3])
    for k, v in learn.opt.state.items():
        for n, t in v.items():
            if torch.is_tensor(t):
                assert torch.equal(t, opt_state[k][n])
    assert learn.run_mode is None and math.isfinite(sugg.valley)
    assert not (tmp_path / "models").exists()  # nothing written to disk
    assert len(learn.recorder.lrs) == len(learn.recorder.losses) >= 7


def test_seeded_lr_find_then_fit_equals_fit_alone():
    def run(with_finder):
        torch.manual_seed(42)
        learn = make_learner()
        if with_finder:
            learn.lr_find(num_it=10, show_plot=False)
        learn.fit_one_cycle(2, 1e-2)
        return learn.recorder.losses, learn.recorder.values

    assert run(True) == run(False)


def test_lr_find_restores_after_an_error():
    learn = make_learner()
    w0 = learn.model[0].weight.detach().clone()

    class Boom(Callback):
        def after_batch(self):
            if self.learn.train_iter == 3:
                raise RuntimeError("interrupted")

    learn.add_cb(Boom())
    with pytest.raises(RuntimeError, match="interrupted"):
        learn.lr_find(num_it=10, show_plot=False)
    assert torch.equal(learn.model[0].weight, w0)


def test_lr_find_plot_runs():
    learn = make_learner()
    sugg = learn.lr_find(num_it=20, suggest_funcs=(valley, slide, minimum, steep))
    assert sugg._fields == ("valley", "slide", "minimum", "steep")


# ---- issue #12 ------------------------------------------------------------------------------------------------
def test_lr_find_then_fit_gives_the_same_weights_as_fit_alone():
    """lr_find restores the seeded training loader's shuffle state (`dls.train.state_dict()`), issue #12.4."""
    from fastvision.data.load import DataLoaders

    def run(with_finder):
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(48, 4, generator=g), torch.randint(0, 3, (48,), generator=g)
        dls = DataLoaders.from_dsets(
            TensorDataset(x[:40], y[:40]), TensorDataset(x[40:], y[40:]), bs=8, seed=3
        )
        torch.manual_seed(0)
        learn = Learner(dls, three_group_model(), loss_func=nn.CrossEntropyLoss())
        with learn.no_logging():
            if with_finder:
                learn.lr_find(num_it=7, show_plot=False)
            learn.fit(2, lr=1e-2)
        return [p.detach().clone() for p in learn.model.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(run(True), run(False)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"start_lr": 0}, "start_lr=0 must be finite and > 0"),
        ({"start_lr": -1e-5}, "start_lr=-1e-05"),
        ({"start_lr": float("nan")}, "start_lr=nan"),
        ({"start_lr": 1.0, "end_lr": 1.0}, "end_lr=1.0 must be finite and greater than start_lr=1.0"),
        ({"end_lr": float("inf")}, "end_lr=inf"),
        ({"num_it": 0}, "num_it=0 must be an int >= 1"),
        ({"start_lr": "abc"}, "lr_find needs numbers"),
    ],
)
def test_lr_find_rejects_bad_arguments_before_any_step(kwargs, match):
    learn = make_learner()
    w0 = learn.model[0].weight.detach().clone()
    with pytest.raises(ValueError, match=match):
        learn.lr_find(show_plot=False, **kwargs)
    assert torch.equal(learn.model[0].weight, w0) and len(learn.recorder.lrs) == 0


def test_lr_find_diverging_from_the_first_step_suggests_nothing():
    class Diverging(nn.Module):
        """A loss that grows with every call, whatever the lr: the curve never goes down."""

        def __init__(self):
            super().__init__()
            self.lin, self.calls = nn.Linear(4, 3), 0

        def forward(self, x):
            self.calls += 1
            return self.lin(x) * 10.0**self.calls

    learn = make_learner(model=Diverging())
    with pytest.warns(UserWarning, match="diverged from the first step"):
        sugg = learn.lr_find(num_it=20, show_plot=False)
    assert math.isnan(sugg.valley)


def test_lr_find_then_fit_one_cycle_with_trackers_trains_bit_for_bit_like_fit_alone():
    """Issue 11: lr_find loads back every component's state (model, optimizer, loaders, RNGs), so with a seeded
    shuffling loader, dropout, BatchNorm, a one-cycle schedule and trackers, `lr_find` + `fit` == `fit`."""
    from fastvision.callback.tracker import EarlyStoppingCallback, ReduceLROnPlateau
    from fastvision.data.load import DataLoaders

    def run(with_finder):
        g = torch.Generator().manual_seed(5)
        x, y = torch.randn(48, 4, generator=g), torch.randint(0, 3, (48,), generator=g)
        dls = DataLoaders.from_dsets(
            TensorDataset(x[:40], y[:40]), TensorDataset(x[40:], y[40:]), bs=8, seed=7
        )
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3)
        )
        learn = Learner(dls, model, loss_func=nn.CrossEntropyLoss())
        cbs = [EarlyStoppingCallback(patience=5), ReduceLROnPlateau(patience=1, min_delta=10.0)]
        with learn.no_logging():
            if with_finder:
                learn.lr_find(num_it=9, show_plot=False)
            learn.fit_one_cycle(3, 1e-2, cbs=cbs)
        state = {k: v.clone() for k, v in learn.model.state_dict().items()}
        return state, learn.recorder.losses, [r[:2] for r in learn.recorder.values], learn.recorder.lrs

    (w1, losses1, rows1, lrs1), (w0, losses0, rows0, lrs0) = run(True), run(False)
    assert w1.keys() == w0.keys() and all(torch.equal(w1[k], w0[k]) for k in w0)
    assert losses1 == losses0 and rows1 == rows0 and lrs1 == lrs0


def test_param_scheduler_state_dict_holds_its_records():
    learn = make_learner()
    sched = ParamScheduler({"lr": SchedCos(1e-2, 1e-4)})
    with learn.no_logging():
        learn.fit(1, cbs=[sched])
    state = sched.state_dict()
    assert len(state["hps"]["lr"]) == 4 and state["hps"]["lr"] == learn.recorder.hps["lr"]
    assert state["hps"]["lr"][0] == pytest.approx(sched_cos(1e-2, 1e-4, 0.0))
    other = ParamScheduler({"lr": SchedCos(1e-2, 1e-4)})
    other.load_state_dict(state)
    assert other.state_dict() == state and other.hps is not sched.hps


# ---- TimeBudget ---------------------------------------------------------------------------------------------
class FakeClock(Callback):
    """A clock that moves 1 s per training batch and 0.5 s per validation phase (order: before TimeBudget)."""

    order = -7

    def __init__(self):
        self.now = 0.0

    def __call__(self, *args):
        if not args:  # called as the clock
            return self.now
        return super().__call__(*args)

    def after_batch(self):
        if self.learn.training:
            self.now += 1.0

    def after_validate(self):
        self.now += 0.5


def test_time_budget_spreads_one_cycle_over_the_time_and_stops_in_it():
    clock, log = FakeClock(), LogLrs()
    learn = make_learner(default_cbs=False)  # 4 batches per epoch
    budget = TimeBudget(10.0, clock=clock)
    learn.fit_one_cycle(50, 1e-2, cbs=[clock, budget, log])
    # epoch 0: batches start at 0, 1, 2, 3 s, validation 4-4.5 s; epoch 1: 4.5, 5.5, 6.5, 7.5 s; after the
    # batch ending at 8.5 s another batch (1 s) and a validation (0.5 s) would reach 10 s: stop, validate
    starts = [0, 1, 2, 3, 4.5, 5.5, 6.5, 7.5]
    assert len(log.lrs) == len(starts) and learn.epoch == 1
    for lr, t in zip(log.lrs, starts):
        assert lr[0] == pytest.approx(one_cycle_lr(t / 10.0, 1e-2), rel=1e-9)
    assert clock.now == 9.0 <= budget.seconds


def test_time_budget_cuts_an_epoch_short_and_still_validates_it():
    clock, seen = FakeClock(), []

    class Phases(Callback):
        def before_epoch(self):
            seen.append([self.learn.epoch, 0, False])

        def after_batch(self):
            seen[-1][1] += self.learn.training

        def after_validate(self):
            seen[-1][2] = True

    learn = make_learner(default_cbs=False)
    learn.fit_one_cycle(50, 1e-2, cbs=[clock, TimeBudget(7.0, clock=clock), Phases()])
    # epoch 1 stops after its first batch (ending at 5.5 s: 5.5 + 1 + 0.5 >= 7), then validates (6 s)
    assert seen == [[0, 4, True], [1, 1, True]] and clock.now == 6.0 and learn.epoch == 1


def test_time_budget_lets_a_fit_end_at_n_epoch():
    clock, log = FakeClock(), LogLrs()
    learn = make_learner(default_cbs=False)
    learn.fit_one_cycle(1, 1e-2, cbs=[clock, TimeBudget(100.0, clock=clock), log])
    assert len(log.lrs) == 4 and clock.now == 4.5  # one epoch, the schedule only 4 % along


@pytest.mark.parametrize("seconds", [0, -1.0])
def test_time_budget_needs_positive_seconds(seconds):
    with pytest.raises(ValueError, match=f"seconds={seconds!r}"):
        TimeBudget(seconds)
