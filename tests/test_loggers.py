"""CSVLogger, TensorBoardCallback, GradientAccumulation, GradientClip and ShortEpochCallback on a fake learner."""

import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastvision.callback.core import (
    CancelBatchException,
    CancelStepException,
    CancelTrainException,
    CancelValidException,
    RunMode,
)
from fastvision.callback.loggers import (
    CSVLogger,
    GradientAccumulation,
    GradientClip,
    ShortEpochCallback,
    TensorBoardCallback,
)

NAMES = ["epoch", "train_loss", "valid_loss", "accuracy", "time"]


def fake_learner(path, names=NAMES, **kw):
    recorder = SimpleNamespace(metric_names=names, values=[])
    return SimpleNamespace(
        **{"path": path, "recorder": recorder, "epoch": 0, "cbs": [], "is_fitting": True, **kw}
    )


def log_epochs(cb, learn, rows):
    cb.learn = learn
    cb.before_fit()
    for epoch, row in enumerate(rows):
        learn.epoch = epoch
        cb.before_epoch()
        learn.recorder.values.append(row)
        cb.after_epoch()
    cb.after_fit()


def test_csv_logger_writes_one_line_per_epoch(tmp_path):
    learn = fake_learner(tmp_path)
    cb = CSVLogger()
    log_epochs(cb, learn, [[0.9, 0.8, 0.5], [0.7, torch.tensor(0.6), 0.75]])
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_loss,valid_loss,accuracy,time"
    assert lines[1] == "0,0.9,0.8,0.5,00:00"
    assert lines[2].startswith("1,0.7,0.6") and lines[2].endswith(",0.75,00:00")
    rows = cb.read_log()
    assert rows[1]["epoch"] == 1 and rows[1]["accuracy"] == 0.75 and rows[0]["time"] == "00:00"
    assert cb.file is None  # closed after fit


def test_csv_logger_flushes_each_epoch(tmp_path):
    learn = fake_learner(tmp_path)
    cb = CSVLogger("logs/run.csv")
    cb.learn = learn
    cb.before_fit()
    cb.before_epoch()
    learn.recorder.values.append([0.9, 0.8, 0.5])
    cb.after_epoch()
    assert len((tmp_path / "logs" / "run.csv").read_text().splitlines()) == 2  # readable while training
    cb.before_epoch()
    cb.after_epoch()  # an epoch without a recorder row (cancelled) writes nothing
    cb.after_fit()
    assert len(cb.read_log()) == 1


def test_csv_logger_append(tmp_path):
    learn = fake_learner(tmp_path)
    log_epochs(CSVLogger(), learn, [[0.9, 0.8, 0.5]])
    log_epochs(CSVLogger(append=True), fake_learner(tmp_path), [[0.7, 0.6, 0.6]])
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch")
    other = fake_learner(tmp_path, names=["epoch", "train_loss", "valid_loss", "time"])
    with pytest.raises(ValueError, match="has columns .* but this fit records"):
        log_epochs(CSVLogger(append=True), other, [])
    log_epochs(CSVLogger(), fake_learner(tmp_path), [])
    assert (tmp_path / "history.csv").read_text().splitlines() == [lines[0]]  # overwritten


def test_csv_logger_off_during_lr_find(tmp_path):
    log_epochs(CSVLogger(), fake_learner(tmp_path, is_fitting=False), [[0.9, 0.8, 0.5]])
    assert not (tmp_path / "history.csv").exists()


def test_csv_logger_read_log_as_frame(tmp_path):
    pd = pytest.importorskip("pandas")
    cb = CSVLogger()
    log_epochs(cb, fake_learner(tmp_path), [[0.9, 0.8, 0.5]])
    df = cb.read_log(as_frame=True)
    assert isinstance(df, pd.DataFrame) and list(df.columns) == NAMES


def test_tensorboard_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        TensorBoardCallback()


def test_tensorboard_logs(tmp_path):
    pytest.importorskip("tensorboard")
    model = nn.Linear(2, 1)
    learn = fake_learner(tmp_path, model=model, opt=torch.optim.SGD(model.parameters(), lr=0.1))
    learn.train_iter, learn.smooth_loss = 0, torch.tensor(0.5)
    cb = TensorBoardCallback(log_dir=tmp_path / "runs", log_every=1)
    cb.learn = learn
    cb.before_fit()
    cb.after_batch()
    learn.recorder.values.append([0.9, 0.8, 0.5])
    cb.after_epoch()
    cb.after_fit()
    assert any((tmp_path / "runs").iterdir())


def one_batch(learn, cbs, x, y):
    """One training batch with the learner's cancellation semantics (docs: CancelBatch in before_step skips zero_grad)."""
    learn.xb, learn.yb = (x,), (y,)
    try:
        learn.pred = learn.model(x)
        learn.loss_grad = F.mse_loss(learn.pred, y)
        learn.loss = learn.loss_grad.detach().clone()
        for cb in cbs:
            cb.after_loss()
        learn.loss_grad.backward()
        try:
            for cb in cbs:
                cb.before_step()
            learn.opt.step()
        except CancelStepException:
            pass
        learn.opt.zero_grad()
    except CancelBatchException:
        pass


def linear_learner():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    return SimpleNamespace(
        model=model,
        opt=torch.optim.SGD(model.parameters(), lr=0.1),
        training=True,
        scaler=None,
        run_mode=RunMode.FIT,
    )


def test_gradient_accumulation_equals_a_big_batch():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, generator=g), torch.randn(32, 1, generator=g)
    big = linear_learner()
    for i in range(0, 32, 16):
        one_batch(big, [], x[i : i + 16], y[i : i + 16])
    small = linear_learner()
    cb = GradientAccumulation(n_acc=16)
    cb.learn = small
    cb.before_fit()
    losses = []
    for i in range(0, 32, 4):
        one_batch(small, [cb], x[i : i + 4], y[i : i + 4])
        losses.append(small.loss)
    for p_big, p_small in zip(big.model.parameters(), small.model.parameters()):
        assert torch.allclose(p_big, p_small, atol=1e-6)
    assert torch.allclose(losses[0], F.mse_loss(linear_learner().model(x[:4]), y[:4]))  # logged loss unscaled


def test_gradient_accumulation_skips_steps():
    learn = linear_learner()
    cb = GradientAccumulation(n_acc=8)
    cb.learn = learn
    cb.before_fit()
    w0 = learn.model.weight.detach().clone()
    one_batch(learn, [cb], torch.randn(4, 3), torch.randn(4, 1))
    assert torch.equal(learn.model.weight, w0) and learn.model.weight.grad is not None  # kept, not zeroed
    one_batch(learn, [cb], torch.randn(4, 3), torch.randn(4, 1))
    assert not torch.equal(learn.model.weight, w0) and cb.count == 0


def test_gradient_clip():
    learn = linear_learner()
    cb = GradientClip(max_norm=0.1)
    cb.learn = learn
    learn.model(torch.full((4, 3), 100.0)).sum().backward()
    cb.before_step()
    norm = torch.norm(torch.stack([p.grad.norm() for p in learn.model.parameters()]))
    assert norm.item() == pytest.approx(0.1, rel=1e-4)


def test_short_epoch():
    learn = SimpleNamespace(iter=0, n_iter=10, training=True)
    cb = ShortEpochCallback(pct=0.2)
    cb.learn = learn
    cb.after_batch()  # 1 of 10 batches run
    learn.iter = 1
    with pytest.raises(CancelTrainException):
        cb.after_batch()
    learn.training = False
    with pytest.raises(CancelValidException):
        cb.after_batch()
    cb2 = ShortEpochCallback(pct=0.2, short_valid=False)
    cb2.learn = learn
    cb2.after_batch()  # validation runs in full


# ---------------------------------------------------------------------------- with a real Learner


def regression_learner(tmp_path, bs, n=32):
    from torch.utils.data import TensorDataset

    from fastvision.data.load import DataLoaders
    from fastvision.learner import Learner
    from fastvision.losses import MSELossFlat

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, generator=g), torch.randn(n, 1, generator=g)
    ds = TensorDataset(x, y)
    dls = DataLoaders.from_dsets(ds, ds, bs=bs, shuffle=False, num_workers=0, path=tmp_path)
    torch.manual_seed(0)
    return Learner(dls, nn.Linear(3, 1), loss_func=MSELossFlat(), opt_func=torch.optim.SGD, path=tmp_path)


def test_fit_gradient_accumulation_matches_big_batches(tmp_path):
    big = regression_learner(tmp_path, bs=16)
    big.fit(2, lr=0.1)
    small = regression_learner(tmp_path, bs=4)
    small.fit(2, lr=0.1, cbs=GradientAccumulation(n_acc=16))
    for p_big, p_small in zip(big.model.parameters(), small.model.parameters()):
        assert torch.allclose(p_big, p_small, atol=1e-5)
    assert small.recorder.values[-1][1] == pytest.approx(big.recorder.values[-1][1], rel=1e-4)  # valid loss


def test_fit_csv_logger(tmp_path):
    learn = regression_learner(tmp_path, bs=8)
    cb = CSVLogger()
    learn.fit(3, lr=0.05, cbs=cb)
    rows = cb.read_log()
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert list(rows[0]) == ["epoch", "train_loss", "valid_loss", "time"]
    assert rows[2]["valid_loss"] == learn.recorder.values[2][1]  # full precision
    learn.validate()
    learn.get_preds()
    assert len(cb.read_log()) == 3  # validate/get_preds write nothing


def test_fit_gradient_clip_and_short_epoch(tmp_path):
    learn = regression_learner(tmp_path, bs=4)
    learn.fit(1, lr=0.1, cbs=[GradientClip(0.01), ShortEpochCallback(pct=0.25)])
    assert learn.train_iter == 2  # 2 of 8 batches


class FakeWriter:
    """Stands in for SummaryWriter: records (tag, value, step); the instances are kept in `made`."""

    made: list = []

    def __init__(self, log_dir=None):
        self.scalars = []
        FakeWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, float(value), step))

    def add_graph(self, model, inputs):
        pass

    def close(self):
        pass


def test_tensorboard_logs_losses_metrics_and_lr_in_a_fit(monkeypatch):
    """Issue #12: scalars are the losses, the metrics (training ones too) and each group's lr, not `group_0`/`eps_0`."""
    import types

    from torch.utils.data import TensorDataset

    from fastvision.callback.recorder import Recorder
    from fastvision.data.load import DataLoaders
    from fastvision.learner import Learner
    from fastvision.metrics import accuracy

    monkeypatch.setitem(
        sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter)
    )
    FakeWriter.made = []
    torch.manual_seed(0)
    x, y = torch.randn(24, 4), torch.randint(0, 2, (24,))
    dls = DataLoaders.from_dsets(TensorDataset(x[:16], y[:16]), TensorDataset(x[16:], y[16:]), bs=8)
    cbs = [Recorder(train_metrics=True), TensorBoardCallback(log_every=1)]
    learn = Learner(dls, nn.Linear(4, 2), loss_func=nn.CrossEntropyLoss(), metrics=accuracy, cbs=cbs)
    with learn.no_logging():
        learn.fit(1, lr=0.01)
    scalars = FakeWriter.made[0].scalars
    assert {t for t, _, _ in scalars} == {
        "train_loss",
        "lr_0",
        "mom_0",
        "train_accuracy",
        "valid_loss",
        "valid_accuracy",
    }
    assert [v for t, v, _ in scalars if t == "lr_0"] == [0.01, 0.01]
