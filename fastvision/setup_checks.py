"""The checks of a Learner's setup, before and at its first batch: arguments, learning rates, epochs, an empty
training loader, a model/loss mismatch, a loss that fails on the batch, and integer images reaching a float
model. Each error says what was received, what was expected and how to fix it."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "check_learner_args",
    "check_lr",
    "check_n_epoch",
    "check_train_batches",
    "input_dtype_error",
    "loss_error",
    "warn_model_loss_mismatch",
]


def check_learner_args(dls: Any, model: Any, loss_func: Callable | None, opt_func: Any) -> Callable:
    """Validate `Learner`'s main arguments and return the loss (inferred from `dls` when None)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"Learner expects `model` to be a torch.nn.Module, got {type(model).__name__}.")
    if not (hasattr(dls, "train") and hasattr(dls, "valid")):
        raise TypeError(
            f"Learner expects `dls` with `.train` and `.valid` loaders, got {type(dls).__name__}. "
            "Wrap plain loaders: `DataLoaders(train_dl, valid_dl)`."
        )
    if loss_func is None:
        loss_func = getattr(dls, "loss_func", None)
        if loss_func is None:
            raise TypeError(
                "Could not infer the loss function from the data (`dls.loss_func` is missing or None); "
                "pass one, e.g. `Learner(dls, model, loss_func=nn.CrossEntropyLoss())`."
            )
    if not callable(opt_func):
        raise TypeError(f"opt_func must be callable (e.g. Adam or torch.optim.SGD), got {opt_func!r}.")
    return loss_func


def check_lr(lr: Any, name: str = "lr") -> None:
    """Raise a `ValueError` naming `name` unless `lr` is a finite number >= 0, a slice of them, or a list of them."""
    if lr is None:
        return
    if isinstance(lr, slice):
        values = [v for v in (lr.start, lr.stop) if v is not None]
        if lr.stop is None:
            raise ValueError(f"{name}={lr!r} has no upper value; pass slice(hi) or slice(lo, hi).")
    elif isinstance(lr, (np.ndarray, torch.Tensor)):
        values = (
            np.asarray(lr.tolist() if isinstance(lr, torch.Tensor) else lr, dtype=object).reshape(-1).tolist()
        )
    elif isinstance(lr, (list, tuple)):
        values = list(lr)
    else:
        values = [lr]
    for v in values:
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool)
        if not ok or not math.isfinite(float(v)) or float(v) < 0:
            raise ValueError(
                f"{name}={lr!r} is not a valid learning rate: expected a finite number >= 0 (or a slice or list "
                f"of them), got {v!r}. Pass e.g. {name}=1e-3, or run learn.lr_find() to pick one."
            )


def check_n_epoch(n_epoch: Any, name: str = "n_epoch") -> None:
    """Raise a `ValueError` naming `name` unless it is an int >= 0."""
    if isinstance(n_epoch, bool) or not isinstance(n_epoch, numbers.Integral) or n_epoch < 0:
        raise ValueError(f"{name}={n_epoch!r} must be an int >= 0 (the number of epochs), e.g. {name}=1.")


def check_train_batches(dls: Any) -> None:
    """Raise a `ValueError` when the training loader yields no batch (e.g. `bs` > items with `drop_last`)."""
    dl = dls.train
    try:
        n = len(dl)
    except TypeError:
        return  # an iterable without a length: nothing to check before training
    if n > 0:
        return
    ds = getattr(dl, "dataset", None)
    try:
        n_items = len(ds) if ds is not None else None
    except TypeError:
        n_items = None
    bs = getattr(dl, "bs", None) or getattr(dl, "batch_size", None)
    drop_last = getattr(dl, "drop_last", False)
    if n_items == 0:
        raise ValueError(
            "The training loader is empty: dls.train holds 0 items. Check the item getter and the splitter "
            "(e.g. `dblock.summary(source)`)."
        )
    if drop_last and bs is not None and n_items is not None:
        raise ValueError(
            f"The training loader yields 0 batches: {n_items} training items with bs={bs} and drop_last=True "
            f"(the only, incomplete batch is dropped). Pass bs<={n_items}, or drop_last=False to the training loader."
        )
    raise ValueError(
        f"The training loader yields 0 batches (dls.train has length 0, bs={bs}); nothing would train."
    )


def batch_as_tuple(b: Any) -> tuple | list:
    """A loader's batch as the tuple the loop splits into inputs and targets; a dict batch is refused."""
    if isinstance(b, (tuple, list)) and not (len(b) == 1 and isinstance(b[0], Mapping)):
        return b
    d = b[0] if isinstance(b, (tuple, list)) else b  # fastvision's collate keeps a dict sample in a 1-tuple
    if isinstance(d, Mapping):
        keys = list(d)
        x, y = (keys + ["x", "y"])[:2] if len(keys) != 2 else keys
        raise TypeError(
            f"The loader gives dict batches (keys {keys}); Learner takes (inputs..., targets) tuples. Return "
            f"(x, y) from the Dataset's __getitem__, or give the torch DataLoader a collate_fn such as "
            f"lambda items: (torch.stack([d[{x!r}] for d in items]), torch.tensor([d[{y!r}] for d in items]))."
        )
    return (b,)


def no_target_error(xb: tuple, n_inp: int) -> ValueError:
    """The error for a training batch that has inputs only (nothing to compute a loss against)."""
    got = ", ".join(str(_shape(x)) for x in xb)
    return ValueError(
        f"The training batch has no target: the loader gives {len(xb)} element(s) per batch (shaped {got}) and the "
        f"model takes the first {n_inp} (n_inp={n_inp}), so nothing is left for the loss. Return (input, target) "
        "from the Dataset, or set learn.loss_grad in a callback's after_loss."
    )


_FLAT_NAMES = {
    nn.BCEWithLogitsLoss: "BCEWithLogitsLossFlat()",
    nn.BCELoss: "BCELossFlat()",
    nn.MSELoss: "MSELossFlat()",
    nn.L1Loss: "L1LossFlat()",
    nn.CrossEntropyLoss: "CrossEntropyLossFlat()",
}


def _shape(x: Any) -> Any:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def loss_error(loss_func: Any, pred: Any, yb: tuple, err: Exception) -> Exception:
    """Return `err` re-phrased with the prediction and target shapes and the fastvision loss that handles them."""
    flat = next((v for k, v in _FLAT_NAMES.items() if isinstance(loss_func, k)), None)
    targ = yb[0] if yb else None
    shapes = f"predictions of shape {_shape(pred)} and targets of shape {_shape(targ)}"
    if isinstance(targ, torch.Tensor):
        shapes += f" ({targ.dtype})"
    hint = (
        f"Use `loss_func={flat}` (fastvision.losses), which flattens both and casts the targets, or reshape "
        "the model's output to the targets' shape."
        if flat
        else "Make the model's output shape (and the loss) fit the targets."
    )
    msg = f"loss_func {loss_func!r} failed on {shapes}: {err}. {hint}"
    try:
        return type(err)(msg)
    except Exception:
        return RuntimeError(msg)


def _last_leaf(model: nn.Module) -> nn.Module | None:
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    return leaves[-1] if leaves else None


def _is_cross_entropy(loss_func: Any) -> bool:
    name = type(loss_func).__name__
    return (
        isinstance(loss_func, nn.CrossEntropyLoss)
        or loss_func is F.cross_entropy
        or name in ("CrossEntropyLossFlat", "LabelSmoothingCrossEntropy", "LabelSmoothingCrossEntropyFlat")
    )


def warn_model_loss_mismatch(dls: Any, model: nn.Module, loss_func: Any) -> None:
    """Warn when the model already applies the loss's activation, or the vocab has a single class."""
    last = _last_leaf(model)
    bce_logits = (
        isinstance(loss_func, nn.BCEWithLogitsLoss) or type(loss_func).__name__ == "BCEWithLogitsLossFlat"
    )
    if _is_cross_entropy(loss_func) and isinstance(last, nn.Softmax):
        warnings.warn(
            f"The model ends with {last!r} but the loss {loss_func!r} expects raw logits (it applies log-softmax "
            "itself): training sees softmax twice and predictions come out double-softmaxed. Remove the final "
            "nn.Softmax (get_preds/predict apply softmax for you).",
            stacklevel=3,
        )
    elif bce_logits and isinstance(last, nn.Sigmoid):
        warnings.warn(
            f"The model ends with {last!r} but the loss {loss_func!r} expects raw logits (it applies the sigmoid "
            "itself). Remove the final nn.Sigmoid, or use BCELossFlat() with it.",
            stacklevel=3,
        )
    vocab = getattr(dls, "vocab", None)
    try:
        n_classes = len(vocab) if vocab is not None else None
    except TypeError:
        n_classes = None
    if n_classes == 1 and vocab is not None and _is_cross_entropy(loss_func):
        warnings.warn(
            f"dls.vocab has a single class ({list(vocab)!r}): every prediction is that class and the loss "
            "trains to 0 without learning anything. Check the labelling function (all items got the same "
            "label) and the splitter (every class needs training items).",
            stacklevel=3,
        )


def input_dtype_error(xb: tuple, err: RuntimeError) -> Exception | None:
    """Return a `TypeError` explaining `err` when the model failed on integer (uint8) images, else None.

    That happens when images reach the model without `IntToFloatTensor`, typically because
    `from fastvision.all import *` came after torchvision's import and its `ToTensor` (uint8, like fastai's)
    shadows torchvision's (floats in [0, 1]).
    """
    ints = [(i, x) for i, x in enumerate(xb) if isinstance(x, torch.Tensor) and x.dtype == torch.uint8]
    if not ints:
        return None
    i, x = ints[0]
    return TypeError(
        f"The model got integer images: xb[{i}] is a {x.dtype} tensor of shape {tuple(x.shape)}, but it computes "
        f"in floating point ({err}). Convert the images to floats in [0, 1] before the model: add "
        "`IntToFloatTensor()` to the batch transforms (DataBlock and ImageDataLoaders add it for you). With "
        "torchvision transforms, check the import order: `from fastvision.all import *` exports fastvision's "
        "`ToTensor` (uint8, as fastai's), which shadows torchvision's `ToTensor` (floats) when the star import "
        "comes after `from torchvision.transforms import *`; import torchvision's names after it, or write "
        "`torchvision.transforms.ToTensor()`."
    )
