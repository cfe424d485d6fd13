"""Per-pixel batch transforms: int-to-float, lighting in logit/HSV space, Normalize, RandomErasing.

Geometry lives in `vision/augment.py`; this module holds everything that changes pixel *values*, plus
the random-draw helpers both modules share. Every random value is drawn on the CPU from torch's RNG
(or the transform's `generator`), one per image unless `batch=True`, so a seeded run is identical on
every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..memory import advise_huge_pages, float_batch
from ..transform import Transform
from .lazy import PendingBatch

__all__ = [
    "IntToFloatTensor",
    "Normalize",
    "imagenet_stats",
    "cifar_stats",
    "mnist_stats",
    "LightingGroup",
    "Brightness",
    "Contrast",
    "Saturation",
    "Hue",
    "RandomErasing",
]

imagenet_stats = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
cifar_stats = ([0.491, 0.482, 0.447], [0.247, 0.243, 0.261])
mnist_stats = ([0.131], [0.308])

Draw = float | Sequence[float] | Callable[[int], Any] | None


def uniform(n: int, lo: float, hi: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw `n` float32 values uniformly in [lo, hi) on the CPU."""
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def draw_values(
    draw: Draw,
    bs: int,
    default: Callable[[int], torch.Tensor],
    p: float = 1.0,
    neutral: float = 0.0,
    batch: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return `bs` per-image values: `draw` (or `default(n)`), each kept with probability `p`, else `neutral`.

    `draw` fixes the values as in fastai: a number (every image), a sequence (one per image, at least
    `bs` long) or a callable `f(bs)`. `p` still applies to fixed values; pass `p=1.` to force them.
    `batch=True` draws one value and one keep/skip decision for the whole batch.
    """
    if draw is None:
        vals = default(1 if batch else bs).float().expand(bs)
    elif callable(draw):
        vals = torch.as_tensor(draw(bs), dtype=torch.float32).expand(bs)
    elif isinstance(draw, Sequence) or isinstance(draw, torch.Tensor):
        if len(draw) < bs:
            raise ValueError(f"draw has {len(draw)} values for a batch of {bs}: give at least one per image.")
        vals = torch.as_tensor(list(draw[:bs]), dtype=torch.float32)
    else:
        vals = torch.full((bs,), float(draw))
    if p < 1:
        keep = (torch.rand(1 if batch else bs, generator=generator) < p).expand(bs)
        vals = torch.where(keep, vals, torch.full_like(vals, neutral))
    return vals.clone()


def is_image_batch(x: Any) -> bool:
    """Whether `x` is a B x C x H x W image tensor (uint8 or floating), the only thing batch tfms touch."""
    return isinstance(x, torch.Tensor) and x.ndim == 4 and (x.dtype == torch.uint8 or x.is_floating_point())


def check_probability(owner: str, p: float, name: str = "p") -> float:
    """Return `p` when it is a probability (0 to 1); a ValueError naming `owner` and the argument otherwise."""
    if not 0 <= p <= 1:
        raise ValueError(
            f"{owner}: {name}={p!r} is not a probability; expected a value from 0 to 1, e.g. {name}=0.75."
        )
    return p


class IntToFloatTensor(Transform):
    """Turn uint8 image batches into float in [0, 1]; pass a `PendingBatch` through for the affine group.

    Args:
        div: divisor of the integer values (255.).
        div_mask: kept for fastai compatibility (masks are not a separate type here).
    """

    order, accepts_pending = 10, True

    def __init__(self, div: float = 255.0, div_mask: float = 1):
        self.div, self.div_mask = div, div_mask

    def encodes(self, x: Any, split_idx: int | None = None) -> Any:
        """Divide a uint8 4D tensor by `div`; return everything else unchanged."""
        if isinstance(x, PendingBatch) or not (isinstance(x, torch.Tensor) and x.ndim == 4):
            return x
        return float_batch(x).div_(self.div) if x.dtype == torch.uint8 else x

    def decodes(self, x: Any) -> Any:
        """Scale a float image batch back to uint8."""
        if is_image_batch(x) and x.is_floating_point():
            return (x.float().clamp(0.0, 1.0) * self.div).round().clamp(0, 255).to(torch.uint8)
        return x


class Normalize(Transform):
    """Normalize float image batches with per-channel `mean` and `std`; `decodes` reverses it.

    Args:
        mean: a sequence (one per channel) or a broadcastable tensor; None computes it in `setup(dl)`
            from one batch of `dl` (over `axes`).
        std: like `mean` (computed with + 1e-7).
        axes: the dimensions reduced when computing statistics ((0, 2, 3): per channel).
    """

    order = 99

    def __init__(self, mean: Any = None, std: Any = None, axes: tuple[int, ...] = (0, 2, 3)):
        self.mean, self.std, self.axes = self._shape(mean), self._shape(std), axes
        if self.std is not None and not bool((self.std > 0).all()):
            raise ValueError(
                f"Normalize: std={self.std.flatten().tolist()} has a value that is not positive: dividing by it "
                "gives inf or NaN. Use the per-channel standard deviations of your images (Normalize() with no "
                "stats computes them from a batch)."
            )
        self._fitting = False
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_stats(cls, mean: Any, std: Any, dim: int = 1, ndim: int = 4, cuda: bool = True) -> Normalize:
        """Build from per-channel lists, reshaped to broadcast along `dim` of an `ndim` tensor."""
        shape = [1] * ndim
        shape[dim] = -1
        return cls(
            torch.as_tensor(mean, dtype=torch.float32).view(shape), torch.as_tensor(std).float().view(shape)
        )

    @staticmethod
    def _shape(v: Any) -> torch.Tensor | None:
        if v is None:
            return None
        v = torch.as_tensor(v, dtype=torch.float32)
        return v.view(1, -1, 1, 1) if v.ndim == 1 else v

    def setup(self, dl: Any = None) -> None:
        """Compute `mean`/`std` from one batch of `dl` (a DataLoader or a tensor) when they are None."""
        if self.mean is not None or dl is None:
            return
        self._fitting = True
        try:
            b = dl if isinstance(dl, torch.Tensor) else dl.one_batch()
        finally:
            self._fitting = False
        x = next((o for o in (b if isinstance(b, tuple) else (b,)) if is_image_batch(o)), None)
        if x is None:
            raise ValueError(
                "Normalize.setup found no B x C x H x W image tensor in the batch to compute stats from."
            )
        x = x.float()
        self.mean, self.std = (
            x.mean(self.axes, keepdim=True).cpu(),
            (x.std(self.axes, keepdim=True) + 1e-7).cpu(),
        )
        self._cache = {}

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (x.device, x.dtype)
        if key not in self._cache:
            if self.mean is None or self.std is None:
                raise RuntimeError(
                    "Normalize has no statistics: pass mean/std, use Normalize.from_stats(*imagenet_stats), "
                    "or call setup(dl) to compute them from a batch."
                )
            self._cache[key] = (self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype))
        return self._cache[key]

    def encodes(self, x: Any, split_idx: int | None = None) -> Any:
        """Return `(x - mean) / std` for float image batches."""
        if not (is_image_batch(x) and x.is_floating_point()) or self._fitting:
            return x
        if self.mean is None:
            raise RuntimeError(
                "Normalize has no statistics: pass mean/std, use Normalize.from_stats(*imagenet_stats), "
                "or call setup(dl) to compute them from a batch."
            )
        if self.mean.ndim == 4 and self.mean.shape[1] not in (1, x.shape[1]):
            raise ValueError(
                f"Normalize has stats for {self.mean.shape[1]} channels but the batch has {x.shape[1]} "
                f"(shape {tuple(x.shape)}). Use stats with one value per channel, e.g. mnist_stats for grey."
            )
        mean, std = self._stats(x)
        return (x - mean) / std

    def decodes(self, x: Any) -> Any:
        """Return `x * std + mean` for float image batches."""
        if not (is_image_batch(x) and x.is_floating_point()) or self.mean is None:
            return x
        mean, std = self._stats(x)
        return x * std + mean


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    mx, which = x.max(1)
    d = mx - x.min(1).values
    safe = torch.where(d > 0, d, torch.ones_like(d))
    h = torch.where(
        which == 0, ((g - b) / safe) % 6, torch.where(which == 1, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    h = torch.where(d > 0, h / 6, torch.zeros_like(h))
    s = torch.where(mx > 0, d / torch.where(mx > 0, mx, torch.ones_like(mx)), torch.zeros_like(mx))
    return torch.stack([h, s, mx], 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    out = []
    for n in (5.0, 3.0, 1.0):
        k = (n + h * 6) % 6
        out.append(v - v * s * torch.minimum(k, 4 - k).clamp(0, 1))
    return torch.stack(out, 1)


class LightingGroup(Transform):
    """Compose lighting parts into one pass: logit-space parts in one logit/sigmoid round trip, then HSV parts.

    Train only (`split_idx=0`), order 40. `compose(other)` appends the other group's parts.
    """

    order, split_idx = 40, 0
    space = "logit"

    def __init__(self, parts: Sequence[LightingGroup] = ()):
        self.parts = list(parts)

    def compose(self, other: LightingGroup) -> LightingGroup:
        """Append `other` (and its parts) so that all run in this group's single pass."""
        self.parts.extend([other, *other.parts])
        return self

    def _chain(self) -> list[LightingGroup]:
        return [self, *self.parts] if type(self) is not LightingGroup else list(self.parts)

    def _change(self, bs: int) -> torch.Tensor:
        raise NotImplementedError

    def _apply(self, y: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encodes(self, x: Any, split_idx: int | None = None) -> Any:
        """Apply every part with per-image parameters to a float image batch."""
        if not (is_image_batch(x) and x.is_floating_point()):
            return x
        bs, y = x.shape[0], None
        for space in ("logit", "hsv"):
            parts = [t for t in self._chain() if t.space == space]
            if not parts:
                continue
            if space == "hsv":
                y = _rgb_to_hsv(x.float() if y is None else y)
            elif y is None:  # one new float32 tensor, written once, then changed in place
                y = advise_huge_pages(torch.empty_like(x, dtype=torch.float32))
                if x.dtype == torch.float32:
                    y = torch.clamp(x, 1e-7, 1 - 1e-7, out=y)
                else:
                    y = y.copy_(x).clamp_(1e-7, 1 - 1e-7)
                y = y.logit_()
            else:
                y = y.clamp_(1e-7, 1 - 1e-7).logit_()
            for t in parts:
                y = t._apply(y, t._change(bs).to(y.device).view(bs, 1, 1, 1))
            y = y.sigmoid_() if space == "logit" else _hsv_to_rgb(y)
        return x if y is None else y.to(x.dtype)


class Brightness(LightingGroup):
    """Change brightness by `c ~ U(0.5(1-max_lighting), 0.5(1+max_lighting))` (adds `logit(c)`), with prob p."""

    def __init__(
        self,
        max_lighting: float = 0.2,
        p: float = 0.75,
        draw: Draw = None,
        batch: bool = False,
        generator=None,
    ):
        super().__init__()
        self.max_lighting, self.p, self.draw, self.batch, self.generator = (
            max_lighting,
            check_probability(type(self).__name__, p),
            draw,
            batch,
            generator,
        )

    def _change(self, bs: int) -> torch.Tensor:
        lo, hi = 0.5 * (1 - self.max_lighting), 0.5 * (1 + self.max_lighting)
        return draw_values(
            self.draw,
            bs,
            lambda n: uniform(n, lo, hi, self.generator),
            self.p,
            0.5,
            self.batch,
            self.generator,
        )

    def _apply(self, y: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
        return y.add_(torch.logit(change))


class Contrast(Brightness):
    """Scale the logits by a log-uniform factor in [1-max_lighting, 1/(1-max_lighting)], with prob p."""

    def _change(self, bs: int) -> torch.Tensor:
        lim = -math.log(1 - self.max_lighting)
        return draw_values(
            self.draw,
            bs,
            lambda n: uniform(n, -lim, lim, self.generator).exp(),
            self.p,
            1.0,
            self.batch,
            self.generator,
        )

    def _apply(self, y: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
        return y.mul_(change)


class Saturation(Contrast):
    """Blend with the ITU-R 601 greyscale by a log-uniform factor (1: unchanged), with prob p (RGB only)."""

    def _apply(self, y: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
        if y.shape[1] != 3:
            return y
        grey = (y * y.new_tensor([0.2989, 0.5870, 0.1140]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        return y.mul_(change).add_(grey.mul_(1 - change))


class Hue(LightingGroup):
    """Shift the HSV hue by `U(-max_hue, max_hue)` (mod 1), with prob p (RGB only)."""

    space = "hsv"

    def __init__(
        self, max_hue: float = 0.1, p: float = 0.75, draw: Draw = None, batch: bool = False, generator=None
    ):
        super().__init__()
        self.max_hue, self.draw, self.batch, self.generator = max_hue, draw, batch, generator
        self.p = check_probability(type(self).__name__, p)

    def _change(self, bs: int) -> torch.Tensor:
        mh = self.max_hue
        return draw_values(
            self.draw,
            bs,
            lambda n: uniform(n, -mh, mh, self.generator),
            self.p,
            0.0,
            self.batch,
            self.generator,
        )

    def _apply(self, y: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
        return torch.cat([(y[:, :1] + change) % 1.0, y[:, 1:]], 1)

    def encodes(self, x: Any, split_idx: int | None = None) -> Any:
        """Shift the hue of RGB float batches; other channel counts pass unchanged."""
        if is_image_batch(x) and x.shape[1] != 3:
            return x
        return super().encodes(x, split_idx)


class RandomErasing(Transform):
    """Fill 1..max_count random rectangles of each image with N(0,1) noise, with prob p per image.

    Order 100 (after Normalize), train only. Each rectangle covers `U(sl, sh)` of `area/count` with a
    log-uniform aspect in [min_aspect, 1/min_aspect].
    """

    order, split_idx = 100, 0

    def __init__(
        self,
        p: float = 0.5,
        sl: float = 0.0,
        sh: float = 0.3,
        min_aspect: float = 0.3,
        max_count: int = 1,
        generator=None,
    ):
        self.p, self.sl, self.sh, self.min_aspect, self.max_count, self.generator = (
            check_probability(type(self).__name__, p),
            sl,
            sh,
            min_aspect,
            max_count,
            generator,
        )

    def encodes(self, x: Any, split_idx: int | None = None) -> Any:
        """Erase rectangles in a float image batch."""
        if not (is_image_batch(x) and x.is_floating_point()):
            return x
        bs, _, h, w = x.shape
        g, m = self.generator, self.max_count
        count = torch.randint(1, m + 1, (bs, 1), generator=g).float()
        area = uniform(bs * m, self.sl, self.sh, g).view(bs, m) * h * w / count
        lim = -math.log(self.min_aspect)
        aspect = uniform(bs * m, -lim, lim, g).exp().view(bs, m)
        rh = (area * aspect).sqrt().round().clamp(max=h)
        rw = (area / aspect).sqrt().round().clamp(max=w)
        top = (torch.rand(bs, m, generator=g) * (h - rh + 1)).floor()
        left = (torch.rand(bs, m, generator=g) * (w - rw + 1)).floor()
        active = (torch.arange(m).view(1, m) < count) & (torch.rand(bs, 1, generator=g) < self.p)
        box = torch.stack([top, top + rh, left, left + rw], -1).to(x.device)
        rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
        b = box[..., None, None]
        inside = (rows >= b[:, :, 0]) & (rows < b[:, :, 1]) & (cols >= b[:, :, 2]) & (cols < b[:, :, 3])
        mask = (inside & active.to(x.device)[..., None, None]).any(1, keepdim=True)
        noise = torch.randn(x.shape, generator=g).to(x.device) if g is not None else torch.randn_like(x)
        return torch.where(mask, noise.to(x.dtype), x)
