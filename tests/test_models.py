import pytest
import torch
import torchvision.models as tvm
from torch import nn

from fastvision.vision.arch import create_vision_model
from fastvision.vision.models import (
    AdaptiveConcatPool2d,
    ResNetSmall,
    SigmoidRange,
    TinyVGG,
    apply_init,
    arch_meta,
    create_body,
    create_head,
    default_split,
    num_features_model,
    resnet_small,
    whiten_conv_,
)

# (arch, arch_kwargs): one per family; the cheap ones run by default, the big ones are marked slow.
FAST = [
    ("resnet18", {}),
    ("mobilenet_v3_large", {}),
    ("efficientnet_b0", {}),
    ("squeezenet1_1", {}),
    ("shufflenet_v2_x0_5", {}),
    ("mnasnet0_5", {}),  # not in the registry: automatic cut, fastai's default_split (2 groups)
    ("vit_b_16", {"image_size": 32}),
    ("tinyvgg", {}),
    ("resnet_small", {}),
]
SLOW = [
    "regnet_y_400mf",
    "resnet50",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "densenet121",
    "vgg16_bn",
    "convnext_tiny",
]
FAMILIES = FAST + [pytest.param(a, {}, marks=pytest.mark.slow) for a in SLOW]


def _check_groups(model: nn.Module, groups: list) -> None:
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)), "a parameter is in two groups"
    assert set(ids) == {id(p) for p in model.parameters()}, "a parameter is in no group"


@pytest.mark.parametrize("arch,kw", FAMILIES)
def test_every_family_builds_and_runs(arch, kw):
    model = create_vision_model(arch, 5, pretrained=False, arch_kwargs=kw)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 5)
    groups = arch_meta(arch)[1].split(model)
    assert len(groups) == (2 if arch == "mnasnet0_5" else 3)
    _check_groups(model, groups)
    assert model.arch_spec["arch"] == arch


def test_resnet18_groups_match_fastai():
    model = create_vision_model(tvm.resnet18, 37, pretrained=False)
    assert [len(g) for g in arch_meta(tvm.resnet18)[1].split(model)] == [30, 30, 6]
    assert num_features_model(model[0]) == 512


def test_create_head_default_structure():
    head = create_head(512, 37)
    types = [type(m).__name__ for m in head]
    assert types == ["AdaptiveConcatPool2d", "Flatten", "BatchNorm1d", "Dropout", "Linear", "ReLU", "BatchNorm1d",
                     "Dropout", "Linear"]  # fmt: skip
    assert (head[2].num_features, head[4].in_features, head[4].out_features, head[8].out_features) == (
        1024,
        1024,
        512,
        37,
    )
    assert head[4].bias is None and head[8].bias is None
    assert [head[3].p, head[7].p] == [0.25, 0.5]
    assert torch.all(head[2].weight == 1) and torch.allclose(head[2].bias, torch.full((1024,), 1e-3))


def test_create_head_options():
    head = create_head(
        64, 3, lin_ftrs=[32], ps=0.0, concat_pool=False, first_bn=False, bn_final=True, y_range=(0, 5)
    )
    types = [type(m).__name__ for m in head]
    assert types == [
        "AdaptiveAvgPool2d",
        "Flatten",
        "Linear",
        "ReLU",
        "BatchNorm1d",
        "Linear",
        "BatchNorm1d",
        "SigmoidRange",
    ]
    assert head[2].bias is not None and head[5].bias is None and head[6].momentum == 0.01
    out = head.eval()(torch.randn(4, 64, 3, 3))
    assert out.shape == (4, 3) and out.min() >= 0 and out.max() <= 5
    lin_first = create_head(64, 3, lin_first=True)
    assert [type(m).__name__ for m in lin_first][2:] == [
        "Dropout",
        "Linear",
        "ReLU",
        "BatchNorm1d",
        "Dropout",
        "Linear",
    ]
    assert lin_first[-1].bias is not None
    assert [type(m).__name__ for m in create_head(64, 3, pool=False)][0] == "BatchNorm1d"


def test_create_head_rejects_wrong_number_of_dropouts():
    with pytest.raises(ValueError, match="3 dropout values"):
        create_head(64, 3, ps=[0.1, 0.2, 0.3])


def test_adaptive_concat_pool_is_max_then_avg():
    x = torch.arange(8.0).view(1, 2, 2, 2)
    out = AdaptiveConcatPool2d()(x).view(-1)
    assert out.tolist() == [3.0, 7.0, 1.5, 5.5]
    assert torch.allclose(SigmoidRange(2, 4)(torch.zeros(1)), torch.tensor([3.0]))


@pytest.mark.parametrize("n_in", [1, 2, 4])
def test_create_body_adapts_first_conv(n_in):
    model = tvm.resnet18()
    w = model.conv1.weight.detach().clone()
    body = create_body(model, n_in=n_in, pretrained=True, cut=-2)
    new = body[0].weight.detach()
    assert new.shape == (64, n_in, 7, 7)
    expected = {1: w.sum(1, keepdim=True), 2: w[:, :2] * 1.5, 4: torch.cat([w, torch.zeros(64, 1, 7, 7)], 1)}[
        n_in
    ]
    assert torch.allclose(new, expected)
    assert body.eval()(torch.rand(1, n_in, 32, 32)).shape == (1, 512, 1, 1)


def test_create_body_cuts():
    assert len(create_body(tvm.resnet18(), cut=-2)) == 8
    assert len(create_body(tvm.resnet18())) == 8  # automatic: before avgpool
    assert isinstance(create_body(tvm.resnet18(), cut=lambda m: m.layer1), nn.Sequential)
    # fastai's rule: cut before the last child holding any pooling layer (TinyVGG's block2 has a MaxPool2d)
    assert len(create_body(TinyVGG())) == 1
    no_pool = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    assert len(create_body(no_pool)) == 3  # no pooling at all: drop the last child
    with pytest.raises(TypeError, match="cut must be"):
        create_body(tvm.resnet18(), cut="layer4")


def test_apply_init_skips_norm_layers():
    head = create_head(8, 2, lin_ftrs=[4])
    for p in head.parameters():
        nn.init.constant_(p, 0.7)
    apply_init(head, nn.init.kaiming_normal_)
    assert torch.all(head[2].weight == 0.7)  # BatchNorm untouched
    assert not torch.all(head[4].weight == 0.7)  # Linear re-initialised


def test_tinyvgg_and_resnet_small_work_directly():
    x28 = torch.rand(3, 1, 28, 28)
    assert TinyVGG()(x28).shape == (3, 10)
    assert TinyVGG(n_in=3, n_out=4, hidden=8, img_size=64)(torch.rand(2, 3, 64, 64)).shape == (2, 4)
    net = resnet_small(n_in=1, n_out=10, widths=(8, 16))
    assert isinstance(net, ResNetSmall) and net(x28).shape == (3, 10)
    assert net.init_kwargs["widths"] == [8, 16]
    groups = default_split(net)
    _check_groups(net, groups)


@pytest.mark.parametrize(
    "size, stem_stride, widths, side", [(28, 2, (8, 16, 32), 4), (28, 1, (8, 16), 14), (29, 2, (4, 8), 8)]
)
def test_resnet_small_flat_head_sees_the_whole_last_feature_map(size, stem_stride, widths, side):
    net = resnet_small(n_in=1, n_out=5, widths=widths, stem_stride=stem_stride, img_size=size)
    assert isinstance(net[-3], nn.Identity) and net[-1].in_features == widths[-1] * side**2
    x = torch.rand(2, 1, size, size)
    assert net(x).shape == (2, 5)
    assert tuple(nn.Sequential(*list(net)[:-3])(x).shape[-2:]) == (
        side,
        side,
    )  # the body's output: what the Linear flattens
    assert net.init_kwargs["img_size"] == size and ResNetSmall(**net.init_kwargs)(x).shape == (2, 5)
    # where a feature is matters: a feature map and its mirror image give different logits
    feats = torch.rand(1, widths[-1], side, side)
    head = nn.Sequential(*list(net)[-3:])
    assert not torch.allclose(head(feats), head(feats.flip(-1)))
    with pytest.raises(ValueError, match=rf"takes {size}x{size} images; got 30x30. Resize the inputs"):
        net(torch.rand(1, 1, 30, 30))
    pooled = resnet_small(n_in=1, n_out=5, widths=widths, stem_stride=stem_stride)
    assert isinstance(pooled[-3], nn.AdaptiveAvgPool2d) and pooled(torch.rand(1, 1, 30, 30)).shape == (1, 5)


def test_resnet_small_depth_per_stage_and_an_empty_first_stage():
    net = resnet_small(n_in=1, n_out=10, widths=(8, 16, 32), depth=(0, 2, 1), img_size=28)
    assert [len(stage) for stage in list(net)[1:4]] == [0, 2, 1]
    assert net[2][0].convs[0][0].in_channels == 8  # the stem feeds the second stage directly
    x = torch.rand(2, 1, 28, 28)
    assert net(x).shape == (2, 10) and net[-1].in_features == 32 * 7 * 7
    rebuilt = ResNetSmall(**net.init_kwargs)
    assert net.init_kwargs["depth"] == [0, 2, 1]
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in net.parameters())
    assert sum(p.numel() for p in net.parameters()) < sum(
        p.numel() for p in resnet_small(n_in=1, widths=(8, 16, 32), depth=(1, 2, 1), img_size=28).parameters()
    )
    for bad in [(1, 1), (1, 0, 1), (-1, 1, 1)]:
        with pytest.raises(ValueError, match=r"one per width \(3 for widths=\(8, 16, 32\)\).*got depth="):
            resnet_small(widths=(8, 16, 32), depth=bad)


def _smooth_images(n: int, c: int = 1, side: int = 12) -> torch.Tensor:
    """Noise blurred by a 3 x 3 box: neighbouring pixels strongly correlated, as in photos."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, side + 2, side + 2, generator=g)
    return nn.functional.avg_pool2d(x, 3, stride=1) * 3 + 0.5


def test_whiten_conv_decorrelates_the_patches_and_freezes_its_filters():
    x = _smooth_images(300)
    conv = nn.Conv2d(1, 16, 3, padding=1)
    raw = nn.functional.unfold(x, 3).transpose(1, 2).reshape(-1, 9)
    assert torch.corrcoef(raw.T)[0, 1] > 0.5  # the pixels of a patch are correlated before
    assert whiten_conv_(conv, x) is conv
    w = conv.weight
    assert torch.equal(w[8:], -w[:8]) and torch.equal(conv.bias, torch.zeros(16))
    assert not w.requires_grad and not conv.bias.requires_grad
    feats = nn.functional.conv2d(x, w[:8]).permute(0, 2, 3, 1).reshape(-1, 8)  # the patches, no padding
    cov = torch.cov(feats.T.double(), correction=0)
    assert (cov - torch.diag(cov.diagonal())).abs().max() < 1e-4  # decorrelated
    assert cov.diagonal().min() > 0.9 and cov.diagonal().max() < 1  # unit variance, less eps's share
    before = w.clone()  # frozen: a training step leaves the filters as they are
    net = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(16 * 12 * 12, 2))
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1.0)
    nn.functional.cross_entropy(net(x), torch.arange(300) % 2).backward()
    opt.step()
    assert w.grad is None and torch.equal(w, before)
    trainable = whiten_conv_(nn.Conv2d(1, 16, 3, bias=False), x, freeze=False)
    assert trainable.weight.requires_grad and torch.allclose(trainable.weight, w)


def test_whiten_conv_takes_several_channels_and_explains_what_does_not_fit():
    x = _smooth_images(50, c=3)
    conv = whiten_conv_(nn.Conv2d(3, 32, 3, bias=False), x, chunk=7)  # 27 patch dims, 16 components
    feats = nn.functional.conv2d(x, conv.weight[:16]).permute(0, 2, 3, 1).reshape(-1, 16)
    cov = torch.cov(feats.T.double(), correction=0)
    assert (cov - torch.diag(cov.diagonal())).abs().max() < 1e-4
    with pytest.raises(ValueError, match=r"even out_channels of at most 2 x 9 .* has 15"):
        whiten_conv_(nn.Conv2d(1, 15, 3), x[:, :1])
    with pytest.raises(ValueError, match=r"even out_channels of at most 2 x 9 .* has 20"):
        whiten_conv_(nn.Conv2d(1, 20, 3), x[:, :1])
    with pytest.raises(
        ValueError, match=r"needs float inputs N x 1 x H x W.*torch.float32 \(50, 3, 12, 12\)"
    ):
        whiten_conv_(nn.Conv2d(1, 16, 3), x)
    with pytest.raises(ValueError, match=r"torch.uint8"):
        whiten_conv_(nn.Conv2d(1, 16, 3), (x[:, :1] * 50).to(torch.uint8))
    with pytest.raises(
        ValueError, match=r"needs patches to measure: \(1, 1, 2, 2\) inputs hold none of 3 x 3"
    ):
        whiten_conv_(nn.Conv2d(1, 16, 3), torch.rand(1, 1, 2, 2))
    with pytest.raises(TypeError, match="groups=1"):
        whiten_conv_(nn.Conv2d(4, 8, 3, groups=2), torch.rand(2, 4, 8, 8))


def test_create_body_counts_any_pooling_layer():
    """Issue #12 (fastai parity): the automatic cut counts max/avg pooling, not only adaptive pooling."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
            self.pool = nn.AvgPool2d(2)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))

    body = create_body(Net())
    assert len(body) == 1 and isinstance(body[0][0], nn.Conv2d)


def test_default_split_is_fastais_body_head():
    """Issue #12 (fastai parity): default_split gives 2 groups, body then head, for unregistered archs."""

    def my_net():
        return nn.Sequential(
            nn.Conv2d(3, 4, 3),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 8, 3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 2),
        )

    model = create_vision_model(my_net, 3, pretrained=False)
    groups = arch_meta(my_net)[1].split(model)
    assert [len(g) for g in groups] == [len(list(model[0].parameters())), len(list(model[1].parameters()))]
    _check_groups(model, groups)


def test_arch_meta_lookup():
    assert arch_meta("resnet34")[1].builder is tvm.resnet34
    assert arch_meta(tvm.resnet34)[1].norm_stats[0] == [0.485, 0.456, 0.406]
    assert arch_meta("TinyVGG")[0] == "tinyvgg"

    def my_net():
        return nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
        )

    name, meta = arch_meta(my_net)
    assert (name, meta.source, meta.stats, meta.cut) == ("my_net", "user", None, None)
    model = create_vision_model(my_net, 3, pretrained=False)
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 3)
    with pytest.raises(ValueError, match="Unknown architecture name 'resnet19'"):
        arch_meta("resnet19")


def test_create_vision_model_takes_the_head_arguments_of_create_head():
    import inspect

    params = inspect.signature(create_vision_model).parameters
    for name, p in inspect.signature(create_head).parameters.items():
        if p.default is not p.empty:
            assert params[name].default is p.default, name
    model = create_vision_model("tinyvgg", 3, pretrained=False, concat_pool=False, bn_final=True)
    assert type(model[1][0]).__name__ == "AdaptiveAvgPool2d" and type(model[1][-1]).__name__ == "BatchNorm1d"
    assert model.arch_spec["head"]["concat_pool"] is False and model.arch_spec["head"]["first_bn"] is True
    with pytest.raises(TypeError, match=r"'lin_ftr' \(did you mean 'lin_ftrs'\?\)"):
        create_vision_model("tinyvgg", 3, pretrained=False, lin_ftr=[4])
