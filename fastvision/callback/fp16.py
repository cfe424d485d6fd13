"""Mixed precision training (`MixedPrecision`, `AMPMode`) and the channels-last memory format (`ChannelsLast`).

`MixedPrecision` does not run the forward pass itself: following docs/design.md it sets
`learn.autocast` (a callable returning a `torch.autocast` context) and `learn.scaler` (a
`torch.amp.GradScaler`, or None) in `before_fit`, and the learner's loop enters the context around
the forward pass and the loss and steps through the scaler. Both are restored in `after_fit`, so
`get_preds`, `predict` and `export` after training run in float32. Autocast never changes the
parameters' dtype: the weights stay float32 throughout. `validate`, `get_preds` and `predict` (which fire
`before_fit`/`after_fit` too) always run in float32.

Device choice, made on the device the model's parameters are on when fit starts:
- CUDA, 'fp16': float16 autocast with a `GradScaler('cuda')` (dynamic loss scaling).
- CUDA, 'bf16': bfloat16 autocast, no scaler (bf16 has float32's range); `ValueError` if the GPU
  lacks bf16.
- CPU: bfloat16 autocast, no scaler. float16 on CPU is slow on most processors and needs loss scaling,
  so 'fp16' falls back to bf16 with a warning.
- MPS and other devices: autocast with the requested dtype; a GradScaler for fp16 when torch has one.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from enum import Enum
from typing import Any

import torch

from .core import Callback

__all__ = ["AMPMode", "MixedPrecision", "ChannelsLast"]


class AMPMode(str, Enum):
    """Mixed precision modes: half precision with loss scaling, or bfloat16."""

    FP16 = "fp16"
    BF16 = "bf16"


def _model_device(learn: Any) -> torch.device:
    param = next(iter(learn.model.parameters()), None) if getattr(learn, "model", None) is not None else None
    if param is not None:
        return param.device
    dls = getattr(learn, "dls", None)
    return torch.device(getattr(dls, "device", None) or "cpu")


def _cast_float(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    if isinstance(x, (tuple, list)):
        return type(x)(_cast_float(o) for o in x)
    if isinstance(x, dict):
        return {k: _cast_float(v) for k, v in x.items()}
    return x


class MixedPrecision(Callback):
    """Train with automatic mixed precision on the model's device (see the module docstring).

    Args:
        amp_mode: 'fp16' or 'bf16' (an `AMPMode`); 'fp16' by default.
        **kwargs: passed to `torch.amp.GradScaler` (`init_scale`, `growth_interval`, ...).
    """

    order = 10

    def __init__(self, amp_mode: AMPMode | str = AMPMode.FP16, **kwargs: Any) -> None:
        try:
            self.amp_mode = AMPMode(amp_mode)
        except ValueError:
            raise ValueError(f"amp_mode={amp_mode!r} is not one of 'fp16', 'bf16'.") from None
        self.kwargs = kwargs
        self.scaler: Any = None
        self.dtype: torch.dtype | None = None
        self.device_type: str | None = None
        self._old: list[tuple[Any, Any]] = []  # a stack: validate/get_preds may run nested in a fit

    def _choose(self, device: torch.device) -> tuple[str, torch.dtype, bool]:
        """Return (device type, autocast dtype, use a GradScaler) for `device`."""
        kind = device.type
        if kind == "cuda":
            if self.amp_mode == AMPMode.BF16:
                if not torch.cuda.is_bf16_supported():
                    raise ValueError(
                        f"Unsupported GPU for bfloat16 mixed precision training: {torch.cuda.get_device_name(device)}. "
                        "Use MixedPrecision(amp_mode='fp16') (learn.to_fp16())."
                    )
                return kind, torch.bfloat16, False
            return kind, torch.float16, True
        if kind == "cpu":
            if self.amp_mode == AMPMode.FP16:
                warnings.warn(
                    "MixedPrecision(amp_mode='fp16') needs a CUDA GPU; the model is on the CPU, so it trains "
                    "with bfloat16 autocast instead (no loss scaling). Pass amp_mode='bf16' to silence this.",
                    UserWarning,
                    stacklevel=3,
                )
            return kind, torch.bfloat16, False
        fp16 = self.amp_mode == AMPMode.FP16
        return kind, torch.float16 if fp16 else torch.bfloat16, fp16

    def before_fit(self) -> None:
        """Set `learn.autocast` and `learn.scaler` for the model's device, keeping the old ones.

        Only a training run (`learn.run_mode.trains`: fit and lr_find) gets autocast: `validate`,
        `get_preds` and `predict` run in float32 (nested in a fit too), like the exported model.
        """
        learn = self.learn
        self._old.append((getattr(learn, "autocast", contextlib.nullcontext), getattr(learn, "scaler", None)))
        if not learn.run_mode.trains:
            learn.autocast, learn.scaler = contextlib.nullcontext, None
            return
        device_type, self.dtype, use_scaler = self._choose(_model_device(learn))
        if use_scaler and (self.scaler is None or self.device_type != device_type):
            try:
                self.scaler = torch.amp.GradScaler(device_type, **self.kwargs)
            except (RuntimeError, ValueError, TypeError) as e:
                warnings.warn(
                    f"No GradScaler for {device_type} ({e}); training without loss scaling.", stacklevel=2
                )
                self.scaler = None
        elif not use_scaler:
            if self.kwargs:
                warnings.warn(
                    f"GradScaler arguments {sorted(self.kwargs)} are unused with {self.dtype}.", stacklevel=2
                )
            self.scaler = None
        self.device_type = device_type
        learn.autocast = functools.partial(torch.autocast, device_type, dtype=self.dtype)
        learn.scaler = self.scaler

    def after_pred(self) -> None:
        """Cast half-precision predictions to float32."""
        self.learn.pred = _cast_float(self.learn.pred)

    def after_fit(self) -> None:
        """Restore the learner's previous `autocast` and `scaler`."""
        if self._old:
            self.learn.autocast, self.learn.scaler = self._old.pop()


class ChannelsLast(Callback):
    """Put the model in the channels-last memory format at the start of fit (faster convs with AMP on GPUs)."""

    order = -1

    def before_fit(self) -> None:
        """Convert the model's 4-d parameters and buffers to `torch.channels_last`."""
        self.learn.model.to(memory_format=torch.channels_last)
