"""Metrics: the `Metric` protocol, device-side accumulation, and classification metrics in pure torch.

A metric sees every validation batch through `accumulate(learn)` (reading `learn.pred` and the
tuple `learn.yb`) and reports one number through `value`. Nothing here calls `.item()` per batch:
sums and stored predictions stay on the device and are read once, when `value` is asked for.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Metric",
    "AvgMetric",
    "AccumMetric",
    "ActivationType",
    "mk_metric",
    "skm_to_fastai",
    "flatten_check",
    "accuracy",
    "error_rate",
    "top_k_accuracy",
    "accuracy_multi",
    "Precision",
    "Recall",
    "F1Score",
    "FBeta",
    "Jaccard",
    "PrecisionMulti",
    "RecallMulti",
    "F1ScoreMulti",
    "FBetaMulti",
    "JaccardMulti",
]


def _to_float(v: Any) -> Any:
    return v.item() if isinstance(v, Tensor) and v.numel() == 1 else v


def _func_name(func: Callable) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


class Metric:
    """Base class of metrics: `reset()` before validation, `accumulate(learn)` per batch, then `value`."""

    def reset(self) -> None:
        """Clear the state before a validation pass."""

    def accumulate(self, learn: Any) -> None:
        """Update the state with the current batch (`learn.pred`, `learn.yb`)."""

    @property
    def value(self) -> Any:
        """The metric over everything accumulated since `reset` (a Python float, or None if empty)."""
        return None

    @property
    def name(self) -> str:
        """Snake-case class name, used as the column name."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class AvgMetric(Metric):
    """Average of `func(pred, *yb)` over the dataset, each batch weighted by its size, summed on the device."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.reset()

    def reset(self) -> None:
        """Zero the running total and count."""
        self.total: Tensor | float = 0.0
        self.count = 0

    def accumulate(self, learn: Any) -> None:
        """Add `func(pred, *yb) * bs` to the running total (a device tensor; no host sync)."""
        bs = learn.yb[0].shape[0]
        v = self.func(learn.pred, *learn.yb)
        if isinstance(v, Tensor):
            v = v.detach() if v.requires_grad else v
            v = v if v.dtype == torch.float32 else v.float()
            if isinstance(self.total, Tensor):  # one op per batch: total += v * bs
                self.total = self.total.add(v, alpha=bs)
            else:
                self.total = v * bs if self.total == 0.0 else v * bs + self.total
        else:
            self.total = self.total + float(v) * bs
        self.count += bs

    @property
    def value(self) -> float | None:
        """The dataset-level mean, read from the device once (None before any batch)."""
        if not self.count:
            return None
        if isinstance(self.total, Tensor) and self.total.ndim == 0:
            return self.total.item() / self.count  # one read, no device op
        return _to_float(self.total / self.count)

    @property
    def name(self) -> str:
        """The function's name."""
        return _func_name(self.func)


class ActivationType:
    """What `AccumMetric` applies to predictions before storing them."""

    No = "no"
    Sigmoid = "sigmoid"
    Softmax = "softmax"
    BinarySoftmax = "binarysoftmax"


def flatten_check(inp: Tensor, targ: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten `inp` and `targ` and check they hold the same number of elements."""
    inp, targ = inp.contiguous().reshape(-1), targ.contiguous().reshape(-1)
    if inp.numel() != targ.numel():
        raise ValueError(
            f"Metric got {inp.numel()} predictions but {targ.numel()} targets; they must match after "
            "flattening. Check the metric fits the task (e.g. accuracy_multi for multi-label targets)."
        )
    return inp, targ


class AccumMetric(Metric):
    """Store (activated) predictions and targets on the device for the whole pass; compute `func` once.

    Args:
        func: called as `func(preds, targs, **kwargs)` (`func(targs, preds)` when `invert_arg`).
        dim_argmax: take the argmax over this dim after the activation (None: keep as is).
        activation: 'no', 'softmax', 'sigmoid' or 'binarysoftmax' (softmax, then last column).
        thresh: binarise the (activated) predictions with `>= thresh` (None: don't).
        to_np: hand numpy arrays to `func` (for sklearn-style functions).
        invert_arg: call `func(targs, preds)`.
        flatten: flatten predictions and targets of each batch (True).
        name: column name (default: the function's name).
    """

    def __init__(
        self,
        func: Callable[..., Any],
        dim_argmax: int | None = None,
        activation: str = ActivationType.No,
        thresh: float | None = None,
        to_np: bool = False,
        invert_arg: bool = False,
        flatten: bool = True,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        valid = (
            ActivationType.No,
            ActivationType.Sigmoid,
            ActivationType.Softmax,
            ActivationType.BinarySoftmax,
        )
        if activation not in valid:
            raise ValueError(f"activation={activation!r} is not one of {list(valid)}.")
        self.func, self.dim_argmax, self.activation, self.thresh = func, dim_argmax, activation, thresh
        self.to_np, self.invert_arg, self.flatten, self._name, self.kwargs = (
            to_np,
            invert_arg,
            flatten,
            name,
            kwargs,
        )
        self.reset()

    def reset(self) -> None:
        """Forget the stored predictions and targets."""
        self.preds: list[Tensor] = []
        self.targs: list[Tensor] = []

    def accumulate(self, learn: Any) -> None:
        """Activate, argmax and threshold `learn.pred` as configured and store it with `learn.yb[0]`."""
        pred = learn.pred.detach()
        if self.activation in (ActivationType.Softmax, ActivationType.BinarySoftmax):
            pred = F.softmax(pred.float(), dim=-1 if self.dim_argmax is None else self.dim_argmax)
            if self.activation == ActivationType.BinarySoftmax:
                pred = pred[:, -1]
        elif self.activation == ActivationType.Sigmoid:
            pred = torch.sigmoid(pred.float())
        elif self.dim_argmax is not None:
            pred = _class_indices(pred, learn.yb[0], self.dim_argmax)
        if self.thresh is not None:
            pred = pred >= self.thresh
        targ = learn.yb[0].detach()
        if self.flatten:
            pred, targ = flatten_check(pred, targ)
        self.preds.append(pred)
        self.targs.append(targ)

    @property
    def value(self) -> Any:
        """`func` on all stored predictions and targets (a Python float when it returns a scalar)."""
        if not self.preds:
            return None
        preds: Any = torch.cat(self.preds)
        targs: Any = torch.cat(self.targs)
        if self.to_np:
            preds, targs = preds.cpu().numpy(), targs.cpu().numpy()
        out = (
            self.func(targs, preds, **self.kwargs)
            if self.invert_arg
            else self.func(preds, targs, **self.kwargs)
        )
        return _to_float(out)

    @property
    def name(self) -> str:
        """`name` if given, else the function's name."""
        return self._name or _func_name(self.func)


def mk_metric(m: Any) -> Metric:
    """Return `m` as a `Metric`: metrics pass through, metric classes are instantiated, functions wrapped in `AvgMetric`."""
    if isinstance(m, type) and issubclass(m, Metric):
        return m()
    if isinstance(m, Metric):
        return m
    if callable(m):
        return AvgMetric(m)
    raise TypeError(f"Metric {m!r} is neither a Metric nor a callable; pass e.g. `accuracy` or `F1Score()`.")


def skm_to_fastai(
    func: Callable[..., Any],
    is_class: bool = True,
    thresh: float | None = None,
    axis: int = -1,
    activation: str | None = None,
    **kwargs: Any,
) -> AccumMetric:
    """Wrap a scikit-learn style metric `func(y_true, y_pred, **kwargs)` (numpy in) as an `AccumMetric`.

    Args:
        is_class: classification: argmax over `axis` unless `thresh` is given (True).
        thresh: threshold on sigmoid outputs (multi-label); None: argmax.
        axis: the class axis (-1).
        activation: override the activation ('no', 'softmax', 'sigmoid'); None infers it.
    """
    if activation is None:
        activation = ActivationType.Sigmoid if (is_class and thresh is not None) else ActivationType.No
    dim_argmax = axis if is_class and thresh is None else None
    return AccumMetric(
        func,
        dim_argmax=dim_argmax,
        activation=activation,
        thresh=thresh,
        to_np=True,
        invert_arg=True,
        **kwargs,
    )


# ----------------------------------------------------------------------------- metric functions


def _is_binary(inp: Tensor, targ: Tensor, axis: int) -> bool:
    """One score per item: a size-1 class axis (`(n, 1)` logits) or 1-d scores shaped like the targets."""
    if inp.ndim == 0:
        return True
    return inp.shape[axis] == 1 or (inp.ndim == 1 and inp.shape == targ.shape)


def _class_indices(inp: Tensor, targ: Tensor, axis: int = -1, thresh: float = 0.0) -> Tensor:
    """Return the predicted class index per item: argmax over `axis`, or `inp > thresh` for binary scores.

    Binary scores are one column (`(n, 1)`) or a 1-d tensor shaped like the targets (`(n,)`): logits,
    thresholded at 0 by default (pass `thresh=0.5` for probabilities). Items whose scores are not all
    finite get -1, so they never count as right.
    """
    finite = torch.isfinite(inp)
    if _is_binary(inp, targ, axis):
        return torch.where(finite, inp > thresh, -1)  # 0/1, or -1 for nan/inf (int64)
    else:
        pred = inp.argmax(dim=axis)
        finite = finite.all(dim=axis)
    return torch.where(finite, pred, torch.full_like(pred, -1))


def accuracy(inp: Tensor, targ: Tensor, axis: int = -1, thresh: float = 0.0) -> Tensor:
    """Fraction of items whose predicted class (argmax over `axis`; `> thresh` for binary scores) equals the target.

    Binary scores (`(n, 1)` or `(n,)` logits) are thresholded at `thresh` (0: logits; pass 0.5 for
    probabilities). Predictions that are nan or inf count as wrong.
    """
    pred, targ = flatten_check(_class_indices(inp, targ, axis, thresh), targ)
    return (pred == targ).float().mean()


def error_rate(inp: Tensor, targ: Tensor, axis: int = -1, thresh: float = 0.0) -> Tensor:
    """1 - accuracy."""
    return 1 - accuracy(inp, targ, axis=axis, thresh=thresh)


def top_k_accuracy(inp: Tensor, targ: Tensor, k: int = 5, axis: int = -1) -> Tensor:
    """Fraction of items whose target is among the `k` highest outputs along `axis` (nan/inf outputs count as wrong)."""
    top = inp.topk(k, dim=axis)[1]
    targ = targ.unsqueeze(dim=axis).expand_as(top)
    return ((top == targ).any(dim=axis) & torch.isfinite(inp).all(dim=axis)).float().mean()


def accuracy_multi(inp: Tensor, targ: Tensor, thresh: float = 0.5, sigmoid: bool = True) -> Tensor:
    """Element-wise accuracy of `(sigmoid(inp) > thresh)` against multi-label targets."""
    if sigmoid:
        inp = inp.sigmoid()
    inp, targ = flatten_check(inp, targ)
    return (((inp > thresh) == targ.bool()) & torch.isfinite(inp)).float().mean()


# ----------------------------------------------------------------------------- precision / recall / F


def _score(tp: Tensor, fp: Tensor, fn: Tensor, kind: str, beta: float) -> Tensor:
    """Per-label score from counts; 0 where the denominator is 0 (sklearn's zero_division=0)."""
    if kind == "precision":
        num, den = tp, tp + fp
    elif kind == "recall":
        num, den = tp, tp + fn
    elif kind == "jaccard":
        num, den = tp, tp + fp + fn
    else:
        b2 = beta * beta
        num, den = (1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp
    return torch.where(den > 0, num / den.clamp(min=1e-12), torch.zeros_like(num))


def _average(tp: Tensor, fp: Tensor, fn: Tensor, average: str, kind: str, beta: float) -> Tensor:
    """Combine per-label counts (last dim = labels) like sklearn's `average`."""
    tp, fp, fn = tp.cpu().double(), fp.cpu().double(), fn.cpu().double()  # read once per pass
    if average == "micro":
        return _score(tp.sum(), fp.sum(), fn.sum(), kind, beta)
    scores = _score(tp, fp, fn, kind, beta)
    if average in ("macro", "binary"):
        return scores.mean()
    if average == "weighted":
        support = tp + fn
        return (scores * support).sum() / support.sum() if support.sum() > 0 else scores.new_zeros(())
    raise ValueError(f"average={average!r} is not one of 'binary', 'macro', 'micro', 'weighted'.")


def _multiclass_score(
    preds: Tensor,
    targs: Tensor,
    kind: str,
    beta: float = 1.0,
    labels: Sequence[int] | None = None,
    pos_label: int = 1,
    average: str = "binary",
) -> Tensor:
    """sklearn-equivalent precision/recall/F-beta/Jaccard of predicted class indices."""
    preds, targs = preds.long(), targs.long()
    present = torch.unique(torch.cat([preds, targs]))
    present = present[present >= 0]  # -1: a nan/inf prediction, wrong for every label
    if average == "binary":
        if present.numel() > 2:
            raise ValueError(
                f"average='binary' needs 2 classes, but predictions and targets hold {present.numel()} "
                f"({present.tolist()}). Pass average='macro', 'micro' or 'weighted' for multiclass."
            )
        lab = torch.tensor([pos_label], device=preds.device)
    elif labels is None:
        lab = present
    else:
        lab = torch.as_tensor(list(labels), device=preds.device).long()
    p1, t1 = preds[:, None] == lab, targs[:, None] == lab
    tp, fp, fn = (p1 & t1).sum(0), (p1 & ~t1).sum(0), (~p1 & t1).sum(0)
    return _average(tp, fp, fn, average, kind, beta)


def _multilabel_score(
    preds: Tensor,
    targs: Tensor,
    kind: str,
    beta: float = 1.0,
    labels: Sequence[int] | None = None,
    average: str = "macro",
) -> Tensor:
    """sklearn-equivalent multi-label scores of a binary N x L prediction matrix."""
    p1, t1 = preds.bool(), targs.bool()
    if p1.ndim == 1:
        p1, t1 = p1[:, None], t1[:, None]
    if labels is not None:
        idx = torch.as_tensor(list(labels), device=p1.device).long()
        p1, t1 = p1[:, idx], t1[:, idx]
    if average == "samples":
        tp, fp, fn = ((p1 & t1).sum(1), (p1 & ~t1).sum(1), (~p1 & t1).sum(1))
        tp, fp, fn = tp.cpu().double(), fp.cpu().double(), fn.cpu().double()
        return _score(tp, fp, fn, kind, beta).mean()
    if average == "binary":
        raise ValueError(
            "average='binary' is not defined for multi-label targets; use 'macro', 'micro', 'weighted' or 'samples'."
        )
    tp, fp, fn = (p1 & t1).sum(0), (p1 & ~t1).sum(0), (~p1 & t1).sum(0)
    return _average(tp, fp, fn, average, kind, beta)


def _check_average(average: str, allowed: tuple[str, ...]) -> None:
    if average not in allowed:
        raise ValueError(f"average={average!r} is not one of {list(allowed)}.")


_SINGLE = ("binary", "macro", "micro", "weighted")
_MULTI = ("macro", "micro", "weighted", "samples")


def _single(
    kind: str, name: str, axis: int, labels: Any, pos_label: int, average: str, beta: float = 1.0
) -> AccumMetric:
    _check_average(average, _SINGLE)
    func = functools.partial(
        _multiclass_score, kind=kind, beta=beta, labels=labels, pos_label=pos_label, average=average
    )
    return AccumMetric(func, dim_argmax=axis, flatten=True, name=name)


def _multi(
    kind: str, name: str, thresh: float, sigmoid: bool, labels: Any, average: str, beta: float = 1.0
) -> AccumMetric:
    _check_average(average, _MULTI)
    func = functools.partial(_multilabel_score, kind=kind, beta=beta, labels=labels, average=average)
    act = ActivationType.Sigmoid if sigmoid else ActivationType.No
    return AccumMetric(func, activation=act, thresh=thresh, flatten=False, name=name)


def Precision(
    axis: int = -1, labels: Sequence[int] | None = None, pos_label: int = 1, average: str = "binary"
) -> AccumMetric:
    """Precision of the argmax over `axis` (sklearn's `precision_score`, zero_division=0)."""
    return _single("precision", "precision_score", axis, labels, pos_label, average)


def Recall(
    axis: int = -1, labels: Sequence[int] | None = None, pos_label: int = 1, average: str = "binary"
) -> AccumMetric:
    """Recall of the argmax over `axis` (sklearn's `recall_score`, zero_division=0)."""
    return _single("recall", "recall_score", axis, labels, pos_label, average)


def F1Score(
    axis: int = -1, labels: Sequence[int] | None = None, pos_label: int = 1, average: str = "binary"
) -> AccumMetric:
    """F1 of the argmax over `axis` (sklearn's `f1_score`); multiclass needs average='macro'/'micro'/'weighted'."""
    return _single("fbeta", "f1_score", axis, labels, pos_label, average)


def FBeta(
    beta: float,
    axis: int = -1,
    labels: Sequence[int] | None = None,
    pos_label: int = 1,
    average: str = "binary",
) -> AccumMetric:
    """F-beta of the argmax over `axis` (sklearn's `fbeta_score`)."""
    return _single("fbeta", "fbeta_score", axis, labels, pos_label, average, beta=beta)


def Jaccard(
    axis: int = -1, labels: Sequence[int] | None = None, pos_label: int = 1, average: str = "binary"
) -> AccumMetric:
    """Jaccard index of the argmax over `axis` (sklearn's `jaccard_score`)."""
    return _single("jaccard", "jaccard_score", axis, labels, pos_label, average)


def PrecisionMulti(
    thresh: float = 0.5, sigmoid: bool = True, labels: Sequence[int] | None = None, average: str = "macro"
) -> AccumMetric:
    """Multi-label precision of `sigmoid(pred) >= thresh`."""
    return _multi("precision", "precision_multi", thresh, sigmoid, labels, average)


def RecallMulti(
    thresh: float = 0.5, sigmoid: bool = True, labels: Sequence[int] | None = None, average: str = "macro"
) -> AccumMetric:
    """Multi-label recall of `sigmoid(pred) >= thresh`."""
    return _multi("recall", "recall_multi", thresh, sigmoid, labels, average)


def F1ScoreMulti(
    thresh: float = 0.5, sigmoid: bool = True, labels: Sequence[int] | None = None, average: str = "macro"
) -> AccumMetric:
    """Multi-label F1 of `sigmoid(pred) >= thresh`."""
    return _multi("fbeta", "f1_score_multi", thresh, sigmoid, labels, average)


def FBetaMulti(
    beta: float,
    thresh: float = 0.5,
    sigmoid: bool = True,
    labels: Sequence[int] | None = None,
    average: str = "macro",
) -> AccumMetric:
    """Multi-label F-beta of `sigmoid(pred) >= thresh`."""
    return _multi("fbeta", "fbeta_multi", thresh, sigmoid, labels, average, beta=beta)


def JaccardMulti(
    thresh: float = 0.5, sigmoid: bool = True, labels: Sequence[int] | None = None, average: str = "macro"
) -> AccumMetric:
    """Multi-label Jaccard index of `sigmoid(pred) >= thresh`."""
    return _multi("jaccard", "jaccard_multi", thresh, sigmoid, labels, average)
