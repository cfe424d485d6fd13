"""plot_decision_boundary / decision_grid on points, for single-logit and multiclass models."""

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from fastvision.learner import Learner
from fastvision.plots import decision_grid, plot_decision_boundary

matplotlib.use("Agg")


class DLs:
    def __init__(self, train, valid):
        self.train, self.valid = train, valid


def linear_learner(weight, bias, loss_func):
    model = nn.Linear(2, len(weight))
    with torch.no_grad():
        model.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        model.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    x = torch.zeros(4, 2)
    return Learner(DLs([(x, x)], [(x, x)]), model, loss_func=loss_func, default_cbs=False)


def points():
    g = torch.Generator().manual_seed(0)
    return torch.rand(50, 2, generator=g) * 4 - 2  # in [-2, 2]^2


def test_single_logit_model_thresholds_the_logit_at_zero():
    learn = linear_learner([[1.0, 0.0]], [-0.5], nn.BCEWithLogitsLoss())  # logit = x0 - 0.5
    learn.model.train()
    xx, yy, classes = decision_grid(learn, points(), resolution=40)
    assert xx.shape == yy.shape == classes.shape == (40, 40)
    assert np.array_equal(classes, (xx - 0.5 > 0).astype(classes.dtype))
    assert learn.model.training  # its mode is restored
    _, _, shifted = decision_grid(learn, points(), resolution=40, thresh=1.0)
    assert np.array_equal(shifted, (xx - 0.5 > 1.0).astype(classes.dtype))


def test_multiclass_model_takes_the_argmax():
    learn = linear_learner([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], [0.0, 0.0, 0.0], nn.CrossEntropyLoss())
    xx, yy, classes = decision_grid(learn, points(), resolution=30)
    expected = np.stack([xx, -xx, yy]).argmax(0)
    assert np.array_equal(classes, expected)
    assert set(np.unique(classes)) == {0, 1, 2}


def test_grid_covers_the_points_with_a_margin():
    pts = torch.tensor([[0.0, 10.0], [1.0, 20.0]])
    learn = linear_learner([[1.0, 0.0]], [0.0], nn.BCEWithLogitsLoss())
    xx, yy, _ = decision_grid(learn, pts, resolution=11, margin=0.1)
    assert xx.min() == pytest.approx(-0.1) and xx.max() == pytest.approx(1.1)
    assert yy.min() == pytest.approx(9.0) and yy.max() == pytest.approx(21.0)


def test_plot_decision_boundary_binary_figure():
    x = points()
    y = (x[:, 0] > 0.5).float()[:, None]  # (n, 1) float labels as BCE training uses
    learn = linear_learner([[1.0, 0.0]], [-0.5], nn.BCEWithLogitsLoss())
    fig = plot_decision_boundary(learn, x, y, resolution=50)
    (ax,) = fig.axes
    assert ax.get_title() == "decision boundary" and ax.get_xlabel() == "x0" and ax.get_ylabel() == "x1"
    scatters = [c for c in ax.collections if isinstance(c, matplotlib.collections.PathCollection)]
    assert len(scatters) == 1 and len(scatters[0].get_offsets()) == 50
    assert np.allclose(scatters[0].get_array(), y.reshape(-1).numpy())
    assert len(ax.collections) == 3  # regions, boundary line, points


def test_plot_decision_boundary_multiclass_into_given_axes():
    import matplotlib.pyplot as plt

    x = points()
    y = torch.stack([x[:, 0], -x[:, 0], x[:, 1]]).argmax(0)
    learn = linear_learner([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], [0.0, 0.0, 0.0], nn.CrossEntropyLoss())
    fig0, ax = plt.subplots()
    fig = plot_decision_boundary(learn, x, y, ax=ax)
    assert fig is fig0 and fig.axes == [ax]
    assert len(ax.collections) == 2  # regions and points (no single boundary line for 3 classes)


def test_errors_name_the_shapes():
    learn = linear_learner([[1.0, 0.0]], [0.0], nn.BCEWithLogitsLoss())
    with pytest.raises(ValueError, match=r"points of shape \(n, 2\), got \(5, 3\)"):
        plot_decision_boundary(learn, torch.zeros(5, 3), torch.zeros(5))
    with pytest.raises(ValueError, match="got 5 points but 4 labels"):
        plot_decision_boundary(learn, torch.zeros(5, 2), torch.zeros(4))


def test_exported_in_all():
    import fastvision.all as fa

    assert fa.plot_decision_boundary is plot_decision_boundary
