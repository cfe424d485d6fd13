"""Image blocks: `ImageBlock`, `ImageBlockBW`, their `PILImage` types, and how the loaders decode them.

`PILImage.create` decodes a file to a PIL image, as in fastai: what `DataBlock.datasets()` and
`DataBlock.summary()` show. Inside `DataBlock.dataloaders` the block's decoder picks something faster
through `PILImage.loader_decoder` (the hook `data.block` calls, knowing nothing of images): when every item
transform is `ToTensor` or a `Resize`/`RandomResizedCrop` that outputs a tensor or a pending window,
`DecodeImage` decodes straight into a tensor (`vision.image.decode_image`: torchvision for JPEG, PIL draft
when the resize allows a DCT downscale, PIL for everything else), with no PIL image in between; with
`decode_on_device=True`, `ReadEncoded` only reads JPEG bytes, decoded a batch at a time on the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from PIL import Image

from ..data.block import TransformBlock
from ..transform import ToTensor
from .image import decode_image, load_image, read_encoded
from .lighting import IntToFloatTensor

__all__ = [
    "PILImage",
    "PILImageBW",
    "ImageBlock",
    "ImageBlockBW",
    "DecodeImage",
    "ReadEncoded",
    "decode_min_size",
]


class PILImage:
    """Marker type of an RGB image block: `create` decodes a file (or converts an image) to PIL 'RGB'."""

    mode = "RGB"
    in_worker = True  # decoded per item in the DataLoader workers, never eagerly

    @classmethod
    def create(cls, src: Any) -> Image.Image:
        """Return a PIL image in `cls.mode` from a path, bytes, PIL image, array or tensor (`load_image`)."""
        return load_image(src, cls.mode)

    @classmethod
    def loader_decoder(cls, tfm: Callable, item_tfms: list, on_device: bool = False) -> DecodeImage | None:
        """The decoder to use inside the loaders instead of `tfm` (this class's `create`), or None to keep it.

        Only the unmodified `PILImage.create` is replaced (a subclass overriding `create` keeps its own),
        and only when `decode_min_size(item_tfms)` allows it.

        Raises:
            ValueError: `on_device` with item transforms other than one resize (nothing would resample
                the batch on the device).
        """
        if getattr(tfm, "__func__", None) is not PILImage.__dict__["create"].__func__:
            return None
        min_size = decode_min_size(item_tfms)
        if min_size is False:
            if on_device:
                raise ValueError(
                    "decode_on_device=True needs item_tfms made only of one Resize or RandomResizedCrop (the "
                    f"batch stage resamples once on the device); got {[type(t).__name__ for t in item_tfms]}. "
                    "Move other item transforms to batch_tfms, or pass decode_on_device=False."
                )
            return None
        return ReadEncoded(cls.mode) if on_device else DecodeImage(cls.mode, min_size)


class PILImageBW(PILImage):
    """Marker type of a greyscale image block: decodes to PIL 'L' (one channel)."""

    mode = "L"


class DecodeImage:
    """The image type transform inside `DataBlock.dataloaders` when the item transforms take `DecodedImage`s."""

    in_worker = True
    __name__ = "decode_image"

    def __init__(self, mode: str = "RGB", min_size: int | tuple[int, int] | None = None):
        self.mode, self.min_size = mode, min_size

    def __call__(self, src: Any) -> Any:
        """Decode `src` (a path, bytes, PIL image, array or tensor) into a `DecodedImage`."""
        return decode_image(src, self.mode, self.min_size)

    def __repr__(self) -> str:
        return f"DecodeImage(mode={self.mode!r}, min_size={self.min_size!r})"


class ReadEncoded(DecodeImage):
    """The image type transform with `decode_on_device=True`: workers read JPEG bytes (`read_encoded`),
    decoded a batch at a time on the loader's device; other files are decoded in the workers."""

    __name__ = "read_encoded"

    def __call__(self, src: Any) -> Any:
        """Read `src`'s JPEG bytes (an `EncodedImage`), or decode it here when it is not a JPEG file."""
        return read_encoded(src, self.mode)


def decode_min_size(item_tfms: list) -> int | tuple[int, int] | None | bool:
    """The resolution the item transforms need from a decoder taking `DecodedImage`s, or False if one can't.

    Only `ToTensor` and item resizes that output a tensor (`to_tensor`) or a pending window (`lazy`)
    accept `DecodedImage`s; a resize's own size is the minimum (a random-resized crop's is scaled up by
    `1/sqrt(min_scale)` and the widest aspect ratio, the smallest crop it may take).
    """
    min_size: Any = None
    for t in item_tfms:
        if isinstance(t, ToTensor):
            continue
        if not (hasattr(t, "box") and (getattr(t, "lazy", False) or getattr(t, "to_tensor", False))):
            return False
        h, w = t.size
        if hasattr(t, "min_scale"):
            grow = max(t.ratio[1], 1 / t.ratio[0]) ** 0.5 / max(t.min_scale, 1e-3) ** 0.5
            h, w = math.ceil(h * grow), math.ceil(w * grow)
        if min_size is not None:
            return False  # two resizes in a row: decode at full size through PIL, as written
        min_size = (h, w)
    return min_size


def ImageBlock(cls: type[PILImage] = PILImage) -> TransformBlock:
    """Return a block for images: decode with `cls.create`, `ToTensor` per item, `IntToFloatTensor` per batch."""
    return TransformBlock(type_tfms=cls.create, batch_tfms=[IntToFloatTensor()])


def ImageBlockBW() -> TransformBlock:
    """Return a block for greyscale images (one channel)."""
    return ImageBlock(PILImageBW)
