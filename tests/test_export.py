import io
import json
import os
import pickle
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

from fastvision.data.block import CategoryBlock, DataBlock, ImageBlock
from fastvision.data.items import RandomSplitter, get_image_files, parent_label
from fastvision.export import _probe_loss, export, load_learner
from fastvision.learner import Learner
from fastvision.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat
from fastvision.vision.learner import vision_learner
from fastvision.vision.models import TinyVGG
from fastvision.vision.resize import Resize

REPO = Path(__file__).resolve().parents[1]


def make_dls(folder, bs=4, size=32):
    dblock = DataBlock(
        blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
        splitter=RandomSplitter(seed=0), item_tfms=Resize(size, method="pad"),
    )  # fmt: skip
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
        blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=lambda p: p.parent.name.upper(),
        splitter=RandomSplitter(seed=0), item_tfms=Resize(32),
    )  # fmt: skip
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
        from fastvision.data.block import DataBlock, ImageBlock, CategoryBlock
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
    assert sorted(p.name for p in jfile.parent.iterdir()) == [
        "export.json",
        "export.safetensors",
    ]  # no temp files
    desc = json.loads(jfile.read_text())
    assert desc["model"]["arch"] == "resnet18" and desc["vocab"] == ["cat", "dog"]
    assert [t["type"].rsplit(".", 1)[1] for t in desc["batch_tfms"]] == ["IntToFloatTensor", "Normalize"]
    assert desc["item_tfms"][0]["args"]["method"] == "pad"
    assert desc["loss"] == {
        "name": "CrossEntropyLossFlat",
        "activation": "softmax",
        "decodes": "argmax",
        "thresh": 0.5,
    }
    raw = (jfile.parent / "export.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert len(raw) == 8 + header_len + max(
        v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"
    )
    assert not raw.startswith(b"\x80") and b"PK\x03\x04" not in raw[:4]  # not a pickle, not a torch zip
    sd = load_file(str(jfile.parent / "export.safetensors"))
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
        sizes.append((tmp_path / f"bs{bs}.safetensors").stat().st_size)
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


def test_refuses_pickles_unless_trusted(tmp_path):
    f = tmp_path / "export.pkl"
    f.write_bytes(pickle.dumps({"learner": "pretend"}))
    with pytest.raises(ValueError, match="trust_pickle=True"):
        load_learner(f)
    with pytest.warns(UserWarning, match="runs any code"):
        assert load_learner(f, trust_pickle=True) == {"learner": "pretend"}
    with pytest.raises(FileNotFoundError, match="learn.export"):
        load_learner(tmp_path / "missing")


def test_checksum_and_version_are_checked(parent_folder, tmp_path):
    learn = vision_learner(make_dls(parent_folder), "tinyvgg", pretrained=False)
    jfile = export(learn, tmp_path / "m")
    desc = json.loads(jfile.read_text())
    jfile.write_text(json.dumps({**desc, "format_version": 99}))
    with pytest.raises(ValueError, match="Upgrade fastvision"):
        load_learner(jfile)
    jfile.write_text(json.dumps(desc))
    w = tmp_path / "m.safetensors"
    w.write_bytes(w.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ValueError, match="checksum"):
        load_learner(tmp_path / "m")


def test_models_outside_the_registry(parent_folder, tmp_path):
    dls = make_dls(parent_folder)
    with pytest.raises(ValueError, match="constructor arguments"):
        export(Learner(dls, nn.Sequential(nn.Flatten(), nn.LazyLinear(2))), tmp_path / "a")

    class Local(nn.Module):
        def __init__(self, n=2):
            super().__init__()
            self.fc = nn.Linear(3, n)

    with pytest.raises(ValueError, match="not importable"):
        export(Learner(dls, Local()), tmp_path / "b", model_kwargs={"n": 2})

    def my_arch():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    with pytest.raises(ValueError, match="constructor arguments"):  # not rebuildable by name
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
        "kind": "class", "class": "fastvision.vision.models.TinyVGG",
        "kwargs": {"n_in": 3, "n_out": 2, "hidden": 10, "img_size": 32},
    }  # fmt: skip
    inf = load_learner(jfile)
    assert torch.allclose(inf.get_preds(list(dls.valid_ds.items)), learn.get_preds()[0], atol=1e-5)


def test_description_cannot_call_arbitrary_code(parent_folder, tmp_path):
    learn = vision_learner(make_dls(parent_folder), "tinyvgg", pretrained=False)
    jfile = export(learn, tmp_path / "m")
    desc = json.loads(jfile.read_text())
    desc["model"] = {"kind": "class", "class": "subprocess.Popen", "kwargs": {"args": ["true"]}}
    jfile.write_text(json.dumps(desc))
    with pytest.raises(ValueError, match="not an nn.Module"):
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
        blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
        splitter=RandomSplitter(seed=0), item_tfms=Resize(40), batch_tfms=aug_transforms(size=24, min_scale=0.75),
    )  # fmt: skip
    dls = dblock.dataloaders(parent_folder, bs=4, num_workers=0)
    inf = load_learner(export(vision_learner(dls, "tinyvgg", pretrained=False), tmp_path / "m"))
    x_inf = next(iter(inf.test_dl(list(dls.valid_ds.items))))[0]
    assert x_inf.shape[-2:] == (24, 24) and torch.equal(x_inf, next(iter(dls.valid))[0])
