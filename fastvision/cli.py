"""The `fastvision` command line: train, lr-find, predict, interpret and the Fashion-MNIST demo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2, no traceback."""


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="image folder")
    p.add_argument(
        "--labels",
        default="parent",
        help="'parent' (label = parent folder), 're:PATTERN' (regex on the file name, group 1), "
        "or 'csv:FILE' (columns fname,label[,is_valid]) (default: parent)",
    )
    p.add_argument("--valid-pct", type=float, default=0.2, help="random validation share (default: 0.2)")
    p.add_argument("--seed", type=int, default=42, help="seed of the split and the run (default: 42)")
    p.add_argument("--size", type=int, default=224, help="model input size (default: 224)")
    p.add_argument("--presize", type=int, default=None, help="item Resize size (default: size * 460/224)")
    p.add_argument("--bs", type=int, default=64, help="batch size (default: 64)")
    p.add_argument(
        "--num-workers", type=int, default=None, help="loader worker processes (default: from CPUs)"
    )
    p.add_argument("--no-aug", action="store_true", help="no batch augmentation")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the `fastvision` command."""
    ap = argparse.ArgumentParser(prog="fastvision", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an image classifier on a folder")
    _add_data_args(t)
    t.add_argument("--arch", default="resnet34", help="architecture name (default: resnet34)")
    t.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True)
    t.add_argument("--epochs", type=int, default=4, help="epochs after the frozen one (default: 4)")
    t.add_argument("--lr", default="find", help="learning rate, or 'find' to use lr_find's valley (default)")
    t.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    t.add_argument("--out", default="out/train", help="output folder (default: out/train)")
    t.add_argument("--nproc", type=int, default=1, help="processes for DDP training via torchrun")

    f = sub.add_parser("lr-find", help="run the learning-rate finder and save its plot")
    _add_data_args(f)
    f.add_argument("--arch", default="resnet34")
    f.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True)
    f.add_argument("--out", default="out/lr_find.png", help="plot file (default: out/lr_find.png)")

    pr = sub.add_parser("predict", help="predict images with an exported model")
    pr.add_argument("model", help="exported model (the .json or .safetensors written by export)")
    pr.add_argument("images", nargs="+", help="image files")
    pr.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pr.add_argument("--topk", type=int, default=3, help="classes to show per image (default: 3)")

    it = sub.add_parser("interpret", help="confusion matrix and most-confused pairs of an exported model")
    _add_data_args(it)
    it.add_argument("--model", required=True, help="exported model")
    it.add_argument("--out", default="out/interpret", help="output folder (default: out/interpret)")
    it.add_argument("--min-val", type=int, default=1, help="smallest count listed (default: 1)")

    d = sub.add_parser("demo", help="train on the real Fashion-MNIST (the main job of `make demo`)")
    d.add_argument("--epochs", type=int, default=None, help="training epochs (default: fits the time budget)")
    d.add_argument(
        "--budget", type=float, default=540.0, help="training time budget in seconds (default: 540)"
    )
    d.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    d.add_argument("--bs", type=int, default=256, help="batch size (default: 256)")
    d.add_argument("--quick", action="store_true", help="a small subset and one epoch, for smoke tests")
    d.add_argument("--seed", type=int, default=42)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run_demo

            run_demo(
                epochs=args.epochs,
                budget=args.budget,
                out=args.out,
                bs=args.bs,
                quick=args.quick,
                seed=args.seed,
            )
        elif args.command == "predict":
            _predict(args)
        else:
            from . import cli_train

            {"train": cli_train.train, "lr-find": cli_train.lr_find, "interpret": cli_train.interpret}[
                args.command
            ](args)
    except CLIError as e:
        print(f"fastvision {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastvision {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


def _predict(args: argparse.Namespace) -> None:
    from .export import load_learner

    model = Path(args.model)
    if not model.exists():
        raise CLIError(
            f"no exported model at '{model}'. Train one with `fastvision train` or learn.export()."
        )
    missing = [p for p in args.images if not Path(p).exists()]
    if missing:
        raise CLIError(f"no such image file: {', '.join(missing)}")
    learn = load_learner(model)
    results = learn.predict(list(args.images))
    rows = []
    for path, (label, _idx, probs) in zip(args.images, results):
        top = probs.topk(min(args.topk, len(probs)))
        rows.append(
            {
                "image": str(path),
                "label": str(label),
                "top": [
                    {"label": str(learn.vocab[int(i)]), "prob": round(float(p), 4)} for p, i in zip(*top)
                ],
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    width = max(len(r["image"]) for r in rows)
    print(f"{'image':<{width}}  prediction")
    for r in rows:
        tops = ", ".join(f"{t['label']} {t['prob']:.3f}" for t in r["top"])
        print(f"{r['image']:<{width}}  {tops}")


if __name__ == "__main__":
    sys.exit(main())
