"""Showing data: the label text of targets, decoded (item, label) pairs, and the grid that draws them.

What a grid of items looks like depends on the kind of data, so the core does not draw: the kind registers
its grid (`fastvision.vision` registers `show_images` when imported) and `show_batch`, `show_results` and
`plot_top_losses` call `show_grid`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import import_module
from typing import Any

import torch
from matplotlib.figure import Figure

__all__ = ["target_text", "decoded_pairs", "show_pairs", "show_grid", "register_grid"]

_GRID: list[Callable[..., Figure]] = []


def register_grid(fn: Callable[..., Figure]) -> None:
    """Make `fn(items, titles=None, nrows=None, ncols=None, figsize=None, ...)` the grid `show_grid` draws with."""
    _GRID[:] = [fn]


def show_grid(items: Sequence[Any], titles: Sequence[str | None] | None = None, **kwargs: Any) -> Figure:
    """Draw `items` with the registered grid (images: `vision.show.show_images`) and return the figure."""
    if not _GRID:  # a plain-PyTorch user imported only the Learner: bring in the image grid now
        import_module("fastvision.vision")
    if not _GRID:
        raise RuntimeError(
            "No grid is registered to draw these items: import fastvision.vision (or `from fastvision.all "
            "import *`), which registers its image grid."
        )
    return _GRID[0](items, titles=titles, **kwargs)


def target_text(dataset: Any, y: Any, n_inp: int = 1) -> str:
    """Return the display text of one target `y` of `dataset`.

    Uses `dataset.decode(sample)` (fastvision `Datasets`: category index -> label) when present, else
    the dataset's `vocab` (or torchvision's `classes`): an index gives its class, a one-hot vector the
    `;`-joined classes above 0.5, a number its value.
    """
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu()
        y = y.item() if y.ndim == 0 else y
    if hasattr(dataset, "decode"):
        try:
            out = dataset.decode((None,) * n_inp + (y,))
            lab = out[n_inp] if isinstance(out, tuple) and len(out) > n_inp else out
            if not isinstance(lab, torch.Tensor) and lab is not None:
                return ";".join(map(str, lab)) if isinstance(lab, (list, tuple)) else str(lab)
        except Exception:
            pass
    vocab = getattr(dataset, "vocab", None)
    vocab = getattr(dataset, "classes", None) if vocab is None else vocab
    if isinstance(y, torch.Tensor):
        if y.ndim == 1 and vocab is not None and len(y) == len(vocab):
            return ";".join(str(vocab[k]) for k in torch.nonzero(y > 0.5).flatten().tolist())
        return str([round(v, 3) for v in y.flatten().tolist()])
    if isinstance(y, int) and not isinstance(y, bool) and vocab is not None and 0 <= y < len(vocab):
        return str(vocab[y])
    return f"{y:.3g}" if isinstance(y, float) else str(y)


def decoded_pairs(
    b: Sequence, dataset: Any, n_inp: int = 1, max_n: int = 9
) -> list[tuple[torch.Tensor, str | None]]:
    """Return up to `max_n` (image, label text) pairs of a decoded CPU batch `b` (no targets: None)."""
    xs, ys = b[0], (b[n_inp] if len(b) > n_inp else None)
    out = []
    for i in range(min(len(xs), max_n)):
        x = xs[i].clamp(0, 1) if xs[i].is_floating_point() else xs[i].clamp(0, 255).to(torch.uint8)
        out.append((x, None if ys is None else target_text(dataset, ys[i], n_inp)))
    return out


def show_pairs(pairs: Sequence[tuple[Any, str | None]], **kwargs: Any) -> Figure:
    """Draw (image, title) pairs with the registered grid (kwargs: nrows, ncols, figsize, ...)."""
    if pairs and getattr(pairs[0][0], "ndim", 3) != 3:
        raise ValueError(
            f"show_batch draws images C x H x W, but these inputs have shape {tuple(pairs[0][0].shape)} per "
            "item. Inspect `dl.one_batch()` instead."
        )
    titles = [y for _, y in pairs] if any(y is not None for _, y in pairs) else None
    return show_grid([x for x, _ in pairs], titles=titles, **kwargs)
