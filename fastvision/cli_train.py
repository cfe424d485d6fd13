"""The data-folder commands of the command line: `train`, `lr-find` and `interpret`."""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .cli import CLIError

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
        return DataBlock(**kw).dataloaders(
            source, bs=args.bs, num_workers=args.num_workers, seed=args.seed, path=path
        )
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(str(e)) from e


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


def _learner(args: argparse.Namespace, dls: Any) -> Any:
    from .metrics import accuracy, error_rate
    from .vision.learner import vision_learner

    try:
        return vision_learner(dls, args.arch, pretrained=args.pretrained, metrics=[error_rate, accuracy])
    except ConnectionError as e:
        raise CLIError(f"{e}\nOr add --no-pretrained to train from scratch.") from e


def train(args: argparse.Namespace) -> None:
    """Train, report and export a classifier on an image folder (`fastvision train`)."""
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dls = make_dls(args)
    learn = _learner(args, dls)
    if args.precision != "fp32":
        learn.to_bf16() if args.precision == "bf16" else learn.to_fp16()
    if args.lr == "find":
        import matplotlib.pyplot as plt

        lr = learn.lr_find(show_plot=main).valley
        if main:
            plt.gcf().savefig(out / "lr_find.png", dpi=100)
            plt.close("all")
            print(f"lr_find: valley {lr:.2e} (plot: {out / 'lr_find.png'})")
    else:
        lr = float(args.lr)
    if args.pretrained:
        learn.fine_tune(args.epochs, base_lr=lr)
    else:
        learn.fit_one_cycle(args.epochs, lr)
    exported = learn.export(out.resolve() / "model")
    if main:
        print(f"validation: {dict(zip(learn.recorder.metric_names[2:-1], learn.recorder.values[-1][1:]))}")
        print(f"exported {exported}")


def lr_find(args: argparse.Namespace) -> None:
    """Run the learning-rate finder and save its plot (`fastvision lr-find`)."""
    import matplotlib.pyplot as plt

    learn = _learner(args, make_dls(args))
    sugg = learn.lr_find(show_plot=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    plt.gcf().savefig(args.out, dpi=100)
    print(f"valley {sugg.valley:.2e}; plot written to {args.out}")


def interpret(args: argparse.Namespace) -> None:
    """Confusion matrix and most-confused pairs of an exported model on a folder (`fastvision interpret`)."""
    from .export import load_learner

    model = Path(args.model)
    if not (model.exists() or model.with_suffix(".json").exists()):
        raise CLIError(f"no exported model at '{model}'.")
    dls = make_dls(args, aug=False)
    inf = load_learner(model)
    items = list(dls.valid_ds.items)
    preds = inf.predict(items)
    vocab = list(inf.vocab)
    actual = [dls.valid_ds.decode(dls.valid_ds[i])[1] for i in range(len(items))]
    import numpy as np

    cm = np.zeros((len(vocab), len(vocab)), dtype=int)
    for a, (p, _i, _probs) in zip(actual, preds):
        if a in vocab:
            cm[vocab.index(a), vocab.index(str(p))] += 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
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
