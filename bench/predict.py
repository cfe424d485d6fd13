"""Inference latency: `load_learner(...).predict` against the same work written by hand in plain PyTorch.

A user's question is how long one prediction takes once the model is deployed, and what fastvision adds
to it. The script exports an untrained ResNet-34 head and body (`vision_learner(..., pretrained=False)`:
the same compute as a trained one) with the Pets chapter's validation pipeline at 224 px
(`Resize(224)`, centre crop, ImageNet `Normalize`), then times, on fashion-pets JPEGs (250-500 px a side,
made by `make_fashion_pets`), each of:

- **cold start**: `load_learner(export)` and its first `predict` (the JSON, the safetensors weights, the
  model built and the first forward pass);
- **one image**: `learn.predict(path)` per file, against the hand-written path: `PIL.Image.open`,
  EXIF transpose, RGB, the same centre crop and resize (torchvision's `resize` on the uint8 tensor, as
  fastvision does), float, normalise, `model(x[None]).softmax(-1)` under `inference_mode`. Both include
  reading and decoding the JPEG; the model is the same module. The goal (from what users report of
  fastai, where `predict` costs ~20 ms over the forward pass): fastvision <= hand + 2 ms;
- **a batch**: `learn.predict(list of 64 paths)` against the hand path over the same 64 files, stacked
  into one forward.

One image at a time, each file goes through both paths back to back (the order alternating), `--reps`
times: the script prints the median time of each and the median of the paired differences, fastvision's
overhead. Batches alternate (hand, fastvision, fastvision, hand, ...). All after a warm-up, in one
process, whose peak resident memory is printed at the end. `--threads` sets torch's threads (default: all
cores).

    python bench/predict.py [--n 64] [--reps 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet


def export_model(folder: Path, out: Path, size: int) -> Path:
    """Export a ResNet-34 classifier with the chapter's validation preprocessing at `size`; return its JSON."""
    from fastvision.data.block import CategoryBlock, DataBlock
    from fastvision.data.items import RandomSplitter, RegexLabeller, get_image_files, using_attr
    from fastvision.vision.block import ImageBlock
    from fastvision.vision.learner import vision_learner
    from fastvision.vision.lighting import Normalize
    from fastvision.vision.resize import Resize

    label = RegexLabeller(r"(.+)_\d+.jpg$")
    vocab = sorted({label(p.name) for p in get_image_files(folder)})  # every class, however few the images
    dls = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=vocab)),
        get_items=get_image_files,
        splitter=RandomSplitter(seed=42),
        get_y=using_attr(label, "name"),
        item_tfms=Resize(size),
        batch_tfms=[Normalize.from_stats(MEAN, STD)],
    ).dataloaders(folder, bs=16, num_workers=0)
    learn = vision_learner(dls, "resnet34", pretrained=False)
    return learn.export(out / "model")


def hand_input(path: Path, size: int) -> torch.Tensor:
    """The preprocessing written by hand: decode, upright, RGB, centre square crop, resize, normalise."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        t = TF.pil_to_tensor(im)
    h, w = t.shape[-2:]
    s = min(h, w)
    t = t[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    t = TF.resize(t, [size, size], antialias=True)
    return TF.normalize(t.float() / 255, MEAN, STD)


def hand_predict(model: torch.nn.Module, paths: list[Path], size: int) -> torch.Tensor:
    with torch.inference_mode():
        x = torch.stack([hand_input(p, size) for p in paths])
        return model(x).softmax(-1)


def clock(f, *args) -> float:
    t = time.perf_counter()
    f(*args)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="images (and the batch size of the batch part)")
    ap.add_argument("--reps", type=int, default=3, help="alternating rounds of each part")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from fastvision.data.fashion_pets import make_fashion_pets
    from fastvision.export import load_learner
    from fastvision.memory import format_bytes, peak_rss

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_fashion_pets(Path(tmp) / "pets", n=a.n, split="test")
        exported = export_model(folder, Path(tmp), a.size)
        t0 = time.perf_counter()
        learn = load_learner(exported)
        t_load = time.perf_counter() - t0
        files = sorted(folder.glob("*.jpg"))
        t1 = time.perf_counter()
        learn.predict(files[0])
        t_first = time.perf_counter() - t1
        print(f"cold start: load_learner {t_load * 1e3:.0f} ms, first predict {t_first * 1e3:.0f} ms "
              f"({torch.get_num_threads()} threads)")  # fmt: skip

        model = learn.model
        x_fv = next(iter(learn.test_dl(files[:1])))[0][0].float()
        x_hand = hand_input(files[0], a.size)
        print(f"same input tensor: {tuple(x_fv.shape)} vs {tuple(x_hand.shape)}, max |difference| "
              f"{float((x_fv - x_hand).abs().max()):.2e} (normalised units; 1/255 of a pixel is about 0.017)")  # fmt: skip
        hand_batch = lambda: hand_predict(model, files, a.size)  # noqa: E731
        fv_batch = lambda: learn.predict(files, bs=len(files))  # noqa: E731
        for p in files[:4]:  # warm-up
            hand_predict(model, [p], a.size), learn.predict(p)
        hand_batch(), fv_batch()
        # One image: each file by both paths back to back (the order alternating), so that the machine's
        # drifts in speed (10-15 % within minutes here) fall on both; the paired differences give the overhead.
        one: dict[str, list[float]] = {"hand": [], "fastvision": []}
        for r in range(a.reps):
            for i, p in enumerate(files):
                pair = [
                    ("hand", lambda p=p: hand_predict(model, [p], a.size)),
                    ("fastvision", lambda p=p: learn.predict(p)),
                ]
                for who, f in pair if (i + r) % 2 == 0 else pair[::-1]:
                    one[who].append(clock(f))
        diffs = [f - h for f, h in zip(one["fastvision"], one["hand"])]
        h, f = statistics.median(one["hand"]), statistics.median(one["fastvision"])
        print(f"one image at a time ({len(diffs)} pairs): fastvision {f * 1e3:.2f} ms, hand-written {h * 1e3:.2f} ms; "
              f"fastvision's overhead (median of the paired differences) {statistics.median(diffs) * 1e3:+.2f} ms")  # fmt: skip
        batch: dict[str, list[float]] = {"hand": [], "fastvision": []}
        for r in range(a.reps):
            for who in ("hand", "fastvision") if r % 2 == 0 else ("fastvision", "hand"):
                batch[who].append(clock(hand_batch if who == "hand" else fv_batch) / len(files))
        h, f = statistics.median(batch["hand"]), statistics.median(batch["fastvision"])
        print(f"a batch of {len(files)}: fastvision {f * 1e3:.2f} ms/image, hand-written {h * 1e3:.2f} ms/image, "
              f"difference {(f - h) * 1e3:+.2f} ms/image ({f / h:.2f}x)")  # fmt: skip
    print(f"peak memory of the whole run (both paths, one process): {format_bytes(peak_rss())}")


if __name__ == "__main__":
    main()
