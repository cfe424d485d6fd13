"""The `interpret` command: the confusion matrix and most-confused pairs of an exported model on a folder."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from .data import bad_images_as_cli_errors, make_dls, valid_images
from .exported import load_model
from .parser import CLIError, check_out

__all__ = ["interpret"]


def interpret(args: argparse.Namespace) -> None:
    """Confusion matrix and most-confused pairs of an exported model on a folder (`fastvision interpret`)."""
    out = Path(args.out)
    check_out(out)
    inf = load_model(args.model, args.trust_module)
    dls = make_dls(args, aug=False)
    items = valid_images(dls, args)
    with bad_images_as_cli_errors(skip_option=False):
        preds = inf.predict(items)
    vocab = list(inf.vocab)
    actual = [str(a) for a in dls.valid_ds.target_labels()]  # the labels, without decoding the images again
    import numpy as np

    unknown = Counter(a for a in actual if a not in vocab)
    if len(unknown) and sum(unknown.values()) == len(actual):
        raise CLIError(
            f"none of the labels --labels {args.labels} gives ({_counts(unknown)}) is a class of the model "
            f"({', '.join(vocab[:10])}{', ...' if len(vocab) > 10 else ''}). Check --labels and the folder."
        )
    cm = np.zeros((len(vocab), len(vocab)), dtype=int)
    for a, (p, _i, _probs) in zip(actual, preds):
        if a in vocab:
            cm[vocab.index(a), vocab.index(str(p))] += 1
    _plot_cm(cm, vocab).savefig(out / "confusion_matrix.png", dpi=100)
    acc = np.trace(cm) / max(1, cm.sum())
    print(f"accuracy on the {int(cm.sum())} validation images: {acc:.4f}")
    if unknown:
        print(
            f"left out: {sum(unknown.values())} images whose label the model does not know ({_counts(unknown)})"
        )
    pairs = sorted(
        ((vocab[i], vocab[j], int(cm[i, j])) for i in range(len(vocab)) for j in range(len(vocab)) if i != j),
        key=lambda t: -t[2],
    )
    print("most confused (actual, predicted, count):")
    for a, p, n in [t for t in pairs if t[2] >= args.min_val]:
        print(f"  {a} -> {p}: {n}")
    print(f"wrote {out / 'confusion_matrix.png'}")


def _counts(c: Counter) -> str:
    """'a: 3, b: 1' for the five most common, then '...'."""
    top = c.most_common(5)
    return ", ".join(f"{k}: {n}" for k, n in top) + (", ..." if len(c) > 5 else "")


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
