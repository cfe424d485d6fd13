"""MixedPrecision and ChannelsLast against a fake learner driven by a minimal loop."""

import contextlib
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastvision.callback.core import Callback, RunMode
from fastvision.callback.fp16 import AMPMode, ChannelsLast, MixedPrecision


def fake_learner(device="cpu"):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    return SimpleNamespace(
        model=model,
        opt=opt,
        autocast=contextlib.nullcontext,
        scaler=None,
        training=True,
        run_mode=RunMode.FIT,
    )


def train(learn, cb, steps=30):
    """The loop of docs/design.md: forward + loss under `learn.autocast()`, step through `learn.scaler`."""
    g = torch.Generator().manual_seed(1)
    device = next(learn.model.parameters()).device
    x = torch.randn(32, 4, generator=g).to(device)
    y = (x[:, 0] > 0).long()
    cb.learn = learn
    cb.before_fit()
    losses, dtypes = [], set()
    try:
        for _ in range(steps):
            with learn.autocast():
                learn.pred = learn.model(x)
                dtypes.add(learn.pred.dtype)
                cb.after_pred()
                loss = F.cross_entropy(learn.pred, y)
            if learn.scaler is not None:
                learn.scaler.scale(loss).backward()
                learn.scaler.step(learn.opt)
                learn.scaler.update()
            else:
                loss.backward()
                learn.opt.step()
            learn.opt.zero_grad()
            losses.append(loss.item())
    finally:
        cb.after_fit()
    return losses, dtypes


def test_amp_mode_values():
    assert AMPMode.FP16 == "fp16" and AMPMode.BF16 == "bf16"
    assert MixedPrecision("bf16").amp_mode is AMPMode.BF16
    with pytest.raises(ValueError, match="amp_mode='fp8' is not one of 'fp16', 'bf16'"):
        MixedPrecision("fp8")


def test_bf16_on_cpu_trains_and_keeps_fp32_weights():
    learn = fake_learner()
    cb = MixedPrecision(AMPMode.BF16)
    losses, dtypes = train(learn, cb)
    assert dtypes == {torch.bfloat16}  # the forward pass really ran in bf16
    assert losses[-1] < losses[0] * 0.7
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())
    assert all(v.dtype == torch.float32 for v in learn.model.state_dict().values())
    assert learn.autocast is contextlib.nullcontext and learn.scaler is None  # restored


def test_after_pred_casts_to_float32():
    learn = fake_learner()
    cb = MixedPrecision("bf16")
    cb.learn = learn
    learn.pred = (torch.zeros(2, dtype=torch.bfloat16), torch.zeros(2, dtype=torch.long))
    cb.after_pred()
    assert learn.pred[0].dtype == torch.float32 and learn.pred[1].dtype == torch.long


def test_fp16_on_cpu_falls_back_to_bf16_with_warning():
    learn = fake_learner()
    cb = MixedPrecision()
    cb.learn = learn
    with pytest.warns(UserWarning, match="bfloat16 autocast instead"):
        cb.before_fit()
    assert cb.dtype == torch.bfloat16 and learn.scaler is None
    with learn.autocast():
        assert learn.model(torch.zeros(1, 4)).dtype == torch.bfloat16
    cb.after_fit()
    assert learn.autocast is contextlib.nullcontext


def test_channels_last():
    learn = SimpleNamespace(model=nn.Conv2d(3, 4, 3))
    cb = ChannelsLast()
    cb.learn = learn
    cb.before_fit()
    assert learn.model.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_on_cuda_uses_grad_scaler():
    learn = fake_learner("cuda")
    cb = MixedPrecision(init_scale=2.0**10)
    losses, dtypes = train(learn, cb, steps=50)
    assert dtypes == {torch.float16}
    assert isinstance(cb.scaler, torch.amp.GradScaler) and cb.scaler.is_enabled()
    assert losses[-1] < losses[0] * 0.7
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())
    assert learn.scaler is None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_on_cuda():
    if not torch.cuda.is_bf16_supported():
        with pytest.raises(ValueError, match="Unsupported GPU for bfloat16"):
            train(fake_learner("cuda"), MixedPrecision("bf16"), steps=1)
        return
    losses, dtypes = train(fake_learner("cuda"), MixedPrecision("bf16"))
    assert dtypes == {torch.bfloat16} and losses[-1] < losses[0]


def test_fit_bf16_on_cpu_then_predict_in_fp32(tmp_path):
    from torch.utils.data import TensorDataset

    from fastvision.data.load import DataLoaders
    from fastvision.learner import Learner
    from fastvision.losses import CrossEntropyLossFlat
    from fastvision.testing import make_tensor_data

    x, y = make_tensor_data(32, 2, size=4)
    dls = DataLoaders.from_dsets(
        TensorDataset(x[:24], y[:24]), TensorDataset(x[24:], y[24:]), bs=8, num_workers=0
    )
    torch.manual_seed(0)
    learn = Learner(
        dls, nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), loss_func=CrossEntropyLossFlat(), path=tmp_path
    )
    learn.to_bf16()
    seen = []

    class PredDtype(Callback):  # records the dtype of the raw forward output (before MixedPrecision casts)
        order = 5

        def after_pred(self):
            seen.append(self.learn.pred.dtype)

    learn.fit(2, lr=0.1, cbs=PredDtype())
    assert torch.bfloat16 in seen
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())
    assert learn.autocast is contextlib.nullcontext and learn.scaler is None
    preds, _ = learn.get_preds()
    assert preds.dtype == torch.float32
    learn.save("m")
    state = torch.load(tmp_path / "models" / "m.pth", weights_only=True)
    assert all(t.dtype == torch.float32 for t in state["model"].values() if t.is_floating_point())


def test_inference_after_fp16_fit_runs_in_fp32_and_warns_once(tmp_path):
    """Issue #12.1: validate/get_preds/predict after to_fp16() + fit run without autocast, like the raw model."""
    import warnings

    from torch.utils.data import TensorDataset

    from fastvision.data.load import DataLoaders
    from fastvision.learner import Learner
    from fastvision.losses import CrossEntropyLossFlat
    from fastvision.testing import make_tensor_data

    x, y = make_tensor_data(32, 2, size=4)
    dls = DataLoaders.from_dsets(
        TensorDataset(x[:24], y[:24]), TensorDataset(x[24:], y[24:]), bs=8, num_workers=0
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), path=tmp_path)
    learn.to_fp16()  # fp16 on the CPU: bf16 autocast with a warning during fit
    with pytest.warns(UserWarning, match="bfloat16 autocast instead"):
        learn.fit(1, lr=0.1)
    seen = []

    class PredDtype(Callback):
        order = 5

        def after_pred(self):
            seen.append(self.learn.pred.dtype)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "needs a CUDA GPU" warning at inference
        preds, _ = learn.get_preds(act=lambda t: t, cbs=PredDtype())
        learn.validate(cbs=PredDtype())
    assert seen and set(seen) == {torch.float32}
    model.eval()
    with torch.no_grad():
        expected = model(x[24:])
    assert torch.equal(preds, expected)
