"""The `fastvision` command line: `main` parses the arguments and runs one command.

One module per job: `parser` (the commands, their options and the user-facing errors), `data` (the
DataLoaders of the image-folder commands), `train` (`train`, `lr-find`), `interpret`, `exported` (the
commands on an exported model: `predict`, `export-onnx`) and `demo` (`demo`, `make-fashion-pets`). A
command's module is imported only when that command runs, so `fastvision --help` starts fast.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable

from .parser import CLIError, Interrupted, build_parser, full_disk_message

__all__ = ["main", "build_parser"]


def _command(name: str) -> Callable[[argparse.Namespace], None]:
    """Return the function that runs the command `name`, importing its module."""
    if name in ("train", "lr-find"):
        from . import train

        return train.train if name == "train" else train.lr_find
    if name == "interpret":
        from .interpret import interpret

        return interpret
    if name in ("predict", "export-onnx"):
        from . import exported

        return exported.predict if name == "predict" else exported.export_onnx
    from . import demo

    return {"demo": demo.demo, "make-fashion-pets": demo.make_fashion_pets}[name]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status. Warnings print as one line each, like errors."""
    args = build_parser().parse_args(argv)
    default_format = warnings.formatwarning
    warnings.formatwarning = _one_line_warning(args.command)
    try:
        return _run(args)
    finally:
        warnings.formatwarning = default_format


def _one_line_warning(command: str) -> Callable[..., str]:
    """A `warnings.formatwarning` that writes `fastvision COMMAND: warning: MESSAGE` (no source line)."""

    def format_warning(message: Warning | str, *args: object, **kwargs: object) -> str:
        return f"fastvision {command}: warning: {' '.join(str(message).split())}\n"

    return format_warning


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command; turn the errors a user can fix into one line on stderr and an exit status."""
    try:
        _command(args.command)(args)
    except Interrupted as e:
        print(f"fastvision {args.command}: interrupted. {' '.join(str(e).split())}", file=sys.stderr)
        return e.code
    except CLIError as e:
        print(f"fastvision {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return e.code
    except OSError as e:  # a full disk, in any command: one line
        msg = full_disk_message(e, getattr(args, "out", None))
        if msg is None:
            raise
        print(f"fastvision {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastvision {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
