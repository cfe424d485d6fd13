"""Test-time augmentation views on a trained demo model: plain, flip, flip + 1-pixel shifts (two weightings).

The demo's TTA (`run_demo(tta=True)`) is the last: the flip average and the mean of the 8 shifted views
weighted 1/2 each.

Loads the model `fastvision demo` exported and scores its validation split (the 5,000 held-out training
images, same seed) and the test set with each set of views averaged (softmax probabilities). Inference
only: about a minute on 2 CPU cores.

    fastvision demo && python bench/tta.py [out/demo/model.json]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move `x` by (dx, dy) pixels, filling with the background (the batch's lowest value)."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1), value=float(x.amin()))
    return p[..., 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="out/demo/model.json", help="the demo's export (%(default)s)")
    a = ap.parse_args()
    from fastvision.demo import fashion_mnist_dls
    from fastvision.export import load_learner

    model = load_learner(a.model).model.eval()
    dls = fashion_mnist_dls(bs=500, n_valid=5000, aug="none", device="cpu")

    def probs(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x.contiguous(memory_format=torch.channels_last)).softmax(1)

    for name, dl in (("validation", dls[1]), ("test", dls[2])):
        batches = list(dl)
        y = torch.cat([b[1] for b in batches])
        views = {
            "plain": [],
            "flip": [],
            "flip + 4 shifts of both, equal weights": [],
            "the demo's (1/2, 1/2)": [],
        }
        for x, _ in batches:
            plain, flipped = probs(x), probs(x.flip(-1))
            shifted = sum(probs(shift(v, dx, dy)) for v in (x, x.flip(-1)) for dx, dy in SHIFTS)
            views["plain"].append(plain)
            views["flip"].append(plain + flipped)
            views["flip + 4 shifts of both, equal weights"].append(plain + flipped + shifted)
            views["the demo's (1/2, 1/2)"].append((plain + flipped) / 2 + shifted / 8)
        accs = {k: (torch.cat(v).argmax(1) == y).float().mean().item() for k, v in views.items()}
        print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in accs.items()), flush=True)


if __name__ == "__main__":
    main()
