"""The commands on an exported model: `predict` (classify image files) and `export-onnx` (convert it to ONNX)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .parser import CLIError

__all__ = ["load_model", "predict", "export_onnx"]


def _check_model_path(model: Path) -> None:
    if not (model.exists() or model.with_name(model.name + ".json").exists()):
        raise CLIError(
            f"no exported model at '{model}'. Train one with `fastvision train` or learn.export()."
        )


def load_model(model: str | Path, trusted_modules: list[str]) -> Any:
    """Load an exported model for a command, turning load errors into one-line `CLIError`s."""
    from ..export import load_learner

    model = Path(model)
    _check_model_path(model)
    try:
        return load_learner(model, trusted_modules=trusted_modules)
    except (ValueError, OSError, ImportError) as e:
        raise CLIError(f"cannot load the model '{model}': {e}") from e


def predict(args: argparse.Namespace) -> None:
    """Print the top classes of each image file, as a table or JSON (`fastvision predict`)."""
    from ..vision.image import ImageLoadError

    _check_model_path(Path(args.model))
    for p in args.images:
        if not Path(p).exists():
            raise CLIError(f"no such image file: '{p}'")
        if not Path(p).is_file():
            raise CLIError(f"'{p}' is not a file; give image files (a shell glob such as '{p}/*.jpg' works)")
    learn = load_model(args.model, args.trust_module)
    try:
        results = learn.predict(list(args.images))
    except ImageLoadError as e:
        raise CLIError(str(e)) from e
    rows: list[dict[str, Any]] = []
    for path, (label, _idx, probs) in zip(args.images, results):
        top = probs.topk(min(args.topk, len(probs)))
        rows.append(
            {
                "image": str(path),
                "label": str(label),
                "top": [
                    {"label": str(learn.vocab[int(i)] if learn.vocab else int(i)), "prob": round(float(p), 4)}
                    for p, i in zip(*top)
                ],
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    width = max(len(r["image"]) for r in rows)
    print(f"{'image':<{width}}  prediction")
    for r in rows:
        tops = ", ".join(f"{t['label']} {t['prob']:.3f}" for t in r["top"])
        print(f"{r['image']:<{width}}  {tops}")


def export_onnx(args: argparse.Namespace) -> None:
    """Convert an exported model to an ONNX file and print its input contract (`fastvision export-onnx`)."""
    from ..onnx import onnx_metadata

    out = Path(args.out)
    if out.suffix != ".onnx":
        raise CLIError(f"the output '{out}' should be an .onnx file, e.g. '{out.with_suffix('.onnx')}'.")
    if out.is_dir():
        raise CLIError(f"'{out}' is a folder; give the .onnx file to write, e.g. '{out / 'model.onnx'}'.")
    learn = load_model(args.model, args.trust_module)
    kwargs = dict(
        preprocess=args.preprocess, activation=args.activation, dynamo=args.dynamo, check=args.check
    )
    try:
        written = learn.export_onnx(out.resolve(), opset=args.opset, **kwargs)
    except (ImportError, ValueError, OSError, RuntimeError) as e:
        raise CLIError(str(e)) from e
    meta = onnx_metadata(written)
    inp, act = meta["input"], meta["output"]["activation"]
    steps = (["/ {:g}".format(inp["div"])] if inp["div"] else []) + (["normalise"] if inp["mean"] else [])
    print(f"wrote {written}")
    print(
        f"input '{inp['name']}': {inp['dtype']} {' x '.join(map(str, inp['shape']))} ({inp['layout']}, "
        f"{meta.get('image_mode')}); in the graph: {', '.join(steps) or 'nothing'} before the model"
    )
    what = "raw model outputs" if act == "none" else f"{act} probabilities"
    vocab = meta.get("vocab")
    print(
        f"output '{meta['output']['name']}': {what}"
        + (f" over {len(vocab)} classes {vocab}" if vocab else "")
    )
