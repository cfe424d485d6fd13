"""timm backbones by name in `vision_learner`: body/head cut, splitter, freezing, n_in, weights, export."""

import sys

import pytest
import torch
from safetensors.torch import save_file

import fastvision.vision.arch as vl
from fastvision.optimizer import get_hyper, set_hyper
from fastvision.vision.arch import create_vision_model
from fastvision.vision.learner import vision_learner
from fastvision.vision.lighting import Normalize
from fastvision.vision.models import TimmBody, arch_meta, create_timm_body

timm = pytest.importorskip("timm")

from test_vision_learner import make_dls  # noqa: E402  (the same small parent-label DataBlock)


@pytest.fixture
def dls(parent_folder):
    return make_dls(parent_folder)


def normalizes(dl):
    return [t for t in dl.after_batch.tfms if isinstance(t, Normalize)]


def timm_file(tmp_path, name="resnet10t", **kw):
    """A full timm classification network's state dict (as on the Hub), saved as safetensors."""
    ref = timm.create_model(name, **kw)
    path = tmp_path / f"{name}.safetensors"
    save_file(ref.state_dict(), str(path))
    return ref, path


@pytest.mark.parametrize("arch", ["resnet10t", "convnext_atto", "timm/efficientnet_b0"])
def test_timm_name_builds_body_and_head_and_trains(dls, arch):
    learn = vision_learner(dls, arch, pretrained=False)
    base = arch.removeprefix("timm/")
    assert learn.arch == f"timm/{base}"
    body, head = learn.model
    assert isinstance(body, TimmBody) and type(body.model) is type(timm.create_model(base, pretrained=False))
    ref = timm.create_model(base, pretrained=False, num_classes=0, global_pool="")
    assert head[1 + 1].num_features == 2 * ref.head_hidden_size  # fastai's head on the unpooled feature map
    assert not any(n.startswith(("fc.", "classifier.", "head.fc.")) for n, _ in body.model.named_parameters())
    assert [len(g) for g in learn.splitter(learn.model)] == [
        len(list(body.parameters())),
        len(list(head.parameters())),
    ]
    assert all(p.requires_grad for p in learn.model.parameters())  # from scratch: not frozen
    assert normalizes(learn.dls.train) == []
    before = [p.detach().clone() for p in body.parameters()]
    learn.fit(1)
    assert torch.isfinite(torch.tensor(learn.recorder.losses)).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, body.parameters()))
    x, _ = dls.one_batch()
    assert learn.model.eval()(x).shape == (4, 2)


def test_weights_file_freezes_to_head_and_norm_layers_and_normalizes(dls, tmp_path):
    ref, path = timm_file(tmp_path)
    learn = vision_learner(dls, "resnet10t", weights=path)
    body, head = learn.model
    assert torch.equal(body.model.conv1[0].weight, ref.conv1[0].weight)
    assert torch.equal(body.model.layer4[0].bn2.running_mean, ref.layer4[0].bn2.running_mean)
    norm_types = (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)
    norm_ids = {id(p) for m in learn.model.modules() if isinstance(m, norm_types) for p in m.parameters()}
    trainable = {id(p) for p in learn.model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in head.parameters()} | norm_ids  # fastai: head + BatchNorm train
    assert any(not p.requires_grad for p in body.parameters())
    (norm,) = normalizes(learn.dls.train)
    cfg = ref.pretrained_cfg
    assert torch.allclose(norm.mean.flatten().cpu(), torch.tensor(cfg["mean"]))
    assert torch.allclose(norm.std.flatten().cpu(), torch.tensor(cfg["std"]))
    learn.unfreeze()
    assert all(p.requires_grad for p in learn.model.parameters())
    set_hyper(learn.opt, "lr", slice(1e-5, 1e-3))
    assert get_hyper(learn.opt, "lr") == pytest.approx([1e-5, 1e-3])  # body, head


def test_one_input_channel(dls, tmp_path):
    model = create_vision_model("resnet10t", 3, pretrained=False, n_in=1)
    assert model[0].model.conv1[0].in_channels == 1
    assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    ref, path = timm_file(tmp_path)
    with pytest.warns(UserWarning, match="n_in=1"):  # RGB stats do not fit one channel
        learn = vision_learner(dls, "resnet10t", weights=path, n_in=1)
    w = learn.model[0].model.conv1[0].weight
    assert torch.allclose(w, ref.conv1[0].weight.sum(dim=1, keepdim=True))  # timm's RGB -> grey adaptation
    assert normalizes(learn.dls.train) == []


def test_transformer_body_is_pooled_and_head_does_not_pool():
    body = create_timm_body("vit_tiny_patch16_224", img_size=32, patch_size=16, depth=1)
    assert body.pooled and body(torch.randn(2, 3, 32, 32)).shape == (2, 192)
    model = create_vision_model(
        "vit_tiny_patch16_224", 4, pretrained=False, arch_kwargs={"img_size": 32, "depth": 1}
    )
    assert type(model[1][0]).__name__ == "BatchNorm1d"  # no pooling layer in the head
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_export_load_round_trip_gives_equal_predictions(dls, tmp_path):
    from fastvision.export import export, load_learner

    learn = vision_learner(dls, "convnext_atto", pretrained=False, arch_kwargs={"drop_path_rate": 0.0})
    learn.fit(1)
    inf = load_learner(export(learn, tmp_path / "atto"))
    assert inf.model[0].model.__class__ is learn.model[0].model.__class__
    x, _ = dls.one_batch()
    x = x.cpu()
    with torch.no_grad():
        expected = learn.model.eval().cpu()(x)
        got = inf.model.eval().cpu()(x)
    assert torch.allclose(expected, got, atol=1e-6)


def test_timm_prefix_and_timm_functions_pick_timm_over_torchvision():
    assert arch_meta("resnet18")[1].source == "torchvision"
    name, meta = arch_meta("timm/resnet18")
    assert (name, meta.source) == ("timm/resnet18", "timm")
    assert arch_meta(timm.models.resnet10t)[0] == "timm/resnet10t"
    assert arch_meta("resnet10t.c3_in1k")[0] == "timm/resnet10t.c3_in1k"
    with pytest.raises(ValueError, match=r"Known pretrained tags: \['resnet10t.c3_in1k'\]"):
        arch_meta("resnet10t.nosuchtag")


def test_unknown_name_lists_close_torchvision_and_timm_names(dls):
    with pytest.raises(ValueError, match="Unknown architecture name 'convnext_ato'") as e:
        vision_learner(dls, "convnext_ato", pretrained=False)
    msg = str(e.value)
    assert "Close timm names: [" in msg and "'convnext_atto'" in msg
    assert "Close torchvision/fastvision names: [" in msg and "'convnext_tiny'" in msg
    with pytest.raises(ValueError, match=r"Close timm names: \['timm/resnet18', 'resnet18d'"):
        arch_meta("resnet18x")  # a timm name torchvision also has is written with the prefix
    with pytest.raises(ValueError, match="Unknown timm architecture name 'timm/resnet10x'.*'resnet10t'"):
        arch_meta("timm/resnet10x")


def test_without_timm_installed(monkeypatch, dls):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install fastvision\[timm\]"):
        vision_learner(dls, "timm/resnet10t", pretrained=False)
    with pytest.raises(ValueError, match=r"resnet10t.*timm is not installed.*pip install fastvision\[timm\]"):
        arch_meta("resnet10t")
    assert arch_meta("resnet18")[1].source == "torchvision"  # torchvision names need no timm


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, so nothing already downloaded is found."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_pretrained_offline_fails_fast_and_says_what_to_download(dls, hf_cache, monkeypatch):
    monkeypatch.setattr(vl, "_can_connect", lambda *a, **k: False)
    with pytest.raises(ConnectionError, match="pretrained=False") as e:
        vision_learner(dls, "resnet10t")
    msg = str(e.value)
    assert "no connection to huggingface.co" in msg
    assert "https://huggingface.co/timm/resnet10t.c3_in1k/resolve/main/model.safetensors" in msg
    assert "weights='/path/to/model.safetensors'" in msg


def test_pretrained_from_hugging_face_cache_needs_no_network(dls, hf_cache, monkeypatch, tmp_path):
    ref, path = timm_file(tmp_path)
    repo = hf_cache / "models--timm--resnet10t.c3_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    path.rename(repo / "snapshots" / ("0" * 40) / "model.safetensors")
    monkeypatch.setattr(vl, "_can_connect", lambda *a, **k: pytest.fail("no network call expected"))
    learn = vision_learner(dls, "resnet10t")  # pretrained=True
    assert torch.equal(learn.model[0].model.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    assert not learn.model[0].model.conv1[0].weight.requires_grad and len(normalizes(learn.dls.valid)) == 1


def test_weights_must_be_a_file_for_timm(dls):
    with pytest.raises(ValueError, match="pass a local weights file, or pick timm's pretrained weights"):
        vision_learner(dls, "resnet10t", weights="IMAGENET1K_V1")
