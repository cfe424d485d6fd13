import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastvision.losses import (
    BCELossFlat,
    BCEWithLogitsLossFlat,
    CrossEntropyLossFlat,
    FocalLoss,
    FocalLossFlat,
    L1LossFlat,
    LabelSmoothingCrossEntropy,
    LabelSmoothingCrossEntropyFlat,
    MSELossFlat,
    loss_activation,
    loss_decodes,
)


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(8, 4), torch.randint(0, 4, (8,))


def test_cross_entropy_flat_matches_torch(logits):
    x, y = logits
    loss = CrossEntropyLossFlat()
    assert torch.allclose(loss(x, y), F.cross_entropy(x, y))
    assert repr(loss) == "FlattenedLoss of CrossEntropyLoss()"
    assert loss.y_int and isinstance(loss, nn.Module)
    assert torch.allclose(loss(x, y.int()), F.cross_entropy(x, y))  # int32 targets are cast to long
    smoothed = CrossEntropyLossFlat(label_smoothing=0.1)
    assert torch.allclose(smoothed(x, y), F.cross_entropy(x, y, label_smoothing=0.1))


def test_cross_entropy_flat_axis1_segmentation():
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 4, 5), torch.randint(0, 3, (2, 4, 5))
    assert torch.allclose(CrossEntropyLossFlat(axis=1)(x, y), F.cross_entropy(x, y), atol=1e-6)
    probs = CrossEntropyLossFlat(axis=1).activation(x)
    assert torch.allclose(probs.sum(1), torch.ones(2, 4, 5))
    assert CrossEntropyLossFlat(axis=1).decodes(probs).shape == (2, 4, 5)


def test_reduction_property(logits):
    x, y = logits
    loss = CrossEntropyLossFlat()
    loss.reduction = "none"
    assert loss.reduction == "none" and loss.func.reduction == "none"
    assert loss(x, y).shape == (8,)
    assert torch.allclose(CrossEntropyLossFlat(reduction="sum")(x, y), F.cross_entropy(x, y, reduction="sum"))


def test_activation_decodes(logits):
    x, _ = logits
    loss = CrossEntropyLossFlat()
    assert torch.allclose(loss.activation(x), F.softmax(x, dim=-1))
    assert torch.equal(loss.decodes(loss.activation(x)), x.argmax(-1))
    bce = BCEWithLogitsLossFlat(thresh=0.7)
    p = bce.activation(x)
    assert torch.allclose(p, torch.sigmoid(x))
    assert torch.equal(bce.decodes(p), p > 0.7)
    mse = MSELossFlat()
    assert mse.activation(x) is x and mse.decodes(x) is x


def test_bce_with_logits_flat():
    torch.manual_seed(0)
    x, y = torch.randn(4, 3), torch.randint(0, 2, (4, 3))
    assert torch.allclose(BCEWithLogitsLossFlat()(x, y), F.binary_cross_entropy_with_logits(x, y.float()))
    pw = torch.tensor([1.0, 2.0, 3.0])
    got = BCEWithLogitsLossFlat(pos_weight=pw)(x, y)
    assert torch.allclose(got, F.binary_cross_entropy_with_logits(x, y.float(), pos_weight=pw))
    with pytest.raises(ValueError, match="pos_weight needs the label axis"):
        BCEWithLogitsLossFlat(pos_weight=pw, flatten=True)
    p = torch.sigmoid(x)
    assert torch.allclose(BCELossFlat()(p, y), F.binary_cross_entropy(p, y.float()))


def test_regression_losses_flatten():
    pred, targ = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1, 1, 1])  # (N, 1) vs (N,) int
    assert MSELossFlat()(pred, targ).item() == pytest.approx((0 + 1 + 9) / 3)
    assert L1LossFlat()(pred, targ).item() == pytest.approx((0 + 1 + 3) / 3)
    assert repr(MSELossFlat()) == "FlattenedLoss of MSELoss()"


def test_focal_loss(logits):
    x, y = logits
    assert torch.allclose(FocalLoss(gamma=0.0)(x, y), F.cross_entropy(x, y))
    ce = F.cross_entropy(x, y, reduction="none")
    expected = ((1 - torch.exp(-ce)) ** 2 * ce).mean()
    assert torch.allclose(FocalLossFlat()(x, y), expected)
    assert torch.allclose(FocalLossFlat(reduction="sum")(x, y), expected * 8)
    assert FocalLossFlat.y_int


def test_label_smoothing(logits):
    x, y = logits
    expected = F.cross_entropy(x, y, label_smoothing=0.1)
    assert torch.allclose(LabelSmoothingCrossEntropy()(x, y), expected, atol=1e-6)
    assert torch.allclose(LabelSmoothingCrossEntropyFlat()(x, y), expected, atol=1e-6)
    none = LabelSmoothingCrossEntropy(eps=0.2, reduction="none")(x, y)
    assert torch.allclose(none, F.cross_entropy(x, y, label_smoothing=0.2, reduction="none"), atol=1e-6)
    assert torch.equal(LabelSmoothingCrossEntropy().decodes(x), x.argmax(1))


def test_losses_are_modules_with_buffers():
    w = torch.tensor([1.0, 2.0])
    loss = LabelSmoothingCrossEntropy(weight=w).to(torch.float64)
    assert loss.weight.dtype == torch.float64
    assert "func.weight" in dict(CrossEntropyLossFlat(weight=w).named_buffers())


@pytest.mark.parametrize(
    "loss_func, act_expected, dec_input, dec_expected",
    [
        (nn.CrossEntropyLoss(), "softmax", torch.tensor([[0.1, 0.9]]), torch.tensor([1])),
        (F.cross_entropy, "softmax", torch.tensor([[0.8, 0.2]]), torch.tensor([0])),
        (nn.NLLLoss(), "exp", torch.tensor([[0.1, 0.9]]), torch.tensor([1])),
        (nn.BCEWithLogitsLoss(), "sigmoid", torch.tensor([[0.2, 0.7]]), torch.tensor([[False, True]])),
        (nn.MSELoss(), "identity", torch.tensor([[0.2, 0.7]]), torch.tensor([[0.2, 0.7]])),
        (lambda p, t: (p - t).abs().mean(), "identity", torch.tensor([1.5]), torch.tensor([1.5])),
    ],
)
def test_loss_activation_any_loss(loss_func, act_expected, dec_input, dec_expected):
    x = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    expected = {
        "softmax": F.softmax(x, dim=1),
        "exp": x.exp(),
        "sigmoid": torch.sigmoid(x),
        "identity": x,
    }[act_expected]
    assert torch.allclose(loss_activation(loss_func)(x), expected)
    assert torch.equal(loss_decodes(loss_func)(dec_input), dec_expected)


def test_loss_activation_uses_own_methods():
    loss = BCEWithLogitsLossFlat(thresh=0.9)
    assert loss_decodes(loss)(torch.tensor([0.8])).item() is False
    assert loss_activation(CrossEntropyLossFlat(axis=1))(torch.zeros(1, 2, 3)).shape == (1, 2, 3)


def test_unreduced_gives_one_loss_per_item_and_puts_the_reduction_back():
    from fastvision.losses import reduce_loss, unreduced

    x, y = torch.randn(6, 3), torch.randint(0, 3, (6,))
    want = F.cross_entropy(x, y, reduction="none")
    for lf in (nn.CrossEntropyLoss(), CrossEntropyLossFlat(), F.cross_entropy):
        with unreduced(lf) as per_item:
            assert torch.allclose(per_item(x, y), want, atol=1e-6)
        assert getattr(lf, "reduction", "mean") == "mean"
        assert torch.allclose(lf(x, y), want.mean(), atol=1e-6)
    assert torch.equal(reduce_loss(want, "sum"), want.sum()) and reduce_loss(want, "none") is want
    with pytest.raises(TypeError, match="no `reduction` attribute or argument"):
        with unreduced(lambda p, t: (p - t).abs().mean()):
            pass
