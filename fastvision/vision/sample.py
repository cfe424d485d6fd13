"""The one batched resample: a projective map per image, sampled once with `grid_sample` at the output size.

`resample` serves the augmentation pipeline (`AffineGroup` composes the maps) and `materialize` a
presized batch with no augmentation (identity maps). Coordinates, per image: output pixel -> output-normalised
`[-1, 1]` -> (the map) logical `[-1, 1]` -> the item's own pixels through its window `(x0, y0, x1, y1)` ->
padding relative to the item's own extent `hw[i]` (reflection folds, border clamps, zeros reads the zero
canvas beyond the item) -> canvas-normalised coordinates for one `grid_sample(align_corners=True)`.

On the CPU a uint8 source is converted to float32 only where the grid reads, item by item, into a buffer the
caller keeps between batches (a fresh 160 MB allocation per batch costs more than the conversion); the
sampling coordinates and the grid reuse the caller's buffers the same way.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..memory import advise_huge_pages

__all__ = ["resample", "materialize"]


def _axis(n: int, align_corners: bool, device: torch.device) -> torch.Tensor:
    """Output-normalised coordinates of `n` pixel centres."""
    if n == 1:
        return torch.zeros(1, device=device)
    if align_corners:
        return torch.linspace(-1, 1, n, device=device)
    return (torch.arange(n, device=device) * 2 + 1) / n - 1


def _fold_(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Reflect coordinates into [0, n-1] in place: a triangle wave of period 2(n-1)."""
    span = (n - 1).clamp(min=1e-6)
    return x.remainder_(2 * span).sub_(span).abs_().neg_().add_(span)


def _prefilter_factor(lmat: torch.Tensor, half: torch.Tensor, size: tuple[int, int], mode: str) -> int:
    """Integer box-filter factor that keeps bilinear sampling at most ~2x downsampling (fastai's guard)."""
    if mode != "bilinear":
        return 1
    jac = half[:, :, None] * lmat[:, :2, :2]  # d(pixel x, y) / d(output-normalised u, v)
    sx = jac[:, :, 0].norm(dim=1) * 2 / max(size[1] - 1, 1)
    sy = jac[:, :, 1].norm(dim=1) * 2 / max(size[0] - 1, 1)
    step = float(torch.minimum(sx, sy).min())
    return int(step / 2 + 0.5) if step > 2 else 1


def _buffer(cache: dict | None, key: str, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A float32 tensor of `shape`: a view of `cache[key]` (grown as needed, huge pages) on the CPU."""
    if cache is None or device.type != "cpu":
        return torch.empty(shape, device=device)
    n = math.prod(shape)
    if cache.get(key) is None or cache[key].numel() < n:
        cache[key] = advise_huge_pages(torch.empty(n))
    return cache[key][:n].view(shape)


def _item_spans(v: torch.Tensor, n: int, margin: int) -> list[tuple[int, int]]:
    """Per item (first dim of `v`), the index range `[a, b)` within `[0, n)` that sampling at `v` reads."""
    vmin, vmax = v.reshape(len(v), -1).aminmax(dim=1)
    a = (vmin.floor() - margin).clamp(0, n - 1).long().tolist()
    b = (vmax.floor() + margin + 2).clamp(1, n).long().tolist()
    return [(x, max(y, x + 1)) for x, y in zip(a, b)]


def resample(
    src: torch.Tensor,
    lmat: torch.Tensor,
    size: tuple[int, int],
    hw: torch.Tensor | None = None,
    window: torch.Tensor | None = None,
    mode: str = "bilinear",
    pad_mode: str = "reflection",
    align_corners: bool = True,
    cache: dict | None = None,
) -> torch.Tensor:
    """Sample `src` (B x C x H x W) once through the logical maps `lmat` into B x C x size.

    `cache` (a dict owned by the caller) keeps the float32 copy of the source between calls on the CPU,
    where a fresh 160 MB allocation per batch costs more than the conversion itself (page faults).
    """
    bs, _, hc, wc = src.shape
    dev, cpu = src.device, src.device.type == "cpu"
    if (hw is None) != (window is None):
        raise ValueError(
            f"resample got hw={'None' if hw is None else 'a tensor'} and window={'None' if window is None else 'a tensor'}; "
            "pass both (B x 2 sizes and B x 4 windows) or neither (the whole canvas)."
        )
    if hw is None or window is None:
        e = 0.0 if align_corners else 0.5
        hw = torch.tensor([[hc, wc]]).expand(bs, 2)
        window = torch.tensor([[-e, -e, wc - 1 + e, hc - 1 + e]]).expand(bs, 4)
    # Pixels per output pixel decide the anti-alias pre-filter. Exact from the windows on the CPU; on an
    # accelerator estimated from the canvas extent, so that nothing waits for the device.
    known = window if window.device.type == "cpu" else torch.tensor([[0.0, 0.0, wc - 1, hc - 1]])
    k = _prefilter_factor(lmat, (known[:, 2:] - known[:, :2]).abs().float() / 2, size, mode)
    hw, window = hw.to(dev).float(), window.to(dev).float()
    x0, y0, x1, y1 = window.unbind(1)
    to_px = torch.zeros(bs, 3, 3, device=dev)  # logical [-1, 1] -> the item's window in its pixels
    to_px[:, 0, 0], to_px[:, 0, 2], to_px[:, 2, 2] = (x1 - x0) / 2, (x1 + x0) / 2, 1
    to_px[:, 1, 1], to_px[:, 1, 2] = (y1 - y0) / 2, (y1 + y0) / 2
    mat = to_px @ lmat.to(dev)
    xs, ys = _axis(size[1], align_corners, dev), _axis(size[0], align_corners, dev)

    def coord(r: torch.Tensor, key: str) -> torch.Tensor:  # separable: one broadcast add per coordinate
        out = _buffer(cache, key, (bs, size[0], size[1]), dev)
        return torch.add((r[:, :1] * xs)[:, None, :], (r[:, 1:2] * ys + r[:, 2:])[:, :, None], out=out)

    px, py = coord(mat[:, 0], "px"), coord(mat[:, 1], "py")
    if bool((lmat[:, 2, :2] != 0).any()):
        pz = coord(mat[:, 2], "pz")
        px, py = px.div_(pz), py.div_(pz)
    h, w = hw[:, 0].view(bs, 1, 1), hw[:, 1].view(bs, 1, 1)
    if pad_mode == "reflection":
        px, py = _fold_(px, w), _fold_(py, h)
    elif pad_mode == "border":
        px, py = torch.minimum(px.clamp_(min=0), w - 1), torch.minimum(py.clamp_(min=0), h - 1)
    r0, r1, c0, c1 = 0, hc, 0, wc
    margin = 2 if mode == "bicubic" else 1
    if cpu:  # convert to float only the region the grid reads: each item's span, inside their union
        rows, cols = _item_spans(py, hc, margin), _item_spans(px, wc, margin)
        r0, r1, c0, c1 = (
            min(a for a, _ in rows),
            max(b for _, b in rows),
            min(a for a, _ in cols),
            max(b for _, b in cols),
        )
    img = src[:, :, r0:r1, c0:c1]
    if cpu and cache is not None and img.dtype != torch.float32:
        b_, c_, h_, w_ = img.shape
        if img.stride(1) == 1 and c_ > 1:  # channels-last source: so is the copy (faster to sample)
            buf = _buffer(cache, "buf", (b_, h_, w_, c_), dev).permute(0, 3, 1, 2)
        else:
            buf = _buffer(cache, "buf", (b_, c_, h_, w_), dev)
        if k > 1:  # the pre-filter pools the whole region
            img = buf.copy_(img)
        else:  # each item's own span: the grid reads nothing else (the rest holds older finite pixels)
            for i, ((a, b), (c, d)) in enumerate(zip(rows, cols)):
                buf[i, :, a - r0 : b - r0, c - c0 : d - c0].copy_(img[i, :, a - r0 : b - r0, c - c0 : d - c0])
            img = buf
    img = img.float()
    if k > 1:
        img = F.avg_pool2d(img, k)
        px, py = px.sub_(c0 + (k - 1) / 2).div_(k), py.sub_(r0 + (k - 1) / 2).div_(k)
        if pad_mode != "zeros":  # stay inside the pooled pixels that lie wholly in each item
            px = torch.minimum(px.clamp_(min=0), ((w - c0) / k).floor().clamp(min=1) - 1)
            py = torch.minimum(py.clamp_(min=0), ((h - r0) / k).floor().clamp(min=1) - 1)
    else:
        px, py = px.sub_(c0), py.sub_(r0)
    nh, nw = img.shape[-2:]
    coords = _buffer(cache, "grid", (bs, size[0], size[1], 2), dev)
    sx, sy = 2 / max(nw - 1, 1), 2 / max(nh - 1, 1)  # pixels -> [-1, 1]: (p - (n-1)/2) * 2/(n-1)
    torch.mul(px.sub_(1 / sx), sx, out=coords[..., 0])
    torch.mul(py.sub_(1 / sy), sy, out=coords[..., 1])
    padding = "zeros" if pad_mode == "zeros" else "border"  # reflection/border coords are already inside
    out = F.grid_sample(img, coords, mode=mode, padding_mode=padding, align_corners=True)
    return out.div_(255).clamp_(0, 1) if src.dtype == torch.uint8 else out.to(src.dtype)


def materialize(pb: Any, mode: str = "bilinear") -> torch.Tensor:
    """Resample a `PendingBatch` with identity geometry: float32 B x C x `pb.size` in [0, 1]."""
    eye = torch.eye(3).expand(len(pb), 3, 3)
    return resample(pb.canvas, eye, pb.size, pb.hw, pb.window, mode, pb.pad_mode, True)
