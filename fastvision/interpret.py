"""Interpret a trained classifier: confusion matrix, most confused pairs, top losses, per-class report.

Inference runs once, in `from_learner`; only the probabilities, targets, decoded predictions and
per-item losses are kept (O(items x classes) memory, never the inputs). `plot_top_losses` reloads just
the k images it draws from the loader's dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from .data.display import show_grid

__all__ = ["Interpretation", "ClassificationInterpretation"]


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class Interpretation:
    """Predictions, targets and per-item losses of a learner on one loader, computed once.

    Args:
        learn: the learner (used for `dls.vocab`).
        dl: the loader the predictions come from (its dataset is indexed to reload inputs).
        preds: activated predictions N x C.
        targs: targets (N class indices, or N x C one-hot).
        decoded: decoded predictions (None: argmax, or > 0.5 for one-hot targets).
        losses: per-item losses.
    """

    def __init__(self, learn: Any, dl: Any, preds: Any, targs: Any, decoded: Any, losses: Any):
        self.learn, self.dl = learn, dl
        self.preds, self.targs = torch.as_tensor(preds).detach().cpu(), torch.as_tensor(targs).detach().cpu()
        self.losses = torch.as_tensor(losses).detach().cpu().float()
        self.decoded = None if decoded is None else torch.as_tensor(decoded).detach().cpu()

    @classmethod
    def from_learner(
        cls,
        learn: Any,
        ds_idx: int = 1,
        dl: Any = None,
        act: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> Interpretation:
        """Run `learn.get_preds` once on `dls[ds_idx]` (or `dl`) and keep preds, targets, decoded and losses."""
        if dl is None:
            dl = learn.dls[ds_idx]
        preds, targs, decoded, losses = learn.get_preds(
            ds_idx=ds_idx, dl=dl, with_decoded=True, with_loss=True, act=act
        )
        return cls(learn, dl, preds, targs, decoded, losses)

    def top_losses(self, k: int | None = None, largest: bool = True, items: bool = False) -> tuple:
        """Return `(losses, dataset indices)` of the `k` largest (or smallest) losses, all when k is None.

        With `items=True`, also the dataset items (e.g. file paths) when the dataset has `items`.
        """
        k = len(self.losses) if k is None else min(int(k), len(self.losses))
        vals, idx = self.losses.topk(k, largest=largest)
        if not items:
            return vals, idx
        ds_items = getattr(self.dl.dataset, "items", None)
        return vals, idx, [ds_items[int(i)] for i in idx] if ds_items is not None else None

    def load_inputs(self, idxs: Sequence[int]) -> Any:
        """Reload the decoded inputs (uint8 or [0,1] images on the CPU) of dataset items `idxs` only."""
        idxs = [int(i) for i in idxs]
        sub = torch.utils.data.Subset(self.dl.dataset, idxs)
        dl = self.dl.new(sub, bs=max(1, len(idxs)), shuffle=False, drop_last=False, num_workers=0)
        b = next(iter(dl))
        return dl.decode(b)[0] if hasattr(dl, "decode") else b[0]

    def _ranks(self, k: int | Sequence[int], largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(k, int):
            return self.top_losses(k, largest)
        vals, idx = self.top_losses(None, largest)
        ranks = torch.as_tensor(list(k), dtype=torch.long)
        return vals[ranks], idx[ranks]


class ClassificationInterpretation(Interpretation):
    """Interpretation of a single-label (class indices), binary (one probability per item, `(n,)` or `(n, 1)`)
    or multi-label (one-hot targets) classifier.

    A binary classifier is shown as two classes, 0 and 1 (names from a 2-entry `dls.vocab`, else
    '0'/'1', or 'not <label>'/'<label>' for a 1-entry vocab); its probabilities become `(n, 2)`
    `[1 - p, p]` and it is decoded with `p > 0.5`.
    """

    decoded: torch.Tensor  # always decoded by `__init__`

    def __init__(self, learn: Any, dl: Any, preds: Any, targs: Any, decoded: Any, losses: Any):
        super().__init__(learn, dl, preds, targs, decoded, losses)
        vocab = getattr(getattr(learn, "dls", None), "vocab", None)
        self.binary = self.preds.ndim == 1 or (self.preds.ndim == 2 and self.preds.shape[-1] == 1)
        if self.binary:
            vocab = self._binary_setup(vocab)
        self.multi_label = self.targs.ndim == 2 and self.targs.shape == self.preds.shape
        d = self.decoded
        if self.multi_label:
            if (
                d is None
                or d.shape != self.preds.shape
                or d.is_floating_point()
                and ((d != 0) & (d != 1)).any()
            ):
                d = self.preds > 0.5
            self.decoded = d.bool()
        else:
            if d is None or d.ndim != 1:
                d = self.preds.argmax(-1)
            self.decoded, self.targs = d.long(), self.targs.long().view(-1)
        n = self.preds.shape[-1]
        self.vocab = [str(v) for v in vocab] if vocab is not None else [str(i) for i in range(n)]
        if len(self.vocab) != n:
            raise ValueError(f"The vocab has {len(self.vocab)} classes but the predictions have {n} columns.")

    def _binary_setup(self, vocab: Any) -> list[str]:
        """Turn one probability per item into two classes; return the two class names."""
        p = self.preds.reshape(-1).float()
        if self.targs.numel() != p.numel():
            raise ValueError(
                f"Binary predictions ({p.numel()} values) need one target per item; got targets of shape "
                f"{tuple(self.targs.shape)}."
            )
        if p.numel() and ((p < 0) | (p > 1)).any():
            raise ValueError(
                "Binary predictions must be probabilities in [0, 1], but some are outside: the loss has no "
                "sigmoid activation. Pass act=torch.sigmoid to ClassificationInterpretation.from_learner."
            )
        self.preds = torch.stack([1 - p, p], -1)
        d = self.decoded
        if d is None or d.numel() != p.numel() or (d.is_floating_point() and ((d != 0) & (d != 1)).any()):
            d = p > 0.5
        self.decoded = d.reshape(-1).long()
        self.targs = self.targs.reshape(-1).long()
        names = [str(v) for v in vocab] if vocab is not None else []
        if len(names) == 2:
            return names
        if len(names) == 1:
            return [f"not {names[0]}", names[0]]
        return ["0", "1"]

    def confusion_matrix(self) -> np.ndarray:
        """Return the C x C int matrix (rows actual, columns predicted); multi-label: C x 2 x 2 [[tn, fp], [fn, tp]]."""
        c = len(self.vocab)
        if self.multi_label:
            t, p = _np(self.targs).astype(bool), _np(self.decoded).astype(bool)
            tp, fp = (t & p).sum(0), (~t & p).sum(0)
            fn, tn = (t & ~p).sum(0), (~t & ~p).sum(0)
            return np.stack([np.stack([tn, fp], -1), np.stack([fn, tp], -1)], 1).astype(np.int64)
        t, p = _np(self.targs).astype(np.int64), _np(self.decoded).astype(np.int64)
        return np.bincount(t * c + p, minlength=c * c).reshape(c, c)

    def most_confused(self, min_val: int = 1) -> list[tuple[str, str, int]]:
        """Return `(actual, predicted, count)` for off-diagonal cells with count >= min_val, most frequent first.

        `min_val=0` lists every off-diagonal pair, zero counts included (as fastai).
        """
        if self.multi_label:
            raise ValueError(
                "most_confused needs single-label predictions; for multi-label data use confusion_matrix() "
                "(one 2 x 2 matrix per class) or print_classification_report()."
            )
        cm = self.confusion_matrix()
        np.fill_diagonal(cm, 0)
        cells = [
            (self.vocab[i], self.vocab[j], int(cm[i, j]))
            for i, j in zip(*np.nonzero(cm >= min_val))
            if i != j
        ]
        return sorted(cells, key=lambda o: -o[2])  # stable: ties stay in row-major order

    def plot_confusion_matrix(
        self,
        normalize: bool = False,
        title: str = "Confusion matrix",
        cmap: str = "Blues",
        norm_dec: int = 2,
        plot_txt: bool = True,
        **kwargs: Any,
    ) -> Figure:
        """Draw the confusion matrix (rows divided by their sums when `normalize`); kwargs go to `plt.figure`."""
        cm = self.confusion_matrix().astype(float)
        if normalize:
            cm = cm / np.maximum(cm.sum(axis=-1, keepdims=True), 1)
        mats, names = (list(cm), self.vocab) if self.multi_label else ([cm], [None])
        labels = (["no", "yes"], ["no", "yes"]) if self.multi_label else (self.vocab, self.vocab)
        ncols = min(len(mats), 4)
        nrows = -(-len(mats) // ncols)
        fig = plt.figure(**kwargs)
        for k, (m, name) in enumerate(zip(mats, names)):
            ax = fig.add_subplot(nrows, ncols, k + 1)
            ax.imshow(m, interpolation="nearest", cmap=cmap)
            ax.set_title(title if name is None else f"{name}")
            ax.set_xticks(range(len(labels[1])), labels[1], rotation=90)
            ax.set_yticks(range(len(labels[0])), labels[0], rotation=0)
            if plot_txt:
                thresh = m.max() / 2.0
                for i, j in np.ndindex(m.shape):
                    txt = f"{m[i, j]:.{norm_dec}f}" if normalize else f"{int(m[i, j])}"
                    ax.text(
                        j, i, txt, ha="center", va="center", color="white" if m[i, j] > thresh else "black"
                    )
            ax.set_ylabel("Actual")
            ax.set_xlabel("Predicted")
            ax.grid(False)
        if self.multi_label:
            fig.suptitle(title)
        fig.tight_layout()
        return fig

    def _per_class(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return per-class (true positives, predicted counts, actual counts, support)."""
        if self.multi_label:
            cm = self.confusion_matrix()
            tp, pred, act = cm[:, 1, 1], cm[:, 0, 1] + cm[:, 1, 1], cm[:, 1, 0] + cm[:, 1, 1]
        else:
            cm = self.confusion_matrix()
            tp, pred, act = np.diag(cm), cm.sum(0), cm.sum(1)
        return tp, pred, act, act

    def classification_report(self, digits: int = 2) -> str:
        """Return a per-class precision / recall / f1-score / support table (sklearn's layout)."""
        tp, pred, act, support = self._per_class()
        prec = np.divide(tp, pred, out=np.zeros(len(tp)), where=pred > 0)
        rec = np.divide(tp, act, out=np.zeros(len(tp)), where=act > 0)
        f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(len(tp)), where=(prec + rec) > 0)
        width = max(max(len(v) for v in self.vocab), len("weighted avg"), digits)
        heads = ["precision", "recall", "f1-score", "support"]
        out = "{:>{w}s} ".format("", w=width) + " {:>9}" * 4
        out = out.format(*heads) + "\n\n"
        row = "{:>{w}s} " + " {:>9.{d}f}" * 3 + " {:>9}\n"
        for name, p, r, f, s in zip(self.vocab, prec, rec, f1, support):
            out += row.format(name, p, r, f, int(s), w=width, d=digits)
        out += "\n"
        n = int(support.sum())
        if self.multi_label:
            mp = tp.sum() / max(pred.sum(), 1)
            mr = tp.sum() / max(act.sum(), 1)
            mf = 2 * mp * mr / (mp + mr) if mp + mr > 0 else 0.0
            out += row.format("micro avg", mp, mr, mf, n, w=width, d=digits)
        else:
            acc = tp.sum() / max(n, 1)
            out += ("{:>{w}s} " + " {:>9}" * 2 + " {:>9.{d}f} {:>9}\n").format(
                "accuracy", "", "", acc, n, w=width, d=digits
            )
        out += row.format("macro avg", prec.mean(), rec.mean(), f1.mean(), n, w=width, d=digits)
        wts = support / max(n, 1)
        out += row.format(
            "weighted avg", (prec * wts).sum(), (rec * wts).sum(), (f1 * wts).sum(), n, w=width, d=digits
        )
        return out

    def print_classification_report(self, digits: int = 2) -> None:
        """Print `classification_report()`."""
        print(self.classification_report(digits))

    def _label(self, v: torch.Tensor) -> str:
        if self.multi_label:
            return ";".join(self.vocab[i] for i in torch.nonzero(v).view(-1).tolist()) or "(none)"
        return self.vocab[int(v)]

    def plot_top_losses(self, k: int | Sequence[int], largest: bool = True, **kwargs: Any) -> Figure:
        """Draw the `k` items with the largest losses (or the ranks in `k`), titled 'pred/actual / loss / prob'.

        Only those items are reloaded from the dataset (with the loader's transforms). prob is the
        predicted class's probability (multi-label: the mean over the predicted labels). kwargs: `nrows`,
        `ncols`, `figsize` (see `show_images`).
        """
        losses, idx = self._ranks(k, largest)
        if len(idx) == 0:
            raise ValueError("plot_top_losses: nothing to draw (k=0 or an empty loader).")
        images = self.load_inputs(idx.tolist())
        titles = []
        for loss, i in zip(losses.tolist(), idx.tolist()):
            pred, actual = self._label(self.decoded[i]), self._label(self.targs[i])
            p, d = self.preds[i], self.decoded[i]
            # single-label: the predicted class's probability; multi-label: the mean over predicted labels
            prob = (
                float(p[d].mean())
                if self.multi_label and d.any()
                else float(p.max())
                if not self.multi_label
                else 0.0
            )
            titles.append(f"{pred}/{actual} / {loss:.2f} / {prob:.2f}")
        return show_grid(list(images), titles=titles, suptitle="Prediction/Actual/Loss/Probability", **kwargs)
