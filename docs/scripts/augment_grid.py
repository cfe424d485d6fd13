"""Draw docs/img/augment_grid.png: one image under 4 default augmentations, fastvision vs fastai-style.

Row 1: fastvision, `Resize(460)` left lazy + `aug_transforms(size=224, min_scale=0.75)`, one resample
from the native pixels. Row 2: the same geometry done the fastai way: the item resized to 460, the
affine/warp resampled at 460, then the crop resized to 224 (three interpolations). Rows 3 and 4: 4x
close-ups of the region framed in red, fastvision then fastai-style. The figure is 880 px wide, the
width of the docs' text column, so its labels read at the size it is shown.

    .venv/bin/python docs/scripts/augment_grid.py [OUT.png]
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from fastvision.vision.augment import AffineGroup, _resample, aug_transforms  # noqa: E402
from fastvision.vision.lazy import PendingImage, collate_pending  # noqa: E402

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
N, SEED = 4, 0


def scene(w: int = 480, h: int = 360) -> torch.Tensor:
    """A 480 x 360 RGB test image: a Fashion-MNIST item (if installed) with hard edges, text and fine lines."""
    yy, xx = np.mgrid[0:h, 0:w]
    bg = np.stack([90 + 80 * xx / w, 120 + 60 * yy / h, 170 - 60 * xx / w], -1).astype(np.uint8)
    img = Image.fromarray(bg)
    if FMNIST.exists():
        with gzip.open(FMNIST) as f:
            item = np.frombuffer(f.read(16 + 28 * 28 * 10), np.uint8)[16:].reshape(10, 28, 28)[
                0
            ]  # an ankle boot
        boot = Image.fromarray(item).resize((252, 252), Image.NEAREST)
        img.paste(Image.new("RGB", boot.size, (250, 240, 220)), (190, 60), boot)
    draw = ImageDraw.Draw(img)
    for i in range(0, 120, 6):  # 1-pixel lines, 6 px apart
        draw.line([(20 + i, 30), (20 + i, 150)], fill=(255, 255, 255))
        draw.line([(20, 190 + i), (150, 190 + i)], fill=(20, 20, 20))
    font = ImageFont.load_default(size=22)
    draw.text((20, 2), "fastvision 0123456789", fill=(255, 255, 0), font=font)
    draw.text((200, 322), "one interpolation", fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()


def busiest_patch(img: torch.Tensor, size: int = 56) -> tuple[int, int]:
    """Top-left corner of the `size` x `size` patch with the largest gradient energy."""
    grey = img.mean(0)
    energy = (grey[1:, :-1] - grey[:-1, :-1]).abs() + (grey[:-1, 1:] - grey[:-1, :-1]).abs()
    pooled = F.avg_pool2d(energy[None, None], size, stride=8)[0, 0]
    idx = int(pooled.argmax())
    return (idx // pooled.shape[1]) * 8, (idx % pooled.shape[1]) * 8


def main(out: Path) -> None:
    pixels = scene()
    h, w = pixels.shape[1:]
    side = min(h, w)
    x0 = (w - side) / 2  # Resize(460) centre crop: the largest square, promised at 460 x 460
    pb = collate_pending([PendingImage(pixels, (x0, 0.0, x0 + side - 1, side - 1.0), (460, 460))] * N)
    group = aug_transforms(size=224, min_scale=0.75)[0]
    geometry, crop = AffineGroup(group.parts[:-1]), AffineGroup(group.parts[-1:])

    torch.manual_seed(SEED)
    ours = group(pb, split_idx=0)
    torch.manual_seed(SEED)  # the same draws, in the same order, applied in three steps
    m_affine, m_crop = geometry.matrix(N, 460, 460, split_idx=0), crop.matrix(N, 460, 460, split_idx=0)
    square = pixels[None, :, :, int(x0) : int(x0) + side].float()
    item460 = F.interpolate(square, size=(460, 460), mode="bilinear", antialias=True).expand(N, -1, -1, -1)
    at460 = _resample(item460, m_affine, (460, 460))
    theirs = (_resample(at460, m_crop, (224, 224)) / 255).clamp(0, 1)

    fig, axs = plt.subplots(4, N, figsize=(8.8, 9.4))  # drawn at the size it is shown: ~880 px wide
    for i in range(N):
        r, c = busiest_patch(ours[i])  # the 56 x 56 patch with the most edges, shown 4x
        for k, img in enumerate((ours, theirs)):
            axs[k, i].imshow(img[i].permute(1, 2, 0).numpy())
            axs[k, i].add_patch(plt.Rectangle((c - 0.5, r - 0.5), 56, 56, fill=False, ec="red", lw=1.2))
            patch = img[i, :, r : r + 56, c : c + 56].permute(1, 2, 0).numpy()
            axs[2 + k, i].imshow(patch, interpolation="nearest")
        axs[0, i].set_title(f"draw {i + 1}", fontsize=12)
    for ax in axs.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    labels = (
        "fastvision\n1 resample",
        "fastai-style\n3 resamples",
        "fastvision\n4x close-up",
        "fastai-style\n4x close-up",
    )
    for ax, label in zip(axs[:, 0], labels):
        ax.set_ylabel(label, fontsize=12)
    fig.suptitle("aug_transforms(size=224, min_scale=0.75): the same random draws", fontsize=13)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parents[1] / "img" / "augment_grid.png"
    )
