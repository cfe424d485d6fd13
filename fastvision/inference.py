"""Inference for a `Learner`: validate, get_preds, predict, tta, show_results (the Learner methods delegate here).

Each runs `learn.evaluate(dl, cbs, run_mode)`, the learner's one evaluation pass, with callbacks that collect
what it needs (`GatherPredsCallback`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .callback.core import Callback, RunMode
from .losses import loss_activation, loss_decodes, unreduced
from .utils import listify

__all__ = [
    "GatherPredsCallback",
    "loader",
    "validate",
    "get_preds",
    "predict",
    "tta",
    "show_results",
    "loss_not_reduced",
]


class GatherPredsCallback(Callback):
    """Collect predictions, targets (and inputs, per-item losses) of every batch on the device; concatenate at the end."""

    order = 70

    def __init__(self, with_input: bool = False, with_loss: bool = False) -> None:
        self.with_input, self.with_loss = with_input, with_loss

    def before_validate(self) -> None:
        """Start empty lists."""
        self.inputs: list[Any] = []
        self.preds: list[Any] = []
        self.targets: list[Any] = []
        self.losses: list[Any] = []

    def after_batch(self) -> None:
        """Keep this batch's outputs (detached, still on the device)."""
        learn = self.learn
        self.preds.append(_detach(learn.pred))
        if self.with_input:
            self.inputs.append(_detach(learn.xb[0] if len(learn.xb) == 1 else learn.xb))
        if learn.yb:
            self.targets.append(_detach(learn.yb[0] if len(learn.yb) == 1 else learn.yb))
        if self.with_loss and learn.loss is not None:
            bs = self.preds[-1].shape[0] if isinstance(self.preds[-1], torch.Tensor) else len(self.preds[-1])
            loss = learn.loss
            self.losses.append(loss.reshape(bs, -1).float().mean(1) if loss.ndim else loss.expand(bs))


def _detach(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, (list, tuple)):
        return type(x)(_detach(o) for o in x)
    return x


def _cat(xs: list[Any]) -> Any:
    """Concatenate batches along dim 0 and move them to the CPU once (tuples element-wise)."""
    if not xs:
        return None
    if isinstance(xs[0], torch.Tensor):
        return torch.cat(xs).cpu()
    return type(xs[0])(_cat([x[i] for x in xs]) for i in range(len(xs[0])))


def _ordered(dl: Any) -> Any:
    """The same loader without shuffling or dropping the last batch, so results follow dataset order."""
    if hasattr(dl, "new"):
        if getattr(dl, "shuffle", False) or getattr(dl, "drop_last", False):
            return dl.new(shuffle=False, drop_last=False)
        return dl
    if isinstance(dl, torch.utils.data.DataLoader):
        sequential = isinstance(dl.sampler, torch.utils.data.SequentialSampler)
        if (not sequential or dl.drop_last) and dl.batch_size is not None:
            return torch.utils.data.DataLoader(
                dl.dataset,
                batch_size=dl.batch_size,
                shuffle=False,
                num_workers=dl.num_workers,
                collate_fn=dl.collate_fn,
                pin_memory=dl.pin_memory,
            )
    return dl


def loader(dls: Any, ds_idx: int) -> Any:
    """Return `dls`'s loader number `ds_idx` (0: train, 1: valid, else `dls[ds_idx]`)."""
    return (dls.train, dls.valid)[ds_idx] if ds_idx in (0, 1) else dls[ds_idx]


def validate(learn: Any, ds_idx: int = 1, dl: Any = None, cbs: Any = None) -> list[Any]:
    """Return `[valid_loss, *metric values]` on `dls[ds_idx]` or `dl` (events: before_fit ... after_fit)."""
    return learn.evaluate(loader(learn.dls, ds_idx) if dl is None else dl, cbs, RunMode.VALIDATE)


@contextlib.contextmanager
def loss_not_reduced(learn: Any) -> Iterator[Any]:
    """Make `learn.loss_func` return per-item losses for the duration of the block."""
    lf = learn.loss_func
    with unreduced(lf) as per_item:
        learn.loss_func = per_item
        try:
            yield learn
        finally:
            learn.loss_func = lf


def get_preds(
    learn: Any,
    ds_idx: int = 1,
    dl: Any = None,
    with_input: bool = False,
    with_decoded: bool = False,
    with_loss: bool = False,
    act: Callable[[torch.Tensor], torch.Tensor] | None = None,
    cbs: Any = None,
) -> tuple[Any, ...]:
    """Return `([inputs], preds, targets, [decoded], [losses])` in dataset order, on the CPU."""
    dl = _ordered(loader(learn.dls, ds_idx) if dl is None else dl)
    gather = GatherPredsCallback(with_input, with_loss)
    with loss_not_reduced(learn) if with_loss else contextlib.nullcontext():
        learn.evaluate(dl, [gather, *listify(cbs)], RunMode.PREDICT)
    preds = _cat(gather.preds)
    if preds is None:
        raise ValueError("get_preds got no batches: the loader is empty.")
    act = loss_activation(learn.loss_func) if act is None else act
    preds = act(preds)
    res: list[Any] = [_cat(gather.inputs)] if with_input else []
    res += [preds, _cat(gather.targets)]
    if with_decoded:
        res.append(loss_decodes(learn.loss_func)(preds))
    if with_loss:
        res.append(_cat(gather.losses))
    return tuple(res)


def _label(vocab: Any, dec: torch.Tensor) -> Any:
    if vocab is None:
        return dec.tolist() if dec.numel() > 1 else dec.item()
    if dec.dtype == torch.bool and dec.numel() == 1 and len(vocab) == 2:  # binary, one sigmoid output
        return vocab[int(dec.reshape(()))]
    if dec.dtype == torch.bool:  # multi-label
        return [vocab[i] for i in torch.nonzero(dec).flatten().tolist()]
    return vocab[int(dec)] if dec.numel() == 1 else [vocab[int(i)] for i in dec.flatten()]


def predict(learn: Any, item: Any) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Return `(decoded label, decoded tensor, probabilities)` for one item.

    The item goes through `dls.test_dl([item])` (validation transforms); without a `test_dl`, a
    tensor item is used as a ready input (a batch of one).
    """
    dls = learn.dls
    if hasattr(dls, "test_dl"):
        try:
            dl = dls.test_dl([item])
            if getattr(dl, "on_bad_image", "raise") == "skip":  # one item: skipping it leaves no answer
                dl = dl.new(on_bad_image="raise")
            _, preds, _, dec = get_preds(learn, dl=dl, with_input=True, with_decoded=True)
        except Exception as e:
            if len(str(e)) <= _MAX_MESSAGE:
                raise
            raise _short_error(e, item) from None  # chaining would print the long message again
    elif isinstance(item, torch.Tensor):
        _, preds, _, dec = get_preds(learn, dl=[(item[None],)], with_input=True, with_decoded=True)
    else:
        raise TypeError(
            f"predict needs `dls.test_dl` to process {_describe_item(item)}; {type(dls).__name__} has none. "
            "Pass a ready input tensor instead, or use fastvision DataLoaders."
        )
    vocab = getattr(dls, "vocab", None)
    return _label(vocab, dec[0]), dec[0], preds[0]


_MAX_MESSAGE = 500  # longer messages (an item's repr: a whole upload) are cut in predict's error


def _describe_item(item: Any) -> str:
    """Describe `item` in a few words for an error message: its type and size, never its whole content."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        n = len(item) if not isinstance(item, memoryview) else item.nbytes
        size = f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n} bytes"
        return f"a {type(item).__name__} object of {size}"
    if isinstance(item, str):
        shown = item if len(item) <= 60 else item[:57] + "..."
        return f"the string {shown!r}"
    if hasattr(item, "shape") and hasattr(item, "dtype"):
        return f"a {type(item).__name__} of shape {tuple(item.shape)} ({item.dtype})"
    return f"a {type(item).__name__}"


def _short_error(e: Exception, item: Any) -> Exception:
    """The error of `predict(item)` re-worded: its message was too long to read (e.g. the item's repr)."""
    msg = str(e)
    text = (
        f"predict could not process {_describe_item(item)}: {msg[:300]}... (message cut from {len(msg)} "
        "characters). predict takes one item of the kind the model was trained on, e.g. an image file path, "
        "the bytes of an encoded image, a PIL image, a numpy array or a tensor."
    )
    try:
        return type(e)(text)
    except Exception:
        return RuntimeError(text)


def _augmented(dl: Any) -> Any:
    """A copy of `dl` that applies the training-time (split 0) transforms, if the loader supports it."""
    if hasattr(dl, "new") and hasattr(dl, "split_idx"):
        try:
            return dl.new(split_idx=0, shuffle=False, drop_last=False)
        except TypeError:
            pass
    warnings.warn(
        f"tta: {type(dl).__name__} has no training-time transforms to switch to (needs `new(split_idx=0)`), "
        "so the augmented passes equal the plain one.",
        stacklevel=3,
    )
    return dl


def tta(
    learn: Any, ds_idx: int = 1, dl: Any = None, n: int = 4, beta: float | None = 0.25, use_max: bool = False
) -> tuple[Any, Any]:
    """Return `(preds, targets)`: `lerp(mean of n augmented passes, plain pass, beta)` (or their max)."""
    dl = loader(learn.dls, ds_idx) if dl is None else dl
    aug_dl = _augmented(dl)
    aug = torch.stack([get_preds(learn, dl=aug_dl)[0] for _ in range(n)])
    aug = aug.max(0)[0] if use_max else aug.mean(0)
    preds, targs = get_preds(learn, dl=dl)
    if use_max:
        return torch.stack([preds, aug]).max(0)[0], targs
    if beta is None:
        return (aug, preds), targs
    return torch.lerp(aug, preds, beta), targs


def show_results(learn: Any, ds_idx: int = 1, max_n: int = 9, **kwargs: Any) -> Any:
    """Show up to `max_n` images of one batch titled 'pred/actual' (green right, red wrong); return the figure.

    Images and labels are decoded by the loader (`dl.decode_batch`) when it can; kwargs go to
    the registered grid (images: `fastvision.vision.show.show_images`: nrows, ncols, figsize).
    """
    from .data.display import show_grid, target_text

    dl = _ordered(loader(learn.dls, ds_idx))
    b = next(iter(dl))
    b = tuple(o[:max_n] for o in (b if isinstance(b, (tuple, list)) else (b,)))
    n_inp = getattr(dl, "n_inp", None) or getattr(learn.dls, "n_inp", None) or 1
    _, _, dec = get_preds(learn, dl=[b], with_decoded=True)
    has_y = len(b) > n_inp
    if hasattr(dl, "decode_batch"):
        pairs = dl.decode_batch(b, max_n)
        images, actual = [p[0] for p in pairs], [p[1] for p in pairs]
        preds = [target_text(dl.dataset, d, n_inp) for d in dec]
    else:  # a plain loader: draw the tensors min-max scaled, labels through `dls.vocab`
        vocab = getattr(learn.dls, "vocab", None)
        images = [_rescale(x) for x in b[0]]
        actual = [
            str(_label(vocab, y.cpu() > 0.5 if y.is_floating_point() and y.ndim else y.cpu()))
            for y in b[n_inp]
        ]
        actual = actual if has_y else [None] * len(images)
        preds = [str(_label(vocab, d)) for d in dec]
    titles = [p if a is None else f"{p}/{a}" for p, a in zip(preds, actual)]
    colors = [None if a is None else ("green" if p == a else "red") for p, a in zip(preds, actual)]
    return show_grid(images, titles=titles, colors=colors, **kwargs)


def _rescale(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().float().cpu()
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else x.clamp(0, 1)
