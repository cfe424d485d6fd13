"""`ProgressCallback`: fastprogress bars and the per-epoch results table.

In a notebook: HTML bars and table. On a terminal: console bars and aligned text rows. Anywhere
else (stdout redirected to a file or CI log): no bars at all, just the header once and exactly one
plain text line per epoch.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from .core import Callback

__all__ = ["ProgressCallback", "format_row"]

_COMMENT_EVERY = 0.5  # seconds between reads of the smoothed loss for the bar's comment (one host sync each)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def format_row(values: list[Any], widths: list[int] | None = None) -> tuple[str, list[int]]:
    """Format one table row: floats with 6 decimals, others `str`; columns at least 8 wide, 2 spaces apart."""
    cells = [f"{v:.6f}" if isinstance(v, float) else str(v) for v in values]
    if widths is None:
        widths = [max(8, len(c)) for c in cells]
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip(), widths


class ProgressCallback(Callback):
    """Show progress bars (notebook or terminal) and write the metrics table through `learn.logger`.

    For runs of hundreds of tiny epochs, `show_every=N` writes the table row of every N-th epoch only
    (epochs 0, N, 2N, ...) and always the last epoch of the fit (also when a callback stops it early);
    the header and status messages are always written, and `learn.recorder.values` keeps every epoch.

    Args:
        mode: 'auto' (HTML in notebooks, bars on a TTY, plain lines otherwise), 'bar' or 'plain'.
        show_every: write the row of every `show_every`-th epoch (1: every epoch).
    """

    order = 60
    mbar: Any  # the fastprogress master bar during a fit, or None
    pbar: Any  # the fastprogress bar of the current pass, or None

    def __init__(self, mode: str = "auto", show_every: int = 1) -> None:
        if mode not in ("auto", "bar", "plain"):
            raise ValueError(f"ProgressCallback mode={mode!r} is not one of 'auto', 'bar', 'plain'.")
        if not isinstance(show_every, int) or isinstance(show_every, bool) or show_every < 1:
            raise ValueError(
                f"ProgressCallback show_every={show_every!r} must be an int >= 1 (1 writes every epoch, "
                "100 every 100th epoch and the last)."
            )
        self.mode, self.show_every = mode, show_every
        self._held_row: list[Any] | None = None

    def _bars(self) -> tuple[Any, Any] | None:
        if self.mode == "plain":
            return None
        from fastprogress.fastprogress import ConsoleMasterBar, ConsoleProgressBar, NBMasterBar, NBProgressBar

        if _in_notebook():
            return NBMasterBar, NBProgressBar
        if self.mode == "bar" or (hasattr(sys.stdout, "isatty") and sys.stdout.isatty()):
            return ConsoleMasterBar, ConsoleProgressBar
        return None

    def before_fit(self) -> None:
        """Open the master bar (if any), write the header and take over `learn.logger`."""
        learn = self.learn
        self._old_logger = learn.logger
        self._widths: list[int] | None = None
        self._held_row = None
        self._notes: list[str] = []  # status lines, written again after each notebook table update
        if learn.logger is _noop:  # no_logging(): no table, no bars
            self.mbar = self.pbar = None
            return
        bars = self._bars()
        self.mbar, self.pbar = None, None
        if bars is not None:
            self._mcls, self._pcls = bars
            self.mbar = self._mcls(range(learn.n_epoch))
        learn.logger = self._write_stats
        names = getattr(getattr(learn, "recorder", None), "metric_names", None)
        if names:
            self._write_stats(names)

    def before_epoch(self) -> None:
        """Advance the master bar."""
        if self.mbar is not None:
            self.mbar.update(self.learn.epoch)

    def before_train(self) -> None:
        """Start the training bar."""
        self._launch_pbar()

    def before_validate(self) -> None:
        """Start the validation bar."""
        self._launch_pbar()

    def _launch_pbar(self) -> None:
        if self.mbar is None:
            return
        self.pbar = self._pcls(
            self.learn.dl, parent=self.mbar, leave=False, total=self.learn.n_iter or "noinfer"
        )
        self.pbar.update(0)
        self._last_comment = time.perf_counter()

    def after_batch(self) -> None:
        """Advance the bar; refresh the loss comment at most every half second."""
        if self.pbar is None:
            return
        learn = self.learn
        now = time.perf_counter()
        if learn.training and now - self._last_comment > _COMMENT_EVERY:
            sl = getattr(learn, "smooth_loss", None)
            if sl is not None:
                self.pbar.comment = f"{float(sl):.4f}"
            self._last_comment = now
        self.pbar.update(learn.iter + 1)

    def after_train(self) -> None:
        """Close the training bar."""
        self._close_pbar()

    def after_validate(self) -> None:
        """Close the validation bar."""
        self._close_pbar()

    def _close_pbar(self) -> None:
        if self.pbar is not None:
            self.pbar.on_iter_end()
            self.pbar = None

    def after_fit(self) -> None:
        """Write the last epoch's row if `show_every` held it back, close the bars, give `learn.logger` back."""
        if self._held_row is not None and hasattr(self, "_old_logger"):
            row, self._held_row = self._held_row, None
            self._write_row(row)
        self._close_pbar()
        if getattr(self, "mbar", None) is not None:
            self.mbar.on_iter_end()
            self.mbar = None
        if hasattr(self, "_old_logger"):
            self.learn.logger = self._old_logger
            del self._old_logger

    def _write_stats(self, log: list[Any] | str) -> None:
        """Write a table row (a list) or a status message (a string, e.g. from `ReduceLROnPlateau`).

        With `show_every > 1` an epoch row is held back unless its epoch is a multiple of `show_every`
        or the last of the fit; a held row is written at the end of the fit if it is the last one.
        """
        if self.show_every > 1 and not isinstance(log, str) and self._is_epoch_row(log):
            epoch = log[0]
            if epoch % self.show_every and epoch != self.learn.n_epoch - 1:
                self._held_row = list(log)
                return
            self._held_row = None
        self._write_row(log)

    def _is_epoch_row(self, log: list[Any]) -> bool:
        """An epoch row starts with the epoch number (the header starts with the name 'epoch')."""
        return bool(log) and isinstance(log[0], int) and not isinstance(log[0], bool)

    def _write_row(self, log: list[Any] | str) -> None:
        nb = self.mbar is not None and self._mcls.__name__.startswith("NB")
        if isinstance(log, str):
            if nb:
                self._notes.append(log)
                self.mbar.write(log)
                return
            line = log
        elif nb:
            self.mbar.write([f"{v:.6f}" if isinstance(v, float) else str(v) for v in log], table=True)
            for note in self._notes:  # fastprogress redraws the table alone: put the status lines back
                self.mbar.write(note)
            return
        else:
            line, widths = format_row(log, self._widths)
            self._widths = self._widths or widths
        if self.mbar is not None:  # clear the bar line first
            print("\r" + " " * 100 + "\r", end="")
        print(line, flush=True)


def _noop(*args: Any, **kwargs: Any) -> None:
    """A logger that drops everything (used by `Learner.no_logging`)."""
