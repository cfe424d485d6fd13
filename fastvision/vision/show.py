"""Drawing images: `show_image` for one, `show_images` for a titled grid (registered as the data's grid).

`show_batch`, `show_results` and `plot_top_losses` all end in `show_images`: a grid of `nrows` x `ncols`
cells (`nrows` defaults to `int(sqrt(n))`, `ncols` to `ceil(n / nrows)`), 3 inches per cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from ..data.display import register_grid

__all__ = ["show_image", "show_images", "image_array"]


def image_array(img: Any) -> np.ndarray:
    """Return `img` as an H x W (grey) or H x W x C numpy array matplotlib can draw.

    Accepts C x H x W tensors or arrays (float in [0, 1] or integer in [0, 255]), H x W x C arrays,
    H x W arrays and PIL images. Floats are clipped to [0, 1]; integers become uint8.
    """
    if isinstance(img, Image.Image):
        return np.asarray(img)
    chw = isinstance(img, torch.Tensor)
    arr = img.detach().cpu().float().numpy() if chw and img.is_floating_point() else np.asarray(img)
    if arr.ndim == 3 and (chw or arr.shape[-1] not in (1, 3, 4)) and arr.shape[0] in (1, 2, 3, 4):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"show_image draws C x H x W or H x W (x C) images; got an array of shape {arr.shape}."
        )
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(arr, 0, 1)
    return np.clip(arr, 0, 255).astype(np.uint8)


def show_image(
    img: Any,
    ax: Axes | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    cmap: str | None = None,
    color: str | None = None,
    **kwargs: Any,
) -> Axes:
    """Draw one image (tensor, array or PIL) on `ax` (a new figure when None) and return the axes.

    Args:
        title: drawn above the image, in `color` when given.
        cmap: colour map for one-channel images (default 'gray').
        kwargs: passed to `ax.imshow`.
    """
    arr = image_array(img)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize or (3, 3))
    ax.imshow(arr, cmap=cmap or ("gray" if arr.ndim == 2 else None), **kwargs)
    if title is not None:
        title_kw: dict[str, Any] = {"color": color} if color is not None else {}
        ax.set_title(str(title), **title_kw)
    ax.axis("off")
    return ax


def show_images(
    images: Sequence[Any],
    titles: Sequence[str | None] | None = None,
    nrows: int | None = None,
    ncols: int | None = None,
    figsize: tuple[float, float] | None = None,
    colors: Sequence[str | None] | None = None,
    suptitle: str | None = None,
    **kwargs: Any,
) -> Figure:
    """Draw `images` in a grid with optional `titles` (coloured by `colors`) and return the figure.

    Args:
        nrows: default `int(sqrt(n))`.
        ncols: default `ceil(n / nrows)`.
        figsize: default 3 inches per cell.
        colors: one title colour per image, e.g. 'green' / 'red' for correct / wrong predictions.
        kwargs: passed to `show_image`.
    """
    n = len(images)
    if n == 0:
        raise ValueError("show_images received no images to draw.")
    for name, seq in (("titles", titles), ("colors", colors)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"show_images got {n} images but {len(seq)} {name}; pass one per image.")
    if nrows is None:
        nrows = max(1, int(math.sqrt(n))) if ncols is None else math.ceil(n / ncols)
    if ncols is None:
        ncols = math.ceil(n / nrows)
    if nrows * ncols < n:
        raise ValueError(f"A {nrows} x {ncols} grid cannot hold {n} images; leave nrows or ncols as None.")
    fig, axs = plt.subplots(nrows, ncols, figsize=figsize or (3 * ncols, 3 * nrows), squeeze=False)
    flat = axs.flatten()
    for i, ax in enumerate(flat):
        if i < n:
            title = titles[i] if titles is not None else None
            show_image(
                images[i], ax=ax, title=title, color=colors[i] if colors is not None else None, **kwargs
            )
        else:
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


register_grid(show_images)  # what show_batch, show_results and plot_top_losses draw with
