"""Deferred resampling: carry native pixels and a crop window from the item stage to the batch stage.

fastai's presizing resizes every image on the CPU (`Resize(460)`) and resamples it again on the batch
(`aug_transforms(size=224)`). fastvision's `Resize` instead records *which window* of the decoded image
becomes the item (random on training, centred on validation) and keeps the native pixels. The batch
stage composes that window with every geometric augmentation and resamples once, at the output size.

Coordinates: a window is `(x0, y0, x1, y1)` in pixel units of the item's own pixels, with pixel centres
at integer positions (the `align_corners=True` convention): the output's corner pixel centres map to
`(x0, y0)` and `(x1, y1)`. For `method='pad'` the window may extend past the image; what lies outside is
filled by the padding mode (reflection, zeros, border) at the batch stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import torch

from ..data.deferred import DeferredBatch, DeferredItem
from ..memory import batch_empty
from .sample import materialize

__all__ = ["PendingImage", "PendingBatch", "collate_pending", "decode_pending"]


@dataclass
class PendingImage(DeferredItem):
    """One image whose final resample is deferred to the batch stage.

    Args:
        pixels: uint8 tensor C x h x w (native resolution, possibly already cropped to the window's
            integer bounding box to save memory).
        window: (x0, y0, x1, y1) floats, in pixel coordinates of `pixels`, the region that becomes
            the item's output.
        size: (height, width) the item transform promises, e.g. (460, 460) for `Resize(460)`.
        pad_mode: how to fill samples outside `pixels`: 'reflection', 'zeros' or 'border'.
    """

    pixels: torch.Tensor | None
    window: tuple[float, float, float, float]
    size: tuple[int, int]
    pad_mode: str = "reflection"
    encoded: Any = None  # an `EncodedImage` (pixels None) when decoding waits for the device: its class's
    # `decode_batch(items, device)` decodes them (vision.image; this module does not import it)

    @property
    def extent(self) -> tuple[int, int, int]:
        """(channels, height, width) of the item's pixels, decoded or not."""
        if self.pixels is not None:
            return cast(tuple[int, int, int], tuple(self.pixels.shape))
        w, h = self.encoded.size
        return (3 if self.encoded.mode == "RGB" else 1, h, w)

    @property
    def shape(self) -> torch.Size:
        """The promised shape C x H x W (what a materialised item would have)."""
        return torch.Size((self.extent[0], *self.size))

    def describe(self) -> str:
        """`PendingImage C x h x w -> C x H x W`: native extent and promised shape."""
        return f"PendingImage {'x'.join(map(str, self.extent))} -> {'x'.join(map(str, self.shape))}"

    @classmethod
    def collate(cls, items: list[PendingImage]) -> PendingBatch:
        """Collate pending items into one `PendingBatch` (`collate_pending`)."""
        return collate_pending(items)


@dataclass
class PendingBatch(DeferredBatch):
    """A collated batch of `PendingImage`s: one zero-padded uint8 canvas and per-item geometry.

    Args:
        canvas: uint8 B x C x H x W (channels-last memory on the CPU), item i occupies
            `canvas[i, :, :hw[i,0], :hw[i,1]]`.
        hw: long B x 2, the (h, w) of each item's pixels inside the canvas.
        window: float B x 4, each item's (x0, y0, x1, y1) window in its own pixel coordinates.
        size: the promised (height, width) of every item (all items of a batch share it).
        pad_mode: the padding mode of the item transform.
    """

    canvas: torch.Tensor
    hw: torch.Tensor
    window: torch.Tensor
    size: tuple[int, int]
    pad_mode: str = "reflection"
    encoded: list[tuple[int, Any]] = field(default_factory=list)  # (row, EncodedImage) still to decode

    @property
    def shape(self) -> torch.Size:
        """The promised batch shape B x C x H x W."""
        return torch.Size((self.canvas.shape[0], self.canvas.shape[1], *self.size))

    def __len__(self) -> int:
        return self.canvas.shape[0]

    def describe(self) -> str:
        """`PendingBatch canvas-shape -> promised shape`."""
        return f"PendingBatch {'x'.join(map(str, self.canvas.shape))} -> {'x'.join(map(str, self.shape))}"

    def finish(self) -> PendingBatch:
        """Decode the items still encoded, on the canvas's device (`decode_pending`)."""
        return decode_pending(self)

    def materialize(self) -> torch.Tensor:
        """Resample with identity geometry: float32 B x C x `size` in [0, 1] (`sample.materialize`)."""
        return materialize(self)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PendingBatch:
        """Move the canvas and geometry to `device`."""
        canvas = (  # a batch still wholly encoded has a shape-only canvas: allocate it where it is decoded
            torch.zeros(self.canvas.shape, dtype=self.canvas.dtype, device=device)
            if self.canvas.is_meta
            else self.canvas.to(device, non_blocking=non_blocking)
        )
        return PendingBatch(
            canvas,
            self.hw.to(device, non_blocking=non_blocking),
            self.window.to(device, non_blocking=non_blocking),
            self.size,
            self.pad_mode,
            self.encoded,  # bytes stay on the host: the decoder reads them there
        )

    def pin_memory(self) -> PendingBatch:
        """Pin the host tensors (called by torch's DataLoader when `pin_memory=True`)."""
        return PendingBatch(
            self.canvas if self.canvas.is_meta else self.canvas.pin_memory(),
            self.hw.pin_memory(),
            self.window.pin_memory(),
            self.size,
            self.pad_mode,
            self.encoded,
        )


def collate_pending(items: list[PendingImage]) -> PendingBatch:
    """Pad the items' pixels into one canvas (top-left aligned) and stack their geometry.

    Items still encoded leave their region of the canvas empty and are listed in `encoded`, for
    `decode_pending` to fill on the batch's device.
    """
    sizes = {p.size for p in items}
    if len(sizes) != 1:
        raise ValueError(
            f"Cannot batch items promised at different sizes {sorted(sizes)}: every item of a batch must "
            "come from the same Resize. Use one Resize(size) in item_tfms."
        )
    extents = [p.extent for p in items]
    c, hmax, wmax = extents[0][0], max(e[1] for e in extents), max(e[2] for e in extents)
    shape = (len(items), c, hmax, wmax)
    on_device = all(p.pixels is None for p in items)  # nothing to copy: the canvas is made on the device
    if on_device:
        canvas = torch.empty(shape, dtype=torch.uint8, device="meta")
    else:  # written once: each item's pixels, zeros only around them (in shared memory in a worker);
        # channels-last, the layout decoded pixels have, so rows copy whole (and grid_sample reads it faster)
        canvas = batch_empty(shape, torch.uint8, channels_last=True)
    encoded = []
    for i, p in enumerate(items):
        if p.pixels is None:
            encoded.append((i, p.encoded))
            canvas[i].zero_()
        else:
            h, w = p.pixels.shape[1:]
            canvas[i, :, :h, :w] = p.pixels
            canvas[i, :, :h, w:] = 0
            canvas[i, :, h:] = 0
    hw = torch.tensor([[e[1], e[2]] for e in extents], dtype=torch.long)
    window = torch.tensor([p.window for p in items], dtype=torch.float32)
    return PendingBatch(canvas, hw, window, items[0].size, items[0].pad_mode, encoded)


def decode_pending(pb: PendingBatch) -> PendingBatch:
    """Decode the batch's encoded items on the canvas's device, in one batched call, into their regions."""
    if not pb.encoded:
        return pb
    canvas = pb.canvas
    if canvas.is_meta:  # not moved to a device: decode on the CPU
        canvas = torch.zeros(canvas.shape, dtype=canvas.dtype)
    rows, encoded = [i for i, _ in pb.encoded], [e for _, e in pb.encoded]
    for i, t in zip(rows, type(encoded[0]).decode_batch(encoded, canvas.device)):
        canvas[i, :, : t.shape[1], : t.shape[2]] = t
    return PendingBatch(canvas, pb.hw.to(canvas.device), pb.window.to(canvas.device), pb.size, pb.pad_mode)
