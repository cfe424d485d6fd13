import time
import warnings
from urllib.error import URLError

import pytest
import torch
import torchvision.models as tvm
from safetensors.torch import save_file

import fastvision.vision.arch as vl
from fastvision.checkpoint import load_state_dict_head
from fastvision.data.block import CategoryBlock, DataBlock
from fastvision.data.items import RandomSplitter, get_image_files, parent_label
from fastvision.optimizer import get_hyper, set_hyper
from fastvision.vision.arch import torchvision_checkpoint_path
from fastvision.vision.block import ImageBlock
from fastvision.vision.learner import cnn_learner, vision_learner
from fastvision.vision.lighting import Normalize
from fastvision.vision.models import TinyVGG, resnet_small
from fastvision.vision.resize import Resize


def make_dls(folder, size=32, bs=4):
    dblock = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=get_image_files,
        get_y=parent_label,
        splitter=RandomSplitter(seed=0),
        item_tfms=Resize(size),
    )
    return dblock.dataloaders(folder, bs=bs, num_workers=0, path=folder)


@pytest.fixture
def dls(parent_folder):
    return make_dls(parent_folder)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache, so nothing already downloaded is found."""
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


def n_normalize(dl):
    return sum(isinstance(t, Normalize) for t in dl.after_batch.tfms)


def test_from_scratch_is_unfrozen_and_not_normalized(dls):
    learn = vision_learner(dls, tvm.resnet18, pretrained=False)
    assert learn.model[1][-1].out_features == 2
    assert all(p.requires_grad for p in learn.model.parameters())
    assert n_normalize(learn.dls.train) == 0
    assert [len(g) for g in learn.splitter(learn.model)] == [30, 30, 6]


def test_local_weights_file_loads_freezes_and_normalizes_once(dls, tmp_path):
    ref = tvm.resnet18()
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    learn = vision_learner(dls, "resnet18", weights=tmp_path / "r18.pth")
    assert torch.equal(learn.model[0][0].weight, ref.conv1.weight)
    assert torch.equal(learn.model[0][7][1].conv2.weight, ref.layer4[1].conv2.weight)
    # frozen: only the head and the norm layers of the body train
    groups = learn.splitter(learn.model)
    assert all(p.requires_grad for p in groups[2])
    body_bn = {
        id(p) for m in learn.model[0].modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()
    }
    assert all(p.requires_grad == (id(p) in body_bn) for g in groups[:2] for p in g)
    # Normalize added once to every loader of a copy; the caller's dls is untouched
    assert [n_normalize(dl) for dl in learn.dls.loaders] == [1, 1]
    assert [n_normalize(dl) for dl in dls.loaders] == [0, 0]
    again = vision_learner(learn.dls, "resnet18", weights=tmp_path / "r18.pth")
    assert [n_normalize(dl) for dl in again.dls.loaders] == [1, 1]
    x, _ = learn.dls.valid.one_batch()
    assert x.dtype == torch.float32 and x.mean().abs() < 3  # normalized, not in [0, 1] only
    # discriminative learning rates over the 3 groups
    set_hyper(learn.opt, "lr", slice(1e-5, 1e-3))
    assert get_hyper(learn.opt, "lr") == pytest.approx([1e-5, 1e-4, 1e-3])
    learn.unfreeze()
    assert all(p.requires_grad for p in learn.model.parameters())


def test_safetensors_weights_and_fastvision_checkpoint(dls, tmp_path):
    ref = tvm.resnet18()
    save_file(ref.state_dict(), str(tmp_path / "r18.safetensors"))
    learn = vision_learner(dls, tvm.resnet18, weights=str(tmp_path / "r18.safetensors"))
    assert torch.equal(learn.model[0][4][0].conv1.weight, ref.layer1[0].conv1.weight)
    # a whole fastvision model's checkpoint with another number of classes: body loads, head re-initialised
    torch.save(learn.model.state_dict(), tmp_path / "five.pth")
    with pytest.warns(UserWarning, match="head does not fit"):
        other = vision_learner(dls, tvm.resnet18, n_out=5, weights=tmp_path / "five.pth")
    assert other.model[1][-1].out_features == 5
    assert torch.equal(other.model[0][0].weight, learn.model[0][0].weight)


def test_load_state_dict_head_rejects_body_mismatch(dls):
    a = vision_learner(dls, tvm.resnet18, pretrained=False).model
    b = vision_learner(dls, tvm.resnet34, pretrained=False).model
    with pytest.raises(ValueError, match="body does not match"):
        load_state_dict_head(a, b.state_dict())
    assert load_state_dict_head(a, a.state_dict()) == []


def test_cached_torchvision_weights_load_without_network(dls, hub, monkeypatch):
    ref = tvm.resnet18()
    dst = torchvision_checkpoint_path(tvm.ResNet18_Weights.IMAGENET1K_V1)
    assert dst.parent == hub / "hub" / "checkpoints"
    dst.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), dst)
    monkeypatch.setattr(vl, "_can_connect", lambda *a, **k: pytest.fail("no network call expected"))
    learn = vision_learner(dls, tvm.resnet18)  # pretrained=True, weights='DEFAULT'
    assert torch.equal(learn.model[0][1].weight, ref.bn1.weight)


def test_offline_download_fails_fast_and_says_where_to_put_the_file(dls, hub, monkeypatch):
    def broken(url, dst):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(vl, "_can_connect", lambda *a, **k: True)
    monkeypatch.setattr(vl, "_download", broken)
    expected = str(hub / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    with pytest.raises(ConnectionError, match="pretrained=False") as e:
        vision_learner(dls, tvm.resnet18)
    assert expected in str(e.value) and "name resolution" in str(e.value)


def test_offline_real_connection_check_is_fast(dls, hub):
    if vl._can_connect("https://download.pytorch.org/", timeout=1.0):
        pytest.skip("this machine is online; the offline path is tested with a monkeypatched download")
    t = time.perf_counter()
    with pytest.raises(ConnectionError, match="no connection to download.pytorch.org"):
        vision_learner(dls, "resnet18")
    assert time.perf_counter() - t < 5


def test_grayscale_input_skips_rgb_stats_with_warning(dls, tmp_path):
    torch.save(tvm.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.warns(UserWarning, match="n_in=1"):
        learn = vision_learner(dls, tvm.resnet18, weights=tmp_path / "r18.pth", n_in=1)
    assert n_normalize(learn.dls.train) == 0
    assert learn.model[0][0].in_channels == 1


def test_small_architectures(dls):
    learn = vision_learner(dls, "tinyvgg", pretrained=False)
    assert isinstance(learn.model[0][0], torch.nn.Sequential) and len(learn.splitter(learn.model)) == 3
    with pytest.warns(UserWarning, match="no pretrained weights"):
        vision_learner(dls, TinyVGG)
    learn = vision_learner(dls, resnet_small, pretrained=False, arch_kwargs={"widths": (8, 16)})
    x, _ = dls.one_batch()
    assert learn.model.eval()(x).shape == (4, 2)


def test_errors_and_deprecated_alias(dls):
    with pytest.raises(ValueError, match="pass n_out="):
        vision_learner(type("D", (), {"c": None, "train": [], "valid": []})(), "tinyvgg", pretrained=False)
    with pytest.warns(DeprecationWarning, match="vision_learner"):
        learn = cnn_learner(dls, "tinyvgg", pretrained=False)
    assert learn.arch == "tinyvgg"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vision_learner(dls, "resnet_small", pretrained=False)  # no warning on the happy path


def test_one_class_is_refused_with_cross_entropy_but_a_single_logit_loss_is_fine(tmp_path):
    from fastvision.losses import BCEWithLogitsLossFlat
    from fastvision.testing import make_image_folder

    one = make_dls(make_image_folder(tmp_path / "one", classes=("cat",), n_per_class=8, layout="parent"))
    with pytest.raises(ValueError, match=r"the data has one class \('cat'\).*get_y.*BCEWithLogitsLossFlat"):
        vision_learner(one, "resnet_small", pretrained=False)
    learn = vision_learner(one, "resnet_small", pretrained=False, loss_func=BCEWithLogitsLossFlat())
    assert learn.n_out == 1


@pytest.mark.slow
def test_fine_tune_interpret_export_load_predict(parent_folder, tmp_path):
    from fastvision.export import export, load_learner
    from fastvision.interpret import ClassificationInterpretation

    dls = make_dls(parent_folder)
    learn = vision_learner(dls, tvm.resnet18, pretrained=False)
    learn.fine_tune(2)
    interp = ClassificationInterpretation.from_learner(learn)
    assert interp.confusion_matrix().sum() == len(dls.valid_ds)
    interp.plot_top_losses(2)
    fname = export(learn, tmp_path / "r18")
    inf = load_learner(fname)
    items = list(dls.valid_ds.items)
    preds = inf.get_preds(items)
    assert torch.allclose(preds, interp.preds, atol=1e-5)
    label, idx, probs = inf.predict(items[0])
    assert label == dls.vocab[int(idx)] and torch.allclose(probs, interp.preds[0], atol=1e-5)


def test_signature_lists_forwarded_arguments_with_their_callees_defaults():
    import inspect

    from fastvision.learner import Learner
    from fastvision.vision.arch import create_vision_model
    from fastvision.vision.models import create_head

    params = inspect.signature(vision_learner).parameters
    assert list(params)[:6] == ["dls", "arch", "normalize", "n_out", "pretrained", "weights"]
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values())
    for callee, skip in [(Learner, {"splitter"}), (create_vision_model, set()), (create_head, set())]:
        for name, p in inspect.signature(callee).parameters.items():
            if p.default is not p.empty and name not in skip and name not in ("pretrained", "weights"):
                assert params[name].default is p.default, name
    assert params["splitter"].default is None and params["n_in"].default == 3 and params["ps"].default == 0.5


def test_forwarded_keywords_reach_learner_and_head_and_typos_are_caught(dls):
    learn = vision_learner(dls, "resnet_small", pretrained=False, lr=0.01, lin_ftrs=[8], ps=0.0, wd=0.1)
    assert learn.lr == 0.01 and learn.wd == 0.1
    linears = [m for m in learn.model[1] if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [8, 2]
    assert not any(isinstance(m, torch.nn.Dropout) for m in learn.model[1])
    with pytest.raises(
        TypeError, match=r"unexpected keyword arguments: 'metric' \(did you mean 'metrics'\?\)"
    ):
        vision_learner(dls, "resnet_small", pretrained=False, metric=None)
