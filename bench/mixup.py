"""What MixUp and CutMix do to the demo's accuracy: `fastvision demo`'s recipe for a fixed number of epochs,
trained plainly, with `MixUp(0.4)` and with `CutMix(1.0)` (fastai's default alphas).

Same data (55,000 training images, 5,000 held out for validation, the 10,000 test images read once at the
end), same model, seed, lr (from each run's own `lr_find`, which the mixing callbacks do not touch) and
epochs; only the training callback differs. Each run prints its demo log as it goes; the table at the end
holds the validation accuracy, the test accuracy with and without flip TTA, and the training time.

    python bench/mixup.py [--epochs 16] [--only none,mixup,cutmix]
"""

from __future__ import annotations

import argparse
import time

from fastvision.callback.mixup import CutMix, MixUp

RUNS = {"none": lambda: [], "mixup": lambda: [MixUp(0.4)], "cutmix": lambda: [CutMix(1.0)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=16, help="training epochs of every run (16)")
    ap.add_argument("--only", default=",".join(RUNS), help="comma-separated runs among none,mixup,cutmix")
    a = ap.parse_args()
    from fastvision.demo import run_demo

    rows = []
    for name in a.only.split(","):
        t = time.time()
        res = run_demo(epochs=a.epochs, out=f"/tmp/bench-mixup-{name}", cbs=RUNS[name]())
        rows.append((name, res))
        print(f"{name}: test {res['accuracy']:.4f} in {time.time() - t:.0f} s in all", flush=True)
    print(
        "\n| training | epochs | valid acc | test acc (flip TTA / plain) | training time |\n|---|---|---|---|---|"
    )
    for name, r in rows:
        print(
            f"| {name} | {r['epochs']} | {r['valid_accuracy']:.4f} | {r['accuracy']:.4f} / "
            f"{r['accuracy_no_tta']:.4f} | {r['train_time']:.0f} s |"
        )


if __name__ == "__main__":
    main()
