import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from fastvision.callback.resume import ResumableCheckpoint
from fastvision.cli import main
from fastvision.testing import make_image_folder

REPO = Path(__file__).resolve().parents[1]
TINY = ["--arch", "resnet_small", "--no-pretrained", "--epochs", "1", "--size", "32", "--bs", "4"]
TINY += ["--num-workers", "0"]


def test_train_predict_interpret_on_a_folder(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", classes=("red", "green"), n_per_class=8, layout="parent")
    out = tmp_path / "out"
    args = ["train", str(data), "--arch", "resnet_small", "--no-pretrained", "--epochs", "1", "--lr", "1e-2"]
    args += ["--size", "32", "--bs", "4", "--num-workers", "0", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "error_rate" in text and "exported" in text
    model = out / "model.json"
    assert model.exists() and len(list(out.glob("model.*.safetensors"))) == 1

    img = sorted(data.rglob("*.jpg"))[0]
    assert main(["predict", str(model), str(img), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["image"] == str(img) and rows[0]["label"] in ("red", "green")
    assert abs(sum(t["prob"] for t in rows[0]["top"]) - 1) < 1e-3

    args = ["interpret", str(data), "--model", str(model), "--size", "32", "--num-workers", "0"]
    assert main([*args, "--out", str(tmp_path / "interp")]) == 0
    assert "accuracy on the" in capsys.readouterr().out
    assert (tmp_path / "interp" / "confusion_matrix.png").stat().st_size > 1000


def test_interpret_leaves_out_and_counts_labels_the_model_does_not_know(tmp_path, exported, capsys):
    mixed = make_image_folder(tmp_path / "mixed", classes=("red", "blue"), n_per_class=10, layout="parent")
    args = ["--model", exported, "--size", "32", "--num-workers", "0", "--valid-pct", "0.5"]
    assert main([str(a) for a in ["interpret", mixed, *args, "--out", tmp_path / "i1"]]) == 0
    out = capsys.readouterr().out
    blue = int(out.split("left out: ")[1].split(" images whose label the model does not know (blue: ")[0])
    assert f"(blue: {blue})" in out and f"accuracy on the {10 - blue} validation images" in out
    other = make_image_folder(tmp_path / "other", classes=("blue", "pink"), n_per_class=6, layout="parent")
    code, err = cli_error(["interpret", other, *args, "--out", tmp_path / "i2"], capsys)
    assert (
        code == 2
        and "none of the labels --labels parent gives (" in err[0]
        and "is a class of the model" in err[0]
    )


def test_helpful_errors_for_wrong_path_and_empty_folder(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope"), "--no-pretrained"]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", str(tmp_path / "empty"), "--no-pretrained"]) == 2
    assert "no images in" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "missing.json"), "x.jpg"]) == 2
    assert "no exported model" in capsys.readouterr().err


def test_a_label_rule_that_gives_one_class_is_refused_for_training(tmp_path, capsys):
    one = make_image_folder(tmp_path / "one", classes=("cat",), n_per_class=10, layout="parent")
    code, err = cli_error(["train", one, *TINY, "--out", tmp_path / "out"], capsys)
    assert code == 2 and len(err) == 1, err
    assert "--labels parent gives one class ('cat') for the 10 images" in err[0] and "two or more" in err[0]
    pets = make_image_folder(tmp_path / "pets", classes=("cat", "dog"), n_per_class=6, layout="name")
    code, err = cli_error(["train", pets, *TINY, "--labels", r"re:(_)\d+", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "gives one class ('_')" in err[0], err  # the group takes the same text in every name
    assert "check that the pattern's group captures the class part" in err[0]


def _labels_csv(path, rows, header="fname,label,is_valid", bom=False, newline="\n"):
    text = newline.join([header, *(",".join(map(str, r)) for r in rows)]) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_train_and_interpret_take_labels_and_split_from_a_csv(tmp_path, folder, capsys, monkeypatch):
    """A spreadsheet's CSV (byte-order mark, CRLF) found in the current directory; its labels and is_valid rule."""
    files = sorted(folder.rglob("*.jpg"))  # red_0..5, green_0..5 under red/ and green/
    rows = [
        (f.relative_to(folder).as_posix(), "warm" if "red" in f.name else "cool", int(i % 3 == 0))
        for i, f in enumerate(files)
    ]
    monkeypatch.chdir(tmp_path)
    _labels_csv(tmp_path / "labels.csv", rows, bom=True, newline="\r\n")
    out = tmp_path / "out"
    assert (
        main(["train", str(folder), *TINY, "--lr", "1e-2", "--labels", "csv:labels.csv", "--out", str(out)])
        == 0
    )
    assert json.loads((out / "model.json").read_text())["vocab"] == ["cool", "warm"]
    capsys.readouterr()
    args = [
        "interpret",
        str(folder),
        "--model",
        str(out / "model.json"),
        "--size",
        "32",
        "--num-workers",
        "0",
    ]
    assert main([*args, "--labels", "csv:labels.csv", "--out", str(tmp_path / "i")]) == 0
    n_valid = sum(r[2] for r in rows)
    assert f"accuracy on the {n_valid} validation images" in capsys.readouterr().out


def test_csv_label_mistakes_are_one_line_naming_the_line(tmp_path, folder, exported, capsys):
    names = [f.relative_to(folder).as_posix() for f in sorted(folder.rglob("*.jpg"))]
    good = [(n, n.split("/")[0], 0) for n in names]
    cases = [
        ("header.csv", dict(rows=good, header="file,y,is_valid"), "its header is file,y,is_valid"),
        ("norows.csv", dict(rows=[]), "has a header and no rows"),
        ("label.csv", dict(rows=[*good[:3], (names[3], "", 0)]), "line 5: the label is empty"),
        ("blank.csv", dict(rows=[*good[:2], (), (names[3], "", 0)]), "line 5: the label is empty"),
        ("valid.csv", dict(rows=[(names[0], "red", "maybe"), *good[1:]]), "line 2: is_valid is 'maybe'"),
        ("twice.csv", dict(rows=[*good, (names[0], "red", 0)]), f"names '{names[0]}' on lines 2 and 14"),
        ("novalid.csv", dict(rows=good), "so the validation set is empty"),
        ("allvalid.csv", dict(rows=[(n, y, 1) for n, y, _ in good]), "so the training set is empty"),
        (
            "few.csv",
            dict(rows=[(n, y) for n, y, _ in good[:4]], header="fname,label"),
            "use --valid-pct 0.25 or more",
        ),
        ("gone.csv", dict(rows=[("red/nope.jpg", "red", 1), *good]), "names 1 file(s) not in"),
    ]
    for name, kw, match in cases:
        _labels_csv(folder / name, **kw)
        code, err = cli_error(
            ["train", folder, *TINY, "--labels", f"csv:{name}", "--out", tmp_path / "o"], capsys
        )
        assert code == 2 and len(err) == 1, (name, err)
        assert match in err[0], (name, err)
    assert "--on-bad-image skip" in err[0] and "line 2 'red/nope.jpg'" in err[0]
    code, err = cli_error(["interpret", folder, "--model", exported, "--labels", "csv:gone.csv"], capsys)
    assert code == 2 and "names 1 file(s) not in" in err[0] and "--on-bad-image" not in err[0], (
        err
    )  # no such option
    code, err = cli_error(["train", folder, *TINY, "--labels", "csv:nothere.csv"], capsys)
    assert code == 2 and err[0].endswith(
        f"no such CSV file 'nothere.csv' (looked in the image folder '{folder}' and in the current directory)."
    )


def test_csv_lines_naming_missing_files_are_left_out_on_request_with_a_one_line_warning(tmp_path, folder):
    names = [f.relative_to(folder).as_posix() for f in sorted(folder.rglob("*.jpg"))]
    _labels_csv(
        folder / "gone.csv",
        [("red/nope.jpg", "red"), *((n, n.split("/")[0]) for n in names)],
        header="fname,label",
    )
    res = run_cli(
        "train",
        folder,
        *TINY,
        "--labels",
        "csv:gone.csv",
        "--on-bad-image",
        "skip",
        "--bs",
        "64",
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.splitlines() == [
        f"fastvision train: warning: left out 1 CSV line(s) naming files not in '{folder}': line 2 'red/nope.jpg'.",
        "fastvision train: error: no full training batch: 10 training images and --bs 64. Use a --bs of at most 10, "
        "or add images.",
    ]


def test_a_train_and_val_layout_splits_by_folder(tmp_path, capsys):
    """ImageNet / imagenette layout: train/<class>/ and val/<class>/; images elsewhere are not items."""
    data = make_image_folder(
        tmp_path / "data", classes=("red", "green"), n_per_class=6, layout="train_valid", valid_per_class=2
    )
    (data / "valid").rename(data / "val")
    make_image_folder(data / "test", classes=("blue",), n_per_class=3)  # a label the training set lacks
    out = tmp_path / "out"
    assert main(["train", str(data), *TINY, "--lr", "1e-2", "--out", str(out)]) == 0
    assert (
        "split by folder: 12 training images in train/, 4 validation images in val/; 3 images in other folders not used"
        in capsys.readouterr().out
    )
    args = ["interpret", str(data), "--model", str(out / "model.json"), "--size", "32", "--num-workers", "0"]
    assert main([*args, "--out", str(tmp_path / "i")]) == 0
    assert "accuracy on the 4 validation images" in capsys.readouterr().out
    assert main([*args, "--valid-folder", "none", "--valid-pct", "0.5", "--out", str(tmp_path / "j")]) == 0
    out_text = (
        capsys.readouterr().out
    )  # a random split over all 19 images, the blue ones unknown to the model
    assert (
        "split by folder" not in out_text and "images whose label the model does not know (blue:" in out_text
    )
    for extra, match in [
        (
            ["--valid-folder", "nope"],
            f"--valid-folder nope: '{data}' has no nope/ folder (it has: test, train, val)",
        ),
        (["--valid-folder", "test", "--labels", "csv:x.csv"], "both set the split"),
    ]:
        code, err = cli_error(["train", data, *TINY, *extra, "--out", tmp_path / "o"], capsys)
        assert code == 2 and len(err) == 1 and match in err[0], (extra, err)


def test_regex_labels_that_do_not_match_name_the_file(tmp_path, capsys):
    data = make_image_folder(tmp_path / "pets", classes=("cat", "dog"), n_per_class=3, layout="name")
    code = main(
        ["train", str(data), "--labels", r"re:^(zzz)\d+", "--no-pretrained", "--arch", "resnet_small"]
    )
    assert code == 2
    assert "matched nothing" in capsys.readouterr().err


def test_demo_quick_runs_end_to_end(tmp_path):
    from fastvision.data.external import fashion_mnist_dir

    try:
        fashion_mnist_dir(download=False)
    except FileNotFoundError:
        pytest.skip(
            "Fashion-MNIST is not installed (make test installs dataset-fashion-mnist when run as root)"
        )
    out = tmp_path / "demo"
    res = subprocess.run(
        [sys.executable, "-m", "fastvision.cli", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "test accuracy" in res.stdout and "most confused" in res.stdout
    for f in ("lr_find.png", "confusion_matrix.png", "top_losses.png", "model.json"):
        assert (out / f).exists(), f
    assert len(list(out.glob("model.*.safetensors"))) == 1


def run_cli(*args, cwd=None):
    """Run `python -m fastvision.cli ARGS` as a user does; return the completed process."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "fastvision.cli", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def cli_error(args, capsys):
    """Run `main(args)` in this process; return (exit status, stderr lines)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "data", classes=("red", "green"), n_per_class=6, layout="parent")


@pytest.fixture
def exported(tmp_path, folder):
    from fastvision.data.block import CategoryBlock, DataBlock
    from fastvision.data.items import RandomSplitter, get_image_files, parent_label
    from fastvision.export import export
    from fastvision.vision.block import ImageBlock
    from fastvision.vision.learner import vision_learner
    from fastvision.vision.resize import Resize

    dblock = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=get_image_files,
        get_y=parent_label,
        splitter=RandomSplitter(seed=0),
        item_tfms=Resize(32),
    )
    dls = dblock.dataloaders(folder, bs=4, num_workers=0)
    return export(vision_learner(dls, "tinyvgg", pretrained=False), tmp_path / "exp" / "model")


def test_user_errors_are_one_line_and_exit_2(tmp_path, folder, exported, capsys):
    img = sorted(folder.rglob("*.jpg"))[0]
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.json").write_text('{"format": ')
    (tmp_path / "afile").write_text("x")
    cases = [
        (["train", folder, "--labels", "re:((", *TINY], "not a valid regular expression"),
        (["train", folder, "--labels", r"re:\d+", *TINY], "has no capture group"),
        (
            ["train", folder, "--arch", "nosucharch", "--no-pretrained"],
            "Unknown architecture name 'nosucharch'",
        ),
        (["train", folder, "--lr", "abc"], "argument --lr: expected a number"),
        (["train", folder, "--lr", "nan"], "argument --lr: must be a positive finite number"),
        (["train", folder, "--size", "0"], "argument --size: must be at least 1"),
        (["train", folder, "--valid-pct", "1.0"], "argument --valid-pct: must be between 0 and 1"),
        (["train", folder, *TINY, "--out", tmp_path / "afile" / "out"], "cannot write to --out"),
        (["train", img, *TINY], "is a file; give the folder"),
        (["train", folder, *TINY, "--bs", "64"], "no full training batch"),
        (["predict", exported, tmp_path / "notes.txt"], "notes.txt"),
        (["predict", exported, tmp_path / "nothing"], "no such image file: '"),
        (["predict", tmp_path, img], "is a folder"),
        (["predict", tmp_path / "notes.txt", img], "not a fastvision export"),
        (["predict", tmp_path / "broken.json", img], "not valid JSON"),
        (["predict", exported, img, "--topk", "0"], "argument --topk: must be at least 1"),
        (["predict", exported, img, "--topk", "-1"], "argument --topk: must be at least 1"),
    ]
    for args, match in cases:
        code, err = cli_error(args, capsys)
        assert code == 2 and len(err) == 1, (args, err)
        assert err[0].startswith(f"fastvision {args[0]}: error: ") and match in err[0], (args, err)


def test_predict_takes_folders_and_names_or_skips_unreadable_images(tmp_path, folder, exported, capsys):
    files = sorted(folder.rglob("*.jpg"))
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    assert main(["predict", str(exported), str(folder), "--json"]) == 0
    assert [r["image"] for r in json.loads(capsys.readouterr().out)] == [str(f) for f in files]
    code, err = cli_error(["predict", exported, tmp_path / "empty"], capsys)
    assert code == 2 and f"no images in '{tmp_path / 'empty'}'" in err[0], err
    code, err = cli_error(["predict", exported, files[0], bad], capsys)
    assert code == 2 and len(err) == 1, err
    assert (
        err[0].startswith(f"fastvision predict: error: cannot read image '{bad}'")
        and "--on-bad-image skip" in err[0]
    )
    with pytest.warns(UserWarning, match=f"1 unreadable image.s. not predicted: {bad}"):
        assert (
            main(["predict", str(exported), str(bad), str(folder), "--on-bad-image", "skip", "--json"]) == 0
        )
    rows = json.loads(capsys.readouterr().out)
    assert rows[0] == {"image": str(bad), "error": "PIL cannot identify the format (not an image?)"}
    assert [r["image"] for r in rows[1:]] == [str(f) for f in files] and all("label" in r for r in rows[1:])
    with pytest.warns(UserWarning):
        assert main(["predict", str(exported), str(files[0]), str(bad), "--on-bad-image", "skip"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[-1].split() == [
        str(bad),
        "unreadable:",
        "PIL",
        "cannot",
        "identify",
        "the",
        "format",
        "(not",
        "an",
        "image?)",
    ]
    assert table[1].startswith(str(files[0])) and "unreadable" not in table[1]


def test_errors_are_one_line_when_run_as_a_command(tmp_path, folder):
    """`python -m fastvision.cli` (what `fastvision` runs): errors raised in the command modules are caught too."""
    for args, match in [
        (["train", sorted(folder.rglob("*.jpg"))[0], *TINY], "is a file"),
        (["train", folder, "--labels", "re:((", *TINY], "not a valid regular expression"),
        (["train", folder, "--size", "0"], "must be at least 1"),
    ]:
        res = run_cli(*args, cwd=tmp_path)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr[-2000:]
        assert match in res.stderr


def test_export_onnx_command_writes_a_model_that_matches_predict(
    tmp_path, folder, exported, capsys, monkeypatch
):
    ort = pytest.importorskip("onnxruntime")
    from fastvision.export import load_learner

    out = tmp_path / "onnx" / "model.onnx"
    assert main(["export-onnx", str(exported), str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "uint8 batch x 3 x 32 x 32" in text and "softmax probabilities" in text
    inf = load_learner(exported)
    items = sorted(folder.rglob("*.jpg"))[:5]
    dl = inf.test_dl(items, bs=5)
    dl.after_batch = []  # the uint8 pixels at the model size: what the ONNX file takes
    raw = next(iter(dl))[0]
    got = ort.InferenceSession(str(out)).run(["output"], {"input": raw.numpy()})[0]
    assert abs(got - inf.get_preds(items).numpy()).max() < 1e-3

    raw_out = tmp_path / "raw.onnx"
    assert main(["export-onnx", str(exported), str(raw_out), "--no-preprocess", "--no-activation"]) == 0
    assert "float32 batch x 3 x 32 x 32" in capsys.readouterr().out
    cases = [
        (["export-onnx", tmp_path / "nope.json", out], "no exported model"),
        (["export-onnx", exported, tmp_path / "model.onx"], "should be an .onnx file"),
    ]
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the extra were not installed
    cases.append((["export-onnx", exported, tmp_path / "x.onnx"], "pip install fastvision[onnx]"))
    for args, match in cases:
        code, err = cli_error(args, capsys)
        assert code == 2 and len(err) == 1 and match in err[0], (args, err)


def test_a_diverged_run_keeps_the_previous_export_and_exits_1(tmp_path, folder, capsys):
    out = tmp_path / "out"
    assert main(["train", str(folder), *TINY, "--lr", "1e-2", "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name.startswith("model")}
    capsys.readouterr()
    code = main(["train", str(folder), *TINY, "--lr", "1e5", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "Nothing was exported" in err[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name.startswith("model")} == before


def test_the_seed_makes_a_training_run_repeat_whatever_the_global_rng(tmp_path, folder):
    args = ["train", str(folder), *TINY, "--lr", "1e-2", "--seed", "5"]
    weights = []
    for i in range(2):
        torch.manual_seed(i)  # a different global RNG each time: --seed alone must fix the run
        assert main([*args, "--out", str(tmp_path / f"run{i}")]) == 0
        from fastvision.export import load_learner

        weights.append(load_learner(tmp_path / f"run{i}" / "model.json").model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def _spoil(folder, n=1):
    """Overwrite `n` images of `folder` with bytes no decoder reads; return their paths."""
    bad = sorted(folder.rglob("*.jpg"))[:n]
    for p in bad:
        p.write_bytes(b"not an image")
    return bad


def test_train_names_an_unreadable_image_and_skips_it_on_request(tmp_path, folder, capsys):
    (bad,) = _spoil(folder)
    args = ["train", str(folder), *TINY, "--lr", "1e-2"]
    code, err = cli_error([*args, "--out", tmp_path / "a"], capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"fastvision train: error: cannot read image '{bad}'")
    assert "--on-bad-image skip" in err[0] and not (tmp_path / "a" / "model.json").exists()
    with pytest.warns(UserWarning, match=f"Left out 1 unreadable image.*{bad.name}"):
        assert main([*args, "--on-bad-image", "skip", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "model.json").exists()
    small = ["--arch", "resnet_small", "--no-pretrained", "--size", "32", "--bs", "4", "--num-workers", "0"]
    code, err = cli_error(["lr-find", folder, *small, "--out", tmp_path / "lr.png"], capsys)
    assert code == 2 and f"cannot read image '{bad}'" in err[0] and "--on-bad-image skip" in err[0]
    _spoil(folder, n=100)  # every image: the validation ones too
    args = [
        "interpret",
        folder,
        "--model",
        tmp_path / "b" / "model.json",
        "--size",
        "32",
        "--num-workers",
        "0",
    ]
    code, err = cli_error([*args, "--out", tmp_path / "interp"], capsys)
    assert code == 2 and len(err) == 1 and "error: cannot read image" in err[0], err
    assert err[0].endswith("Replace or remove it.")  # interpret has no --on-bad-image


def test_an_image_spoilt_mid_run_names_the_file_and_resume_finishes_the_run(
    tmp_path, folder, monkeypatch, capsys
):
    files = sorted(folder.rglob("*.jpg"))
    saved, real_save = {p: p.read_bytes() for p in files}, ResumableCheckpoint.save

    def save_then_spoil(self):  # the disk goes bad after the first checkpoint
        file = real_save(self)
        _spoil(folder, n=len(files))
        return file

    monkeypatch.setattr(ResumableCheckpoint, "save", save_then_spoil)
    args = ["train", folder, *TINY, "--epochs", "2", "--lr", "1e-2", "--out", tmp_path / "run"]
    code, err = cli_error(args, capsys)
    assert code == 2 and "cannot read image" in err[0], err
    assert err[0].endswith("Then run the same command with --resume to continue from the last checkpoint.")
    monkeypatch.setattr(ResumableCheckpoint, "save", real_save)
    for p, data in saved.items():
        p.write_bytes(data)
    assert main([str(a) for a in [*args, "--resume"]]) == 0
    assert "resuming from" in capsys.readouterr().out and (tmp_path / "run" / "model.json").exists()


def test_a_full_disk_is_one_line_that_says_how_to_resume(tmp_path, folder, monkeypatch, capsys):
    import errno

    real_save, saves = ResumableCheckpoint.save, []

    def save_until_full(self):
        if saves:  # the second checkpoint finds the disk full (as atomic_write reports it)
            raise OSError(errno.ENOSPC, "No space left on the disk while writing 'x.pth'. Free some space.")
        saves.append(real_save(self))
        return saves[-1]

    monkeypatch.setattr(ResumableCheckpoint, "save", save_until_full)
    args = ["train", folder, *TINY, "--epochs", "2", "--lr", "1e-2", "--out", tmp_path / "run"]
    code, err = cli_error(args, capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0] == (
        "fastvision train: error: No space left on the disk while writing 'x.pth'. Free some space. "
        "Then run the same command with --resume to continue from the last checkpoint."
    )
    assert saves[0].exists()


def test_a_full_disk_is_one_line_in_any_command(tmp_path, monkeypatch, capsys):
    import errno

    import fastvision.data.fashion_pets as fp

    def make(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fp, "make_fashion_pets", make)
    code, err = cli_error(["make-fashion-pets", tmp_path / "pets", "--n", "10"], capsys)
    assert code == 2 and err == [
        f"fastvision make-fashion-pets: error: No space left on device while writing in '{tmp_path / 'pets'}'. "
        "Free some space or write elsewhere."
    ]


def test_train_resume_continues_an_interrupted_run(tmp_path, folder, monkeypatch, capsys):
    args = ["train", str(folder), "--arch", "resnet_small", "--pretrained", "--epochs", "2", "--lr", "1e-2"]
    args += ["--size", "32", "--bs", "4", "--num-workers", "0", "--seed", "3"]
    torch.manual_seed(0)
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0  # frozen epoch, then 2 unfrozen ones
    saves, real_save = [], ResumableCheckpoint.save

    def save_then_stop(self):
        file = real_save(self)
        saves.append(file)
        if len(saves) == 2:  # after the frozen epoch and the first unfrozen one
            raise KeyboardInterrupt
        return file

    monkeypatch.setattr(ResumableCheckpoint, "save", save_then_stop)
    out = tmp_path / "run"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Training interrupted")  # Python advice: not shown
        assert main([*args, "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "fastvision train: interrupted. Run the same command with --resume to continue from the last checkpoint."
    )
    assert not (out / "model.json").exists() and (out / "run.json").exists()
    monkeypatch.setattr(ResumableCheckpoint, "save", real_save)
    torch.manual_seed(1)  # other initial weights: they must all come from the checkpoint
    capsys.readouterr()
    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert f"resuming from {saves[-1]}" in capsys.readouterr().out
    from fastvision.export import load_learner

    a, b = load_learner(tmp_path / "ref" / "model.json").model, load_learner(out / "model.json").model
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not list((out / "checkpoints").glob("*.pth")) and not (out / "run.json").exists()
    code, err = cli_error([*args, "--out", str(out), "--resume"], capsys)
    assert code == 2 and "no interrupted run" in err[0]


def test_demo_writes_its_model_in_the_out_folder(tmp_path, monkeypatch):
    """A relative --out (the default `out/demo`) holds model.json, not out/demo/out/demo/model.json."""
    from fastvision import demo
    from fastvision.data.external import TensorImageDataset

    def tiny_dls(bs=256, n_train=None, n_test=None, seed=42, device=None, aug=True, n_valid=0):
        from fastvision.data.load import DataLoaders
        from fastvision.vision.lighting import IntToFloatTensor

        x, y = torch.randint(0, 255, (48, 1, 28, 28), dtype=torch.uint8), torch.arange(48) % 10
        dsets = [TensorImageDataset(x[i::3], y[i::3], [str(c) for c in range(10)]) for i in (0, 1, 2)]
        return DataLoaders.from_dsets(
            *dsets, bs=8, after_batch=[IntToFloatTensor()], num_workers=0, device="cpu"
        )

    monkeypatch.setattr(demo, "fashion_mnist_dls", tiny_dls)
    monkeypatch.chdir(tmp_path)
    demo.run_demo(epochs=1, out="out/demo", bs=8, quick=True)
    assert (tmp_path / "out" / "demo" / "model.json").exists()
    assert not (tmp_path / "out" / "demo" / "out").exists()
