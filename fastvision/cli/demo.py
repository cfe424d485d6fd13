"""The Fashion-MNIST commands: `demo` (train and report, the job of `make demo`) and `make-fashion-pets`."""

from __future__ import annotations

import argparse

from .parser import CLIError

__all__ = ["demo", "make_fashion_pets"]


def demo(args: argparse.Namespace) -> None:
    """Train the small ResNet on the real Fashion-MNIST and report (`fastvision demo`)."""
    from ..callback.mixup import CutMix, MixUp
    from ..demo import run_demo

    cbs = [MixUp(args.mixup)] if args.mixup else [CutMix(args.cutmix)] if args.cutmix else []
    run_demo(  # the export is written before the plots: a full disk at the end loses no training
        epochs=args.epochs,
        budget=args.budget,
        out=args.out,
        bs=args.bs,
        quick=args.quick,
        seed=args.seed,
        lr_max=args.lr_max,
        cbs=cbs,
        **{
            k: getattr(args, k)
            for k in ("aug", "wd", "opt", "hard_keep", "whiten")
            if getattr(args, k) is not None
        },
    )


def make_fashion_pets(args: argparse.Namespace) -> None:
    """Write an Oxford-Pets-shaped JPEG folder from Fashion-MNIST (`fastvision make-fashion-pets`)."""
    from ..data.fashion_pets import make_fashion_pets as make

    try:
        out = make(args.out, n=args.n, seed=args.seed, source=args.src, split=args.split)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise CLIError(str(e)) from e
    print(f"wrote {sum(1 for _ in out.glob('*.jpg'))} images to {out}")
