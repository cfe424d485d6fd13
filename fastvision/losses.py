"""Loss functions that flatten their inputs, and the activation/decoding `get_preds` applies for any loss.

Every loss here is an `nn.Module` (so `.to(device)` works and it shows up in `print(learn)`) with two
extra methods: `activation(x)` (what turns raw model outputs into probabilities: softmax, sigmoid or
identity) and `decodes(x)` (what turns probabilities into predictions: argmax, `> thresh` or identity).
`loss_activation` / `loss_decodes` return the same pair for any loss, plain torch ones included.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BaseLoss",
    "CrossEntropyLossFlat",
    "BCEWithLogitsLossFlat",
    "BCELossFlat",
    "MSELossFlat",
    "L1LossFlat",
    "FocalLoss",
    "FocalLossFlat",
    "LabelSmoothingCrossEntropy",
    "LabelSmoothingCrossEntropyFlat",
    "loss_activation",
    "loss_decodes",
    "unreduced",
    "reduce_loss",
]


def _identity(x: Any) -> Any:
    return x


class BaseLoss(nn.Module):
    """Wrap a torch loss class so inputs and targets are flattened before the call.

    Moves `axis` (the class axis) last, makes tensors contiguous, casts targets to float when
    `floatify`, casts int8/16/32 targets to long, then flattens the input to `(-1, C)` (`is_2d`) or
    `(-1,)` and the targets to `(-1,)`.

    Args:
        loss_cls: the torch loss class to instantiate with `*args, **kwargs`.
        axis: the class axis of the input (-1).
        flatten: flatten input and targets (True).
        floatify: cast targets to float (False).
        is_2d: keep the class axis when flattening the input (True).
    """

    y_int: bool = False

    def __init__(
        self,
        loss_cls: type[nn.Module],
        *args: Any,
        axis: int = -1,
        flatten: bool = True,
        floatify: bool = False,
        is_2d: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.func: Any = loss_cls(*args, **kwargs)
        self.axis, self.flatten, self.floatify, self.is_2d = axis, flatten, floatify, is_2d

    def __repr__(self) -> str:
        return f"FlattenedLoss of {self.func!r}"

    @property
    def reduction(self) -> str:
        """The reduction of the wrapped loss ('mean', 'sum' or 'none'); settable."""
        return self.func.reduction

    @reduction.setter
    def reduction(self, value: str) -> None:
        self.func.reduction = value

    def _axis_last(self, x: Tensor) -> Tensor:
        if x.ndim < 2 or self.axis in (-1, x.ndim - 1) or self.axis >= x.ndim:
            return x.contiguous()
        return x.transpose(self.axis, -1).contiguous()

    def forward(self, inp: Tensor, targ: Tensor, **kwargs: Any) -> Tensor:
        """Flatten `inp` and `targ` and return the wrapped loss."""
        inp, targ = self._axis_last(inp), self._axis_last(targ)
        if self.floatify and targ.dtype != torch.float16:
            targ = targ.float()
        if targ.dtype in (torch.int8, torch.int16, torch.int32, torch.uint8) and not self.floatify:
            targ = targ.long()
        if self.flatten:
            inp = inp.reshape(-1, inp.shape[-1]) if self.is_2d else inp.reshape(-1)
            targ = targ.reshape(-1)
        return self.func(inp, targ, **kwargs)

    def activation(self, x: Tensor) -> Tensor:
        """Return the probabilities for raw outputs `x` (identity here)."""
        return x

    def decodes(self, x: Tensor) -> Tensor:
        """Return the decoded predictions for activated outputs `x` (identity here)."""
        return x


class CrossEntropyLossFlat(BaseLoss):
    """`nn.CrossEntropyLoss` on flattened input and targets; softmax activation, argmax decoding."""

    y_int = True

    def __init__(
        self,
        *args: Any,
        axis: int = -1,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            nn.CrossEntropyLoss,
            *args,
            axis=axis,
            weight=weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
            **kwargs,
        )

    def activation(self, x: Tensor) -> Tensor:
        """Softmax over the class axis."""
        return F.softmax(x, dim=self.axis)

    def decodes(self, x: Tensor) -> Tensor:
        """Argmax over the class axis."""
        return x.argmax(dim=self.axis)


class BCEWithLogitsLossFlat(BaseLoss):
    """`nn.BCEWithLogitsLoss` on flattened float targets; sigmoid activation, `> thresh` decoding.

    `pos_weight` (one weight per label) needs the label axis, so it turns flattening off; passing
    `flatten=True` with it raises a `ValueError`.
    """

    def __init__(
        self,
        *args: Any,
        axis: int = -1,
        floatify: bool = True,
        thresh: float = 0.5,
        weight: Tensor | None = None,
        reduction: str = "mean",
        pos_weight: Tensor | None = None,
        flatten: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if pos_weight is not None and flatten:
            raise ValueError(
                "BCEWithLogitsLossFlat got pos_weight and flatten=True, but pos_weight needs the label "
                "axis. Leave flatten unset (pos_weight turns flattening off)."
            )
        flatten = pos_weight is None if flatten is None else flatten
        super().__init__(
            nn.BCEWithLogitsLoss,
            *args,
            axis=axis,
            flatten=flatten,
            floatify=floatify,
            is_2d=False,
            weight=weight,
            reduction=reduction,
            pos_weight=pos_weight,
            **kwargs,
        )
        self.thresh = thresh

    def activation(self, x: Tensor) -> Tensor:
        """Sigmoid."""
        return torch.sigmoid(x)

    def decodes(self, x: Tensor) -> Tensor:
        """Probabilities above `thresh`."""
        return x > self.thresh


class BCELossFlat(BaseLoss):
    """`nn.BCELoss` on flattened float targets (the input must already be probabilities)."""

    def __init__(
        self,
        *args: Any,
        axis: int = -1,
        floatify: bool = True,
        weight: Tensor | None = None,
        reduction: str = "mean",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            nn.BCELoss,
            *args,
            axis=axis,
            floatify=floatify,
            is_2d=False,
            weight=weight,
            reduction=reduction,
            **kwargs,
        )


class MSELossFlat(BaseLoss):
    """`nn.MSELoss` on flattened float input and targets."""

    def __init__(
        self, *args: Any, axis: int = -1, floatify: bool = True, reduction: str = "mean", **kwargs: Any
    ) -> None:
        super().__init__(
            nn.MSELoss, *args, axis=axis, floatify=floatify, is_2d=False, reduction=reduction, **kwargs
        )


class L1LossFlat(BaseLoss):
    """`nn.L1Loss` on flattened float input and targets."""

    def __init__(
        self, *args: Any, axis: int = -1, floatify: bool = True, reduction: str = "mean", **kwargs: Any
    ) -> None:
        super().__init__(
            nn.L1Loss, *args, axis=axis, floatify=floatify, is_2d=False, reduction=reduction, **kwargs
        )


class FocalLoss(nn.Module):
    """Cross entropy scaled by `(1 - p_t) ** gamma`, which down-weights easy examples.

    Args:
        gamma: focusing parameter (2.0); 0 gives plain cross entropy.
        weight: per-class weights, as in `nn.CrossEntropyLoss`.
        reduction: 'mean', 'sum' or 'none'.
    """

    y_int = True
    weight: Tensor | None  # a registered buffer

    def __init__(self, gamma: float = 2.0, weight: Tensor | None = None, reduction: str = "mean") -> None:
        super().__init__()
        self.gamma, self.reduction = gamma, reduction
        self.register_buffer("weight", weight)

    def forward(self, inp: Tensor, targ: Tensor) -> Tensor:
        """Return the focal loss of logits `inp` (N x C) for class indices `targ` (N)."""
        ce = F.cross_entropy(inp, targ, weight=self.weight, reduction="none")
        loss = (1 - torch.exp(-ce)) ** self.gamma * ce
        return reduce_loss(loss, self.reduction)


class FocalLossFlat(BaseLoss):
    """`FocalLoss` on flattened input and targets; softmax activation, argmax decoding."""

    y_int = True

    def __init__(
        self,
        *args: Any,
        gamma: float = 2.0,
        axis: int = -1,
        weight: Tensor | None = None,
        reduction: str = "mean",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            FocalLoss, *args, gamma=gamma, axis=axis, weight=weight, reduction=reduction, **kwargs
        )

    def activation(self, x: Tensor) -> Tensor:
        """Softmax over the class axis."""
        return F.softmax(x, dim=self.axis)

    def decodes(self, x: Tensor) -> Tensor:
        """Argmax over the class axis."""
        return x.argmax(dim=self.axis)


class LabelSmoothingCrossEntropy(nn.Module):
    """Cross entropy against targets smoothed towards uniform: `eps/C * sum_c(-log p_c) + (1-eps) * NLL`.

    Args:
        eps: smoothing amount (0.1).
        weight: per-class weights for the NLL term.
        reduction: 'mean', 'sum' or 'none'.
    """

    y_int = True
    weight: Tensor | None  # a registered buffer

    def __init__(self, eps: float = 0.1, weight: Tensor | None = None, reduction: str = "mean") -> None:
        super().__init__()
        self.eps, self.reduction = eps, reduction
        self.register_buffer("weight", weight)

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        """Return the smoothed loss of logits `output` (N x C) for class indices `target` (N)."""
        c = output.shape[1]
        log_preds = F.log_softmax(output, dim=1)
        smooth = reduce_loss(-log_preds.sum(dim=1), self.reduction)
        nll = F.nll_loss(log_preds, target.long(), weight=self.weight, reduction=self.reduction)
        return smooth * self.eps / c + (1 - self.eps) * nll

    def activation(self, x: Tensor) -> Tensor:
        """Softmax over the class axis."""
        return F.softmax(x, dim=1)

    def decodes(self, x: Tensor) -> Tensor:
        """Argmax over the class axis."""
        return x.argmax(dim=1)


class LabelSmoothingCrossEntropyFlat(BaseLoss):
    """`LabelSmoothingCrossEntropy` on flattened input and targets."""

    y_int = True

    def __init__(
        self, *args: Any, axis: int = -1, eps: float = 0.1, reduction: str = "mean", **kwargs: Any
    ) -> None:
        super().__init__(LabelSmoothingCrossEntropy, *args, axis=axis, eps=eps, reduction=reduction, **kwargs)

    def activation(self, x: Tensor) -> Tensor:
        """Softmax over the class axis."""
        return F.softmax(x, dim=self.axis)

    def decodes(self, x: Tensor) -> Tensor:
        """Argmax over the class axis."""
        return x.argmax(dim=self.axis)


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    """Reduce a per-item `loss` as `reduction` says: 'mean', 'sum' or 'none' (unchanged)."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction={reduction!r} is not one of 'mean', 'sum', 'none'.")


def _softmax1(x: Tensor) -> Tensor:
    return F.softmax(x, dim=1)


def _argmax1(x: Tensor) -> Tensor:
    return x.argmax(dim=1)


def _thresh_half(x: Tensor) -> Tensor:
    return x > 0.5


# Plain torch losses (class or functional form) -> (activation, decodes); the class axis is 1 in torch.
_TORCH_LOSSES: list[tuple[Any, Callable, Callable]] = [
    ((nn.CrossEntropyLoss, F.cross_entropy), _softmax1, _argmax1),
    ((nn.NLLLoss, F.nll_loss), torch.exp, _argmax1),
    ((nn.BCEWithLogitsLoss, F.binary_cross_entropy_with_logits), torch.sigmoid, _thresh_half),
    ((nn.BCELoss, F.binary_cross_entropy), _identity, _thresh_half),
]


def _lookup(loss_func: Any) -> tuple[Callable, Callable] | None:
    for keys, act, dec in _TORCH_LOSSES:
        if any(loss_func is k or (isinstance(k, type) and isinstance(loss_func, k)) for k in keys):
            return act, dec
    return None


def loss_activation(loss_func: Any) -> Callable[[Tensor], Tensor]:
    """Return the function turning raw outputs into probabilities for `loss_func` (any loss).

    Uses `loss_func.activation` when it has one; plain `nn.CrossEntropyLoss`/`F.cross_entropy` give
    softmax over dim 1, `nn.NLLLoss` exp (its inputs are log-probabilities), `nn.BCEWithLogitsLoss`
    sigmoid; anything else the identity.
    """
    act = getattr(loss_func, "activation", None)
    if callable(act):
        return act
    found = _lookup(loss_func)
    return found[0] if found else _identity


def loss_decodes(loss_func: Any) -> Callable[[Tensor], Tensor]:
    """Return the function turning probabilities into predictions for `loss_func` (any loss).

    Uses `loss_func.decodes` when it has one; cross entropy and NLL give argmax over dim 1, the BCE
    losses `> 0.5`; anything else the identity.
    """
    dec = getattr(loss_func, "decodes", None)
    if callable(dec):
        return dec
    found = _lookup(loss_func)
    return found[1] if found else _identity


@contextlib.contextmanager
def unreduced(loss_func: Any) -> Iterator[Callable[..., Tensor]]:
    """Yield `loss_func` made to return one loss per item (`reduction='none'`) for the duration of the block.

    A loss with a `reduction` attribute (torch and fastvision loss modules) has it set to 'none' and put
    back after the block; a function taking `reduction=` is partially applied. Anything else raises a
    `TypeError`.
    """
    if hasattr(loss_func, "reduction"):
        old, loss_func.reduction = loss_func.reduction, "none"
        try:
            yield loss_func
        finally:
            loss_func.reduction = old
        return
    try:
        accepts = "reduction" in inspect.signature(loss_func).parameters
    except (TypeError, ValueError):
        accepts = False
    if not accepts:
        raise TypeError(
            f"Cannot get one loss per item from {loss_func!r}: it has no `reduction` attribute or argument. Use a "
            "torch loss module (nn.CrossEntropyLoss()), a fastvision one (CrossEntropyLossFlat()), or a function "
            "taking `reduction=`."
        )
    yield functools.partial(loss_func, reduction="none")
