"""Plots for small problems on points: the decision regions of a trained 2-feature classifier."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["decision_grid", "plot_decision_boundary"]


def _as_points(x: Any) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(
            f"plot_decision_boundary needs points of shape (n, 2), got {tuple(x.shape)}. Pass the two input "
            "features the model takes (for more features, fit on two or plot a projection yourself)."
        )
    return x.float()


def _classes(out: Tensor, thresh: float) -> Tensor:
    """Class per row: `out > thresh` for one output (a logit), else the argmax of the last axis."""
    if out.ndim == 1 or out.shape[-1] == 1:
        return (out.reshape(-1) > thresh).long()
    return out.argmax(-1)


def decision_grid(
    learn: Any, x: Any, resolution: int = 200, margin: float = 0.1, thresh: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return `(xx, yy, classes)`: a `resolution`-square grid over `x`'s range and the model's class at each point.

    The model runs in eval mode without gradients on the model's device (its mode is restored).
    A single-output model is a binary classifier thresholded at `thresh` on the raw output (0: a logit
    of 0, i.e. probability 0.5 under `BCEWithLogitsLoss`); several outputs take the argmax.

    Args:
        resolution: grid points per side (200).
        margin: extra room around the points, as a fraction of their range (0.1).
        thresh: threshold on a single raw output (0.0).
    """
    pts = _as_points(x)
    lo, hi = pts.min(0).values, pts.max(0).values
    pad = (hi - lo).clamp_min(1e-6) * margin
    lo, hi = lo - pad, hi + pad
    gx = torch.linspace(float(lo[0]), float(hi[0]), resolution)
    gy = torch.linspace(float(lo[1]), float(hi[1]), resolution)
    yy, xx = torch.meshgrid(gy, gx, indexing="ij")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    model = learn.model
    p = next(model.parameters(), None)
    if p is not None:
        grid = grid.to(device=p.device, dtype=p.dtype if p.is_floating_point() else grid.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(grid)
    finally:
        model.train(was_training)
    if isinstance(out, (tuple, list)):
        out = out[0]
    classes = _classes(out.float(), thresh).reshape(resolution, resolution).cpu().numpy()
    return xx.numpy(), yy.numpy(), classes


def plot_decision_boundary(
    learn: Any,
    x: Any,
    y: Any,
    resolution: int = 200,
    thresh: float = 0.0,
    ax: Any = None,
    figsize: tuple[float, float] = (5, 5),
    cmap: str = "coolwarm",
) -> Any:
    """Draw the model's predicted class over the plane of `x` (n, 2) and the points coloured by `y`; return the figure.

    Works for single-logit binary models (class 1 where the output is above `thresh`, 0 by default)
    and multiclass models (argmax). The regions are a filled contour (`ax.collections`), the points
    one scatter; binary models also get the boundary line.

    Args:
        y: the labels of `x`: class indices, or 0/1 floats, shape (n,) or (n, 1).
        resolution: grid points per side (200).
        thresh: threshold on a single raw output (0.0).
        ax: draw into this matplotlib axes (default: a new figure of `figsize`).
        cmap: colormap shared by regions and points ('coolwarm').
    """
    import matplotlib.pyplot as plt

    pts = _as_points(x)
    labels = torch.as_tensor(y).reshape(-1)
    if labels.shape[0] != pts.shape[0]:
        raise ValueError(
            f"plot_decision_boundary got {pts.shape[0]} points but {labels.shape[0]} labels; pass one label per row of x."
        )
    xx, yy, classes = decision_grid(learn, pts, resolution, thresh=thresh)
    n_cls = int(max(classes.max(), labels.max().item())) + 1
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    levels = np.arange(n_cls + 1) - 0.5
    ax.contourf(xx, yy, classes, levels=levels, cmap=cmap, alpha=0.3)
    if n_cls == 2 and 0 < classes.sum() < classes.size:
        ax.contour(xx, yy, classes, levels=[0.5], colors="k", linewidths=1)
    ax.scatter(
        pts[:, 0].numpy(),
        pts[:, 1].numpy(),
        c=labels.float().numpy(),
        cmap=cmap,
        vmin=0,
        vmax=max(n_cls - 1, 1),
        edgecolors="k",
        s=15,
    )
    ax.set_xlabel("x0")
    ax.set_ylabel("x1")
    ax.set_title("decision boundary")
    return fig
