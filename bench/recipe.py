"""Screen changes to the demo's recipe at a fixed epoch count: one `run_demo` per variant, same seed.

Each variant is a JSON object of `run_demo` arguments applied on top of its defaults; the table gives the
validation accuracy (the held-out 5,000 training images: choose on this) and the test accuracy (read
once per run, after training), plain and with flip test-time augmentation, and the training time. Run
it on a quiet machine: the variants run one after the other, each a full training run (about 4.5
minutes at 5 epochs on 2 CPU cores).

    python bench/recipe.py [--epochs 5] ['{"aug": "affine"}' '{"lr_max": 0.012}' ...]

Without variants it runs the screen behind docs/benchmarks.md: the default recipe, then one change at
a time (the former affine augmentation, lr_max, batch size, weight decay, no label smoothing).
"""

from __future__ import annotations

import argparse
import json
import time

SCREEN = [
    {},
    {"aug": "affine", "lr_max": 5e-3},
    {"aug": "affine", "lr_max": 8e-3},
    {"aug": "affine", "lr_max": 1e-2, "wd": 0.01},
    {"lr_max": 5e-3},
    {"lr_max": 1.2e-2},
    {"bs": 128, "lr_max": 8e-3},
    {"bs": 128, "lr_max": 1e-2},
    {"label_smoothing": 0.0, "lr_max": 5e-3},
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5, help="training epochs of every run (5)")
    ap.add_argument("variants", nargs="*", help="JSON objects of run_demo arguments (default: the screen)")
    a = ap.parse_args()
    from fastvision.demo import run_demo

    variants = [json.loads(v) for v in a.variants] or SCREEN
    rows = []
    for v in variants:
        t = time.time()
        r = run_demo(epochs=a.epochs, out="/tmp/bench-recipe", **v)
        rows.append(
            f"| `{json.dumps(v)}` | {r['lr_max']:.1e} | {r['valid_accuracy']:.4f} / {r['valid_accuracy_tta']:.4f} "
            f"| {r['accuracy']:.4f} / {r['accuracy_no_tta']:.4f} | {r['train_time']:.0f} s |"
        )
        print(f"{rows[-1]}  ({time.time() - t:.0f} s in all)", flush=True)
    print(f"\n{a.epochs} epochs each\n")
    print(
        "| change to the recipe | lr_max | valid acc (plain / flip TTA) | test acc (flip TTA / plain) | training |"
    )
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
