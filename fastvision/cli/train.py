"""The training commands: `train` (fit, check, checkpoint, resume and export) and `lr-find`."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from ..callback.resume import ResumableCheckpoint, ResumeFrom, latest_checkpoint
from ..callback.tracker import TerminateOnNaNCallback
from .data import bad_images_as_cli_errors, make_dls
from .parser import CLIError, Interrupted, TrainingFailed, check_out, full_disk_message

__all__ = ["train", "lr_find"]


def _check_arch(name: str) -> None:
    from ..vision.models import arch_meta

    try:
        arch_meta(name)
    except ValueError as e:
        raise CLIError(str(e).replace("Pass the model function itself for other architectures.", "")) from e


def _learner(args: argparse.Namespace, dls: Any) -> Any:
    from ..metrics import accuracy, error_rate
    from ..vision.learner import vision_learner

    try:
        return vision_learner(dls, args.arch, pretrained=args.pretrained, metrics=[error_rate, accuracy])
    except ConnectionError as e:
        raise CLIError(f"{e}\nOr add --no-pretrained to train from scratch.") from e


def _stages(learn: Any, args: argparse.Namespace, lr: float) -> list[tuple[Any, int, dict]]:
    """The fits of the run: `fine_tune`'s two (frozen head, then all) when pretrained, else one one-cycle fit."""
    if not args.pretrained:
        return [(None, args.epochs, {"lr_max": lr})]
    import inspect

    d = {k: p.default for k, p in inspect.signature(type(learn).fine_tune).parameters.items()}
    half = lr / 2
    return [
        (learn.freeze, d["freeze_epochs"], {"lr_max": slice(lr), "pct_start": 0.99}),
        (
            learn.unfreeze,
            args.epochs,
            {"lr_max": slice(half / d["lr_mult"], half), "pct_start": d["pct_start"], "div": d["div"]},
        ),
    ]


_RUN_KEYS = (
    "path",
    "labels",
    "valid_pct",
    "valid_folder",
    "seed",
    "size",
    "presize",
    "bs",
    "no_aug",
    "arch",
    "pretrained",
    "epochs",
)


def _resume_point(ckpts: Path, n_stages: int) -> tuple[int, Path | None]:
    """The stage to continue and its newest checkpoint (`(0, None)`: start from the beginning)."""
    for s in reversed(range(n_stages)):
        found = latest_checkpoint(ckpts, f"stage{s}")
        if found is not None:
            return s, found
    return 0, None


def _check_trained(learn: Any, n_epoch: int) -> None:
    """Raise `TrainingFailed` unless the last fit ran all epochs to a finite validation loss and finite weights."""
    import torch

    rec = learn.recorder
    col = rec.metric_names.index("valid_loss") - 1
    rows = [v for v in rec.values if len(v) > col]
    valid_loss = float(rows[-1][col]) if rows and rows[-1][col] is not None else float("nan")
    finite_weights = all(torch.isfinite(p).all() for p in learn.model.parameters())
    why = None
    if len(rows) < n_epoch:
        nan = next(
            (c.message for c in learn.cbs if isinstance(c, TerminateOnNaNCallback) and c.message), None
        )
        why = f"training stopped after {len(rows)} of {n_epoch} epochs" + (f" ({nan})" if nan else "")
    elif not math.isfinite(valid_loss) or not finite_weights:
        why = f"training diverged (validation loss {valid_loss}, weights {'finite' if finite_weights else 'not finite'})"
    if why:
        raise TrainingFailed(f"{why}. Nothing was exported. Try a lower --lr (or --lr find).")


def train(args: argparse.Namespace) -> None:
    """Train, report and export a classifier on an image folder (`fastvision train`).

    The model is exported only when every epoch ran and the validation loss and the weights are finite;
    otherwise the previous export is kept and the exit status is 1. A checkpoint is written after each
    epoch in `OUT/checkpoints`, so `--resume` continues an interrupted run (removed after a good export).
    """
    if args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        torchrun = [sys.executable, "-m", "torch.distributed.run"]  # torchrun of this very environment
        # forward the arguments without --nproc, which torchrun would take for an abbreviation of its own
        argv = sys.argv[1:]
        argv = [
            a for i, a in enumerate(argv) if not (a.startswith("--nproc") or i and argv[i - 1] == "--nproc")
        ]
        cmd = [*torchrun, f"--nproc_per_node={args.nproc}", "-m", "fastvision.cli", *argv]
        raise SystemExit(subprocess.call(cmd))
    from ..distributed import rank_distrib

    main = rank_distrib() == 0  # under torchrun every process trains (DDP); only rank 0 writes and prints
    out = Path(args.out).resolve()
    check_out(out)
    _check_arch(args.arch)
    run_file, ckpts = out / "run.json", out / "checkpoints"
    options = {k: str(getattr(args, k)) for k in _RUN_KEYS}
    previous = _read_run(run_file) if args.resume else None
    if args.resume and previous is None:
        raise CLIError(f"--resume: no interrupted run in '{out}' (no run.json). Start it without --resume.")
    if previous is not None:
        previous["options"].setdefault(
            "valid_folder", "none"
        )  # a run from before --valid-folder split at random
    if previous is not None and previous["options"] != options:
        diff = [
            f"--{k.replace('_', '-')} {previous['options'][k]} (now {v})"
            for k, v in options.items()
            if previous["options"].get(k) != v
        ]
        raise CLIError(f"--resume needs the options of the interrupted run: it used {', '.join(diff)}.")
    try:
        with bad_images_as_cli_errors(lambda: f" Then {_RESUME}" if _can_resume(ckpts, main) else ""):
            _train(args, out, options, previous, main)
    except OSError as e:  # a full disk is one line in `main`; here it also says how to go on
        msg = full_disk_message(e, out)
        if msg is None or not _can_resume(ckpts, main):
            raise
        raise CLIError(f"{msg} Then {_RESUME}") from e


_RESUME = "run the same command with --resume to continue from the last checkpoint."


def _can_resume(ckpts: Path, main: bool) -> bool:
    """Whether this run has written a checkpoint that `--resume` would continue from (this process prints)."""
    return main and any(ckpts.glob("stage*_*.pth"))


def _train(args: argparse.Namespace, out: Path, options: dict, previous: dict | None, main: bool) -> None:
    """`train` after its checks: data, learner, lr, the fits with their checkpoints, the export."""
    from ..utils import set_seed

    run_file, ckpts = out / "run.json", out / "checkpoints"
    set_seed(args.seed)  # the model's initial weights (the loaders take --seed themselves): the run repeats
    dls = make_dls(args)
    learn = _learner(args, dls)
    learn.path, learn.model_dir = out, "checkpoints"
    if args.precision != "fp32":
        learn.to_bf16() if args.precision == "bf16" else learn.to_fp16()
    if previous is not None:
        lr = previous["lr"]
    elif args.lr == "find":
        import matplotlib.pyplot as plt

        lr = learn.lr_find(show_plot=main).valley
        if main:
            plt.gcf().savefig(out / "lr_find.png", dpi=100)
            plt.close("all")
            print(f"lr_find: valley {lr:.2e} (plot: {out / 'lr_find.png'})")
        if not (math.isfinite(lr) and lr > 0):
            raise TrainingFailed(
                f"lr_find found no usable learning rate ({lr}). Pass one with --lr, e.g. --lr 1e-3."
            )
    else:
        lr = args.lr
    stages = _stages(learn, args, lr)
    start, ckpt = _resume_point(ckpts, len(stages)) if previous is not None else (0, None)
    if main and previous is None:
        for old in ckpts.glob("stage*_*.pth"):  # a new run: the last run's checkpoints are not ours
            old.unlink()
        _write_run(run_file, {"lr": lr, "options": options})
    if ckpt is not None and main:
        print(f"resuming from {ckpt}")
    every = max(1, len(dls.train))  # a checkpoint after each epoch's training batches
    for s, (prepare, n_epoch, kw) in enumerate(stages):
        if s < start:
            continue
        if prepare is not None:
            prepare()
        cbs: list[Any] = [ResumableCheckpoint(every_n_iters=every, fname=f"stage{s}", keep_last=2)]
        if s == start and ckpt is not None:
            cbs.append(ResumeFrom(ckpt))
        try:
            with warnings.catch_warnings():  # its advice is for Python callers; the command gives its own
                warnings.filterwarnings("ignore", message="Training interrupted")
                learn.fit_one_cycle(n_epoch, cbs=cbs, **kw)
        except KeyboardInterrupt:
            if _can_resume(ckpts, main):
                raise Interrupted(_RESUME.capitalize()) from None
            raise
        _check_trained(learn, n_epoch)
    exported = learn.export(out / "model")
    if main:
        print(f"validation: {dict(zip(learn.recorder.metric_names[2:-1], learn.recorder.values[-1][1:]))}")
        print(f"exported {exported}")
        for f in [*ckpts.glob("stage*_*.pth"), run_file]:
            with contextlib.suppress(OSError):
                f.unlink()


def _read_run(file: Path) -> dict | None:
    try:
        run = json.loads(file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CLIError(f"cannot read '{file}' to resume: {e}. Start the run again without --resume.") from e
    if not isinstance(run, dict) or not isinstance(run.get("options"), dict) or "lr" not in run:
        raise CLIError(f"'{file}' is not a fastvision run record. Start the run again without --resume.")
    return run


def _write_run(file: Path, run: dict) -> None:
    from ..checkpoint import atomic_write

    atomic_write(file, lambda f: f.write(json.dumps(run, indent=1).encode()))


def lr_find(args: argparse.Namespace) -> None:
    """Run the learning-rate finder and save its plot (`fastvision lr-find`)."""
    import matplotlib.pyplot as plt

    from ..utils import set_seed

    check_out(Path(args.out).parent)
    _check_arch(args.arch)
    set_seed(args.seed)
    with bad_images_as_cli_errors():
        learn = _learner(args, make_dls(args))
        sugg = learn.lr_find(show_plot=True)
    plt.gcf().savefig(args.out, dpi=100)
    print(f"valley {sugg.valley:.2e}; plot written to {args.out}")
