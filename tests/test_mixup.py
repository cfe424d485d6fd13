"""MixUp and CutMix against the closed form on a fixed (seeded) draw; validation and inference untouched."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastvision.callback.core import Callback
from fastvision.callback.mixup import CutMix, MixUp
from fastvision.learner import Learner


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class DLs:
    def __init__(self, train, valid):
        self.train, self.valid = train, valid


class Capture:
    """What the loop saw: the batch before mixing (order -5) and after the loss (order 5)."""

    def __init__(self, handler):
        self.handler, self.rows, self.raw = handler, [], None

    def record(self, learn):
        h = self.handler
        self.rows.append(
            dict(
                training=learn.training,
                raw=self.raw,
                xb=tuple(t.clone() for t in learn.xb),
                yb=tuple(t.clone() for t in learn.yb),
                pred=learn.pred.detach().clone(),
                loss=learn.loss.clone(),
                lam=None if h is None or h.lam is None else h.lam.clone(),
                perm=None if h is None or h.perm is None else h.perm.clone(),
            )
        )


class BeforeMix(Callback):
    order = -5

    def __init__(self, cap):
        self.cap = cap

    def before_batch(self):
        self.cap.raw = tuple(t.clone() for t in (*self.learn.xb, *self.learn.yb))


class AfterLoss(Callback):
    order = 5

    def __init__(self, cap):
        self.cap = cap

    def after_loss(self):
        self.cap.record(self.learn)


def make_learner(handler, x, y, xv=None, yv=None, model=None, loss_func=None, bs=8):
    xv = x[:4] if xv is None else xv
    yv = y[:4] if yv is None else yv
    dls = DLs(
        DataLoader(TensorDataset(x, y), batch_size=bs), DataLoader(TensorDataset(xv, yv), batch_size=bs)
    )
    model = model or nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 3))
    cap = Capture(handler)
    cbs = [cb for cb in (handler, BeforeMix(cap), AfterLoss(cap)) if cb is not None]
    learn = Learner(dls, model, loss_func=loss_func or nn.CrossEntropyLoss(), cbs=cbs, default_cbs=False)
    return learn, cap


def data(n=8, shape=(4,), n_cls=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, n_cls, (n,), generator=g)


def test_mixup_draw_matches_the_closed_form_for_a_seeded_draw():
    x, y = data()
    cb = MixUp(0.4)
    learn, _ = make_learner(cb, x, y)
    learn.xb, learn.yb, learn.training = (x,), (y,), True
    cb.before_train()
    torch.manual_seed(3)
    cb.before_batch()
    torch.manual_seed(
        3
    )  # the same draws, in the callback's order: partner permutation, then one Beta per item
    perm = torch.randperm(8)
    lam = torch.distributions.Beta(torch.tensor(0.4), torch.tensor(0.4)).sample((8,))
    lam = torch.maximum(lam, 1 - lam)
    assert torch.equal(cb.perm, perm) and torch.allclose(cb.lam, lam)
    assert (cb.lam >= 0.5).all() and (cb.lam <= 1).all()
    assert torch.allclose(learn.xb[0], lam[:, None] * x + (1 - lam[:, None]) * x[perm])
    assert torch.equal(learn.yb[0], y)  # class indices are not mixed: the loss is
    pred = torch.randn(8, 3)
    expected = (lam * F.cross_entropy(pred, y, reduction="none")).mean() + (
        (1 - lam) * F.cross_entropy(pred, y[perm], reduction="none")
    ).mean()
    assert torch.allclose(learn.loss_func(pred, y), expected)
    cb.after_train()
    assert type(learn.loss_func) is nn.CrossEntropyLoss


def test_mixup_in_fit_mixes_inputs_and_loss_and_leaves_validation_alone():
    x, y = data(16)
    torch.manual_seed(0)
    learn, cap = make_learner(MixUp(), x, y, bs=8)
    learn.fit(2, lr=1e-2)
    train = [r for r in cap.rows if r["training"]]
    valid = [r for r in cap.rows if not r["training"]]
    assert len(train) == 4 and len(valid) == 2
    for r in train:
        (x0, y0), lam, perm = r["raw"], r["lam"], r["perm"]
        assert torch.allclose(r["xb"][0], lam[:, None] * x0 + (1 - lam[:, None]) * x0[perm], atol=1e-6)
        own = F.cross_entropy(r["pred"], y0, reduction="none")
        partner = F.cross_entropy(r["pred"], y0[perm], reduction="none")
        assert torch.allclose(r["loss"], (lam * own + (1 - lam) * partner).mean(), atol=1e-6)
        assert not torch.allclose(r["xb"][0], x0)  # it did mix
    for r in valid:
        assert torch.equal(r["xb"][0], r["raw"][0]) and torch.equal(r["yb"][0], r["raw"][1])
        assert torch.allclose(r["loss"], F.cross_entropy(r["pred"], r["raw"][1]))
    assert type(learn.loss_func) is nn.CrossEntropyLoss  # put back after training


def test_validate_and_get_preds_are_the_same_with_and_without_mixup():
    x, y = data(16)
    learn, _ = make_learner(MixUp(), x, y)
    learn.fit(1, lr=1e-2)
    with_mix = learn.validate(), learn.get_preds()
    learn.remove_cb(MixUp)
    without = learn.validate(), learn.get_preds()
    assert with_mix[0] == pytest.approx(without[0])
    assert torch.equal(with_mix[1][0], without[1][0])


def test_mixup_reduction_sum_and_none_are_kept():
    x, y = data()
    for reduction in ("sum", "none"):
        cb = MixUp()
        lf = nn.CrossEntropyLoss(reduction=reduction)
        learn, _ = make_learner(cb, x, y, loss_func=lf)
        learn.xb, learn.yb, learn.training = (x,), (y,), True
        cb.before_train()
        cb.before_batch()
        pred = torch.randn(8, 3)
        mixed = cb.lam * F.cross_entropy(pred, y, reduction="none") + (1 - cb.lam) * F.cross_entropy(
            pred, y[cb.perm], reduction="none"
        )
        got = learn.loss_func(pred, y)
        assert torch.allclose(got, mixed.sum() if reduction == "sum" else mixed)
        assert lf.reduction == reduction  # restored after each per-item call
        cb.after_train()


def test_mixup_mixes_float_targets_and_matches_mixed_bce():
    x = torch.randn(8, 2)
    y = torch.randint(0, 2, (8, 1)).float()
    cb = MixUp(0.4)
    learn, _ = make_learner(cb, x, y, model=nn.Linear(2, 1), loss_func=nn.BCEWithLogitsLoss())
    learn.xb, learn.yb, learn.training = (x,), (y,), True
    cb.before_train()
    cb.before_batch()
    lam = cb.lam[:, None]
    assert torch.allclose(learn.yb[0], lam * y + (1 - lam) * y[cb.perm])
    pred = torch.randn(8, 1)
    by_loss = (
        lam * F.binary_cross_entropy_with_logits(pred, y, reduction="none")
        + (1 - lam) * F.binary_cross_entropy_with_logits(pred, y[cb.perm], reduction="none")
    ).mean()
    assert torch.allclose(learn.loss_func(pred, *learn.yb), by_loss, atol=1e-6)


def test_cutmix_pastes_the_partner_box_and_weights_by_area():
    x, y = data(8, (3, 10, 12))
    cb = CutMix(1.0)
    learn, _ = make_learner(cb, x, y)
    original = x.clone()
    learn.xb, learn.yb, learn.training = (x,), (y,), True
    cb.before_train()
    torch.manual_seed(1)
    cb.before_batch()
    y1, y2, x1, x2 = cb.box
    assert 0 <= y1 <= y2 <= 10 and 0 <= x1 <= x2 <= 12
    inside = torch.zeros(10, 12, dtype=torch.bool)
    inside[y1:y2, x1:x2] = True
    mixed = learn.xb[0]
    assert torch.equal(mixed[..., inside], x[cb.perm][..., inside])
    assert torch.equal(mixed[..., ~inside], x[..., ~inside])
    assert torch.equal(x, original)  # the loader's tensor is not written to
    kept = 1 - (y2 - y1) * (x2 - x1) / 120
    assert torch.allclose(cb.lam, torch.full((8,), kept))
    pred = torch.randn(8, 3)
    expected = kept * F.cross_entropy(pred, y) + (1 - kept) * F.cross_entropy(pred, y[cb.perm])
    assert torch.allclose(learn.loss_func(pred, y), expected, atol=1e-6)


def test_cutmix_box_follows_the_closed_form_for_a_seeded_draw():
    torch.manual_seed(5)
    box = CutMix.rand_box(100, 80, 0.75)  # side ratio sqrt(0.25) = 0.5: a 50 x 40 box before clipping
    torch.manual_seed(5)
    cy, cx = int(torch.randint(0, 100, ())), int(torch.randint(0, 80, ()))
    assert box == (max(cy - 25, 0), min(cy + 25, 100), max(cx - 20, 0), min(cx + 20, 80))


def test_cutmix_in_fit_leaves_validation_alone():
    x, y = data(16, (1, 6, 6))
    learn, cap = make_learner(CutMix(), x, y)
    learn.fit(1, lr=1e-2)
    valid = [r for r in cap.rows if not r["training"]]
    assert valid and all(torch.equal(r["xb"][0], r["raw"][0]) for r in valid)
    assert type(learn.loss_func) is nn.CrossEntropyLoss


def test_loss_func_restored_after_an_error_in_training():
    x, y = data()

    class Boom(Callback):
        def after_pred(self):
            raise RuntimeError("boom")

    learn, _ = make_learner(MixUp(), x, y)
    with pytest.raises(RuntimeError, match="boom"):
        learn.fit(1, cbs=[Boom()])
    assert type(learn.loss_func) is nn.CrossEntropyLoss


def test_errors_say_what_was_received_and_how_to_fix():
    with pytest.raises(ValueError, match="alpha must be > 0, got 0"):
        MixUp(0)
    x, y = data()
    cb = CutMix()
    learn, _ = make_learner(cb, x, y)
    learn.xb, learn.yb, learn.training = (x,), (y,), True
    with pytest.raises(ValueError, match=r"got inputs of shape \(8, 4\).*Use MixUp"):
        cb.before_batch()
    cb = MixUp()
    learn, _ = make_learner(cb, x, y)
    learn.xb, learn.yb, learn.training = ((x * 10).to(torch.uint8),), (y,), True
    with pytest.raises(TypeError, match="torch.uint8 inputs, expected floats.*IntToFloatTensor"):
        cb.before_batch()

    def no_reduction(pred, targ):
        return F.cross_entropy(pred, targ)

    learn, _ = make_learner(MixUp(), x, y, loss_func=no_reduction)
    with pytest.raises(TypeError, match="no `reduction` attribute or argument"):
        learn.fit(1)


def test_exported_in_all():
    import fastvision.all as fa

    assert fa.MixUp is MixUp and fa.CutMix is CutMix
    assert MixUp().alpha == 0.4 and CutMix().alpha == 1.0
    assert MixUp().name == "mix_up"
