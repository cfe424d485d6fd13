"""The commands on an exported model: `predict` (classify image files) and `export-onnx` (convert it to ONNX)."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

from .parser import CLIError, no_images

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
    """Print the top classes of each image file (or folder's images), as a table or JSON (`fastvision predict`)."""
    from .data import bad_images_as_cli_errors

    _check_model_path(Path(args.model))
    files = _image_files(args.images)
    learn = load_model(args.model, args.trust_module)
    with bad_images_as_cli_errors():
        results = _predict_files(learn, files, skip=args.on_bad_image == "skip")
    rows: list[dict[str, Any]] = []
    for path, res in zip(files, results):
        if isinstance(res, str):
            rows.append({"image": str(path), "error": res})
            continue
        label, _idx, probs = res
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
    bad = [r["image"] for r in rows if "error" in r]
    if bad:
        listed = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        warnings.warn(f"{len(bad)} unreadable image(s) not predicted: {listed}.", stacklevel=2)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    width = max(len(r["image"]) for r in rows)
    print(f"{'image':<{width}}  prediction")
    for r in rows:
        if "error" in r:
            print(f"{r['image']:<{width}}  unreadable: {r['error']}")
            continue
        tops = ", ".join(f"{t['label']} {t['prob']:.3f}" for t in r["top"])
        print(f"{r['image']:<{width}}  {tops}")


def _image_files(specs: list[str]) -> list[Path]:
    """The files `predict` was given, with each folder replaced by its image files (recursively, sorted)."""
    from ..data.items import get_image_files

    files: list[Path] = []
    for p in map(Path, specs):
        if p.is_dir():
            found = sorted(get_image_files(p))
            if not found:
                raise no_images(p)
            files += found
        elif p.is_file():
            files.append(p)
        elif p.exists():
            raise CLIError(f"'{p}' is not a file or a folder; give image files or folders.")
        else:
            raise CLIError(f"no such image file: '{p}'")
    return files


_CHUNK = 256  # images per predict call: a chunk with an unreadable image is predicted again one by one


def _predict_files(learn: Any, files: list[Path], skip: bool) -> list[Any]:
    """`learn.predict` on `files` in chunks; with `skip`, an unreadable image gets its reason (a str) instead."""
    from ..vision.image import ImageLoadError

    out: list[Any] = []
    for start in range(0, len(files), _CHUNK):
        chunk = files[start : start + _CHUNK]
        try:
            out += learn.predict(chunk)
            continue
        except ImageLoadError:
            if not skip:
                raise
        for f in chunk:
            try:
                out += learn.predict([f])
            except ImageLoadError as e:
                out.append(e.reason)
    return out


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
