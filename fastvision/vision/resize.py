"""Item transforms that run in the DataLoader workers: Resize, RandomResizedCrop, crops, flips.

Every transform here receives one element of a sample tuple and returns anything that is not an image
unchanged (a category index passes through `Resize`). Geometry is computed as a float *box* in PIL
coordinates (pixel `i` covers `[i, i+1)`) and resampled with a single `img.resize(size, box=box)` call:
one interpolation, no intermediate crop. With `lazy=True` (set by `DataBlock` when a batch transform
resamples), `Resize` and `RandomResizedCrop` skip the resample and return a `PendingImage` carrying the
native pixels and the window, so the batch stage interpolates once at its output size. With
`to_tensor=True` (set by `DataBlock` when only `ToTensor` follows), the box is cropped at integer bounds as
fastai does and resized by torch's uint8 bilinear kernel straight into a tensor (2-3x faster than PIL).
"""

from __future__ import annotations

import math
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..transform import Transform, image_to_tensor
from .image import DecodedImage, EncodedImage
from .lazy import PendingImage

__all__ = [
    "ResizeMethod",
    "PadMode",
    "Resize",
    "RandomResizedCrop",
    "CropPad",
    "RandomCrop",
    "FlipItem",
    "DihedralItem",
]

BILINEAR, NEAREST = Image.Resampling.BILINEAR, Image.Resampling.NEAREST
_NP_PAD: dict[str, Literal["reflect", "constant", "edge"]] = {
    "reflection": "reflect",
    "zeros": "constant",
    "border": "edge",
}
Box = tuple[float, float, float, float]


class ResizeMethod:
    """Names of the `Resize` methods."""

    Crop, Pad, Squish = "crop", "pad", "squish"


class PadMode:
    """Names of the padding modes (PIL padding: reflect / constant / edge)."""

    Reflection, Zeros, Border = "reflection", "zeros", "border"


def pair_size(size: Any, owner: str = "size") -> tuple[int, int]:
    """Return `(height, width)` from an int or a (height, width) pair of positive ints; else a ValueError
    naming `owner`."""
    pair = (size, size) if isinstance(size, (int, float, np.number)) else size
    try:
        h, w = pair
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: size must be an int or a (height, width) pair, got {size!r}.") from None
    whole = (int, np.integer, float, np.floating)  # 224.0 is 224
    if not all(
        isinstance(v, whole) and not isinstance(v, bool) and v >= 1 and float(v).is_integer() for v in (h, w)
    ):
        raise ValueError(
            f"{owner}: size={size!r}; expected a positive number of pixels, or a (height, width) pair of them, "
            "e.g. 224 or (224, 160)."
        )
    return (int(h), int(w))


def check_scales(owner: str, min_scale: float, max_scale: float = 1.0) -> None:
    """Refuse crop-area fractions outside 0 < min_scale <= max_scale (a ValueError naming `owner`)."""
    if not 0 < min_scale <= max_scale:
        raise ValueError(
            f"{owner}: min_scale={min_scale!r}, max_scale={max_scale!r}; expected 0 < min_scale <= max_scale "
            "(fractions of the image area, e.g. min_scale=0.35)."
        )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}.")
    return value


def _pad_array(img: Image.Image, pads: tuple[int, int, int, int], pad_mode: str) -> Image.Image:
    """Pad `img` by (left, top, right, bottom) pixels with `pad_mode`."""
    left, top, right, bottom = pads
    arr = np.asarray(img)
    width = ((top, bottom), (left, right)) + (((0, 0),) if arr.ndim == 3 else ())
    return Image.fromarray(np.pad(arr, width, mode=_NP_PAD[pad_mode]), mode=img.mode)


def _crop_pad(img: Image.Image, box: tuple[int, int, int, int], pad_mode: str) -> Image.Image:
    """Return the integer `box` of `img`, padding with `pad_mode` where it extends past the image."""
    w, h = img.size
    x0, y0, x1, y1 = box
    pads = (max(0, -x0), max(0, -y0), max(0, x1 - w), max(0, y1 - h))
    inner = img.crop((max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)))
    return _pad_array(inner, pads, pad_mode) if any(pads) else inner


def _resample(img: Image.Image, box: Box, size: tuple[int, int], resample: int, pad_mode: str) -> Image.Image:
    """Resample the float `box` of `img` to `size` (h, w) in one interpolation, padding outside the image."""
    w, h = img.size
    x0, y0, x1, y1 = box
    pads = (
        max(0, math.ceil(-x0)),
        max(0, math.ceil(-y0)),
        max(0, math.ceil(x1 - w)),
        max(0, math.ceil(y1 - h)),
    )
    if any(pads):
        img = _pad_array(img, pads, pad_mode)
        box = (x0 + pads[0], y0 + pads[1], x1 + pads[0], y1 + pads[1])
    return img.resize((size[1], size[0]), resample, box=box)


def _window(w: int, h: int, box: Box, size: tuple[int, int]) -> tuple[tuple[int, int, int, int], Box]:
    """Return the integer bounds of the pixels a deferred resample of `box` reads, and its window in them.

    PIL's `resize(box=(bx0, by0, bx1, by1))` puts output pixel j (of `out_w`) at PIL coordinate
    `bx0 + (j + 0.5) * s` with `s = (bx1 - bx0) / out_w`, where PIL pixel i covers [i, i + 1). In the
    lazy convention pixel centres sit at integers, so subtract 0.5: sample j is at
    `u_j = bx0 + (j + 0.5) * s - 0.5`. The window holds the corner centres, `x0 = u_0 = bx0 + 0.5 s - 0.5`
    and `x1 = u_{out_w - 1} = bx1 - 0.5 s - 0.5`; materialising with `align_corners=True` puts sample j
    at `x0 + j (x1 - x0) / (out_w - 1) = u_j`, the same positions as PIL. Same for y.
    """
    bx0, by0, bx1, by1 = box
    sx, sy = (bx1 - bx0) / size[1], (by1 - by0) / size[0]
    x0, x1 = bx0 + 0.5 * sx - 0.5, bx1 - 0.5 * sx - 0.5
    y0, y1 = by0 + 0.5 * sy - 0.5, by1 - 0.5 * sy - 0.5
    # integer bounding box of the PIL box and of the bilinear support of the samples, clipped to the image
    ix0, iy0 = max(0, math.floor(min(bx0, x0))), max(0, math.floor(min(by0, y0)))
    ix1, iy1 = min(w, math.ceil(max(bx1, x1 + 1))), min(h, math.ceil(max(by1, y1 + 1)))
    return (ix0, iy0, ix1, iy1), (x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0)


def _pending(
    img: Image.Image | DecodedImage | EncodedImage, box: Box, size: tuple[int, int], pad_mode: str
) -> PendingImage:
    """Keep the native pixels around `box` and the window the batch stage resamples (no CPU resize);
    an `EncodedImage` keeps its bytes, and its window in the whole image, for the device to decode."""
    (ix0, iy0, ix1, iy1), window = _window(*img.size, box, size)
    if isinstance(img, EncodedImage):
        x0, y0, x1, y1 = window
        return PendingImage(None, (x0 + ix0, y0 + iy0, x1 + ix0, y1 + iy0), size, pad_mode, encoded=img)
    if isinstance(img, DecodedImage):
        pixels = img.pixels[:, iy0:iy1, ix0:ix1]
    else:
        pixels = image_to_tensor(img.crop((ix0, iy0, ix1, iy1)))
    return PendingImage(pixels, window, size, pad_mode)


def _crop_resize(pixels: torch.Tensor, box: Box, size: tuple[int, int]) -> torch.Tensor:
    """Crop uint8 C x H x W `pixels` to `box` at integer bounds (as fastai does), resize with torch's kernel.

    Returns a uint8 C x H x W tensor. Torch's uint8 bilinear kernel is about 2.5x faster than PIL's resize
    on a Pets-sized photo; used inside DataBlock pipelines, where only `ToTensor` follows the resize.
    """
    h, w = pixels.shape[1:]
    x0, y0 = min(int(box[0]), w - 1), min(int(box[1]), h - 1)
    x1, y1 = (
        min(w, x0 + max(1, int(box[2] - box[0] + 1e-6))),
        min(h, y0 + max(1, int(box[3] - box[1] + 1e-6))),
    )
    crop = pixels[None, :, y0:y1, x0:x1]
    if crop.shape[-2:] == size:
        return crop[0]
    # torch's fast uint8 kernel wants dense channels-last input: copying the crop first is ~1.4x faster
    crop = crop.contiguous(memory_format=torch.channels_last)
    return F.interpolate(crop, size=size, mode="bilinear", antialias=True, align_corners=False)[0]


class _BoxTransform(Transform):
    """Shared logic: compute a box for an image, then resample it (or defer the resample when lazy)."""

    order = 1
    lazy: bool = False
    to_tensor: bool = False  # set by DataBlock when only ToTensor follows: resize straight to a tensor

    def _init_common(self, size, resamples, pad_mode: str) -> None:
        self.size = pair_size(size, type(self).__name__)
        self.resamples = tuple(resamples)
        self.pad_mode = _check_choice("pad_mode", pad_mode, ("reflection", "zeros", "border"))
        self.lazy = False

    def box(self, w: int, h: int, split_idx: int | None) -> tuple[Box, tuple[int, int]]:
        """Return the source box (PIL coordinates) and the output (h, w) for an image of size `w` x `h`."""
        raise NotImplementedError

    def encodes(self, x: Any, split_idx: int | None = None) -> Any:
        """Resample a PIL image or `DecodedImage` (or return a `PendingImage` when `lazy`); others pass."""
        if not isinstance(x, (Image.Image, DecodedImage, EncodedImage)):
            return x
        if isinstance(x, EncodedImage) and not self.lazy:
            raise ValueError(
                f"{type(self).__name__} received still-encoded JPEG bytes ({x.path}) but is not lazy: with "
                "decode_on_device=True, DataBlock makes item resizes lazy; build the loaders with "
                "DataBlock.dataloaders, or pass decode_on_device=False."
            )
        box, size = self.box(*x.size, split_idx)
        if self.lazy:  # only 'pad' windows reach past the image; others stay inside it, as PIL clamps
            return _pending(
                x, box, size, self.pad_mode if getattr(self, "method", None) == "pad" else "border"
            )
        resample = self.resamples[1] if x.mode == "P" else self.resamples[0]
        inside = box[0] > -1e-6 and box[1] > -1e-6 and box[2] < x.size[0] + 1e-6 and box[3] < x.size[1] + 1e-6
        decoded = isinstance(x, DecodedImage)
        dec = x if isinstance(x, DecodedImage) else None
        pil = cast(Image.Image, x)  # when dec is None: not lazy, so not an EncodedImage (raised above)
        if inside and resample == BILINEAR and x.mode in ("RGB", "L") and (self.to_tensor or decoded):
            out = _crop_resize(dec.pixels if dec is not None else image_to_tensor(pil), box, size)
            return out if self.to_tensor else DecodedImage(out)
        img = _resample(dec.to_pil() if dec is not None else pil, box, size, resample, self.pad_mode)
        if self.to_tensor:
            return image_to_tensor(img)
        return DecodedImage(image_to_tensor(img)) if decoded else img


class Resize(_BoxTransform):
    """Resize images to `size` by cropping, padding or squishing (random placement on train, centred on valid).

    Args:
        size: int for a square, or (height, width).
        method: 'crop' (largest window of the target aspect that fits), 'pad' (the whole image, padded to
            the target aspect with `pad_mode`) or 'squish' (the whole image, aspect ignored).
        pad_mode: 'reflection', 'zeros' or 'border'.
        resamples: PIL filters for images and for palette ('P') masks; default (BILINEAR, NEAREST).
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        method: str = ResizeMethod.Crop,
        pad_mode: str = PadMode.Reflection,
        resamples: tuple[int, int] = (BILINEAR, NEAREST),
    ):
        self._init_common(size, resamples, pad_mode)
        self.method = _check_choice("method", method, ("crop", "pad", "squish"))

    def box(self, w: int, h: int, split_idx: int | None) -> tuple[Box, tuple[int, int]]:
        """Window of the target aspect, placed at uniform random fractions of the slack on train."""
        th, tw = self.size
        if self.method == "squish":
            return (0.0, 0.0, float(w), float(h)), self.size
        ratio = min if self.method == "crop" else max
        m = ratio(w / tw, h / th)
        cw, ch = m * tw, m * th
        px, py = torch.rand(2).tolist() if split_idx == 0 else (0.5, 0.5)
        x0, y0 = px * (w - cw), py * (h - ch)
        return (x0, y0, x0 + cw, y0 + ch), self.size


class RandomResizedCrop(_BoxTransform):
    """Crop a random area and aspect ratio on train, then resize; on valid, squish to size+xtra and centre-crop.

    Args:
        size: int or (height, width).
        min_scale: smallest crop area as a fraction of the image (default 0.08).
        max_scale: largest crop area as a fraction of the image (default 1.0).
        ratio: range of the crop's aspect ratio w/h, drawn log-uniformly (default (3/4, 4/3)).
        resamples: PIL filters for images and palette masks.
        val_xtra: on valid the image is squished to `size + ceil(max(size) * val_xtra / 8) * 8` then
            centre-cropped to `size` (default 0.14: 224 -> 256 -> 224).
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        min_scale: float = 0.08,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        resamples: tuple[int, int] = (BILINEAR, NEAREST),
        val_xtra: float = 0.14,
        max_scale: float = 1.0,
    ):
        self._init_common(size, resamples, PadMode.Reflection)
        check_scales(type(self).__name__, min_scale, max_scale)
        self.min_scale, self.max_scale, self.ratio, self.val_xtra = (
            min_scale,
            max_scale,
            tuple(ratio),
            val_xtra,
        )

    def box(self, w: int, h: int, split_idx: int | None) -> tuple[Box, tuple[int, int]]:
        """Up to 10 random tries on train (then a centred fallback); the deterministic valid box otherwise."""
        th, tw = self.size
        if split_idx != 0:
            xtra = math.ceil(max(th, tw) * self.val_xtra / 8) * 8
            fh, fw = th + xtra, tw + xtra
            ox, oy = (fw - tw) // 2, (fh - th) // 2
            return (ox * w / fw, oy * h / fh, (ox + tw) * w / fw, (oy + th) * h / fh), self.size
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            area = float(torch.empty(()).uniform_(self.min_scale, self.max_scale)) * w * h
            r = math.exp(float(torch.empty(()).uniform_(*log_r)))
            nw, nh = round(math.sqrt(area * r)), round(math.sqrt(area / r))
            if 0 < nw <= w and 0 < nh <= h:
                x0 = int(torch.randint(0, w - nw + 1, ()))
                y0 = int(torch.randint(0, h - nh + 1, ()))
                return (float(x0), float(y0), float(x0 + nw), float(y0 + nh)), self.size
        if w / h < self.ratio[0]:
            nw, nh = w, int(w / self.ratio[0])
        elif w / h > self.ratio[1]:
            nw, nh = int(h * self.ratio[1]), h
        else:
            nw, nh = w, h
        x0, y0 = (w - nw) // 2, (h - nh) // 2
        return (float(x0), float(y0), float(x0 + nw), float(y0 + nh)), self.size


class CropPad(Transform):
    """Centre-crop or pad images to `size` (height, width) on every split, without resampling.

    Args:
        size: int or (height, width).
        pad_mode: 'zeros' (default), 'reflection' or 'border'.
    """

    order = 0

    def __init__(self, size: int | tuple[int, int], pad_mode: str = PadMode.Zeros):
        self.size = pair_size(size, type(self).__name__)
        self.pad_mode = _check_choice("pad_mode", pad_mode, ("reflection", "zeros", "border"))

    def encodes(self, x: Any, split_idx: int | None = None) -> Any:
        """Crop/pad a PIL image around its centre; anything else passes."""
        if not isinstance(x, Image.Image):
            return x
        (th, tw), (w, h) = self.size, x.size
        x0, y0 = (w - tw) // 2, (h - th) // 2
        return _crop_pad(x, (x0, y0, x0 + tw, y0 + th), self.pad_mode)


class RandomCrop(Transform):
    """Crop images to `size` at a random position on train, centred on valid (zero padding if too small)."""

    order = 1

    def __init__(self, size: int | tuple[int, int]):
        self.size = pair_size(size, type(self).__name__)

    def encodes(self, x: Any, split_idx: int | None = None) -> Any:
        """Crop a PIL image; anything else passes."""
        if not isinstance(x, Image.Image):
            return x
        (th, tw), (w, h) = self.size, x.size
        if split_idx == 0:
            dw, dh = w - tw, h - th
            x0 = int(torch.randint(min(dw, 0), max(dw, 0) + 1, ()))
            y0 = int(torch.randint(min(dh, 0), max(dh, 0) + 1, ()))
        else:
            x0, y0 = (w - tw) // 2, (h - th) // 2
        return _crop_pad(x, (x0, y0, x0 + tw, y0 + th), PadMode.Zeros)


class FlipItem(Transform):
    """Flip images horizontally with probability `p` (train only); works on PIL images and tensors."""

    order, split_idx = 0, 0

    def __init__(self, p: float = 0.5):
        self.p = p

    def encodes(self, x: Any, split_idx: int | None = None) -> Any:
        """Flip a PIL image or a C x H x W tensor; anything else passes."""
        if not isinstance(x, (Image.Image, torch.Tensor)) or float(torch.rand(())) >= self.p:
            return x
        return x.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if isinstance(x, Image.Image) else x.flip(-1)


class DihedralItem(Transform):
    """Apply one of the 8 dihedral symmetries (identity included) with probability `p` (train only)."""

    order, split_idx = 0, 0

    def __init__(self, p: float = 1.0):
        self.p = p

    def encodes(self, x: Any, split_idx: int | None = None) -> Any:
        """Transpose a PIL image by a random dihedral element; anything else passes."""
        if not isinstance(x, Image.Image) or float(torch.rand(())) >= self.p:
            return x
        k = int(torch.randint(0, 8, ()))
        return x if k == 0 else x.transpose(Image.Transpose(k - 1))
