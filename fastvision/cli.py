"""The `fastvision` command line: train, lr-find, predict, interpret and the Fashion-MNIST demo."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import NoReturn

__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status `code` (2: a usage error), no traceback."""

    code = 2


class TrainingFailed(CLIError):
    """Training ended without a usable model (diverged, stopped early): one line, exit status 1."""

    code = 1


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (`fastvision <command>: error: ...`), exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print the error and a pointer to --help on one line; exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _whole(s: str, lo: int, expected: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v < lo:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {v}")
    return v


def _positive_int(s: str) -> int:
    return _whole(s, 1, "at least 1")


def _workers(s: str) -> int:
    return _whole(s, 0, "0 (load in the main process) or more")


def _fraction(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(
            f"must be between 0 and 1 (exclusive), got {s}: both the training and the validation set need images"
        )
    return v


def _lr(s: str) -> str | float:
    if s == "find":
        return s
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 1e-3, or 'find', got {s!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number such as 1e-3, got {s}")
    return v


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="image folder")
    p.add_argument(
        "--labels",
        default="parent",
        help="'parent' (label = parent folder), 're:PATTERN' (regex on the file name, group 1), "
        "or 'csv:FILE' (columns fname,label[,is_valid]) (default: parent)",
    )
    p.add_argument(
        "--valid-pct", type=_fraction, default=0.2, help="random validation share, in (0, 1) (default: 0.2)"
    )
    p.add_argument("--seed", type=int, default=42, help="seed of the split and the run (default: 42)")
    p.add_argument("--size", type=_positive_int, default=224, help="model input size (default: 224)")
    p.add_argument(
        "--presize", type=_positive_int, default=None, help="item Resize size (default: size * 460/224)"
    )
    p.add_argument("--bs", type=_positive_int, default=64, help="batch size (default: 64)")
    p.add_argument(
        "--num-workers", type=_workers, default=None, help="loader worker processes (default: from CPUs)"
    )
    p.add_argument("--no-aug", action="store_true", help="no batch augmentation")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the `fastvision` command."""
    ap = _Parser(prog="fastvision", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an image classifier on a folder")
    _add_data_args(t)
    t.add_argument("--arch", default="resnet34", help="architecture name (default: resnet34)")
    t.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True)
    t.add_argument("--epochs", type=_positive_int, default=4, help="epochs after the frozen one (default: 4)")
    t.add_argument(
        "--lr", type=_lr, default="find", help="learning rate, or 'find' to use lr_find's valley (default)"
    )
    t.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    t.add_argument("--out", default="out/train", help="output folder (default: out/train)")
    t.add_argument("--nproc", type=_positive_int, default=1, help="processes for DDP training via torchrun")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out from its last checkpoint (same options as that run)",
    )

    f = sub.add_parser("lr-find", help="run the learning-rate finder and save its plot")
    _add_data_args(f)
    f.add_argument("--arch", default="resnet34")
    f.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True)
    f.add_argument("--out", default="out/lr_find.png", help="plot file (default: out/lr_find.png)")

    pr = sub.add_parser("predict", help="predict images with an exported model")
    pr.add_argument("model", help="exported model (the .json or .safetensors written by export)")
    pr.add_argument("images", nargs="+", help="image files")
    pr.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pr.add_argument("--topk", type=_positive_int, default=3, help="classes to show per image (default: 3)")
    pr.add_argument(
        "--trust-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module a 'class' export may import (repeatable; importing runs its code)",
    )

    it = sub.add_parser("interpret", help="confusion matrix and most-confused pairs of an exported model")
    _add_data_args(it)
    it.add_argument("--model", required=True, help="exported model")
    it.add_argument("--out", default="out/interpret", help="output folder (default: out/interpret)")
    it.add_argument("--min-val", type=_positive_int, default=1, help="smallest count listed (default: 1)")
    it.add_argument(
        "--trust-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module a 'class' export may import (repeatable; importing runs its code)",
    )

    d = sub.add_parser("demo", help="train on the real Fashion-MNIST (the main job of `make demo`)")
    d.add_argument(
        "--epochs", type=_positive_int, default=None, help="training epochs (default: fits the time budget)"
    )
    d.add_argument(
        "--budget", type=float, default=540.0, help="training time budget in seconds (default: 540)"
    )
    d.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    d.add_argument("--bs", type=_positive_int, default=256, help="batch size (default: 256)")
    d.add_argument("--quick", action="store_true", help="a small subset and one epoch, for smoke tests")
    d.add_argument("--seed", type=int, default=42)

    fp = sub.add_parser(
        "make-fashion-pets", help="build an Oxford-Pets-shaped JPEG folder from the real Fashion-MNIST"
    )
    fp.add_argument("out", help="folder to create")
    fp.add_argument("--n", type=_positive_int, default=7390, help="number of images (default: 7390)")
    fp.add_argument("--seed", type=int, default=42, help="seed of the picks, sizes and tints (default: 42)")
    fp.add_argument(
        "--src", default=None, help="folder with the four IDX files (default: Debian's, or the cache)"
    )
    fp.add_argument(
        "--split", choices=["train", "test"], default="train", help="Fashion-MNIST split (default: train)"
    )
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
        elif args.command == "make-fashion-pets":
            _make_fashion_pets(args)
        else:
            from . import cli_train

            {"train": cli_train.train, "lr-find": cli_train.lr_find, "interpret": cli_train.interpret}[
                args.command
            ](args)
    except CLIError as e:
        print(f"fastvision {args.command}: error: {_one_line(str(e))}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print(f"fastvision {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


def _make_fashion_pets(args: argparse.Namespace) -> None:
    from .data.fashion_pets import make_fashion_pets

    try:
        out = make_fashion_pets(args.out, n=args.n, seed=args.seed, source=args.src, split=args.split)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise CLIError(str(e)) from e
    print(f"wrote {sum(1 for _ in out.glob('*.jpg'))} images to {out}")


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


def _check_model_path(model: Path) -> None:
    if not (model.exists() or model.with_name(model.name + ".json").exists()):
        raise CLIError(
            f"no exported model at '{model}'. Train one with `fastvision train` or learn.export()."
        )


def load_model(model: str | Path, trusted_modules: list[str]) -> object:
    """Load an exported model for a command, turning load errors into one-line `CLIError`s."""
    from .export import load_learner

    model = Path(model)
    _check_model_path(model)
    try:
        return load_learner(model, trusted_modules=trusted_modules)
    except (ValueError, OSError, ImportError) as e:
        raise CLIError(f"cannot load the model '{model}': {e}") from e


def _predict(args: argparse.Namespace) -> None:
    from .vision.image import ImageLoadError

    _check_model_path(Path(args.model))
    for p in args.images:
        if not Path(p).exists():
            raise CLIError(f"no such image file: '{p}'")
        if not Path(p).is_file():
            raise CLIError(f"'{p}' is not a file; give image files (a shell glob such as '{p}/*.jpg' works)")
    learn = load_model(args.model, args.trust_module)
    try:
        results = learn.predict(list(args.images))
    except ImageLoadError as e:
        raise CLIError(str(e)) from e
    rows = []
    for path, (label, _idx, probs) in zip(args.images, results):
        top = probs.topk(min(args.topk, len(probs)))
        rows.append(
            {
                "image": str(path),
                "label": str(label),
                "top": [
                    {"label": str(learn.vocab[int(i)] if learn.vocab else int(i)), "prob": round(float(p), 4)}
                    for p, i in zip(*top)
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
    # `python -m fastvision.cli` runs this file as `__main__`; the commands raise `fastvision.cli.CLIError`,
    # so run the `main` of the imported module, whose `except CLIError` is that very class.
    from fastvision.cli import main as _main

    sys.exit(_main())
