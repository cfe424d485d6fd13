import io
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from fastvision.data.block import CategoryBlock, DataBlock
from fastvision.data.items import RandomSplitter, get_image_files, parent_label
from fastvision.export import _probe_loss, export, load_learner
from fastvision.learner import Learner
from fastvision.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat
from fastvision.testing import make_image_folder, make_tensor_data
from fastvision.vision.block import ImageBlock
from fastvision.vision.image import ImageLoadError, ImageNotFoundError
from fastvision.vision.learner import vision_learner
from fastvision.vision.models import TinyVGG
from fastvision.vision.resize import Resize

REPO = Path(__file__).resolve().parents[1]


def make_dls(folder, bs=4, size=32):
    dblock = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=get_image_files,
        get_y=parent_label,
        splitter=RandomSplitter(seed=0),
        item_tfms=Resize(size, method="pad"),
    )
    return dblock.dataloaders(folder, bs=bs, num_workers=0, path=folder)


@pytest.fixture
def learn(parent_folder, tmp_path):
    torch.save(tvm.resnet18().state_dict(), tmp_path / "r18.pth")  # "pretrained": adds Normalize, freezes
    return vision_learner(make_dls(parent_folder), tvm.resnet18, weights=tmp_path / "r18.pth")


def run_py(code: str, cwd: Path) -> str:
    cwd.mkdir(parents=True, exist_ok=True)
    (cwd / "script.py").write_text(textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, "script.py"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout.strip().splitlines()[-1]


def test_load_in_fresh_process_elsewhere(parent_folder, tmp_path):
    dblock = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=get_image_files,
        get_y=lambda p: p.parent.name.upper(),
        splitter=RandomSplitter(seed=0),
        item_tfms=Resize(32),
    )
    dls = dblock.dataloaders(parent_folder, bs=4, num_workers=0)
    learn = vision_learner(dls, "tinyvgg", pretrained=False)
    jfile = export(learn, tmp_path / "out" / "model")
    items = [str(p) for p in dls.valid_ds.items]
    load = f"""
        import json
        from fastvision.export import load_learner
        learn = load_learner({str(jfile)!r})
        print(json.dumps([r[2].tolist() for r in learn.predict({items!r})]))
    """
    out = json.loads(run_py(load, tmp_path / "elsewhere"))
    np.testing.assert_allclose(out, learn.get_preds()[0].numpy(), atol=1e-5)


@pytest.mark.slow
def test_round_trip_in_fresh_process_with_lambda_get_y(tmp_path):
    train = f"""
        import json, torch
        from fastvision.testing import make_image_folder
        from fastvision.data.block import DataBlock, CategoryBlock
        from fastvision.vision.block import ImageBlock
        from fastvision.data.items import get_image_files, RandomSplitter
        from fastvision.vision.resize import Resize
        from fastvision.vision.learner import vision_learner
        from fastvision.export import export
        folder = make_image_folder("imgs", n_per_class=4, layout="parent")
        dblock = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
                           get_y=lambda p: p.parent.name.upper(), splitter=RandomSplitter(seed=1), item_tfms=Resize(24))
        dls = dblock.dataloaders(folder, bs=4, num_workers=0)
        learn = vision_learner(dls, "resnet_small", pretrained=False, arch_kwargs={{"widths": [8, 16]}})
        learn.fit(1)
        export(learn, {str(tmp_path / "out" / "model")!r})
        items = [str(p.resolve()) for p in dls.valid_ds.items]
        preds = learn.get_preds()[0]
        print(json.dumps({{"items": items, "preds": preds.tolist(), "vocab": list(map(str, dls.vocab))}}))
    """
    ref = json.loads(run_py(train, tmp_path / "train"))
    load = f"""
        import json
        from fastvision.export import load_learner
        learn = load_learner({str(tmp_path / "out" / "model.json")!r})
        res = learn.predict({ref["items"]!r})
        print(json.dumps({{"labels": [r[0] for r in res], "preds": [r[2].tolist() for r in res]}}))
    """
    out = json.loads(run_py(load, tmp_path / "elsewhere"))
    np.testing.assert_allclose(out["preds"], ref["preds"], atol=1e-5)
    assert out["labels"] == [ref["vocab"][int(np.argmax(p))] for p in ref["preds"]]
    assert set(ref["vocab"]) == {"CAT", "DOG"}


def test_files_are_data_only(learn, tmp_path):
    jfile = export(learn, tmp_path / "exp" / "export.pkl")  # a fastai-style name: the extension is dropped
    assert jfile == tmp_path / "exp" / "export.json"
    desc = json.loads(jfile.read_text())
    wname = desc["weights"]["file"]
    assert wname == f"export.{desc['weights']['sha256'][:16]}.safetensors"  # named by its content
    assert sorted(p.name for p in jfile.parent.iterdir()) == sorted(["export.json", wname])  # no temp files
    assert desc["model"]["arch"] == "resnet18" and desc["vocab"] == ["cat", "dog"]
    assert [t["type"].rsplit(".", 1)[1] for t in desc["batch_tfms"]] == ["IntToFloatTensor", "Normalize"]
    assert desc["item_tfms"][0]["args"]["method"] == "pad"
    assert desc["loss"] == {
        "name": "CrossEntropyLossFlat",
        "activation": "softmax",
        "decodes": "argmax",
        "thresh": 0.5,
    }
    raw = (jfile.parent / wname).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert len(raw) == 8 + header_len + max(
        v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"
    )
    assert not raw.startswith(b"\x80") and b"PK\x03\x04" not in raw[:4]  # not a pickle, not a torch zip
    sd = load_file(str(jfile.parent / wname))
    own = learn.model.state_dict()
    assert sd.keys() == own.keys() and all(
        torch.equal(sd[k], own[k].float() if own[k].is_floating_point() else own[k]) for k in sd
    )


def test_size_does_not_depend_on_data_or_batch_size(parent_folder, tmp_path):
    sizes = []
    for bs in (2, 8):
        learn = vision_learner(make_dls(parent_folder, bs=bs), "tinyvgg", pretrained=False)
        learn.get_preds()  # leaves the last batch on the learner
        jfile = export(learn, tmp_path / f"bs{bs}")
        assert str(parent_folder) not in jfile.read_text()  # no items, no paths
        sizes.append(next(tmp_path.glob(f"bs{bs}.*.safetensors")).stat().st_size)
    assert sizes[0] == sizes[1]


def test_preprocessing_matches_validation_and_predict_accepts_many_inputs(learn, tmp_path, parent_folder):
    inf = load_learner(export(learn, tmp_path / "m"))
    items = list(learn.dls.valid_ds.items)
    x_inf = next(iter(inf.test_dl(items, bs=4)))[0]
    x_val = next(iter(learn.dls.valid))[0]
    assert torch.equal(x_inf, x_val)
    path = items[0]
    img = Image.open(path).convert("RGB")
    variants = [
        path,
        str(path),
        img,
        path.read_bytes(),
        np.asarray(img),
        torch.from_numpy(np.array(img)).permute(2, 0, 1),
    ]
    results = [inf.predict(v) for v in variants]
    for label, _, probs in results:
        assert label in ("cat", "dog") and torch.allclose(probs, results[0][2], atol=1e-6)
    batch = inf.predict([items[1], items[0]])
    assert torch.allclose(batch[1][2], results[0][2], atol=1e-6) and len(batch) == 2
    assert torch.allclose(inf.get_preds(items), learn.get_preds()[0], atol=1e-5)
    assert inf.dls.vocab == ["cat", "dog"]


def test_predict_on_an_unreadable_image_names_it_with_advice_for_prediction(learn, tmp_path):
    inf = load_learner(export(learn, tmp_path / "m"))
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    good = list(learn.dls.valid_ds.items)[0]
    for item in (bad, [good, bad]):
        with pytest.raises(ImageLoadError, match=f"'{bad}': PIL cannot identify") as e:
            inf.predict(item)
        assert "verify_images(files)" in str(e.value) and "on_bad_image" not in str(e.value)
    with pytest.raises(ImageNotFoundError, match="no such file. Check the path"):
        inf.predict(tmp_path / "gone.jpg")


def test_a_learner_trains_further_from_an_export(parent_folder, tmp_path):
    """learn.load('model.json') takes the export's weights; other classes need strict='head'."""
    src = vision_learner(make_dls(parent_folder), "tinyvgg", pretrained=False)
    src.fit(1, 1e-2)
    jfile = export(src, tmp_path / "m")
    inf = load_learner(jfile)
    with pytest.raises(
        AttributeError, match=r"InferenceLearner has no fine_tune: it predicts.*learn.load\('model.json'\)"
    ):
        inf.fine_tune(1)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = inf.nope
    learn = vision_learner(make_dls(parent_folder), "tinyvgg", pretrained=False)
    x = learn.dls.valid.one_batch()[0]
    assert learn.load(jfile) is learn
    learn.model.eval()
    with torch.inference_mode():
        assert torch.allclose(learn.model(x), inf.model(x), atol=1e-5)
    learn.fit(1, 1e-3)  # an optimizer is made for the loaded weights

    other = make_image_folder(tmp_path / "other", classes=("ant", "bee", "cow"), n_per_class=4)
    new = vision_learner(make_dls(other), "tinyvgg", pretrained=False)
    head = {k: v.clone() for k, v in new.model.state_dict().items() if k.startswith("1.")}
    with pytest.raises(
        ValueError,
        match=r"trained for the classes \['cat', 'dog'\] and these DataLoaders have \['ant', 'bee', 'cow'\]",
    ):
        new.load(jfile)
    with pytest.warns(UserWarning, match="head does not fit") as w:
        new.load(next(tmp_path.glob("m.*.safetensors")), strict="head")
    assert w[0].filename == __file__  # the warning names the caller's line
    body = {k: v for k, v in src.model.state_dict().items() if k.startswith("0.")}
    assert all(torch.equal(new.model.state_dict()[k], v) for k, v in body.items())
    assert all(torch.equal(new.model.state_dict()[k], v) for k, v in head.items())  # its own fresh head
    jfile.write_text(jfile.read_text().replace(json.loads(jfile.read_text())["weights"]["sha256"], "0" * 64))
    with pytest.raises(ValueError, match="checksum differs"):
        learn.load(jfile)


def test_refuses_pickles_unless_trusted(tmp_path):
    f = tmp_path / "export.pkl"
    f.write_bytes(pickle.dumps({"learner": "pretend"}))
    with pytest.raises(ValueError, match="trust_pickle=True"):
        load_learner(f)
    with pytest.warns(UserWarning, match="runs any code"):
        assert load_learner(f, trust_pickle=True) == {"learner": "pretend"}
    with pytest.raises(FileNotFoundError, match="learn.export"):
        load_learner(tmp_path / "missing")
    with pytest.raises(
        FileNotFoundError,
        match=r"No export at 'gone.pkl' in '.*' \(no gone.json or gone.pkl.json\)\..*under learn.path",
    ):
        load_learner("gone.pkl")  # fastai's habit: export('export.pkl') wrote export.json under learn.path


def test_checksum_and_version_are_checked(parent_folder, tmp_path):
    learn = vision_learner(make_dls(parent_folder), "tinyvgg", pretrained=False)
    jfile = export(learn, tmp_path / "m")
    desc = json.loads(jfile.read_text())
    jfile.write_text(json.dumps({**desc, "format_version": 99}))
    with pytest.raises(ValueError, match="Upgrade fastvision"):
        load_learner(jfile)
    jfile.write_text(json.dumps(desc))
    w = tmp_path / desc["weights"]["file"]
    assert load_learner(w).vocab == ["cat", "dog"]  # the weights file names its export too
    w.write_bytes(w.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ValueError, match="checksum"):
        load_learner(tmp_path / "m")


def test_models_outside_the_registry(parent_folder, tmp_path):
    dls = make_dls(parent_folder)
    with pytest.raises(ValueError, match="LazyLinear is not initialised yet: run a batch"):
        export(Learner(dls, nn.Sequential(nn.Flatten(), nn.LazyLinear(2))), tmp_path / "a")

    class Local(nn.Module):  # not importable and not made of torch.nn layers applied in order
        def __init__(self, n=2):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, n)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    with pytest.raises(ValueError, match=r"inside a function.*trusted_modules=\['mynets'\]"):
        export(Learner(dls, Local()), tmp_path / "b", model_kwargs={"n": 2})

    def my_arch():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    with pytest.raises(ValueError, match="AdaptiveConcatPool2d is not its sub-modules applied in order"):
        export(vision_learner(dls, my_arch, pretrained=False), tmp_path / "e")
    custom = vision_learner(
        dls, "tinyvgg", pretrained=False, custom_head=nn.Sequential(nn.Flatten(), nn.LazyLinear(2))
    )
    with pytest.raises(ValueError, match="vision_learner"):
        export(custom, tmp_path / "c")
    # an importable class with its constructor arguments round-trips
    learn = Learner(dls, TinyVGG(n_in=3, n_out=2, img_size=32))
    jfile = export(learn, tmp_path / "d")
    assert json.loads(jfile.read_text())["model"] == {
        "kind": "class",
        "class": "fastvision.vision.models.TinyVGG",
        "kwargs": {"n_in": 3, "n_out": 2, "hidden": 10, "img_size": 32},
    }
    inf = load_learner(jfile)
    assert torch.allclose(inf.get_preds(list(dls.valid_ds.items)), learn.get_preds()[0], atol=1e-5)


def _tensor_dls(channels=1, size=28, n=24, uint8=False):
    from torch.utils.data import TensorDataset

    from fastvision.data.load import DataLoaders

    x, y = make_tensor_data(n, 2, size=size, channels=channels, seed=0)
    if uint8:
        x = (x * 255).round().to(torch.uint8)
    return DataLoaders.from_dsets(
        TensorDataset(x[:16], y[:16]), TensorDataset(x[16:], y[16:]), bs=4, num_workers=0, device="cpu"
    )


def test_sequential_and_notebook_models_export_without_pickle_and_predict_image_files(tmp_path):
    """The Fashion-MNIST tutorial: a TinyVGG class defined in the notebook (`input_shape=1`), trained on
    ToTensor-style float tensors in [0, 1]; then `predict` on a PNG file (an RGB one, too)."""

    class NotebookTinyVGG(nn.Module):
        def __init__(self, input_shape, hidden_units, output_shape):
            super().__init__()
            self.block_1 = nn.Sequential(
                nn.Conv2d(input_shape, hidden_units, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
            )
            self.block_2 = nn.Sequential(
                nn.Conv2d(hidden_units, hidden_units, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
            )
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(hidden_units * 7 * 7, output_shape))

        def forward(self, x):
            return self.classifier(self.block_2(self.block_1(x)))

    dls = _tensor_dls()
    for model in (NotebookTinyVGG(1, 4, 2), nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 2))):
        learn = Learner(dls, model, loss_func=CrossEntropyLossFlat())
        jfile = export(learn, tmp_path / type(model).__name__)
        desc = json.loads(jfile.read_text())
        assert desc["model"]["kind"] == "nn" and desc["image_mode"] == "L"
        assert desc["input"]["channels"] == 1 and desc["input"]["size"] == [28, 28]
        assert desc["input"]["source"] == "tensor" and desc["input"]["item_dtype"] == "float32"
        inf = load_learner(jfile)
        x = dls.valid_ds[0][0]  # 1 x 28 x 28 float in [0, 1]
        png = tmp_path / "digit.png"
        pixels = (x[0] * 255).round().to(torch.uint8)
        Image.fromarray(pixels.numpy(), mode="L").save(png)
        rgb = tmp_path / "digit_rgb.png"
        Image.fromarray(pixels.numpy(), mode="L").convert("RGB").resize((56, 56)).save(rgb)
        with torch.no_grad():
            want = learn.model.eval()(pixels.float().div(255)[None, None]).softmax(-1)[0]
        _, _, probs = inf.predict(png)
        assert torch.allclose(probs, want, atol=1e-5)
        assert inf.predict(rgb)[2].shape == (2,)  # decoded as L and resized to 28 x 28


def test_a_model_whose_forward_is_not_its_layers_in_order_is_refused(tmp_path):
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pool, self.fc = (
                nn.Conv2d(1, 1, 3, padding=1),
                nn.AdaptiveAvgPool2d(1),
                nn.Linear(1, 2),
            )

        def forward(self, x):
            return self.fc(self.pool(x + self.conv(x)).flatten(1))

    with pytest.raises(ValueError, match="forward of .*Residual is not its sub-modules applied in order"):
        export(Learner(_tensor_dls(), Residual(), loss_func=CrossEntropyLossFlat()), tmp_path / "r")


def test_input_contract_comes_from_the_data_not_from_a_keyword(parent_folder, tmp_path):
    """fastvision's TinyVGG defaults to n_in=1: trained on 1-channel uint8 tensors, predict decodes files as L."""
    dls = _tensor_dls(uint8=True)
    from fastvision.vision.lighting import IntToFloatTensor

    dls.add_tfms([IntToFloatTensor()])
    learn = Learner(dls, TinyVGG(n_out=2), loss_func=CrossEntropyLossFlat())
    inf = load_learner(export(learn, tmp_path / "m"))
    assert inf.description["image_mode"] == "L"
    img = sorted(parent_folder.rglob("*.jpg"))[0]  # an RGB photo of another size
    label, _, probs = inf.predict(img)
    assert probs.shape == (2,) and torch.isfinite(probs).all()
    # the same model fed 3-channel data exports as RGB, whatever its keyword says
    learn3 = Learner(
        _tensor_dls(channels=3, uint8=True), TinyVGG(n_in=3, n_out=2), loss_func=CrossEntropyLossFlat()
    )
    learn3.dls.add_tfms([IntToFloatTensor()])
    assert load_learner(export(learn3, tmp_path / "m3")).description["image_mode"] == "RGB"


def test_loading_never_imports_a_module_it_was_not_told_to_trust(parent_folder, tmp_path):
    """A `fv_plugins.py` next to model.json must not run when the export (or the CLI) loads it."""
    folder = tmp_path / "downloaded"
    learn = Learner(make_dls(parent_folder), TinyVGG(n_in=3, n_out=2, img_size=32))
    jfile = export(learn, folder / "model")
    desc = json.loads(jfile.read_text())
    desc["model"]["class"] = "fv_plugins.TinyVGG"
    jfile.write_text(json.dumps(desc))
    (folder / "fv_plugins.py").write_text(
        "import pathlib\npathlib.Path('PWNED').write_text('ran')\nfrom fastvision.vision.models import TinyVGG\n"
    )
    img = sorted(parent_folder.rglob("*.jpg"))[0]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = "from fastvision.export import load_learner; load_learner('model.json')"
    res = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True)
    assert res.returncode != 0 and "trusted_modules=['fv_plugins']" in res.stderr
    cli = [sys.executable, "-m", "fastvision.cli", "predict", "model.json", str(img)]
    res = subprocess.run(cli, cwd=folder, env=env, capture_output=True, text=True)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Refusing to import 'fv_plugins'" in res.stderr
    assert not (folder / "PWNED").exists()
    # trusted explicitly, it is imported and loads
    res = subprocess.run(
        [*cli, "--trust-module", "fv_plugins"], cwd=folder, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert (folder / "PWNED").exists()


def _kill_run(out, k):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    script = Path(__file__).with_name("export_kill_script.py")
    return subprocess.run(
        [sys.executable, str(script), str(out), str(k)], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_a_reexport_killed_at_any_step_leaves_a_loadable_export(tmp_path):
    """SIGKILL the re-export before each of its file-system steps: the old or the new export always loads."""
    done = _kill_run(tmp_path / "full", 0)
    assert done.returncode == 0, done.stderr[-2000:]
    n_steps = int(done.stdout.split()[-1])  # weights in place, JSON in place, old weights removed
    assert n_steps == 3
    seen = set()
    for k in range(1, n_steps + 1):
        out = tmp_path / f"kill{k}"
        res = _kill_run(out, k)
        assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
        inf = load_learner(out / "model.json")
        value = float(inf.model[1].weight[0, 0])
        assert value in (1.0, 2.0) and all(torch.all(p == value) for p in inf.model.parameters())
        seen.add(value)
        # the next export cleans up what the killed one left: one JSON, one weights file, no temp files
        from export_kill_script import make_learner

        export(make_learner(str(out), 3.0), "model")
        assert sorted(p.suffix for p in out.iterdir()) == [".json", ".safetensors"], list(out.iterdir())
        assert float(load_learner(out / "model.json").model[1].weight[0, 0]) == 3.0
    assert seen == {1.0, 2.0}


def _edit(jfile, **changes):
    desc = json.loads(jfile.read_text())
    for path, value in changes.items():
        d = desc
        *keys, last = path.split("__")
        for k in keys:
            d = d[int(k)] if isinstance(d, list) else d[k]
        d[last] = value
    jfile.write_text(json.dumps(desc))


@pytest.mark.parametrize(
    "change,match",
    [
        (
            {"vocab": ["a", "b", "c"]},
            "field 'vocab' is '3 classes'; expected as many classes as model.n_out=2",
        ),
        ({"model__n_out": 3_000_000_000}, "field 'model.n_out' is 3000000000"),
        ({"item_tfms__0__args__size": {"__tuple__": [40000, 40000]}}, r"item_tfms\[0\].args.size"),
        ({"weights__file": "../../etc/passwd"}, "field 'weights.file'"),
        ({"loss__activation": "eval"}, "field 'loss.activation'"),
        ({"model__n_out": 3, "vocab": ["a", "b", "c"]}, "does not fit its weights file"),
    ],
)
def test_loading_validates_the_description_before_building_the_model(parent_folder, tmp_path, change, match):
    learn = vision_learner(make_dls(parent_folder), "tinyvgg", pretrained=False)
    jfile = export(learn, tmp_path / "m")
    _edit(jfile, **change)
    with pytest.raises(ValueError, match=match):
        load_learner(jfile)


def test_damaged_or_wrong_files_get_clear_errors(parent_folder, tmp_path):
    learn = Learner(
        _tensor_dls(), nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 2)), loss_func=CrossEntropyLossFlat()
    )
    jfile = export(learn, tmp_path / "m")
    _edit(jfile, model__tree__children__1__1__args__out_features=5)  # the Linear's outputs
    with pytest.raises(
        ValueError, match=r"does not fit its weights file.*1.weight: model \[5, 784\], file \[2, 784\]"
    ):
        load_learner(jfile)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_learner(tmp_path / "broken.json")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a fastvision export"):
        load_learner(tmp_path / "notes.txt")
    with pytest.raises(IsADirectoryError, match="is a folder.*m.json"):
        load_learner(tmp_path)
    with torch.no_grad():
        learn.model[1].weight[0, 0] = float("nan")
    with pytest.warns(UserWarning, match=r"export: the weights \['1.weight'\] hold NaN"):
        jfile = export(learn, tmp_path / "nan")
    with pytest.warns(UserWarning, match=r"the weights \['1.weight'\] hold NaN or infinite values") as w:
        load_learner(jfile)
    assert w[0].filename == __file__  # the warning names the caller's line


def test_description_cannot_call_arbitrary_code(parent_folder, tmp_path):
    learn = vision_learner(make_dls(parent_folder), "tinyvgg", pretrained=False)
    jfile = export(learn, tmp_path / "m")
    desc = json.loads(jfile.read_text())
    desc["model"] = {"kind": "class", "class": "subprocess.Popen", "kwargs": {"args": ["true"]}}
    jfile.write_text(json.dumps(desc))
    with pytest.raises(ValueError, match="Refusing to import 'subprocess'"):
        load_learner(jfile)
    desc["model"] = {"kind": "class", "class": "torch.nn.functional.relu", "kwargs": {}}
    jfile.write_text(json.dumps(desc))
    with pytest.raises(ValueError, match="not an nn.Module"):
        load_learner(jfile)
    desc["model"] = {
        "kind": "nn",
        "tree": {"type": "Sequential", "children": [["0", {"type": "Popen", "args": {}}]]},
    }
    jfile.write_text(json.dumps(desc))
    with pytest.raises(ValueError, match="names the layer 'Popen'"):
        load_learner(jfile)


def test_loss_description():
    assert _probe_loss(CrossEntropyLossFlat())["activation"] == "softmax"
    assert _probe_loss(nn.CrossEntropyLoss())["decodes"] == "argmax"
    bce = _probe_loss(BCEWithLogitsLossFlat(thresh=0.3))
    assert (bce["activation"], bce["decodes"], bce["thresh"]) == ("sigmoid", "threshold", 0.3)
    assert _probe_loss(nn.MSELoss())["activation"] == "none"


def test_bytes_io_and_missing_file_errors(learn, tmp_path):
    inf = load_learner(export(learn, tmp_path / "m"))
    item = list(learn.dls.valid_ds.items)[0]
    assert inf.predict(io.BytesIO(item.read_bytes()))[0] in ("cat", "dog")
    with pytest.raises(FileNotFoundError):
        inf.predict(tmp_path / "nope.jpg")


def test_presizing_with_aug_transforms_matches_validation(parent_folder, tmp_path):
    from fastvision.vision.augment import aug_transforms

    dblock = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=get_image_files,
        get_y=parent_label,
        splitter=RandomSplitter(seed=0),
        item_tfms=Resize(40),
        batch_tfms=aug_transforms(size=24, min_scale=0.75),
    )
    dls = dblock.dataloaders(parent_folder, bs=4, num_workers=0)
    inf = load_learner(export(vision_learner(dls, "tinyvgg", pretrained=False), tmp_path / "m"))
    x_inf = next(iter(inf.test_dl(list(dls.valid_ds.items))))[0]
    assert x_inf.shape[-2:] == (24, 24) and torch.equal(x_inf, next(iter(dls.valid))[0])
