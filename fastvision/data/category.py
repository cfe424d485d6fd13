"""Target type transforms: the vocab (`CategoryMap`), `Categorize`, `MultiCategorize`, `RegressionSetup`.

They run once per item when a `Datasets` is built: `setup` receives the training split's raw targets
(so the vocab comes from the training split only), then every item is encoded. Each has a `loss_func`
property returning a *new* loss instance suited to the target, and `decodes` for display.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from ..transform import Transform

__all__ = ["CategoryMap", "Categorize", "MultiCategorize", "EncodedMultiCategorize", "RegressionSetup"]


class CategoryMap(list):
    """The vocab: unique values (NaN dropped), Python-sorted when `sort` (uppercase first), `o2i` inverse map.

    Args:
        col: the values (a list, or a pandas Series; a Categorical keeps its category order).
        sort: sort the unique values (default True).
        add_na: prepend '#na#' and map unknown values to 0 (default False).
        strict: for a Categorical, keep only the categories that occur in `col` (in category order;
            default False keeps them all). Plain values always give only those present.
    """

    def __init__(self, col: Iterable[Any], sort: bool = True, add_na: bool = False, strict: bool = False):
        if getattr(getattr(col, "dtype", None), "name", None) == "category":
            series: Any = col  # a pandas Categorical Series
            items = list(series.cat.categories)
            if strict:
                present = set(series.dropna().unique())
                items = [o for o in items if o in present]
        else:
            items = list(dict.fromkeys(o for o in col if o == o))  # unique, first-seen order, NaN dropped
            if sort:
                items = sorted(items)
        if add_na:
            items = ["#na#"] + [o for o in items if o != "#na#"]
        super().__init__(items)
        # fastai's attribute names; `sort` shadows `list.sort` on the instance
        self.sort, self.add_na, self.strict = sort, add_na, strict  # type: ignore[method-assign, assignment]
        self.o2i: dict[Any, int] = {o: i for i, o in enumerate(items)}

    @property
    def items(self) -> list:
        """The values as a plain list."""
        return list(self)

    def map_objs(self, objs: Iterable[Any]) -> list[int]:
        """Map values to indices."""
        return [self.o2i[o] for o in objs]

    def map_ids(self, ids: Iterable[int]) -> list:
        """Map indices to values."""
        return [self[int(i)] for i in ids]

    def __repr__(self) -> str:
        return f"CategoryMap({list.__repr__(self)})"


def _vocab_text(vocab: Sequence[Any], n: int = 20) -> str:
    shown = ", ".join(repr(v) for v in list(vocab)[:n])
    return f"[{shown}{', ...' if len(vocab) > n else ''}] ({len(vocab)} classes)"


class Categorize(Transform):
    """Map a label to its index in a vocab built from the training split (type transform of `CategoryBlock`).

    Args:
        vocab: fixed labels (default None: built by `setup` from the training labels).
        sort: sort the vocab (default True).
        add_na: reserve index 0 for unknown labels (default False).
    """

    order = 1

    def __init__(self, vocab: Iterable[Any] | None = None, sort: bool = True, add_na: bool = False):
        self.sort, self.add_na = sort, add_na
        self.vocab = None if vocab is None else CategoryMap(vocab, sort=sort, add_na=add_na)

    def setup(self, dl: Iterable[Any] | None = None) -> None:
        """Build the vocab from `dl`, the training labels, unless one was given."""
        if self.vocab is None and dl is not None:
            self.vocab = CategoryMap(list(dl), sort=self.sort, add_na=self.add_na)

    @property
    def c(self) -> int | None:
        """The number of classes."""
        return None if self.vocab is None else len(self.vocab)

    @property
    def loss_func(self):
        """A new `CrossEntropyLossFlat`."""
        from ..losses import CrossEntropyLossFlat

        return CrossEntropyLossFlat()

    def encodes(self, x: Any, split_idx: int | None = None) -> int:
        """Return the index of label `x`."""
        if self.vocab is None:
            raise RuntimeError("Categorize has no vocab: call setup(training_labels) or pass vocab=.")
        i = self.vocab.o2i.get(x)
        if i is None:
            if self.add_na:
                return 0
            raise ValueError(
                f"Label {x!r} is not in the vocab built from the training split {_vocab_text(self.vocab)}. "
                "Add it with CategoryBlock(vocab=[...]) or check the splitter: every class needs training items."
            )
        return i

    def decodes(self, x: Any) -> Any:
        """Return the label of index `x`."""
        if self.vocab is None or not (
            hasattr(x, "__index__") or (isinstance(x, torch.Tensor) and x.numel() == 1)
        ):
            return x
        return self.vocab[int(x)]


class MultiCategorize(Categorize):
    """Map a list of labels to a float one-hot vector over a vocab built from the training split."""

    def __init__(self, vocab: Iterable[Any] | None = None, add_na: bool = False):
        super().__init__(vocab, sort=True, add_na=add_na)

    def setup(self, dl: Iterable[Any] | None = None) -> None:
        """Build the vocab from the union of the training label lists, unless one was given."""
        if self.vocab is None and dl is not None:
            self.vocab = CategoryMap([o for labels in dl for o in _labels(labels)], add_na=self.add_na)

    @property
    def loss_func(self):
        """A new `BCEWithLogitsLossFlat`."""
        from ..losses import BCEWithLogitsLossFlat

        return BCEWithLogitsLossFlat()

    def encodes(  # type: ignore[override]  # one-hot vectors, where `Categorize` gives indices
        self, x: Any, split_idx: int | None = None
    ) -> torch.Tensor:
        """Return the one-hot float vector of the label list `x`."""
        if self.vocab is None:
            raise RuntimeError(
                "MultiCategorize has no vocab: call setup(training_label_lists) or pass vocab=."
            )
        labels = _labels(x)
        missing = [o for o in labels if o not in self.vocab.o2i]
        if missing and not self.add_na:
            raise ValueError(
                f"Labels {missing} are not in the vocab built from the training split {_vocab_text(self.vocab)}. "
                "Add them with MultiCategoryBlock(vocab=[...]) or check the splitter."
            )
        out = torch.zeros(len(self.vocab))
        out[[self.vocab.o2i.get(o, 0) for o in labels]] = 1.0
        return out

    def decodes(self, x: Any) -> Any:
        """Return the labels whose one-hot entry is above 0.5."""
        if isinstance(x, torch.Tensor) and x.ndim == 1 and self.vocab is not None:
            return [self.vocab[i] for i in torch.nonzero(x > 0.5).flatten().tolist()]
        return x


def _labels(x: Any) -> list:
    return [x] if isinstance(x, str) or not isinstance(x, Iterable) else list(x)


class EncodedMultiCategorize(MultiCategorize):
    """Targets already one-hot encoded: convert to a float tensor; `vocab` names the columns (required)."""

    def __init__(self, vocab: Iterable[Any]):
        super().__init__(vocab=list(vocab))
        self.vocab = CategoryMap(list(vocab), sort=False)

    def encodes(  # type: ignore[override]  # one-hot vectors, where `Categorize` gives indices
        self, x: Any, split_idx: int | None = None
    ) -> torch.Tensor:
        """Return `x` as a float tensor."""
        return torch.as_tensor(x, dtype=torch.float32)


class RegressionSetup(Transform):
    """Convert targets to float tensors; `c` (outputs) is `n_out` or inferred from the first target."""

    def __init__(self, c: int | None = None):
        self.c = c

    def setup(self, dl: Iterable[Any] | None = None) -> None:
        """Infer `c` from the first training target when not given."""
        if self.c is None and dl is not None:
            first = next(iter(dl), None)
            self.c = 1 if first is None else max(1, torch.as_tensor(first).numel())

    @property
    def loss_func(self):
        """A new `MSELossFlat`."""
        from ..losses import MSELossFlat

        return MSELossFlat()

    def encodes(self, x: Any, split_idx: int | None = None) -> torch.Tensor:
        """Return `x` as a float tensor."""
        return torch.as_tensor(x, dtype=torch.float32)
