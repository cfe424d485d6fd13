import gzip
import re

import numpy as np
import pytest
from PIL import Image

from fastvision.data.fashion_pets import FASHION_PETS_LABELS, make_fashion_pets
from fastvision.data.items import RegexLabeller, get_image_files, using_attr


def write_idx(path, arr):
    """Write `arr` (uint8) as a gzipped IDX file, the format of the Fashion-MNIST files."""
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture
def idx_folder(tmp_path):
    """Twelve 28 x 28 training images of classes 0..9, 0, 1 (and four test images) as IDX files."""
    rng = np.random.default_rng(0)
    src = tmp_path / "fmnist"
    src.mkdir()
    for pre, k in (("train", 12), ("t10k", 4)):
        write_idx(src / f"{pre}-images-idx3-ubyte.gz", rng.integers(0, 256, (k, 28, 28)))
        write_idx(src / f"{pre}-labels-idx1-ubyte.gz", np.arange(k) % 10)
    return src


def test_names_count_sizes_and_labels(idx_folder, tmp_path):
    out = make_fashion_pets(tmp_path / "pets", n=12, seed=1, source=idx_folder)
    files = get_image_files(out)
    assert out == tmp_path / "pets" and len(files) == 12
    names = sorted(f.name for f in files)
    assert all(re.fullmatch(r"[A-Za-z_]+_\d+\.jpg", nm) for nm in names)
    assert "tshirt_top_2.jpg" in names and "trouser_2.jpg" in names and "Bag_1.jpg" in names  # 0, 1 twice
    for f in files:
        with Image.open(f) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert 250 <= im.width <= 500 and 250 <= im.height <= 500
    label = using_attr(RegexLabeller(r"(.+)_\d+.jpg$"), "name")
    assert sorted({label(f) for f in files}) == sorted(FASHION_PETS_LABELS)
    assert not list(tmp_path.glob(".pets.partial-*"))


def test_same_seed_same_files_other_seed_differs(idx_folder, tmp_path):
    a = make_fashion_pets(tmp_path / "a", n=5, seed=3, source=idx_folder)
    b = make_fashion_pets(tmp_path / "b", n=5, seed=3, source=idx_folder)
    c = make_fashion_pets(tmp_path / "c", n=5, seed=4, source=idx_folder)
    read = lambda d: {f.name: f.read_bytes() for f in get_image_files(d)}  # noqa: E731
    assert read(a) == read(b)
    assert read(a) != read(c)


def test_test_split_and_rerun(idx_folder, tmp_path):
    out = make_fashion_pets(tmp_path / "t", n=4, source=idx_folder, split="test")
    assert len(get_image_files(out)) == 4
    stamp = {f: f.stat().st_mtime_ns for f in get_image_files(out)}
    assert make_fashion_pets(out, n=4, source=idx_folder, split="test") == out  # finished: returns at once
    assert {f: f.stat().st_mtime_ns for f in get_image_files(out)} == stamp


def test_interrupted_run_leaves_nothing_and_rerun_completes(idx_folder, tmp_path, monkeypatch):
    from fastvision.data import fashion_pets

    calls = {"n": 0}
    real = fashion_pets._photo

    def flaky(digit, rng):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(digit, rng)

    monkeypatch.setattr(fashion_pets, "_photo", flaky)
    with pytest.raises(KeyboardInterrupt):
        make_fashion_pets(tmp_path / "p", n=6, source=idx_folder)
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob(".p.partial-*"))
    monkeypatch.setattr(fashion_pets, "_photo", real)
    assert len(get_image_files(make_fashion_pets(tmp_path / "p", n=6, source=idx_folder))) == 6


def test_errors(idx_folder, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"train-images-idx3-ubyte.gz.*apt-get install dataset-fashion-mnist"
    ):
        make_fashion_pets(tmp_path / "x", n=2, source=tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"n=13 but the 'train' split holds 12 images"):
        make_fashion_pets(tmp_path / "x", n=13, source=idx_folder)
    with pytest.raises(ValueError, match=r"split='valid'; expected 'train' or 'test'"):
        make_fashion_pets(tmp_path / "x", split="valid", source=idx_folder)
    with pytest.raises(ValueError, match=r"n=0; expected a positive number"):
        make_fashion_pets(tmp_path / "x", n=0, source=idx_folder)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match=r"is not empty.*Remove it or choose another folder"):
        make_fashion_pets(tmp_path / "full", n=2, source=idx_folder)
    made = make_fashion_pets(tmp_path / "made", n=2, seed=1, source=idx_folder)
    with pytest.raises(FileExistsError, match=r"made with \{'n': 3, 'seed': 1, 'split': 'train'\}"):
        make_fashion_pets(made, n=3, seed=1, source=idx_folder)


def test_command_line(idx_folder, tmp_path, capsys):
    from fastvision.cli import main

    assert main(["make-fashion-pets", str(tmp_path / "cli"), "--n", "5", "--src", str(idx_folder)]) == 0
    assert len(list((tmp_path / "cli").glob("*.jpg"))) == 5 and "wrote 5 images" in capsys.readouterr().out
    assert main(["make-fashion-pets", str(tmp_path / "none"), "--src", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "apt-get install dataset-fashion-mnist" in err
