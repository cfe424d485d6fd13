import json
import subprocess
import sys

import pytest

from fastvision.cli import main
from fastvision.testing import make_image_folder


def test_train_predict_interpret_on_a_folder(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", classes=("red", "green"), n_per_class=8, layout="parent")
    out = tmp_path / "out"
    args = ["train", str(data), "--arch", "resnet_small", "--no-pretrained", "--epochs", "1", "--lr", "1e-2"]
    args += ["--size", "32", "--bs", "4", "--num-workers", "0", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "error_rate" in text and "exported" in text
    model = out / "model.json"
    assert model.exists() and (out / "model.safetensors").exists()

    img = sorted(data.rglob("*.jpg"))[0]
    assert main(["predict", str(model), str(img), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["image"] == str(img) and rows[0]["label"] in ("red", "green")
    assert abs(sum(t["prob"] for t in rows[0]["top"]) - 1) < 1e-3

    args = ["interpret", str(data), "--model", str(model), "--size", "32", "--num-workers", "0"]
    assert main([*args, "--out", str(tmp_path / "interp")]) == 0
    assert "accuracy on the" in capsys.readouterr().out
    assert (tmp_path / "interp" / "confusion_matrix.png").stat().st_size > 1000


def test_helpful_errors_for_wrong_path_and_empty_folder(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope"), "--no-pretrained"]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", str(tmp_path / "empty"), "--no-pretrained"]) == 2
    assert "no images in" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "missing.json"), "x.jpg"]) == 2
    assert "no exported model" in capsys.readouterr().err


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
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "test accuracy" in res.stdout and "most confused" in res.stdout
    for f in ("lr_find.png", "confusion_matrix.png", "top_losses.png", "model.json", "model.safetensors"):
        assert (out / f).exists(), f
