"""Compare trained learners: one table (final metrics, parameters, epochs, training time) and one bar plot.

```python
learners = {}
for arch in ('resnet18', 'resnet34'):
    learn = vision_learner(dls, arch, metrics=error_rate, cbs=TrainTimer())
    learn.fine_tune(2)
    learners[arch] = learn
print(compare_learners(learners))        # a table, best model first
plot_comparison(learners)                 # a matplotlib Figure: one bar per model
```

The metrics are the last epoch of each learner's last fit (`learn.recorder`). The `Recorder` keeps no
epoch durations as numbers, so the training time comes from a `TrainTimer` callback on the learner
(every training epoch of every fit since it was added), or from `times={name: seconds}`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .callback.core import Callback
from .utils import format_time

__all__ = ["TrainTimer", "ComparisonTable", "compare_learners", "plot_comparison"]


class TrainTimer(Callback):
    """Record the wall-clock seconds of every training epoch (`epoch_times`), across fits, for `compare_learners`.

    Only real fits count (not `lr_find`, `validate` or `get_preds`); `fine_tune`'s frozen and unfrozen
    fits add up. `total` is their sum.
    """

    order = 60  # after the Recorder (50): an epoch's time includes its validation and metrics

    def __init__(self) -> None:
        self.epoch_times: list[float] = []
        self._start: float | None = None

    def before_epoch(self) -> None:
        """Start the clock (fits only)."""
        self._start = time.perf_counter() if self.learn.is_fitting else None

    def after_epoch(self) -> None:
        """Append the epoch's duration (fits only)."""
        if self._start is not None and self.learn.is_fitting:
            self.epoch_times.append(time.perf_counter() - self._start)
        self._start = None

    @property
    def total(self) -> float:
        """Seconds of all recorded epochs."""
        return float(sum(self.epoch_times))


def _lower_is_better(name: str) -> bool:
    """The trackers' rule: a column whose name has 'loss' or 'error' is better when lower."""
    return "loss" in name or "error" in name


def _fmt(v: Any, col: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if col == "params":
        return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}K" if v >= 1e3 else str(v)
    if col == "time":
        return f"{v:.1f}s" if v < 60 else format_time(v)
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


class ComparisonTable:
    """Rows of `compare_learners`, best first; `str()` (or `print`) gives an aligned text table.

    Attributes:
        columns: 'model', the metric columns in recorder order, then 'params', 'epochs', 'time'.
        rows: one dict per learner, keyed by `columns` (None where a learner lacks a value).
        metric: the column the rows are sorted by; `higher_is_better` its direction.
    """

    def __init__(self, columns: list[str], rows: list[dict], metric: str, higher_is_better: bool) -> None:
        self.columns, self.rows, self.metric, self.higher_is_better = columns, rows, metric, higher_is_better

    @property
    def best(self) -> str:
        """The name of the best model by `metric`."""
        return self.rows[0]["model"]

    def column(self, name: str) -> list[Any]:
        """Return the values of column `name`, in row order."""
        if name not in self.columns:
            raise KeyError(f"No column {name!r}; the columns are {self.columns}.")
        return [r.get(name) for r in self.rows]

    def _cells(self) -> list[list[str]]:
        return [list(self.columns)] + [[_fmt(r.get(c), c) for c in self.columns] for r in self.rows]

    def __str__(self) -> str:
        cells = self._cells()
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = []
        for k, row in enumerate(cells):
            parts = [s.ljust(w) if i == 0 else s.rjust(w) for i, (s, w) in enumerate(zip(row, widths))]
            lines.append("  ".join(parts).rstrip())
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def to_markdown(self) -> str:
        """Return the table as Markdown (Jupyter shows this)."""
        cells = self._cells()
        head, body = cells[0], cells[1:]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def _named(learners: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    if isinstance(learners, Mapping):
        named = {str(k): v for k, v in learners.items()}
    else:
        named = {}
        for i, learn in enumerate(learners):
            base = type(getattr(learn, "model", learn)).__name__
            named[base if base not in named else f"{base}_{i}"] = learn
    if not named:
        raise ValueError("compare_learners needs at least one learner, got none.")
    return named


def _row(name: str, learn: Any, times: Mapping[str, float]) -> dict:
    rec = getattr(learn, "recorder", None)
    if rec is None or not getattr(rec, "values", None):
        raise ValueError(
            f"compare_learners: {name!r} has no recorded epoch (learn.recorder.values is empty). Train it "
            "first (learn.fit_one_cycle(...), learn.fine_tune(...)), or leave it out."
        )
    names = [n for n in rec.metric_names if n not in ("epoch", "time")]
    row: dict[str, Any] = {"model": name}
    row.update(
        {n: (float(v) if isinstance(v, (int, float)) else None) for n, v in zip(names, rec.values[-1])}
    )
    params = list(learn.model.parameters())
    row["params"] = sum(p.numel() for p in params)
    timer = next((c for c in getattr(learn, "cbs", []) if isinstance(c, TrainTimer)), None)
    row["epochs"] = len(timer.epoch_times) if timer is not None else len(rec.values)
    row["time"] = float(times[name]) if name in times else (timer.total if timer is not None else None)
    return row


def compare_learners(
    learners: Mapping[str, Any] | Sequence[Any],
    metric: str | None = None,
    higher_is_better: bool | None = None,
    times: Mapping[str, float] | None = None,
) -> ComparisonTable:
    """Return a table of trained learners: last-epoch metrics, parameter count, epochs and training time, best first.

    Args:
        learners: `{name: learner}`, or a list (named after their model classes).
        metric: the column to rank by (None: the first metric after 'valid_loss', else 'valid_loss').
        higher_is_better: the ranking direction (None: lower is better when the name has 'loss' or 'error').
        times: training seconds per name, overriding the learners' `TrainTimer` (None).
    """
    named = _named(learners)
    rows = [_row(n, learn, times or {}) for n, learn in named.items()]
    metrics: list[str] = []
    for r in rows:
        metrics += [c for c in r if c not in ("model", "params", "epochs", "time") and c not in metrics]
    if metric is None:
        after = metrics[metrics.index("valid_loss") + 1 :] if "valid_loss" in metrics else []
        metric = after[0] if after else ("valid_loss" if "valid_loss" in metrics else metrics[-1])
    if metric not in metrics:
        raise ValueError(f"compare_learners: no metric {metric!r}; the recorded columns are {metrics}.")
    higher = not _lower_is_better(metric) if higher_is_better is None else higher_is_better

    def key(r: dict) -> float:
        v = r.get(metric)
        if v is None or math.isnan(v):
            return math.inf  # missing values last
        return -v if higher else v

    rows.sort(key=key)
    return ComparisonTable(["model", *metrics, "params", "epochs", "time"], rows, metric, higher)


def plot_comparison(
    learners: Mapping[str, Any] | Sequence[Any] | ComparisonTable,
    metric: str | None = None,
    ax: Any = None,
    figsize: tuple[float, float] | None = None,
    **kwargs: Any,
) -> Any:
    """Draw one bar per model for `metric` (best first), labelled with its value, parameters and time; return the figure.

    Args:
        learners: what `compare_learners` takes, or its table.
        metric: the column to plot (None: the table's ranking metric).
        ax: draw into this matplotlib axes (default: a new figure).
        figsize: the new figure's size (default: 1.2 inches per model, at least 4 x 3).
        kwargs: `higher_is_better` and `times` of `compare_learners`.
    """
    import matplotlib.pyplot as plt

    table = (
        learners if isinstance(learners, ComparisonTable) else compare_learners(learners, metric, **kwargs)
    )
    metric = metric or table.metric
    values = table.column(metric)
    names = table.column("model")
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize or (max(4.0, 1.2 * len(names)), 3.0))
    else:
        fig = ax.figure
    heights = [v if v is not None else 0.0 for v in values]
    bars = ax.bar(range(len(names)), heights, color=["tab:green"] + ["tab:blue"] * (len(names) - 1))
    labels = []
    for r in table.rows:
        extra = [_fmt(r["params"], "params")] + (
            [_fmt(r["time"], "time")] if r.get("time") is not None else []
        )
        labels.append(f"{r['model']}\n{', '.join(extra)}")
    ax.set_xticks(range(len(names)), labels)
    ax.bar_label(bars, labels=[_fmt(v, metric) for v in values], padding=2)
    ax.set_ylabel(metric)
    ax.margins(y=0.15)  # room for the value labels
    higher = table.higher_is_better if metric == table.metric else not _lower_is_better(metric)
    ax.set_title(f"{metric} ({'higher' if higher else 'lower'} is better)")
    fig.tight_layout()
    return fig
