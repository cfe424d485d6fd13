"""The data-folder commands of the command line: `train`, `lr-find` and `interpret`."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .callback.resume import ResumableCheckpoint, ResumeFrom, latest_checkpoint
from .callback.tracker import TerminateOnNaNCallback
from .cli import CLIError, TrainingFailed, load_model

__all__ = ["train", "lr_find", "interpret", "make_dls"]


def make_dls(args: argparse.Namespace, aug: bool = True) -> Any:
    """Build DataLoaders from the command's folder, label rule, sizes and split."""
    from .data.block import CategoryBlock, DataBlock, ImageBlock
    from .data.items import (
        ColReader,
        ColSplitter,
        RandomSplitter,
        get_image_files,
        parent_label,
    )
    from .vision.augment import aug_transforms
    from .vision.resize import Resize

    path = Path(args.path)
    if path.is_file():
        raise CLIError(f"'{path}' is a file; give the folder that holds your images (e.g. '{path.parent}').")
    if not path.is_dir():
        raise CLIError(f"no such folder '{path}'. Give the folder that holds your images.")
    presize = args.presize or round(args.size * 460 / 224)
    batch_tfms = aug_transforms(size=args.size, min_scale=0.75) if aug and not args.no_aug else []
    item_tfms = [Resize(presize if batch_tfms else args.size)]
    kw: dict[str, Any] = dict(blocks=(ImageBlock, CategoryBlock), item_tfms=item_tfms, batch_tfms=batch_tfms)
    labels = args.labels
    if labels == "parent":
        kw.update(
            get_items=get_image_files, get_y=parent_label, splitter=RandomSplitter(args.valid_pct, args.seed)
        )
        source: Any = path
    elif labels.startswith("re:"):
        _check_regex(labels[3:])
        kw.update(
            get_items=get_image_files,
            get_y=_NameRegex(labels[3:]),
            splitter=RandomSplitter(args.valid_pct, args.seed),
        )
        source = path
    elif labels.startswith("csv:"):
        rows = _read_csv(Path(labels[4:]) if Path(labels[4:]).is_absolute() else path / labels[4:])
        splitter = (
            ColSplitter("is_valid") if "is_valid" in rows[0] else RandomSplitter(args.valid_pct, args.seed)
        )
        kw.update(
            get_x=ColReader("fname", pref=f"{path}{os.sep}"), get_y=ColReader("label"), splitter=splitter
        )
        source = rows
    else:
        raise CLIError(f"--labels {labels!r} is not 'parent', 're:PATTERN' or 'csv:FILE'.")
    if labels != "csv" and not labels.startswith("csv:") and not get_image_files(path):
        raise CLIError(
            f"no images in '{path}' (looked for .jpg, .png, .gif, .bmp, .tif, .webp, recursively)."
        )
    try:
        dls = DataBlock(**kw).dataloaders(
            source, bs=args.bs, num_workers=args.num_workers, seed=args.seed, path=path
        )
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(str(e)) from e
    n_train, n_valid = len(dls.train_ds), len(dls.valid_ds)
    if n_valid == 0:
        raise CLIError(
            f"the validation set is empty ({n_train} images, --valid-pct {args.valid_pct}). Raise --valid-pct "
            "or add images."
        )
    if aug and len(dls.train) == 0:
        raise CLIError(
            f"no full training batch: {n_train} training images and --bs {args.bs}. Use --bs {max(1, n_train // 2)} "
            "or less."
        )
    return dls


def _check_regex(pat: str) -> None:
    """Refuse an invalid pattern, or one without the capture group that holds the label."""
    try:
        groups = re.compile(pat).groups
    except re.error as e:
        raise CLIError(f"--labels 're:{pat}' is not a valid regular expression: {e}.") from None
    if groups < 1:
        raise CLIError(
            f"--labels 're:{pat}' has no capture group: put the label part in parentheses, e.g. "
            "'re:(.+)_\\d+\\.jpg$'."
        )


class _NameRegex:
    """Label = group 1 of a regex on the file name (picklable, for worker processes)."""

    def __init__(self, pat: str):
        from .data.items import RegexLabeller

        self.labeller = RegexLabeller(pat)

    def __call__(self, o: Path) -> str:
        return self.labeller(Path(o).name)


def _read_csv(file: Path) -> list[dict[str, str]]:
    if not file.is_file():
        raise CLIError(f"no such CSV file '{file}'.")
    with open(file, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"fname", "label"} <= set(rows[0]):
        raise CLIError(f"'{file}' needs a header with columns fname,label (and optionally is_valid).")
    for r in rows:
        if "is_valid" in r:
            r["is_valid"] = r["is_valid"].strip().lower() in ("1", "true", "yes")
    return rows


def _check_arch(name: str) -> None:
    from .vision.models import arch_meta

    try:
        arch_meta(name)
    except ValueError as e:
        raise CLIError(str(e).replace("Pass the model function itself for other architectures.", "")) from e


def _check_out(out: Path, what: str = "--out") -> None:
    """Create the output folder and check it is writable, before any training time is spent."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise CLIError(f"cannot write to {what} '{out}': {e.strerror or e}. Choose a writable folder.") from e


def _learner(args: argparse.Namespace, dls: Any) -> Any:
    from .metrics import accuracy, error_rate
    from .vision.learner import vision_learner

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
    from .distributed import rank_distrib

    main = rank_distrib() == 0  # under torchrun every process trains (DDP); only rank 0 writes and prints
    out = Path(args.out).resolve()
    _check_out(out)
    _check_arch(args.arch)
    run_file, ckpts = out / "run.json", out / "checkpoints"
    options = {k: str(getattr(args, k)) for k in _RUN_KEYS}
    previous = _read_run(run_file) if args.resume else None
    if args.resume and previous is None:
        raise CLIError(f"--resume: no interrupted run in '{out}' (no run.json). Start it without --resume.")
    if previous is not None and previous["options"] != options:
        diff = [
            f"--{k.replace('_', '-')} {previous['options'][k]} (now {v})"
            for k, v in options.items()
            if previous["options"].get(k) != v
        ]
        raise CLIError(f"--resume needs the options of the interrupted run: it used {', '.join(diff)}.")
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
        cbs = [ResumableCheckpoint(every_n_iters=every, fname=f"stage{s}", keep_last=2)]
        if s == start and ckpt is not None:
            cbs.append(ResumeFrom(ckpt))
        learn.fit_one_cycle(n_epoch, cbs=cbs, **kw)
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
    from .checkpoint import atomic_write

    atomic_write(file, lambda f: f.write(json.dumps(run, indent=1).encode()))


def lr_find(args: argparse.Namespace) -> None:
    """Run the learning-rate finder and save its plot (`fastvision lr-find`)."""
    import matplotlib.pyplot as plt

    _check_out(Path(args.out).parent)
    _check_arch(args.arch)
    learn = _learner(args, make_dls(args))
    sugg = learn.lr_find(show_plot=True)
    plt.gcf().savefig(args.out, dpi=100)
    print(f"valley {sugg.valley:.2e}; plot written to {args.out}")


def interpret(args: argparse.Namespace) -> None:
    """Confusion matrix and most-confused pairs of an exported model on a folder (`fastvision interpret`)."""
    out = Path(args.out)
    _check_out(out)
    inf = load_model(args.model, args.trust_module)
    dls = make_dls(args, aug=False)
    items = list(dls.valid_ds.items)
    preds = inf.predict(items)
    vocab = list(inf.vocab)
    actual = [dls.valid_ds.decode(dls.valid_ds[i])[1] for i in range(len(items))]
    import numpy as np

    cm = np.zeros((len(vocab), len(vocab)), dtype=int)
    for a, (p, _i, _probs) in zip(actual, preds):
        if a in vocab:
            cm[vocab.index(a), vocab.index(str(p))] += 1
    _plot_cm(cm, vocab).savefig(out / "confusion_matrix.png", dpi=100)
    acc = np.trace(cm) / max(1, cm.sum())
    print(f"accuracy on the {len(items)} validation images: {acc:.4f}")
    pairs = sorted(
        ((vocab[i], vocab[j], int(cm[i, j])) for i in range(len(vocab)) for j in range(len(vocab)) if i != j),
        key=lambda t: -t[2],
    )
    print("most confused (actual, predicted, count):")
    for a, p, n in [t for t in pairs if t[2] >= args.min_val]:
        print(f"  {a} -> {p}: {n}")
    print(f"wrote {out / 'confusion_matrix.png'}")


def _plot_cm(cm: Any, vocab: list[str]) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, len(vocab) * 0.6),) * 2)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(vocab)), vocab, rotation=90)
    ax.set_yticks(range(len(vocab)), vocab)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Actual")
    for i in range(len(vocab)):
        for j in range(len(vocab)):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    fig.tight_layout()
    return fig
