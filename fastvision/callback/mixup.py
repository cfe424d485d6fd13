"""`MixUp` and `CutMix`: train on blends of two items, with the loss blended by the same amount.

Each training batch is paired with a shuffled copy of itself (`perm`, a random permutation):

- `MixUp(alpha)` draws one `lam ~ Beta(alpha, alpha)` per item, keeps `lam = max(lam, 1 - lam)` (the
  item stays the larger part of its blend) and uses `x = lam * x + (1 - lam) * x[perm]`.
- `CutMix(alpha)` draws one `lam ~ Beta(alpha, alpha)` per batch, pastes a random box of side
  `sqrt(1 - lam)` times the image's (clipped at the borders) from `x[perm]` into `x`, and sets
  `lam = 1 - box area / image area`.

Targets: when they are class indices (the loss has `y_int = True`, as `CrossEntropyLossFlat`, or the
targets are integer tensors) the loss is mixed, item by item, `lam * loss(pred, y) + (1 - lam) *
loss(pred, y[perm])`, then reduced with the loss's own reduction ('mean', 'sum' or 'none'); float
targets (one-hot, multi-label, regression) are mixed like the inputs, as fastai does. For
`BCEWithLogitsLoss` both ways give the same loss. Validation, `validate`, `get_preds` and `predict`
are never mixed: the callbacks act on training batches only, and the loss function is swapped in
`before_train` and put back in `after_train` (also after a cancel or an error).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..losses import reduce_loss, unreduced
from .core import Callback

__all__ = ["MixHandler", "MixUp", "CutMix"]


def _per_item(lam: Tensor, like: Tensor) -> Tensor:
    """`lam` (one value per item) shaped to broadcast over `like` (items first), in its dtype."""
    return lam.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


class _MixedLoss:
    """The loss installed during training: mixes the per-item losses of the targets and their partners."""

    def __init__(self, handler: MixHandler, loss_func: Any) -> None:
        self.handler, self.loss_func = handler, loss_func

    def __call__(self, pred: Any, *yb: Any) -> Tensor:
        h = self.handler
        lam = h.lam
        if not h.mixing_loss() or lam is None:  # mixing_loss() is False without lam
            return self.loss_func(pred, *yb)
        with unreduced(self.loss_func) as per_item:
            own, partner = per_item(pred, *yb), per_item(pred, *h.yb_partner)
        bs = lam.shape[0]
        if own.ndim == 0 or own.numel() % bs:
            raise ValueError(
                f"MixUp/CutMix: the unreduced loss has shape {tuple(own.shape)}, expected one loss per item "
                f"(or per element of each item) for a batch of {bs}. Use a loss with reduction='none' support."
            )
        flat = (own.reshape(bs, -1), partner.reshape(bs, -1))
        mixed = torch.lerp(flat[1], flat[0], lam.to(flat[0].dtype)[:, None])
        return reduce_loss(mixed.reshape(own.shape), getattr(self.loss_func, "reduction", "mean"))

    def __getattr__(self, name: str) -> Any:  # activation, decodes, y_int, reduction... of the wrapped loss
        if name in ("handler", "loss_func"):
            raise AttributeError(name)
        return getattr(self.loss_func, name)

    def __repr__(self) -> str:
        return f"{type(self.handler).__name__} loss of {self.loss_func!r}"


class MixHandler(Callback):
    """Base of `MixUp` and `CutMix`: swap the loss function during training and mix losses or targets.

    After each training batch's `before_batch`, `self.lam` holds the weight of every item (a tensor of
    shape `(bs,)`) and `self.perm` the index of its partner. Subclasses implement `mix_inputs(xb)`.

    Args:
        alpha: the Beta(alpha, alpha) distribution's parameter (must be > 0).
    """

    order = 0
    run_valid = False

    def __init__(self, alpha: float = 0.5) -> None:
        if not alpha > 0:
            raise ValueError(
                f"{type(self).__name__} alpha must be > 0, got {alpha!r}; fastai uses 0.4 (MixUp), 1.0 (CutMix)."
            )
        self.alpha = float(alpha)
        self.lam: Tensor | None = None
        self.perm: Tensor | None = None
        self.yb_partner: tuple = ()
        self._mix_loss = False
        self._old_lf: Any = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha:g})"

    def _draw_lam(self, n: int, device: torch.device) -> Tensor:
        """`n` draws from Beta(alpha, alpha) with torch's global RNG (seed it for a repeatable run)."""
        a = torch.tensor(self.alpha)
        return torch.distributions.Beta(a, a).sample((n,)).to(device)

    def before_train(self) -> None:
        """Install the mixing loss (the original comes back in `after_train`)."""
        learn = self.learn
        if not isinstance(learn.loss_func, _MixedLoss):
            self._old_lf = learn.loss_func
            learn.loss_func = _MixedLoss(self, learn.loss_func)

    def before_batch(self) -> None:
        """Pick partners, mix the inputs, and mix float targets (or arrange to mix the losses)."""
        learn = self.learn
        if not learn.xb or not isinstance(learn.xb[0], Tensor):
            raise TypeError(
                f"{type(self).__name__} mixes tensor inputs, got {type(learn.xb[0]).__name__ if learn.xb else 'no input'}."
            )
        bs = learn.xb[0].shape[0]
        self.perm = torch.randperm(bs).to(learn.xb[0].device)
        xb = tuple(self._check_float(x) for x in learn.xb)
        learn.xb = self.mix_inputs(xb)  # sets self.lam
        lam = self.lam
        if lam is None:
            raise RuntimeError(f"{type(self).__name__}.mix_inputs must set self.lam (one weight per item).")
        yb = learn.yb
        lf = self._old_lf if self._old_lf is not None else learn.loss_func
        y_int = getattr(lf, "y_int", None)
        if y_int is None:
            y_int = any(isinstance(y, Tensor) and not y.is_floating_point() for y in yb)
        self._mix_loss = bool(y_int)
        if self._mix_loss:
            self.yb_partner = tuple(y[self.perm] if isinstance(y, Tensor) else y for y in yb)
        else:
            self.yb_partner = ()
            learn.yb = tuple(
                torch.lerp(y[self.perm], y, _per_item(lam, y)) if _is_float(y) else y for y in yb
            )

    def mixing_loss(self) -> bool:
        """True while a training batch's loss must be mixed (targets are class indices)."""
        return self._mix_loss and self.learn is not None and self.learn.training and self.lam is not None

    def mix_inputs(self, xb: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """Return the mixed inputs and set `self.lam` (implemented by subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} must implement mix_inputs(xb).")

    def _check_float(self, x: Any) -> Any:
        if isinstance(x, Tensor) and not x.is_floating_point():
            raise TypeError(
                f"{type(self).__name__} got {x.dtype} inputs, expected floats: it blends pixel values. Add "
                "IntToFloatTensor() to the batch transforms (DataBlock does this for ImageBlock)."
            )
        return x

    def after_train(self) -> None:
        """Put the original loss function back (also runs after a cancelled training phase)."""
        self._restore()

    def after_fit(self) -> None:
        """Put the original loss function back if an error skipped `after_train`."""
        self._restore()

    def _restore(self) -> None:
        learn = self.learn
        if isinstance(learn.loss_func, _MixedLoss) and learn.loss_func.handler is self:
            learn.loss_func = self._old_lf
        self._old_lf, self.lam, self._mix_loss, self.yb_partner = None, None, False, ()


def _is_float(y: Any) -> bool:
    return isinstance(y, Tensor) and y.is_floating_point()


class MixUp(MixHandler):
    """Blend each training item with a random partner: `x = lam*x + (1-lam)*x[perm]`, one `lam` per item.

    `lam ~ Beta(alpha, alpha)`, then `max(lam, 1 - lam)`. See the module docstring for targets and losses.

    Args:
        alpha: Beta parameter (0.4); smaller values keep most items nearly unmixed.
    """

    def __init__(self, alpha: float = 0.4) -> None:
        super().__init__(alpha)

    def mix_inputs(self, xb: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """Draw `lam` per item and return `lam*x + (1-lam)*x[perm]` for each input tensor."""
        lam = self._draw_lam(xb[0].shape[0], xb[0].device)
        self.lam = torch.maximum(lam, 1 - lam)
        return tuple(torch.lerp(x[self.perm], x, _per_item(self.lam, x)) for x in xb)


class CutMix(MixHandler):
    """Paste a random box from a partner into each training image; `lam` is the share of the image kept.

    One `lam ~ Beta(alpha, alpha)` per batch sets the box's side to `sqrt(1 - lam)` of the image's
    height and width; its centre is uniform over the image and it is clipped at the borders, so
    `lam` is then recomputed as `1 - box area / image area`. The box is in `self.box` as
    `(y1, y2, x1, x2)` (pixel bounds, end exclusive). Inputs must have at least 2 dimensions after
    the batch one (`(bs, ..., H, W)`).

    Args:
        alpha: Beta parameter (1.0: the kept share is uniform).
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__(alpha)
        self.box: tuple[int, int, int, int] | None = None

    def mix_inputs(self, xb: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """Draw one `lam` and a box, paste `x[perm]`'s box into a copy of each input, set `self.lam` per item."""
        x0 = xb[0]
        if x0.ndim < 3:
            raise ValueError(
                f"CutMix pastes a box into images shaped (bs, ..., H, W), got inputs of shape {tuple(x0.shape)}. "
                "Use MixUp for inputs without spatial dimensions."
            )
        h, w = x0.shape[-2:]
        lam = float(self._draw_lam(1, torch.device("cpu"))[0])
        self.box = y1, y2, x1, x2 = self.rand_box(h, w, lam)
        out = []
        for x in xb:
            x = x.clone()  # never write into the loader's (or the caller's) tensor
            x[..., y1:y2, x1:x2] = x[self.perm][..., y1:y2, x1:x2]
            out.append(x)
        kept = 1 - (y2 - y1) * (x2 - x1) / float(h * w)
        self.lam = torch.full((x0.shape[0],), kept, device=x0.device)
        return tuple(out)

    @staticmethod
    def rand_box(h: int, w: int, lam: float) -> tuple[int, int, int, int]:
        """Return `(y1, y2, x1, x2)`: a box of side `sqrt(1-lam)*(h, w)` centred uniformly, clipped to the image."""
        ratio = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(h * ratio), int(w * ratio)
        cy, cx = int(torch.randint(0, h, ())), int(torch.randint(0, w, ()))
        y1, y2 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x1, x2 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        return y1, y2, x1, x2
