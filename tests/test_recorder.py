"""Recorder values (smoothed train loss, weighted valid loss, metrics), the epoch table and progress output, plots."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastvision.callback.core import Callback
from fastvision.callback.progress import ProgressCallback, format_row
from fastvision.callback.recorder import Recorder
from fastvision.learner import Learner
from fastvision.metrics import accuracy


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class DLs:
    def __init__(self, train, valid):
        self.train, self.valid = train, valid


def make_learner(n_train=16, n_valid=5, bs=4, **kwargs):
    torch.manual_seed(0)
    x, y = torch.randn(n_train + n_valid, 3), torch.randint(0, 2, (n_train + n_valid,))
    dls = DLs(
        DataLoader(TensorDataset(x[:n_train], y[:n_train]), batch_size=bs),
        DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=2),
    )
    return Learner(dls, nn.Linear(3, 2), loss_func=nn.CrossEntropyLoss(), **kwargs)


class RawLosses(Callback):
    def __init__(self):
        self.losses = []

    def after_loss(self):
        if self.learn.training:
            self.losses.append(self.learn.loss.item())


def test_train_loss_is_debiased_exponential_smoothing():
    learn = make_learner(lr=0.1)
    raw = RawLosses()
    learn.fit(2, cbs=[raw])  # 4 batches per epoch; the count is not reset between epochs
    beta, v, expected = 0.98, 0.0, []
    for i, loss in enumerate(raw.losses, 1):
        v = beta * v + (1 - beta) * loss
        expected.append(v / (1 - beta**i))
    assert learn.recorder.losses == pytest.approx(expected, rel=1e-5)
    assert [row[0] for row in learn.recorder.values] == pytest.approx([expected[3], expected[7]], rel=1e-5)
    assert learn.recorder.iters == [4, 8]
    assert float(learn.smooth_loss) == pytest.approx(expected[-1], rel=1e-5)
    assert len(learn.recorder.lrs) == 8 and learn.recorder.lrs[0] == 0.1


def test_valid_loss_is_batch_size_weighted_and_metrics_are_recorded():
    learn = make_learner(metrics=accuracy)  # valid: 5 items in batches of 2, 2, 1
    learn.fit(1)
    assert learn.final_record == learn.recorder.values[-1]
    preds, targs = learn.get_preds(act=lambda t: t)
    _, valid_loss, acc = learn.recorder.values[-1]
    assert valid_loss == pytest.approx(nn.functional.cross_entropy(preds, targs).item(), rel=1e-5)
    assert acc == pytest.approx((preds.argmax(1) == targs).float().mean().item())
    assert learn.final_record == pytest.approx(
        [valid_loss, acc]
    )  # get_preds/validate: [valid_loss, *metrics]


def test_metric_names_with_train_metrics():
    learn = make_learner(metrics=accuracy, cbs=None, default_cbs=False)
    learn.add_cb(Recorder(train_metrics=True))
    assert learn.recorder.metric_names == [
        "epoch",
        "train_loss",
        "train_accuracy",
        "valid_loss",
        "valid_accuracy",
        "time",
    ]
    learn.logger = lambda row: None
    learn.fit(1)
    assert len(learn.recorder.values[-1]) == 4


def test_losses_stay_on_device_until_the_epoch_ends():
    seen = []

    class Peek(Callback):
        order = 55  # after the Recorder

        def after_batch(self):
            if self.learn.training:
                seen.append(type(self.learn.recorder._losses[-1]))

    learn = make_learner()
    learn.fit(1, cbs=[Peek()])
    assert seen and all(t is torch.Tensor for t in seen)  # no .item() per batch
    assert all(isinstance(v, float) for v in learn.recorder.losses)


def test_progress_prints_one_plain_line_per_epoch_when_not_a_tty(capsys):
    learn = make_learner(metrics=accuracy)
    learn.fit(3)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 4 and "\r" not in out and "█" not in out
    assert lines[0].split() == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert [line.split()[0] for line in lines[1:]] == ["0", "1", "2"]
    assert all(len(line.split()) == 5 for line in lines[1:])
    # columns line up under the header
    assert lines[1].index(lines[1].split()[1]) == lines[0].index("train_loss")


def test_fine_tune_prints_two_tables(capsys):
    learn = make_learner()
    with pytest.warns(UserWarning, match="one parameter group"):
        learn.fine_tune(1)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["epoch", "0", "epoch", "0"]


def test_no_logging_no_bar_and_raw_logger(capsys):
    learn = make_learner()
    with learn.no_logging():
        learn.fit(1)
    assert capsys.readouterr().out == ""
    with learn.no_bar():
        assert not hasattr(learn, "progress")
        learn.fit(1)
    assert learn.progress in learn.cbs
    out = capsys.readouterr().out  # without ProgressCallback the Recorder's row goes to print
    assert out.startswith("[0, ") and out.strip().endswith("'00:00']")


def test_bar_mode_runs_and_restores_logger(capsys):
    learn = make_learner()
    learn.remove_cb(ProgressCallback).add_cb(ProgressCallback(mode="bar"))
    learn.fit(2)
    out = capsys.readouterr().out
    assert "train_loss" in out and learn.logger is print
    with pytest.raises(ValueError, match="one of 'auto', 'bar', 'plain'"):
        ProgressCallback(mode="fancy")


def test_format_row():
    line, widths = format_row(["epoch", "train_loss", "time"])
    assert line == "epoch     train_loss  time" and widths == [8, 10, 8]
    assert format_row([0, 0.5, "00:01"], widths)[0] == "0         0.500000    00:01"


def test_validate_keeps_history_and_plots(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    learn = make_learner()
    learn.fit_one_cycle(2, 1e-2)
    values = list(learn.recorder.values)
    learn.validate()
    learn.get_preds()
    assert learn.recorder.values == values
    assert learn.recorder.plot_loss(skip_start=1, show_epochs=True) is not None
    assert learn.recorder.plot_sched() is not None
    learn.lr_find(num_it=10)  # plots with suggestion markers
    assert learn.recorder.plot_lr_find() is not None
    learn.fit(1)  # no schedule: plot_sched plots the recorded lrs (issue #12)
    fig = learn.recorder.plot_sched()
    assert list(fig.axes[0].lines[0].get_ydata()) == learn.recorder.lrs
    with pytest.raises(ValueError, match=r"\['mom'\] not recorded"):
        learn.recorder.plot_sched(keys=["mom"])


def test_plot_sched_after_fit_with_reduce_lr_on_plateau():
    """Issue #12: plot_sched after a plain fit with ReduceLROnPlateau plots the lrs it set."""
    from fastvision.callback.tracker import ReduceLROnPlateau

    learn = make_learner()
    with learn.no_logging():
        learn.fit(
            3, lr=1e-2, cbs=ReduceLROnPlateau(monitor="train_loss", comp=lambda a, b: False, patience=1)
        )
    fig = learn.recorder.plot_sched()
    lrs = list(fig.axes[0].lines[0].get_ydata())
    assert lrs[0] == pytest.approx(1e-2) and lrs[-1] < lrs[0]


def test_lr_find_rows_hold_only_the_train_loss():
    """Issue #12 (fastai parity): the cancelled validation phase of lr_find adds no column to the rows."""
    learn = make_learner()
    n = len(learn.dls.train)
    learn.lr_find(num_it=2 * n + 1, show_plot=False, stop_div=False)
    assert len(learn.recorder.values) == 2
    assert all(len(row) == 1 for row in learn.recorder.values)


def test_plot_metrics_has_a_loss_axes_and_one_per_metric():
    import matplotlib

    matplotlib.use("Agg")
    learn = make_learner(metrics=accuracy)
    with learn.no_logging():
        learn.fit(3)
    fig = learn.recorder.plot_metrics()
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    loss_ax, acc_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["train_loss", "valid_loss"]
    values = learn.recorder.values
    for line, col in zip(loss_ax.lines, (0, 1)):
        assert list(line.get_xdata()) == [0, 1, 2]
        assert list(line.get_ydata()) == pytest.approx([row[col] for row in values])
    assert list(acc_ax.lines[0].get_ydata()) == pytest.approx([row[2] for row in values])
    fig = learn.recorder.plot_metrics(nrows=2, ncols=2)
    assert len(fig.axes) == 2  # the unused cells are removed
    with pytest.raises(ValueError, match=r"a 1x1 grid cannot hold 2 plots"):
        learn.recorder.plot_metrics(nrows=1, ncols=1)
    with pytest.raises(ValueError, match="nothing recorded yet"):
        make_learner().recorder.plot_metrics()


def test_plot_metrics_with_train_metrics_and_no_metric():
    import matplotlib

    matplotlib.use("Agg")
    learn = make_learner(metrics=accuracy, cbs=Recorder(train_metrics=True))
    with learn.no_logging():
        learn.fit(2)
    titles = [ax.get_title() for ax in learn.recorder.plot_metrics().axes]
    assert titles == ["loss", "train_accuracy", "valid_accuracy"]
    learn = make_learner()
    with learn.no_logging():
        learn.fit(1)
    (ax,) = learn.recorder.plot_metrics().axes
    assert [line.get_label() for line in ax.lines] == ["train_loss", "valid_loss"]


def _printed_epochs(out):
    lines = out.splitlines()
    assert lines[0].split()[0] == "epoch"
    return [int(line.split()[0]) for line in lines[1:]]


@pytest.mark.parametrize(
    "n_epoch, every, expected",
    [
        (10, 3, [0, 3, 6, 9]),
        (11, 5, [0, 5, 10]),
        (12, 5, [0, 5, 10, 11]),
        (4, 1, [0, 1, 2, 3]),
        (3, 10, [0, 2]),
    ],
)
def test_show_every_prints_every_nth_epoch_and_the_last(capsys, n_epoch, every, expected):
    learn = make_learner(n_train=4, n_valid=2, cbs=ProgressCallback(show_every=every))
    learn.fit(n_epoch)
    assert _printed_epochs(capsys.readouterr().out) == expected
    assert len(learn.recorder.values) == n_epoch  # the history keeps every epoch


def test_show_every_prints_the_last_epoch_when_the_fit_is_stopped(capsys):
    from fastvision.callback.core import CancelFitException

    class StopAt(Callback):
        order = 70

        def after_epoch(self):
            if self.learn.epoch == 6:
                raise CancelFitException()

    learn = make_learner(n_train=4, n_valid=2, cbs=[ProgressCallback(show_every=5), StopAt()])
    learn.fit(20)
    assert _printed_epochs(capsys.readouterr().out) == [0, 5, 6]


def test_notebook_status_lines_stay_when_later_epoch_rows_are_written(monkeypatch):
    from fastprogress.fastprogress import NBMasterBar

    final = []

    class NBHeadless(NBMasterBar):  # fastprogress's notebook bar, minus the display (no kernel here)
        def update(self, val):
            pass

        def on_iter_end(self):
            final.append([str(p) for p in self.text_parts])

    class Bar:
        def __init__(self, *args, **kwargs):
            pass

        def update(self, val):
            pass

        def on_iter_end(self):
            pass

    monkeypatch.setattr(ProgressCallback, "_bars", lambda self: (NBHeadless, Bar))

    class Status(Callback):
        order = 70

        def after_epoch(self):
            if self.learn.epoch == 0:
                self.learn.logger("Epoch 0: reducing lr to 1e-4")

    learn = make_learner(n_train=4, n_valid=2, cbs=[Status()])
    learn.fit(3)
    (parts,) = final
    assert "Epoch 0: reducing lr to 1e-4" in " ".join(parts[1:])  # still shown after epochs 1 and 2
    assert all(f"<td>{e}</td>" in parts[0] for e in "012")  # the table has every epoch


def test_show_every_is_checked():
    with pytest.raises(ValueError, match=r"show_every=0 must be an int >= 1"):
        ProgressCallback(show_every=0)
    with pytest.raises(ValueError, match=r"show_every=2.5 must be an int >= 1"):
        ProgressCallback(show_every=2.5)


def test_recorder_state_dict_round_trips_through_a_weights_only_file(tmp_path):
    learn = make_learner(metrics=accuracy)
    with learn.no_logging():
        learn.fit(2, lr=0.1)
    rec = learn.recorder
    torch.save(rec.state_dict(), tmp_path / "rec.pth")
    other = make_learner(metrics=accuracy)
    other.recorder.load_state_dict(torch.load(tmp_path / "rec.pth", weights_only=True))
    new = other.recorder
    assert (
        new.lrs == rec.lrs
        and new.losses == rec.losses
        and new.iters == rec.iters
        and new.values == rec.values
    )
    assert len(new.losses) == 8 and len(new.values) == 2
    assert new.smooth_loss.count == rec.smooth_loss.count == 8
    assert torch.equal(new.smooth_loss.value, rec.smooth_loss.value)
    assert torch.equal(other.smooth_loss, rec.smooth_loss.value)  # the learner's smoothed loss follows
    with other.no_logging():  # a new fit starts the history and the smoothing afresh
        other.fit(1, lr=0.1)
    assert other.recorder.smooth_loss.count == 4 and len(other.recorder.values) == 1
