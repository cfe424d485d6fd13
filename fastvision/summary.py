"""`Learner.summary()`: layer table with output shapes and parameter counts, then optimizer, loss, freezing, callbacks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .callback.core import Callback, RunMode

__all__ = ["PrettyString", "layer_info", "learner_summary"]

_Info = tuple[str, int | None, bool | None, Any, bool]

_W = 76


class PrettyString(str):
    """A `str` whose repr is itself, so a notebook shows it as text."""

    def __repr__(self) -> str:
        return str(self)


def _shape(o: Any) -> tuple[int, ...] | None:
    if isinstance(o, torch.Tensor):
        return tuple(o.shape)
    if isinstance(o, (tuple, list)) and o and isinstance(o[0], torch.Tensor):
        return tuple(o[0].shape)
    return None


@contextlib.contextmanager
def _hooked(model: nn.Module) -> Iterator[list[_Info]]:
    """Yield a list that gets one `(type name, param count or None, trainable, output shape, shape preserved)`
    per leaf-module call in the block."""
    infos: list[_Info] = []

    def hook(m: nn.Module, inp: tuple, out: Any) -> None:
        params = list(m.parameters(recurse=False))
        n = sum(p.numel() for p in params) if hasattr(m, "weight") and params else None
        trainable = params[0].requires_grad if params else None
        in_shape = _shape(inp[0]) if inp else None
        out_shape = _shape(out)
        infos.append((type(m).__name__, n, trainable, out_shape, in_shape == out_shape))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        yield infos
    finally:
        for h in handles:
            h.remove()


def layer_info(model: nn.Module, *xb: torch.Tensor) -> list[_Info]:
    """Run `model(*xb)` in eval mode with hooks on every leaf module.

    Returns one `(type name, param count or None, trainable, output shape, shape preserved)` per call.
    """
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), _hooked(model) as infos:
            model(*xb)
    finally:
        model.train(was_training)
    return infos


class _LayerInfo(Callback):
    """Record the leaf modules' outputs during the pass, and the first input's shape."""

    def before_fit(self) -> None:
        """Hook the leaf modules."""
        self._hooks = _hooked(self.learn.model)
        self.infos = self._hooks.__enter__()

    def before_batch(self) -> None:
        """Note the input shape."""
        self.input_shape = tuple(self.learn.xb[0].shape)

    def after_fit(self) -> None:
        """Remove the hooks."""
        self._hooks.__exit__(None, None, None)


def _fmt_shape(s: Any) -> str:
    return " x ".join(str(d) for d in s) if s else ""


def learner_summary(learn: Any) -> PrettyString:
    """Build fastai's summary layout for `learn` (one evaluation pass, `learn.evaluate`, on the first training batch's inputs)."""
    b = next(iter(learn.dls.train))
    b = b if isinstance(b, (tuple, list)) else (b,)
    n_inp = getattr(learn.dls, "n_inp", None) or 1
    rec = _LayerInfo()
    learn.evaluate([tuple(b[:n_inp])], [rec], RunMode.PREDICT)  # inputs only: no loss
    infos = rec.infos
    lines = [f"{type(learn.model).__name__} (Input shape: {_fmt_shape(rec.input_shape)})", "=" * _W]
    lines += [f"{'Layer (type)':<20} {'Output Shape':<20} {'Param #':<10} Trainable", "=" * _W]
    prev = None
    for i, (name, n, trainable, shape, same) in enumerate(infos):
        if shape is not None and shape != prev and (i == 0 or not same):
            if i:
                lines.append("_" * _W)
            lines.append(f"{'':<20} {_fmt_shape(shape)[:19]}")
            prev = shape
        cells = (
            f"{name:<20} {'':<20} {'' if n is None else n:<10} {'' if trainable is None else trainable!s:<10}"
        )
        lines.append(cells.rstrip())
    total = sum(p.numel() for p in learn.model.parameters())
    train = sum(p.numel() for p in learn.model.parameters() if p.requires_grad)
    lines += [
        "",
        f"Total params: {total:,}",
        f"Total trainable params: {train:,}",
        f"Total non-trainable params: {total - train:,}",
        "",
        f"Optimizer used: {learn.opt_func!r}",
        f"Loss function: {learn.loss_func!r}",
        "",
    ]
    frozen = getattr(learn, "frozen_idx", 0)
    lines += [f"Model frozen up to parameter group #{frozen}" if frozen else "Model unfrozen", ""]
    lines += ["Callbacks:", *[f"  - {type(c).__name__}" for c in learn.cbs]]
    return PrettyString("\n".join(lines))
