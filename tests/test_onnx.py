"""ONNX export: the file runs in onnxruntime and gives the PyTorch model's outputs under the documented contract."""

import sys

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torch.utils.data import TensorDataset

from fastvision.data.block import CategoryBlock, DataBlock
from fastvision.data.items import RandomSplitter, get_image_files, parent_label
from fastvision.data.load import DataLoaders
from fastvision.export import export, load_learner
from fastvision.learner import Learner
from fastvision.losses import CrossEntropyLossFlat
from fastvision.onnx import DeploymentModel, onnx_metadata
from fastvision.testing import make_tensor_data
from fastvision.vision.block import ImageBlock
from fastvision.vision.learner import vision_learner
from fastvision.vision.lighting import imagenet_stats
from fastvision.vision.resize import Resize

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": x.numpy()})[0]


def max_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


@pytest.fixture
def resnet_learner(parent_folder, tmp_path):
    """A vision_learner on 32 x 32 images; 'pretrained' from a local file, so Normalize(imagenet) is added."""
    dblock = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=get_image_files,
        get_y=parent_label,
        splitter=RandomSplitter(seed=0),
        item_tfms=Resize(32),
    )
    dls = dblock.dataloaders(parent_folder, bs=4, num_workers=0, path=parent_folder)
    torch.save(tvm.resnet18().state_dict(), tmp_path / "r18.pth")
    return vision_learner(dls, tvm.resnet18, weights=tmp_path / "r18.pth")


def tensor_learner(model):
    x, y = make_tensor_data(24, 2, size=28, channels=1, seed=0)  # float images in [0, 1]
    dls = DataLoaders.from_dsets(
        TensorDataset(x[:16], y[:16]), TensorDataset(x[16:], y[16:]), bs=4, num_workers=0, device="cpu"
    )
    return Learner(dls, model, loss_func=CrossEntropyLossFlat()), x[16:]


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    ).eval()


def test_vision_learner_onnx_reproduces_validation_predictions(resnet_learner, tmp_path):
    learn = resnet_learner
    path = learn.export_onnx(tmp_path / "pets")
    assert path == tmp_path / "pets.onnx" and path.is_file()
    # the contract: uint8 pixels at the training size; conversion and Normalize are in the graph
    raw = learn.dls.valid.new(after_batch=[]).one_batch()[0]  # B x 3 x 32 x 32 uint8, before batch tfms
    assert raw.dtype == torch.uint8 and raw.shape[1:] == (3, 32, 32)
    probs = learn.get_preds()[0][: len(raw)]
    assert max_err(run_onnx(path, raw), probs) < 1e-3
    # other batch sizes (the batch axis is dynamic), against the computation written out in torch
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in imagenet_stats)
    for n in (1, 5):
        x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
        with torch.no_grad():
            want = learn.model.eval()((x.float() / 255 - mean) / std).softmax(-1)
        assert max_err(run_onnx(path, x), want) < 1e-3
    meta = onnx_metadata(path)
    assert meta["input"]["shape"] == ["batch", 3, 32, 32] and meta["input"]["dtype"] == "uint8"
    assert meta["input"]["div"] == 255 and np.allclose(meta["input"]["mean"], imagenet_stats[0])
    assert meta["output"]["activation"] == "softmax" and meta["vocab"] == list(learn.dls.vocab)


def test_inference_learner_export_onnx_matches_the_learner(resnet_learner, tmp_path):
    learn = resnet_learner
    inf = load_learner(export(learn, tmp_path / "model"))
    from_learner = learn.export_onnx(tmp_path / "a.onnx")
    from_export = inf.export_onnx(tmp_path / "b.onnx")
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    assert max_err(run_onnx(from_export, x), run_onnx(from_learner, x)) < 1e-5
    assert onnx_metadata(from_export)["input"] == onnx_metadata(from_learner)["input"]


def test_plain_module_learner_with_and_without_preprocessing(tmp_path):
    model = small_net()
    learn, x = tensor_learner(model)
    # trained on float tensors in [0, 1]: the preprocessed graph takes uint8 pixels and divides by 255
    path = learn.export_onnx(tmp_path / "net")
    pixels = (x * 255).round().to(torch.uint8)
    with torch.no_grad():
        want = model(pixels.float() / 255).softmax(-1)
    assert max_err(run_onnx(path, pixels), want) < 1e-3
    assert onnx_metadata(path)["input"]["dtype"] == "uint8"
    # without preprocessing and activation: the float tensor in, the raw outputs out
    raw = learn.export_onnx(tmp_path / "raw.onnx", preprocess=False, activation=False)
    with torch.no_grad():
        assert max_err(run_onnx(raw, x), model(x)) < 1e-3
    meta = onnx_metadata(raw)
    assert meta["input"]["dtype"] == "float32" and meta["input"]["div"] is None
    assert meta["input"]["mean"] is None and meta["output"]["activation"] == "none"


def test_dynamo_exporter(tmp_path):
    pytest.importorskip("onnxscript")
    model = small_net()
    learn, x = tensor_learner(model)
    path = learn.export_onnx(tmp_path / "dyn", preprocess=False, dynamo=True)
    with torch.no_grad():
        assert max_err(run_onnx(path, x), model(x).softmax(-1)) < 1e-3
        assert max_err(run_onnx(path, x[:1]), model(x[:1]).softmax(-1)) < 1e-3


def test_deployment_model_is_the_documented_computation():
    model = small_net()
    x = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    dm = DeploymentModel(model, div=255.0, mean=[0.5], std=[0.25], activation="sigmoid")
    with torch.no_grad():
        assert torch.allclose(dm(x), torch.sigmoid(model((x.float() / 255 - 0.5) / 0.25)))
    with pytest.raises(ValueError, match="activation='relu' is not one of"):
        DeploymentModel(model, activation="relu")
    with pytest.raises(ValueError, match="both mean and std"):
        DeploymentModel(model, mean=[0.5])


def test_a_model_the_exporter_traces_wrongly_is_caught_by_the_check(tmp_path):
    class BatchDependent(nn.Module):  # eager: depends on the batch size; a trace fixes the branch taken
        def __init__(self):
            super().__init__()
            self.body = small_net()

        def forward(self, x):
            out = self.body(x)
            return out if x.shape[0] == 2 else out * 3

    learn, _ = tensor_learner(BatchDependent())
    with (
        pytest.warns(torch.jit.TracerWarning),
        pytest.raises(RuntimeError, match="does not match PyTorch on a batch of 1"),
    ):
        learn.export_onnx(tmp_path / "bad")
    assert not (tmp_path / "bad.onnx").exists()


def test_missing_input_size_and_missing_packages_are_explained(tmp_path, monkeypatch):
    learn, _ = tensor_learner(small_net())
    inf = load_learner(export(learn, tmp_path / "m"))
    inf.description["input"] = {}
    with pytest.raises(ValueError, match=r"Pass input_shape=\(channels, height, width\)"):
        inf.export_onnx(tmp_path / "m.onnx")
    assert inf.export_onnx(tmp_path / "m.onnx", input_shape=(1, 28, 28)).is_file()
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    with pytest.raises(ImportError, match=r"needs the 'onnx' package.*pip install fastvision\[onnx\]"):
        learn.export_onnx(tmp_path / "n.onnx")
