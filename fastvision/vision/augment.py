"""Batched geometric augmentation with one interpolation: flip, dihedral, rotate, zoom, warp, resized crop.

Every geometric part produces a per-image 3 x 3 matrix; an `AffineGroup` multiplies them, together with
the crop window a lazy `Resize` left in a `PendingBatch`, into one projective map per image and calls
`F.grid_sample` once, at the output size. Coordinates, per image:

1. output pixel -> output-normalised `[-1, 1]` (pixel centres at the ends, `align_corners=True`);
2. the crop of `RandomResizedCropGPU` (C), the affine parts in list order, corrected for the logical
   frame's aspect (A), then the perspective warp (W): `logical = W @ A @ C @ out` (fastai's order, with
   the crop folded in instead of being a second resample);
3. logical `[-1, 1]` -> the item's own pixels through its window `(x0, y0, x1, y1)` (a plain tensor's
   window is the whole tensor);
4. padding relative to the item's own extent `hw[i]`: reflection folds the coordinates (triangle wave
   about the edge pixel centres), border clamps, zeros leaves them (the canvas is zero beyond each item,
   so it reads as zeros padding);
5. canvas pixels -> canvas-normalised coordinates, one `grid_sample(align_corners=True)`.

Random values are drawn on the CPU (torch's RNG, or `generator`), one per image unless `batch=True`;
the grid is computed in float32 on the batch's device. uint8 sources are converted to float only in the
region the grid reads (CPU) and the output is float32 in [0, 1]; float sources keep their dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..transform import Transform
from .lazy import PendingBatch
from .lighting import (
    Brightness,
    Contrast,
    Draw,
    LightingGroup,
    check_probability,
    draw_values,
    is_image_batch,
    uniform,
)
from .resize import check_scales, pair_size
from .sample import resample

__all__ = [
    "AffineGroup",
    "Flip",
    "Dihedral",
    "Rotate",
    "Zoom",
    "Warp",
    "RandomResizedCropGPU",
    "aug_transforms",
]

_MODES, _PAD_MODES = ("bilinear", "nearest", "bicubic"), ("reflection", "border", "zeros")

# The 8 symmetries of the square, indexed like fastai's `Dihedral` draw (output -> input coordinates).
_DIHEDRAL = torch.tensor(
    [[[1, 0], [0, 1]], [[-1, 0], [0, 1]], [[1, 0], [0, -1]], [[0, -1], [1, 0]],
     [[-1, 0], [0, -1]], [[0, 1], [-1, 0]], [[0, 1], [1, 0]], [[0, -1], [-1, 0]]],
    dtype=torch.float32,
)  # fmt: skip


def _pair(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    return None if size is None else pair_size(size, "AffineGroup")


def _mat(bs: int, *vals: Any) -> torch.Tensor:
    """Stack six per-image values (numbers or length-bs tensors) into B x 3 x 3 affine matrices."""
    v = [torch.as_tensor(o, dtype=torch.float32).expand(bs) for o in vals]
    last = torch.tensor([0.0, 0.0, 1.0]).expand(bs, 3)
    return torch.stack([torch.stack(v[:3], -1), torch.stack(v[3:], -1), last], 1)


def _homography(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Solve the B x 3 x 3 perspective maps taking the 4 points `src` (B x 4 x 2) to `dst`."""
    sx, sy = src.double().unbind(-1)
    dx, dy = dst.double().unbind(-1)
    z, o = torch.zeros_like(sx), torch.ones_like(sx)
    a = torch.cat(
        [
            torch.stack([sx, sy, o, z, z, z, -dx * sx, -dx * sy], -1),
            torch.stack([z, z, z, sx, sy, o, -dy * sx, -dy * sy], -1),
        ],
        1,
    )
    h = torch.linalg.solve(a, torch.cat([dx, dy], 1))
    return torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], 1).view(-1, 3, 3).float()


class AffineGroup(Transform):
    """Compose geometric parts into one resample per batch (order 30, both splits).

    Consumes a `PendingBatch` (`accepts_pending`) or a B x C x H x W tensor. On the validation split
    (`split_idx=1`) random parts are the identity and a `RandomResizedCropGPU` takes its centre crop, so
    the group only resizes to `size`.

    Args:
        parts: geometric transforms (Flip, Rotate, ...) whose matrices are multiplied in list order.
        size: output (height, width) or int; None keeps the logical size (`pb.size` or the input's).
        mode: 'bilinear', 'nearest' or 'bicubic'.
        pad_mode: 'reflection', 'border' or 'zeros', relative to each item's own pixels.
        align_corners: coordinate convention for plain tensors (PendingBatch windows always use True).
    """

    order, split_idx, accepts_pending = 30, None, True
    prefers_workers = True  # one grid_sample per batch: worth running in parallel in the CPU's workers

    def __init__(
        self,
        parts: Sequence[AffineGroup] = (),
        size: int | tuple[int, int] | None = None,
        mode: str = "bilinear",
        pad_mode: str = "reflection",
        align_corners: bool = True,
    ):
        if mode not in _MODES:
            raise ValueError(f"mode={mode!r} is not supported; use one of {_MODES}.")
        if pad_mode not in _PAD_MODES:
            raise ValueError(f"pad_mode={pad_mode!r} is not supported; use one of {_PAD_MODES}.")
        self.parts, self.size, self.mode, self.pad_mode = list(parts), _pair(size), mode, pad_mode
        self.align_corners = align_corners
        self._cache: dict[str, Any] = {}  # `resample`'s float copy of the source (CPU)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}}  # never pickle the float buffer

    @property
    def out_size(self) -> tuple[int, int] | None:
        """The output size: this group's `size`, else the first part's that has one."""
        return next((t.size for t in self._chain() if t.size is not None), self.size)

    @property
    def resamples(self) -> bool:
        """True when the group has an output size (DataBlock then makes item resizes lazy)."""
        return self.out_size is not None

    def compose(self, other: AffineGroup) -> AffineGroup:
        """Append `other` and its parts; this group's size/mode/pad settings win (as fastai)."""
        self.parts.extend([other, *other.parts])
        return self

    def _chain(self) -> list[AffineGroup]:
        return [self, *self.parts]

    def _geometry(self, bs: int, lh: int, lw: int, split_idx: int | None) -> tuple[str, torch.Tensor] | None:
        """Return ('affine' | 'warp' | 'crop', B x 3 x 3) for this part alone, or None (identity)."""
        return None

    def matrix(self, bs: int, lh: int, lw: int, split_idx: int | None = None) -> torch.Tensor:
        """Return the B x 3 x 3 map from output-normalised to logical-normalised coords for an lh x lw frame."""
        aff, warp, crop = (torch.eye(3).expand(bs, 3, 3) for _ in range(3))
        for t in self._chain():
            r = t._geometry(bs, lh, lw, split_idx)
            if r is None:
                continue
            kind, m = r
            if kind == "affine":
                aff = aff @ m
            elif kind == "warp":
                warp = m @ warp
            else:
                crop = crop @ m
        aff = aff.clone()
        aff[:, 0, 1] *= lh / lw
        aff[:, 1, 0] *= lw / lh
        return warp @ aff @ crop

    def encodes(self, x: Any, split_idx: int | None = None) -> Any:
        """Resample a PendingBatch or an image batch once through the composed geometry."""
        if isinstance(x, PendingBatch):
            src, hw, window, logical, align = x.canvas, x.hw, x.window, x.size, True
        elif is_image_batch(x):
            src, hw, window, logical, align = x, None, None, tuple(x.shape[-2:]), self.align_corners
        else:
            return x
        lmat = self.matrix(src.shape[0], *logical, split_idx)
        size = self.out_size or logical
        return resample(src, lmat, size, hw, window, self.mode, self.pad_mode, align, self._cache)


class _RandomPart(AffineGroup):
    """A geometric part with its own random draw; `**kwargs` (size, mode, pad_mode, align_corners) go to
    `AffineGroup`, so the part also works alone. `batch=True` shares one draw across the batch."""

    def __init__(self, p: float = 0.5, draw: Draw = None, batch: bool = False, generator=None, **kwargs):
        super().__init__(**kwargs)
        self.p, self.draw, self.batch, self.generator = (
            check_probability(type(self).__name__, p),
            draw,
            batch,
            generator,
        )

    def _values(
        self, draw: Draw, bs: int, lo: float, hi: float, neutral: float, p: float | None = None
    ) -> torch.Tensor:
        g = self.generator
        return draw_values(
            draw, bs, lambda n: uniform(n, lo, hi, g), self.p if p is None else p, neutral, self.batch, g
        )


class Flip(_RandomPart):
    """Mirror horizontally with probability `p` per image; `draw` fixes 1 (flip) or 0 per image."""

    def _geometry(self, bs, lh, lw, split_idx):
        if split_idx == 1:
            return None
        flip = draw_values(self.draw, bs, torch.ones, self.p, 0.0, self.batch, self.generator)
        return "affine", _mat(bs, 1 - 2 * flip, 0, 0, 0, 1, 0)


class Dihedral(_RandomPart):
    """Apply one of the 8 dihedral symmetries with probability `p`; `draw` fixes the index (fastai's order)."""

    def _geometry(self, bs, lh, lw, split_idx):
        if split_idx == 1:
            return None
        g = self.generator
        idx = draw_values(
            self.draw, bs, lambda n: torch.randint(0, 8, (n,), generator=g), self.p, 0.0, self.batch, g
        )
        if ((idx < 0) | (idx > 7) | (idx != idx.round())).any():
            raise ValueError(f"Dihedral draw must be integers in 0..7, got {idx.tolist()}.")
        m = torch.eye(3).repeat(bs, 1, 1)
        m[:, :2, :2] = _DIHEDRAL[idx.long()]
        return "affine", m


class Rotate(_RandomPart):
    """Rotate by `U(-max_deg, max_deg)` degrees with probability `p` (positive: clockwise on screen)."""

    def __init__(self, max_deg: float = 10, p: float = 0.5, draw: Draw = None, **kwargs):
        super().__init__(p, draw, **kwargs)
        self.max_deg = max_deg

    def _geometry(self, bs, lh, lw, split_idx):
        if split_idx == 1:
            return None
        t = self._values(self.draw, bs, -self.max_deg, self.max_deg, 0.0) * (math.pi / 180)
        return "affine", _mat(bs, t.cos(), t.sin(), 0, -t.sin(), t.cos(), 0)


class Zoom(_RandomPart):
    """Zoom in by `U(min_zoom, max_zoom)` with probability `p`, centred at `(draw_x, draw_y) ~ U(0, 1)`."""

    def __init__(
        self,
        min_zoom: float = 1.0,
        max_zoom: float = 1.1,
        p: float = 0.5,
        draw: Draw = None,
        draw_x: Draw = None,
        draw_y: Draw = None,
        **kwargs,
    ):
        super().__init__(p, draw, **kwargs)
        self.min_zoom, self.max_zoom, self.draw_x, self.draw_y = min_zoom, max_zoom, draw_x, draw_y

    def _geometry(self, bs, lh, lw, split_idx):
        if split_idx == 1:
            return None
        s = 1 / self._values(self.draw, bs, self.min_zoom, self.max_zoom, 1.0)
        cx = self._values(self.draw_x, bs, 0.0, 1.0, 0.0, p=1.0)
        cy = self._values(self.draw_y, bs, 0.0, 1.0, 0.0, p=1.0)
        return "affine", _mat(bs, s, 0, (1 - s) * (2 * cx - 1), 0, s, (1 - s) * (2 * cy - 1))


class Warp(_RandomPart):
    """Perspective warp: corners move by `U(-magnitude, magnitude)` (x and y drawn apart, each with prob `p`)."""

    def __init__(
        self, magnitude: float = 0.2, p: float = 0.5, draw_x: Draw = None, draw_y: Draw = None, **kwargs
    ):
        super().__init__(p, None, **kwargs)
        self.magnitude, self.draw_x, self.draw_y = magnitude, draw_x, draw_y

    def _geometry(self, bs, lh, lw, split_idx):
        if split_idx == 1:
            return None
        xt = self._values(self.draw_x, bs, -self.magnitude, self.magnitude, 0.0)
        yt = self._values(self.draw_y, bs, -self.magnitude, self.magnitude, 0.0)
        pts = ((-1 - yt, -1 - xt), (-1 + yt, 1 + xt), (1 + yt, -1 + xt), (1 - yt, 1 - xt))
        moved = torch.stack([torch.stack(p, -1) for p in pts], 1)
        corners = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]).expand(bs, 4, 2)
        return "warp", _homography(moved, corners)


def _centres(frac: Any, n: int) -> Any:
    """Turn a fraction of `n` pixels into the fraction of the normalised span between their centres."""
    return (
        max(frac * n - 1, 0) / max(n - 1, 1)
        if isinstance(frac, float)
        else (frac * n - 1).clamp(min=0) / max(n - 1, 1)
    )


class RandomResizedCropGPU(_RandomPart):
    """Crop a random area `U(min_scale, max_scale)` with log-uniform aspect in `ratio`, resized to `size`.

    One crop per image (fastai draws one per batch; `batch=True` does that). Valid: the centred largest
    window within `ratio`, times `valid_scale`. Inside a group it is folded into the single resample.
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        min_scale: float = 0.08,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        mode: str = "bilinear",
        valid_scale: float = 1.0,
        max_scale: float = 1.0,
        **kwargs,
    ):
        super().__init__(1.0, None, size=size, mode=mode, **kwargs)
        check_scales(type(self).__name__, min_scale, max_scale)
        self.min_scale, self.ratio, self.valid_scale, self.max_scale = (
            min_scale,
            ratio,
            valid_scale,
            max_scale,
        )

    def _geometry(self, bs, lh, lw, split_idx):
        (r0, r1), aspect = self.ratio, lw / lh
        fw, fh = (1.0, lw / r0 / lh) if aspect < r0 else ((lh * r1 / lw, 1.0) if aspect > r1 else (1.0, 1.0))
        if split_idx == 1:
            fw, fh = _centres(fw * self.valid_scale, lw), _centres(fh * self.valid_scale, lh)
            return "crop", _mat(bs, fw, 0, 0, 0, fh, 0)
        n, g = 1 if self.batch else bs, self.generator
        area = uniform(n * 10, self.min_scale, self.max_scale, g).view(n, 10)
        ratio = uniform(n * 10, math.log(r0), math.log(r1), g).view(n, 10).exp()
        tw, th = (area * ratio * lh / lw).sqrt(), (area / ratio * lw / lh).sqrt()
        ok = (tw <= 1) & (th <= 1)
        first, found = ok.float().argmax(1, keepdim=True), ok.any(1)
        cw = _centres(torch.where(found, tw.gather(1, first)[:, 0], torch.tensor(fw)), lw)
        ch = _centres(torch.where(found, th.gather(1, first)[:, 0], torch.tensor(fh)), lh)
        cx = torch.where(found, (1 - cw) * (2 * torch.rand(n, generator=g) - 1), torch.zeros(n))
        cy = torch.where(found, (1 - ch) * (2 * torch.rand(n, generator=g) - 1), torch.zeros(n))
        zero = torch.zeros(n)
        return "crop", _mat(bs, *(v.expand(bs) for v in (cw, zero, cx, zero, ch, cy)))


def aug_transforms(
    mult: float = 1.0,
    do_flip: bool = True,
    flip_vert: bool = False,
    max_rotate: float = 10.0,
    min_zoom: float = 1.0,
    max_zoom: float = 1.1,
    max_lighting: float = 0.2,
    max_warp: float = 0.2,
    p_affine: float = 0.75,
    p_lighting: float = 0.75,
    xtra_tfms: Sequence[Transform] | None = None,
    size: int | tuple[int, int] | None = None,
    mode: str = "bilinear",
    pad_mode: str = "reflection",
    align_corners: bool = True,
    batch: bool = False,
    min_scale: float = 1.0,
) -> list[Transform]:
    """Return fastai's default batch augmentations: `[AffineGroup, LightingGroup, *xtra_tfms]`.

    All geometry, including the `min_scale` random-resized crop and the final resize to `size`, is one
    `AffineGroup` that resamples once (fastai resamples twice when `min_scale < 1`).

    Args:
        mult: multiplies `max_rotate`, `max_lighting` and `max_warp` (1.0).
        do_flip: a random horizontal flip with probability 0.5 (True).
        flip_vert: with `do_flip`, one of the 8 dihedral symmetries instead of a horizontal flip (False).
        max_rotate: largest rotation in degrees, drawn in [-max_rotate, max_rotate] (10.0).
        min_zoom: smallest zoom factor (1.0).
        max_zoom: largest zoom factor (1.1); no zoom when both are 1.
        max_lighting: largest brightness and contrast change, in logit space (0.2); 0 turns lighting off.
        max_warp: largest perspective warp of the four corners (0.2); 0 turns warping off.
        p_affine: probability of each of warp, rotation and zoom, drawn per image (0.75).
        p_lighting: probability of each of brightness and contrast, drawn per image (0.75).
        xtra_tfms: transforms appended as they are, e.g. `[RandomErasing()]` (None).
        size: output size, an int (square) or `(height, width)`; None keeps the input size. Required
            when `min_scale < 1`.
        mode: the interpolation of the single `grid_sample` ('bilinear').
        pad_mode: what fills pixels a rotation or zoom-out uncovers: 'reflection', 'border' or 'zeros'
            ('reflection').
        align_corners: `grid_sample`'s corner convention (True, as fastai).
        batch: draw one set of values for the whole batch instead of one per image (False).
        min_scale: smallest fraction of the area kept by the square random-resized crop (1.0: no crop);
            validation gets a centre crop.
    """
    max_rotate, max_lighting, max_warp = max_rotate * mult, max_lighting * mult, max_warp * mult
    if size is not None:
        pair_size(size, "aug_transforms")
    check_probability("aug_transforms", p_affine, "p_affine")
    check_probability("aug_transforms", p_lighting, "p_lighting")
    if min_scale != 1:
        check_scales("aug_transforms", min_scale)
    if min_scale != 1 and size is None:
        raise ValueError(
            f"aug_transforms(min_scale={min_scale}) crops and resizes: pass the output size, e.g. size=224."
        )
    parts: list[AffineGroup] = []
    if do_flip:
        parts.append(Dihedral(p=0.5, batch=batch) if flip_vert else Flip(p=0.5, batch=batch))
    if max_warp:
        parts.append(Warp(magnitude=max_warp, p=p_affine, batch=batch))
    if max_rotate:
        parts.append(Rotate(max_deg=max_rotate, p=p_affine, batch=batch))
    if min_zoom < 1 or max_zoom > 1:
        parts.append(Zoom(min_zoom=min_zoom, max_zoom=max_zoom, p=p_affine, batch=batch))
    if min_scale != 1 and size is not None:  # size is checked above
        parts.append(RandomResizedCropGPU(size, min_scale=min_scale, ratio=(1, 1), batch=batch))
    tfms: list[Transform] = []
    if parts or size is not None:
        tfms.append(AffineGroup(parts, size=size, mode=mode, pad_mode=pad_mode, align_corners=align_corners))
    if max_lighting:
        light = [
            Brightness(max_lighting, p=p_lighting, batch=batch),
            Contrast(max_lighting, p=p_lighting, batch=batch),
        ]
        tfms.append(LightingGroup(light))
    return tfms + list(xtra_tfms or [])
