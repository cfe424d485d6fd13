"""Decode images into PIL images: EXIF orientation, every mode to RGB or L, and a decompression-bomb limit.

`load_image` is the one decoder of the library: it accepts a path, bytes, a file object, a numpy array,
a torch tensor or a PIL image, applies the EXIF orientation, and returns a fully loaded 'RGB' (or 'L')
image. Mode rules, applied in this order:
- transparent images (RGBA, LA, PA, P with a transparency entry) are composited onto **white**, as a
  browser shows them (no PIL "Palette images with Transparency" warning);
- 16-bit images (I;16*, I, uint16 arrays) are scaled by 255/65535, not clipped; float images (F) whose
  values lie in [0, 1] are scaled by 255, others are clipped to [0, 255]; 1-bit images become 0/255;
- everything else (L, RGB, CMYK, YCbCr, ...) goes through `Image.convert`.
A file that cannot be decoded raises `ImageLoadError` (a picklable `ValueError` with `path` and `reason`).
Warnings PIL emits while reading headers and metadata (corrupt EXIF, TIFF tags, decompression bomb) are
silenced under a lock (`warnings.catch_warnings` is process-global); pixel decoding runs outside it, so
threads decode in parallel.
"""

from __future__ import annotations

import errno
import io
import os
import threading
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.items import get_image_files
from .lazy import PendingImage

try:  # torchvision's libjpeg-turbo decoder writes straight into a tensor (about 1.5x PIL + copy); it is
    # deprecated in favour of TorchCodec: when a torchvision release drops it, JPEGs go through PIL
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as _tv_decode_jpeg
except ImportError:  # pragma: no cover
    _tv_decode_jpeg = None

__all__ = [
    "MAX_IMAGE_PIXELS",
    "ImageLoadError",
    "ImageNotFoundError",
    "DecodedImage",
    "EncodedImage",
    "load_image",
    "decode_image",
    "read_encoded",
    "decode_encoded",
    "image_size",
    "verify_image",
    "verify_images",
]

_PIL_DEFAULT_LIMIT = 178_956_970  # PIL.Image.MAX_IMAGE_PIXELS's default (a 0.5 GiB 24-bit image)


def _env_max_pixels(default: int = _PIL_DEFAULT_LIMIT) -> int | None:
    """Read FASTVISION_MAX_IMAGE_PIXELS (a pixel count; 0 disables the check) or return `default`."""
    raw = os.environ.get("FASTVISION_MAX_IMAGE_PIXELS", "").strip().replace("_", "")
    if not raw:
        return default
    try:
        v = int(float(raw))
    except ValueError:
        warnings.warn(
            f"FASTVISION_MAX_IMAGE_PIXELS={raw!r} is not a number; using {default:,}. "
            "Set it to a pixel count, e.g. 400000000, or 0 to disable the limit.",
            stacklevel=2,
        )
        return default
    return v if v > 0 else None


MAX_IMAGE_PIXELS: int | None = _env_max_pixels()
"""Images with more pixels raise `ImageLoadError`; set FASTVISION_MAX_IMAGE_PIXELS before import to change."""

_BAD_HINT = (
    "The file may be truncated, empty or not an image; find all bad files with verify_images(path) "
    "or pass on_bad_image='skip' to dataloaders."
)
_BOMB_HINT = (
    "If the image is genuine, raise the limit with the environment variable "
    "FASTVISION_MAX_IMAGE_PIXELS=<pixels> (0 disables it) before importing fastvision; for images over "
    "twice PIL's own limit also set PIL.Image.MAX_IMAGE_PIXELS. Or downscale the file."
)
_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_KEYS = ("exif", "Raw profile type exif", "xmp", "XML:com.adobe.xmp")
_SIXTEEN = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_QUIET = threading.Lock()  # serialises warnings.catch_warnings, which swaps process-global state


class ImageLoadError(ValueError):
    """An image could not be decoded. Attributes: `path` (None for in-memory data), `reason`, `hint`."""

    def __init__(self, path: str | Path | None, reason: str, hint: str | None = None):
        self.path, self.reason, self.hint = path, reason, hint
        src = f"'{path}'" if path is not None else "from memory"
        super().__init__(f"Cannot decode image {src}: {reason}. {hint or _BAD_HINT}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.hint))

    def __str__(self) -> str:
        return str(self.args[0])  # OSError's __str__ would show "[Errno ...]" for ImageNotFoundError


class ImageNotFoundError(ImageLoadError, FileNotFoundError):
    """The image file does not exist (both an `ImageLoadError` and a `FileNotFoundError`)."""

    def __init__(self, path: str | Path | None, reason: str = "no such file", hint: str | None = None):
        super().__init__(
            path, reason, hint or "Check the path; list existing files with get_image_files(folder)."
        )
        self.errno, self.strerror, self.filename = errno.ENOENT, "No such file or directory", str(path)


def _reason(e: BaseException, path: str | Path | None = None) -> str:
    if isinstance(e, Image.UnidentifiedImageError):
        empty = path is not None and os.path.isfile(path) and os.path.getsize(path) == 0
        return "the file is empty (0 bytes)" if empty else "PIL cannot identify the format (not an image?)"
    msg = str(e).strip().rstrip(".") or "no details"
    return msg if isinstance(e, OSError) else f"{type(e).__name__}: {msg}"


def _orientation(im: Image.Image) -> int:
    """Return the EXIF orientation (1 when absent) without decoding pixels where the format allows."""
    if im.format == "PNG" and "exif" not in im.info and getattr(im, "tile", None):
        return 1  # a PNG's getexif() would decode the whole image to look for a trailing eXIf chunk
    with _QUIET, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return int(im.getexif().get(_ORIENTATION, 1) or 1)


def _rescale(a: np.ndarray, top: float) -> Image.Image:
    return Image.fromarray(np.clip(a.astype(np.float32) * (255.0 / top) + 0.5, 0, 255).astype(np.uint8))


def _on_white(im: Image.Image) -> Image.Image:
    return Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im).convert("RGB")


def _to_mode(im: Image.Image, mode: str) -> Image.Image:
    """Convert any PIL mode to 'RGB' or 'L' with the rules in the module docstring."""
    m = im.mode
    if m in _SIXTEEN:
        im = _rescale(np.asarray(im), 65535.0)
    elif m == "F":
        a = np.nan_to_num(np.asarray(im))
        im = _rescale(a, 1.0 if a.size and a.min() >= 0 and a.max() <= 1 else 255.0)
    elif m == "1":
        im = im.convert("L")
    elif m == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif m in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        im = _on_white(im)
    return im if im.mode == mode else im.convert(mode)


def _finish(im: Image.Image, mode: str) -> Image.Image:
    """Apply the EXIF orientation and convert a loaded image to `mode`."""
    method = _TRANSPOSE.get(_orientation(im))
    out = _to_mode(im.transpose(method) if method is not None else im, mode)
    if method is not None:
        for k in _EXIF_KEYS:  # the pixels are upright now: drop the tag so nothing rotates them twice
            out.info.pop(k, None)
    return out


def _min_hw(min_size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (min_size, min_size) if isinstance(min_size, int) else tuple(min_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"load_image: min_size={min_size!r}; expected a positive int or (height, width).")
    return int(h), int(w)


def _decode(fp: Any, path: str | Path | None, mode: str, min_hw: tuple[int, int] | None) -> Image.Image:
    try:
        with _QUIET, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(fp)
        _check_pixels(path, *im.size)
        if min_hw is not None and im.format == "JPEG":
            mh, mw = min_hw
            if _orientation(im) in (5, 6, 7, 8):
                mh, mw = mw, mh
            im.draft(None, (mw, mh))  # DCT-domain downscale by 1/2, 1/4 or 1/8, never below (mw, mh)
        im.load()
        return _finish(im, mode)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageLoadError(path, _reason(e), _BOMB_HINT) from e
    except Exception as e:
        raise ImageLoadError(path, _reason(e, path)) from e


def _tensor_to_hwc(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.ndim == 3 and t.shape[0] in (1, 3, 4):
        t = t.permute(1, 2, 0)
    elif t.ndim != 2:
        raise ValueError(
            f"load_image: tensor of shape {tuple(t.shape)}; expected C x H x W (C in 1, 3, 4) or H x W. "
            "For a batch pass one image, e.g. x[0]."
        )
    if t.is_floating_point() and t.dtype != torch.float64:
        t = t.float()
    return t.numpy()


def _from_array(a: np.ndarray) -> Image.Image:
    """Build a PIL image from an H x W or H x W x C array (uint8, bool, uint16, other ints, float in [0, 1])."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(
            f"load_image: array of shape {a.shape}; expected H x W or H x W x C with C in 1, 3, 4 "
            "(channels last). For a C x H x W array pass a.transpose(1, 2, 0)."
        )
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        lo, hi = (float(np.nanmin(a)), float(np.nanmax(a))) if a.size else (0.0, 0.0)
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"load_image: float array with values in [{lo:.4g}, {hi:.4g}]; expected [0, 1]. "
                "Divide 0-255 data by 255, or pass a uint8 array."
            )
        a = np.clip(np.nan_to_num(a) * 255 + 0.5, 0, 255).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer) and a.dtype != np.uint8:
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ValueError(
                f"load_image: {a.dtype} array with values in [{a.min()}, {a.max()}]; expected 0..255. "
                "Rescale it to 0..255 first."
            )
        a = a.astype(np.uint8)
    elif a.dtype != np.uint8:
        raise TypeError(f"load_image: array of dtype {a.dtype}; expected uint8, uint16, bool or float.")
    return Image.fromarray(np.ascontiguousarray(a))


def load_image(src: Any, mode: str = "RGB", min_size: int | tuple[int, int] | None = None) -> Image.Image:
    """Decode `src` into a fully loaded, upright PIL image in `mode` ('RGB' or 'L').

    Args:
        src: a path, bytes, a binary file object, a numpy array (H x W or H x W x C; uint8, uint16,
            bool, or float in [0, 1]), a torch tensor (C x H x W or H x W, same dtypes) or a PIL image
            (never modified; a new image is returned).
        mode: 'RGB' (default) or 'L'.
        min_size: int or (height, width). For JPEG files, decode at 1/2, 1/4 or 1/8 scale (PIL draft
            mode) as long as the upright result stays at least this size in both dimensions. Default
            None decodes at full size.

    Raises:
        ImageLoadError: the file is missing (`ImageNotFoundError`), truncated, empty, not an image, or
            has more than `MAX_IMAGE_PIXELS` pixels.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(
            f"load_image: mode={mode!r}; expected 'RGB' or 'L'. Convert the result for other modes."
        )
    min_hw = _min_hw(min_size) if min_size is not None else None  # a bad argument is not a bad file
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        try:
            f = open(path, "rb")  # closed by the `with` below
        except FileNotFoundError as e:
            raise ImageNotFoundError(path) from e
        except OSError as e:
            raise ImageLoadError(path, _reason(e)) from e
        with f:
            return _decode(f, path, mode, min_hw)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(src)), None, mode, min_hw)
    if hasattr(src, "read"):
        return _decode(src, getattr(src, "name", None), mode, min_hw)
    if isinstance(src, Image.Image):
        try:
            src.load()
        except Exception as e:
            raise ImageLoadError(getattr(src, "filename", None) or None, _reason(e)) from e
        out = _finish(src, mode)
        return out.copy() if out is src else out
    if isinstance(src, torch.Tensor):
        return _finish(_from_array(_tensor_to_hwc(src)), mode)
    if isinstance(src, np.ndarray):
        return _finish(_from_array(src), mode)
    raise TypeError(
        f"load_image: cannot load a {type(src).__name__}; expected a path, bytes, a file object, "
        "a numpy array, a torch tensor or a PIL image."
    )


class DecodedImage:
    """Decoded, upright pixels on their way through the item transforms: a uint8 C x H x W tensor.

    What `decode_image` returns, and what `Resize`, `RandomResizedCrop` and `ToTensor` accept besides PIL
    images; `ToTensor` unwraps it into a plain tensor. `size` is (width, height) as for PIL.
    """

    __slots__ = ("pixels",)

    def __init__(self, pixels: torch.Tensor):
        if pixels.dtype != torch.uint8 or pixels.ndim != 3 or pixels.shape[0] not in (1, 3):
            raise ValueError(
                f"DecodedImage: got a {pixels.dtype} tensor of shape {tuple(pixels.shape)}; expected uint8 "
                "C x H x W with C 1 or 3."
            )
        self.pixels = pixels

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL's `Image.size`."""
        return int(self.pixels.shape[2]), int(self.pixels.shape[1])

    @property
    def mode(self) -> str:
        """'RGB' or 'L', as PIL's `Image.mode`."""
        return "RGB" if self.pixels.shape[0] == 3 else "L"

    def to_pil(self) -> Image.Image:
        """Return the pixels as a PIL image."""
        return Image.fromarray(self.pixels.permute(1, 2, 0).squeeze(2).numpy(), self.mode)

    def to_tensor(self) -> torch.Tensor:
        """The pixels, a uint8 C x H x W tensor (what `ToTensor` returns)."""
        return self.pixels

    def describe(self) -> str:
        """One line for `DataBlock.summary`."""
        return f"DecodedImage mode={self.mode} size={self.size[0]}x{self.size[1]} (uint8 tensor)"

    def __repr__(self) -> str:
        return f"DecodedImage(mode={self.mode}, size={self.size[0]}x{self.size[1]})"


def _read_bytes(path: Path) -> bytes:
    """Return the file's bytes; a missing or unreadable file raises `ImageLoadError` naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise ImageNotFoundError(path) from e
    except OSError as e:
        raise ImageLoadError(path, _reason(e)) from e


def _check_pixels(path: str | Path | None, w: int, h: int) -> None:
    """Raise `ImageLoadError` when a `w` x `h` image is above `MAX_IMAGE_PIXELS` (a decompression bomb)."""
    limit = MAX_IMAGE_PIXELS
    if limit and w * h > limit:
        reason = (
            f"{w * h:,} pixels ({w} x {h}) is above MAX_IMAGE_PIXELS={limit:,}, a decompression-bomb guard"
        )
        raise ImageLoadError(path, reason, _BOMB_HINT)


def _jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """Return (height, width, components) from a baseline/progressive JPEG's frame header, else None."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        seg = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):  # SOF0 baseline, SOF1 extended, SOF2 progressive (Huffman)
            h, w = int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
            return h, w, data[i + 9]
        if 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return None  # lossless or arithmetic-coded: leave it to PIL
        i += 2 + seg
    return None


def _draft_helps(h: int, w: int, min_hw: tuple[int, int] | None) -> bool:
    """True when a JPEG DCT downscale by 2 or more keeps the image at least `min_hw` in either orientation."""
    if min_hw is None:
        return False
    lo, hi = min(h, w), max(h, w)
    return lo // 2 >= min(min_hw) and hi // 2 >= max(min_hw)


def _decode_jpeg_tensor(data: bytes, path: str | Path | None, mode: str) -> torch.Tensor | None:
    """Decode a complete JPEG with torchvision (EXIF applied); None to let PIL handle it."""
    if _tv_decode_jpeg is None or data[-2:] != b"\xff\xd9":  # no end marker: truncated, PIL says so
        return None
    header = _jpeg_header(data)
    if header is None or header[2] not in ((1, 3) if mode == "RGB" else (1,)):
        return None  # CMYK, lossless, or colour to grey: PIL's conversions
    h, w, _ = header
    _check_pixels(path, w, h)
    read_mode = ImageReadMode.RGB if mode == "RGB" else ImageReadMode.GRAY
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:  # torchvision 0.29 warns that TorchCodec will take over its decoders: not the user's concern
        with _QUIET, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return _tv_decode_jpeg(buf, mode=read_mode, apply_exif_orientation=True)
    except RuntimeError:
        return None  # whatever libjpeg refuses, PIL decodes or explains


def decode_image(src: Any, mode: str = "RGB", min_size: int | tuple[int, int] | None = None) -> DecodedImage:
    """Decode `src` into upright uint8 C x H x W pixels with the fastest correct decoder for it.

    Complete JPEG files (1 or 3 components) go through torchvision's decoder, straight into a tensor with
    the EXIF orientation applied; when `min_size` allows a DCT downscale by 2 or more, PIL's draft mode
    decodes fewer pixels instead; every other format, mode and source goes through `load_image`, whose
    mode rules and errors apply to all of them.

    Args:
        src: anything `load_image` accepts.
        mode: 'RGB' (default) or 'L'.
        min_size: int or (height, width) the result must keep in both dimensions (None: full size).

    Raises:
        ImageLoadError: as `load_image`.
    """
    if isinstance(src, (str, os.PathLike)) and mode in ("RGB", "L"):
        path = Path(src)
        data = _read_bytes(path)
        header = _jpeg_header(data)
        if header is not None and not _draft_helps(
            header[0], header[1], _min_hw(min_size) if min_size else None
        ):
            pixels = _decode_jpeg_tensor(data, path, mode)
            if pixels is not None:
                return DecodedImage(pixels)
        with io.BytesIO(data) as f:
            return _as_decoded(_decode(f, path, mode, _min_hw(min_size) if min_size is not None else None))
    return _as_decoded(load_image(src, mode, min_size))


class EncodedImage:
    """A JPEG file's bytes, read by a loader worker and decoded later, a batch at a time, on the loader's
    device (`DataBlock.dataloaders(..., decode_on_device=True)`).

    `size` is the upright (width, height) and `orientation` the EXIF orientation (1-8), both from the
    header, so item transforms can place their window before any pixel is decoded.
    """

    __slots__ = ("data", "size", "orientation", "path", "mode")

    def __init__(self, data: torch.Tensor, size: tuple[int, int], orientation: int, path: Path, mode: str):
        self.data, self.size, self.orientation, self.path, self.mode = data, size, orientation, path, mode

    def __repr__(self) -> str:
        return f"EncodedImage({self.path.name}, mode={self.mode}, size={self.size[0]}x{self.size[1]})"

    def to_tensor(self) -> PendingImage:
        """A pending item at the image's own size (the identity window), decoded with its batch."""
        w, h = self.size
        return PendingImage(None, (0.0, 0.0, w - 1.0, h - 1.0), (h, w), "border", encoded=self)

    @classmethod
    def decode_batch(cls, images: list[EncodedImage], device: torch.device | str) -> list[torch.Tensor]:
        """Decode `images` on `device`, upright (`decode_encoded`)."""
        return decode_encoded(images, device)


def read_encoded(src: Any, mode: str = "RGB") -> EncodedImage | DecodedImage:
    """Read a complete JPEG file for decoding on the device; decode anything else here (`decode_image`).

    Raises:
        ImageLoadError: a missing file, or a JPEG above `MAX_IMAGE_PIXELS`; other bad files raise when
            decoded.
    """
    if not isinstance(src, (str, os.PathLike)) or _tv_decode_jpeg is None:
        return decode_image(src, mode)
    path = Path(src)
    data = _read_bytes(path)
    header = _jpeg_header(data)
    if header is None or data[-2:] != b"\xff\xd9" or header[2] not in ((1, 3) if mode == "RGB" else (1,)):
        with io.BytesIO(data) as f:
            return _as_decoded(_decode(f, path, mode, None))
    h, w, _ = header
    _check_pixels(path, w, h)
    try:
        with _QUIET, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
        o = _orientation(im)  # takes the lock itself
    except Exception as e:
        raise ImageLoadError(path, _reason(e, path)) from e
    upright = (h, w) if o in (5, 6, 7, 8) else (w, h)
    return EncodedImage(torch.frombuffer(bytearray(data), dtype=torch.uint8), upright, o, path, mode)


def _orient(t: torch.Tensor, o: int) -> torch.Tensor:
    """Apply EXIF orientation `o` to a C x H x W tensor (PIL's `ImageOps.exif_transpose`)."""
    if o == 2:
        return t.flip(-1)
    if o == 3:
        return t.flip(-1).flip(-2)
    if o == 4:
        return t.flip(-2)
    if o == 5:
        return t.transpose(-1, -2)
    if o == 6:
        return torch.rot90(t, -1, (-2, -1))
    if o == 7:
        return t.transpose(-1, -2).flip(-1).flip(-2)
    if o == 8:
        return torch.rot90(t, 1, (-2, -1))
    return t


def decode_encoded(images: list[EncodedImage], device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Decode a batch of `EncodedImage`s on `device` (nvJPEG on CUDA, libjpeg-turbo on the CPU), upright.

    A batch the device decoder refuses is decoded one file at a time, each failure falling back to PIL on
    the CPU, so a bad file raises `ImageLoadError` naming it.
    """
    device = torch.device(device)
    if not images:
        return []
    read_mode = ImageReadMode.RGB if images[0].mode == "RGB" else ImageReadMode.GRAY
    try:
        with _QUIET, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            out = _tv_decode_jpeg([e.data for e in images], mode=read_mode, device=device)
    except RuntimeError:
        out = [None] * len(images)
    res = []
    for e, t in zip(images, out):
        t = _orient(t, e.orientation) if t is not None else None
        if t is None or (t.shape[2], t.shape[1]) != e.size:
            with io.BytesIO(e.data.numpy().tobytes()) as f:
                t = _as_decoded(_decode(f, e.path, e.mode, None)).pixels.to(device)
        res.append(t)
    return res


def _as_decoded(im: Image.Image) -> DecodedImage:
    arr = np.array(im)  # writable; the C x H x W view of H x W x C memory is what collate stacks fastest
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return DecodedImage(torch.from_numpy(arr).permute(2, 0, 1))


def image_size(path: str | Path) -> tuple[int, int]:
    """Return the upright `(width, height)` of an image file from its header, without decoding pixels."""
    try:
        with open(path, "rb") as f:
            with _QUIET, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                im = Image.open(f)
            w, h = im.size
            return (h, w) if _orientation(im) in (5, 6, 7, 8) else (w, h)
    except FileNotFoundError as e:
        raise ImageNotFoundError(path) from e
    except Exception as e:
        raise ImageLoadError(path, _reason(e, path)) from e


def verify_image(path: str | Path) -> str | None:
    """Return why `load_image(path)` fails, or None when the image decodes."""
    try:
        load_image(path)
    except ImageLoadError as e:
        return e.reason
    return None


def verify_images(
    paths_or_folder: str | Path | Iterable[str | Path], n_workers: int | None = None
) -> list[Path]:
    """Return the files that `load_image` cannot decode, in input order (a folder is searched for images).

    Args:
        paths_or_folder: a folder (searched with `get_image_files`), one file, or an iterable of paths.
        n_workers: decoding threads (default: the number of CPUs); 0 checks in the calling thread.
    """
    if isinstance(paths_or_folder, (str, os.PathLike)):
        p = Path(paths_or_folder)
        paths = get_image_files(p) if p.is_dir() or not p.exists() else [p]
    else:
        paths = [Path(o) for o in paths_or_folder]
    if n_workers is not None and n_workers < 0:
        raise ValueError(f"verify_images: n_workers={n_workers}; expected 0 (no threads) or more.")
    n = (os.cpu_count() or 1) if n_workers is None else n_workers
    if n <= 1 or len(paths) <= 1:
        reasons = [verify_image(p) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=min(n, len(paths))) as ex:
            reasons = list(ex.map(verify_image, paths))
    return [p for p, r in zip(paths, reasons) if r is not None]
