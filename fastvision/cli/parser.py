"""The command line's parser: the commands and their options, the argument checks and the user-facing errors."""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import NoReturn

__all__ = ["build_parser", "CLIError", "TrainingFailed", "check_out"]

DESCRIPTION = "The `fastvision` command line: train, lr-find, predict, interpret, export-onnx and the Fashion-MNIST demo."


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status `code` (2: a usage error), no traceback."""

    code = 2


class TrainingFailed(CLIError):
    """Training ended without a usable model (diverged, stopped early): one line, exit status 1."""

    code = 1


class Interrupted(CLIError):
    """Ctrl-C during a command that can say how to continue: `fastvision <command>: interrupted. <text>`, 130."""

    code = 130


def full_disk_message(e: BaseException, where: object = None) -> str | None:
    """One line for a full disk that `e` is or chains (None for other errors): what could not be written, the fix.

    fastvision's own writers already name the file and the space left; other writes (a plot, a JPEG) say
    `where` (the command's output) instead.
    """
    from ..checkpoint import full_disk_error

    full = full_disk_error(e)
    if full is None:
        return None
    msg = full.strerror or str(full)
    if "while writing" not in msg:
        msg += f" while writing in '{full.filename or where}'. Free some space or write elsewhere."
    return msg


def no_images(folder: object) -> CLIError:
    """The error for a folder without images (what `get_image_files` looks for)."""
    return CLIError(f"no images in '{folder}' (looked for .jpg, .png, .gif, .bmp, .tif, .webp, recursively).")


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


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def _keep_fraction(s: str) -> float:
    v = _positive_float(s)
    if v > 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1], got {v}")
    return v


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


def check_out(out: Path, what: str = "--out") -> None:
    """Create the output folder and check it is writable, before any work is spent."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise CLIError(f"cannot write to {what} '{out}': {e.strerror or e}. Choose a writable folder.") from e


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="image folder")
    p.add_argument(
        "--labels",
        default="parent",
        help="'parent' (label = parent folder), 're:PATTERN' (regex on the file name, group 1), "
        "or 'csv:FILE' (columns fname,label[,is_valid]) (default: %(default)s)",
    )
    p.add_argument(
        "--valid-pct",
        type=_fraction,
        default=0.2,
        help="random validation share, in (0, 1) (default: %(default)s)",
    )
    p.add_argument(
        "--valid-folder",
        default="auto",
        metavar="NAME",
        help="split by folder: images under PATH/train train and those under PATH/NAME validate (the "
        "ImageNet layout); 'auto' (the default) does so when PATH holds 'train' and 'valid' or 'val' "
        "folders, else splits at random with --valid-pct; 'none' always splits at random",
    )
    p.add_argument(
        "--seed", type=int, default=42, help="seed of the split and the run (default: %(default)s)"
    )
    p.add_argument("--size", type=_positive_int, default=224, help="model input size (default: %(default)s)")
    p.add_argument(
        "--presize", type=_positive_int, default=None, help="item Resize size (default: size * 460/224)"
    )
    p.add_argument("--bs", type=_positive_int, default=64, help="batch size (default: %(default)s)")
    p.add_argument(
        "--num-workers", type=_workers, default=None, help="loader worker processes (default: from CPUs)"
    )
    p.add_argument("--no-aug", action="store_true", help="no batch augmentation")


def _add_bad_image_arg(
    p: argparse.ArgumentParser,
    skip: str = "is left out with one warning listing such files",
) -> None:
    p.add_argument(
        "--on-bad-image",
        choices=("raise", "skip"),
        default="raise",
        help=f"an image that cannot be decoded stops the command naming the file (raise, the default), or {skip} "
        "(skip)",
    )


def _add_trust_module(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module a 'class' export may import (repeatable; importing runs its code)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the `fastvision` command."""
    ap = _Parser(prog="fastvision", description=DESCRIPTION)
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an image classifier on a folder")
    _add_data_args(t)
    t.add_argument("--arch", default="resnet34", help="architecture name (default: %(default)s)")
    t.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True)
    t.add_argument(
        "--epochs", type=_positive_int, default=4, help="epochs after the frozen one (default: %(default)s)"
    )
    t.add_argument(
        "--lr", type=_lr, default="find", help="learning rate, or 'find' to use lr_find's valley (default)"
    )
    _add_bad_image_arg(t)
    t.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    t.add_argument("--out", default="out/train", help="output folder (default: %(default)s)")
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
    _add_bad_image_arg(f)
    f.add_argument("--out", default="out/lr_find.png", help="plot file (default: %(default)s)")

    pr = sub.add_parser("predict", help="predict images with an exported model")
    pr.add_argument("model", help="exported model (the .json or .safetensors written by export)")
    pr.add_argument("images", nargs="+", help="image files, or folders (their images, recursively)")
    pr.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pr.add_argument(
        "--topk", type=_positive_int, default=3, help="classes to show per image (default: %(default)s)"
    )
    _add_bad_image_arg(pr, "gets a row saying why instead of a prediction, and one warning lists such files")
    _add_trust_module(pr)

    it = sub.add_parser("interpret", help="confusion matrix and most-confused pairs of an exported model")
    _add_data_args(it)
    it.add_argument("--model", required=True, help="exported model")
    it.add_argument("--out", default="out/interpret", help="output folder (default: %(default)s)")
    it.add_argument(
        "--min-val", type=_positive_int, default=1, help="smallest count listed (default: %(default)s)"
    )
    _add_trust_module(it)

    ox = sub.add_parser("export-onnx", help="convert an exported model to ONNX (needs fastvision[onnx])")
    ox.add_argument("model", help="exported model (the .json written by `train` or learn.export())")
    ox.add_argument("out", help="the .onnx file to write")
    ox.add_argument(
        "--preprocess",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="graph takes uint8 pixels and converts and normalises them (default); "
        "--no-preprocess: it takes the normalised float32 tensor",
    )
    ox.add_argument(
        "--activation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="output probabilities (softmax/sigmoid, default); --no-activation: raw model outputs",
    )
    ox.add_argument(
        "--opset", type=_positive_int, default=None, help="ONNX opset (default: 17, 18 with --dynamo)"
    )
    ox.add_argument("--dynamo", action="store_true", help="use torch's torch.export-based exporter")
    ox.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compare the file with PyTorch in onnxruntime (default)",
    )
    _add_trust_module(ox)

    d = sub.add_parser("demo", help="train on the real Fashion-MNIST (the main job of `make demo`)")
    d.add_argument(
        "--epochs", type=_positive_int, default=None, help="training epochs (default: fits the time budget)"
    )
    d.add_argument(
        "--budget", type=_positive_float, default=590.0, help="training time in seconds (default: 590)"
    )
    d.add_argument("--out", default="out/demo", help="output folder (default: %(default)s)")
    d.add_argument("--bs", type=_positive_int, default=256, help="batch size (default: %(default)s)")
    d.add_argument("--quick", action="store_true", help="a small subset and one epoch, for smoke tests")
    d.add_argument("--seed", type=int, default=42)
    d.add_argument(
        "--lr-max",
        type=_positive_float,
        default=None,
        help="peak lr (default: 10 x lr_find's valley, within [8e-3, 1.2e-2])",
    )
    d.add_argument(
        "--aug",
        choices=("flip", "affine", "none"),
        default=None,
        help="training augmentation: a horizontal flip (default), flip + rotate 5 + zoom 1.15, or none",
    )
    d.add_argument("--wd", type=float, default=None, help="decoupled weight decay (default: 0.05)")
    d.add_argument(
        "--opt",
        choices=("adam", "ranger"),
        default=None,
        help="ranger (Lookahead + RAdam) with a flat then cosine lr (default), or AdamW with one-cycle",
    )
    d.add_argument(
        "--whiten",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the stem's filters are the training images' principal components, frozen (default); "
        "--no-whiten: a stem trained from a random init",
    )
    d.add_argument(
        "--hard-keep",
        type=_keep_fraction,
        default=None,
        metavar="FRACTION",
        help="each epoch trains on this fraction of the training images, high losses first "
        "(HardExampleSampling; default: 1, all of them every epoch)",
    )
    mix = d.add_mutually_exclusive_group()
    mix.add_argument(
        "--mixup",
        type=_positive_float,
        metavar="ALPHA",
        help="train with MixUp(ALPHA), e.g. 0.4 (default: off)",
    )
    mix.add_argument(
        "--cutmix",
        type=_positive_float,
        metavar="ALPHA",
        help="train with CutMix(ALPHA), e.g. 1.0 (default: off)",
    )

    fp = sub.add_parser(
        "make-fashion-pets", help="build an Oxford-Pets-shaped JPEG folder from the real Fashion-MNIST"
    )
    fp.add_argument("out", help="folder to create")
    fp.add_argument("--n", type=_positive_int, default=7390, help="number of images (default: %(default)s)")
    fp.add_argument(
        "--seed", type=int, default=42, help="seed of the picks, sizes and tints (default: %(default)s)"
    )
    fp.add_argument(
        "--src", default=None, help="folder with the four IDX files (default: Debian's, or the cache)"
    )
    fp.add_argument(
        "--split",
        choices=["train", "test"],
        default="train",
        help="Fashion-MNIST split (default: %(default)s)",
    )
    return ap
