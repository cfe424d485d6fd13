"""Vision model building blocks: the architecture registry, `create_body`, `create_head`, small CNNs.

A vision model is `nn.Sequential(body, head)`: the body is a (usually pretrained) feature extractor
cut from a classification network, the head pools its feature map and maps it to `n_out` outputs.
The registry `model_meta` maps an architecture's function name to where to cut it, how to split its
parameters into groups for discriminative learning rates / freezing, and its normalisation stats.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

__all__ = [
    "AdaptiveConcatPool2d",
    "SigmoidRange",
    "create_head",
    "apply_init",
    "create_body",
    "num_features_model",
    "ViTBody",
    "TinyVGG",
    "ResNetSmall",
    "resnet_small",
    "whiten_conv_",
    "ArchMeta",
    "model_meta",
    "arch_meta",
    "default_split",
    "TimmBody",
    "create_timm_body",
]

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm2d, nn.LayerNorm, nn.GroupNorm)


class AdaptiveConcatPool2d(nn.Module):
    """Concatenate adaptive max pooling and adaptive average pooling (in that order) on the channels."""

    def __init__(self, size: int | None = None):
        super().__init__()
        self.size = size or 1
        self.ap, self.mp = nn.AdaptiveAvgPool2d(self.size), nn.AdaptiveMaxPool2d(self.size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return `cat([maxpool(x), avgpool(x)], dim=1)`."""
        return torch.cat([self.mp(x), self.ap(x)], 1)


class SigmoidRange(nn.Module):
    """Squash the input to `(low, high)` with a scaled sigmoid."""

    def __init__(self, low: float, high: float):
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return `sigmoid(x) * (high - low) + low`."""
        return torch.sigmoid(x) * (self.high - self.low) + self.low


def _bn1d(n: int) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(n)
    nn.init.ones_(bn.weight)
    nn.init.constant_(bn.bias, 1e-3)
    return bn


def _lin_bn_drop(n_in: int, n_out: int, bn: bool, p: float, act: bool, lin_first: bool) -> list[nn.Module]:
    norm: list[nn.Module] = [_bn1d(n_out if lin_first else n_in)] if bn else []
    if p != 0:
        norm.append(nn.Dropout(p))
    lin: list[nn.Module] = [nn.Linear(n_in, n_out, bias=not bn)]
    if act:
        lin.append(nn.ReLU(inplace=True))
    return lin + norm if lin_first else norm + lin


def create_head(
    nf: int,
    n_out: int,
    lin_ftrs: Sequence[int] | None = None,
    ps: float | Sequence[float] = 0.5,
    pool: bool = True,
    concat_pool: bool = True,
    first_bn: bool = True,
    bn_final: bool = False,
    lin_first: bool = False,
    y_range: tuple[float, float] | None = None,
) -> nn.Sequential:
    """Build fastai's classifier head for a body with `nf` output channels.

    Default layers: `AdaptiveConcatPool2d, Flatten, BatchNorm1d(2nf), Dropout(ps/2), Linear(2nf, 512,
    bias=False), ReLU, BatchNorm1d(512), Dropout(ps), Linear(512, n_out, bias=False)`.

    Args:
        nf: channels of the body's output (doubled when `pool and concat_pool`).
        n_out: number of outputs.
        lin_ftrs: widths of the hidden linear layers ([512]).
        ps: dropout probabilities, one per linear layer; a single value p gives [p/2, ..., p/2, p].
        pool: add pooling + flatten (False for bodies that already return N x nf, e.g. ViT).
        concat_pool: `AdaptiveConcatPool2d` (True) or `AdaptiveAvgPool2d(1)`.
        first_bn: put a BatchNorm1d before the first linear layer.
        bn_final: append `BatchNorm1d(n_out, momentum=0.01)`.
        lin_first: Linear -> ReLU -> BatchNorm -> Dropout blocks instead of BatchNorm -> Dropout -> Linear.
        y_range: append `SigmoidRange(*y_range)`.
    """
    if pool and concat_pool:
        nf *= 2
    ftrs = [nf, 512, n_out] if lin_ftrs is None else [nf, *lin_ftrs, n_out]
    bns = [first_bn] + [True] * (len(ftrs) - 2)
    ps_list = [float(ps)] if isinstance(ps, (int, float)) else [float(p) for p in ps]
    if len(ps_list) == 1:
        ps_list = [ps_list[0] / 2] * (len(ftrs) - 2) + ps_list
    if len(ps_list) != len(ftrs) - 1:
        raise ValueError(
            f"create_head got {len(ps_list)} dropout values ps={ps!r} for {len(ftrs) - 1} linear layers "
            f"(widths {ftrs}). Pass one value or one per linear layer."
        )
    acts = [True] * (len(ftrs) - 2) + [False]
    layers: list[nn.Module] = []
    if pool:
        layers += [AdaptiveConcatPool2d() if concat_pool else nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if lin_first:
        layers.append(nn.Dropout(ps_list.pop(0)))
    for ni, no, bn, p, act in zip(ftrs[:-1], ftrs[1:], bns, ps_list, acts):
        layers += _lin_bn_drop(ni, no, bn=bn, p=p, act=act, lin_first=lin_first)
    if lin_first:
        layers.append(nn.Linear(ftrs[-2], n_out))
    if bn_final:
        layers.append(nn.BatchNorm1d(ftrs[-1], momentum=0.01))
    if y_range is not None:
        layers.append(SigmoidRange(*y_range))
    return nn.Sequential(*layers)


def apply_init(module: nn.Module, init: Callable | None = nn.init.kaiming_normal_) -> None:
    """Initialise every trainable non-norm leaf of `module`: `init(weight)`, bias zeroed."""
    for m in module.modules():
        if next(m.children(), None) is not None or isinstance(m, _NORM_TYPES):
            continue
        params = list(m.parameters(recurse=False))
        if not params or not params[0].requires_grad:
            continue
        with torch.no_grad():
            weight, bias = getattr(m, "weight", None), getattr(m, "bias", None)
            if init is not None and isinstance(weight, torch.Tensor):
                init(weight)
            if isinstance(bias, torch.Tensor):
                bias.zero_()


def _first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d] | None:
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                return parent, name, child
    return None


def _adapt_first_conv(model: nn.Module, n_in: int, pretrained: bool) -> None:
    found = _first_conv(model)
    if found is None:
        raise ValueError(
            f"n_in={n_in} needs a first nn.Conv2d to adapt, but {type(model).__name__} has none."
        )
    parent, name, old = found
    if old.in_channels == n_in:
        return
    # torch types these attributes tuple[int, ...] and the arguments tuple[int, int]
    geometry: dict[str, Any] = {
        "kernel_size": old.kernel_size,
        "stride": old.stride,
        "padding": old.padding,
        "dilation": old.dilation,
    }
    new = nn.Conv2d(
        n_in,
        old.out_channels,
        **geometry,
        groups=old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    if pretrained:
        w = old.weight.detach()
        with torch.no_grad():
            if n_in == 1:
                new.weight.copy_(w.sum(dim=1, keepdim=True))
            elif n_in == 2:
                new.weight.copy_(w[:, :2] * 1.5)
            else:
                k = min(n_in, w.shape[1])
                new.weight.zero_()
                new.weight[:, :k] = w[:, :k]
            if old.bias is not None and new.bias is not None:
                new.bias.copy_(old.bias.detach())
    setattr(parent, name, new)


def _has_pool(m: nn.Module) -> bool:
    """True when `m` is or contains a pooling layer (class name ending in Pool1d/2d/3d, as fastai)."""
    return any(re.search(r"Pool[123]d$", type(o).__name__) for o in m.modules())


def create_body(
    model: nn.Module, n_in: int = 3, pretrained: bool = True, cut: int | Callable | None = None
) -> nn.Module:
    """Cut the classifier off `model` and adapt its first convolution to `n_in` channels.

    With pretrained weights, a 1-channel conv gets the sum of the RGB filters, 2 channels the first two
    times 1.5, more than 3 the RGB filters then zeros.

    Args:
        model: a classification network (already holding its weights).
        n_in: input channels (3).
        pretrained: whether `model`'s first conv weights are worth adapting (True).
        cut: int -> keep `children[:cut]`; callable -> `cut(model)`; None -> cut before the last child
            that contains a pooling layer (any `*Pool1d/2d/3d`: max, average or adaptive, as fastai), or
            before the last child when none does.
    """
    first = _first_conv(model)
    if first is not None and first[2].in_channels != n_in:
        _adapt_first_conv(model, n_in, pretrained)
    if cut is None:
        children = list(model.children())
        pooled = [i for i, c in enumerate(children) if _has_pool(c)]
        cut = pooled[-1] if pooled else len(children) - 1
    if isinstance(cut, int):
        return nn.Sequential(*list(model.children())[:cut])
    if callable(cut):
        return cut(model)
    raise TypeError(f"cut must be an int, a callable or None; got {type(cut).__name__} ({cut!r}).")


def num_features_model(m: nn.Module) -> int:
    """Return the number of channels (or features) `m` outputs, found with a dummy forward pass."""
    nf = getattr(m, "num_features", None)
    if isinstance(nf, int):
        return nf
    first = _first_conv(m)
    n_in = first[2].in_channels if first is not None else 3
    was_training = m.training
    m.eval()
    errors = []
    try:
        for size in (32, 64, 128, 256, 512, 1024, 2048):
            try:
                with torch.no_grad():
                    p = next(m.parameters(), None)
                    x = torch.zeros(1, n_in, size, size, device=p.device if p is not None else None)
                    return int(m(x).shape[1])
            except Exception as e:  # a too-small input fails inside the model; try a larger one
                errors.append(f"{size}px: {e}")
    finally:
        m.train(was_training)
    raise RuntimeError(
        f"Could not find the output width of {type(m).__name__} with dummy inputs of 32 to 2048 px "
        f"({errors[-1]}). Pass `cut=` to cut the model where it returns a feature map."
    )


class ViTBody(nn.Module):
    """The encoder of a torchvision `VisionTransformer`, returning the class token (N x hidden_dim)."""

    def __init__(self, vit: Any):  # a torchvision VisionTransformer
        super().__init__()
        self.conv_proj, self.encoder, self.class_token = vit.conv_proj, vit.encoder, vit.class_token
        self.patch_size, self.image_size, self.num_features = vit.patch_size, vit.image_size, vit.hidden_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed patches, prepend the class token, run the encoder and return the class token."""
        n, _, h, w = x.shape
        if h != self.image_size or w != self.image_size:
            raise ValueError(
                f"This ViT body expects {self.image_size}x{self.image_size} images, got {h}x{w}. "
                f"Resize to {self.image_size} or build the model with arch_kwargs={{'image_size': {h}}}."
            )
        x = self.conv_proj(x).reshape(n, self.num_features, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        return self.encoder(x)[:, 0]


class TinyVGG(nn.Module):
    """The CNN Explainer TinyVGG: two conv-ReLU-conv-ReLU-maxpool blocks, then a linear classifier.

    Args:
        n_in: input channels (1).
        n_out: number of classes (10).
        hidden: channels of every conv (10).
        img_size: input height/width, which fixes the classifier's input size (28).
    """

    def __init__(self, n_in: int = 1, n_out: int = 10, hidden: int = 10, img_size: int = 28):
        super().__init__()
        self.init_kwargs = {"n_in": n_in, "n_out": n_out, "hidden": hidden, "img_size": img_size}

        def block(ni: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(ni, hidden, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(hidden, hidden, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.block1, self.block2 = block(n_in), block(hidden)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(hidden * (img_size // 4) ** 2, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits for a batch N x n_in x img_size x img_size."""
        return self.classifier(self.block2(self.block1(x)))


def _conv_bn(ni: int, nf: int, stride: int = 1, relu: bool = True, zero_bn: bool = False) -> nn.Sequential:
    bn = nn.BatchNorm2d(nf)
    if zero_bn:
        nn.init.zeros_(bn.weight)
    layers = [nn.Conv2d(ni, nf, 3, stride=stride, padding=1, bias=False), bn]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class _ResBlock(nn.Module):
    def __init__(self, ni: int, nf: int, stride: int):
        super().__init__()
        self.convs = nn.Sequential(_conv_bn(ni, nf, stride), _conv_bn(nf, nf, relu=False, zero_bn=True))
        shortcut: list[nn.Module] = [nn.AvgPool2d(2, ceil_mode=True)] if stride != 1 else []
        if ni != nf:
            shortcut += [nn.Conv2d(ni, nf, 1, bias=False), nn.BatchNorm2d(nf)]
        self.shortcut = nn.Sequential(*shortcut)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + self.shortcut(x))


class ResNetSmall(nn.Sequential):
    """A small ResNet for 28-64 px images: 3x3 stem, one stage per width (stride 2 after the first).

    Children: stem, one stage per width, then the head: AdaptiveAvgPool2d (Identity with `img_size`),
    Flatten, Linear. Residual branches end with a zero-initialised BatchNorm, so every block starts as
    the identity. With `img_size` the head flattens the last feature map instead of averaging it, so
    the classifier sees where each feature is (a collar at the top, sleeves at the sides), and the net
    takes only `img_size` x `img_size` inputs. `depth` is the number of residual blocks per stage, one
    number for all or one per width; the first stage may have none (an empty stage: the stem's
    `widths[0]` channels go straight to the second stage's stride-2 block).
    """

    def __init__(
        self,
        n_in: int = 3,
        n_out: int = 10,
        widths: Sequence[int] = (32, 64, 128),
        depth: int | Sequence[int] = 1,
        stem_stride: int = 1,
        img_size: int | None = None,
    ):
        depths = [depth] * len(widths) if isinstance(depth, int) else [int(d) for d in depth]
        if len(depths) != len(widths) or any(d < 1 for d in depths[1:]) or depths[0] < 0:
            raise ValueError(
                f"ResNetSmall needs one depth for all stages or one per width ({len(widths)} for "
                f"widths={tuple(widths)}), each at least 1 (0 allowed for the first stage only); got "
                f"depth={depth!r}."
            )
        layers: list[nn.Module] = [_conv_bn(n_in, widths[0], stride=stem_stride)]
        ni, side = widths[0], None if img_size is None else -(-img_size // stem_stride)
        for i, (nf, d) in enumerate(zip(widths, depths)):
            blocks = [_ResBlock(ni if j == 0 else nf, nf, 2 if (i > 0 and j == 0) else 1) for j in range(d)]
            layers.append(nn.Sequential(*blocks))
            ni = nf
            if side is not None and i > 0:
                side = -(-side // 2)  # a stride-2 3x3 conv with padding 1: ceil(side / 2)
        pool = nn.AdaptiveAvgPool2d(1) if side is None else nn.Identity()  # the head stays 3 layers
        layers += [pool, nn.Flatten(), nn.Linear(ni * (side or 1) ** 2, n_out)]
        super().__init__(*layers)
        self.img_size = img_size
        self.init_kwargs = {
            "n_in": n_in,
            "n_out": n_out,
            "widths": list(widths),
            "depth": depth if isinstance(depth, int) else depths,
            "stem_stride": stem_stride,
            "img_size": img_size,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class logits of a batch N x n_in x H x W (H = W = `img_size` when it is set)."""
        if self.img_size is not None and tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(
                f"This ResNetSmall flattens its last feature map, so it takes {self.img_size}x{self.img_size} "
                f"images; got {tuple(x.shape[-2:])[0]}x{tuple(x.shape[-2:])[-1]}. Resize the inputs to "
                f"{self.img_size}, or build it with img_size=None (global average pooling, any size)."
            )
        return super().forward(x)


def resnet_small(
    n_in: int = 3,
    n_out: int = 10,
    widths: Sequence[int] = (32, 64, 128),
    depth: int | Sequence[int] = 1,
    stem_stride: int = 1,
    img_size: int | None = None,
) -> ResNetSmall:
    """Build a `ResNetSmall` (fast on CPU, for Fashion-MNIST / CIFAR-sized images)."""
    return ResNetSmall(n_in, n_out, widths, depth, stem_stride, img_size)


@torch.no_grad()
def whiten_conv_(
    conv: nn.Conv2d, x: torch.Tensor, eps: float = 5e-4, freeze: bool = True, chunk: int = 1024
) -> nn.Conv2d:
    """Make `conv`'s filters whiten the patches of `x`, then (by default) freeze them; return `conv`.

    The filters become the top `out_channels // 2` principal components of the k x k patches of `x`,
    each scaled by 1 / sqrt(eigenvalue + eps) and used twice, as is and negated (so a ReLU after the
    conv keeps both signs); the bias, if any, becomes 0. On its input, the conv's first half of channels
    then outputs decorrelated features of equal variance, which the following layers learn from faster
    than from raw pixels: the whitened first layer of Keller Jordan's CIFAR-10 speed runs ("airbench").
    On Fashion-MNIST it lifted `fastvision demo` by about half a point in the same training time
    (docs/benchmarks.md). Frozen, the conv also skips its weight gradient.

    Args:
        conv: a 2-D convolution with `groups=1` and an even `out_channels` of at most 2 x C x k x k.
        x: sample inputs, N x C x H x W, normalised as the net's inputs will be (a few thousand images
            are plenty); patches are taken without padding, with `conv`'s kernel size and dilation.
        eps: added to each eigenvalue before the inverse square root: limits how much the faintest
            components (pixel noise) are amplified.
        freeze: set `requires_grad=False` on the weight and bias (True).
        chunk: images per step of the covariance sum, on the CPU in float64 whatever `x`'s device
            (memory: chunk x H x W x C x k x k doubles).
    """
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise TypeError(f"whiten_conv_ takes an nn.Conv2d with groups=1; got {conv!r}.")
    kh, kw = conv.kernel_size
    dims, nf = conv.in_channels * kh * kw, conv.out_channels
    if nf % 2 or nf // 2 > dims:
        raise ValueError(
            f"whiten_conv_ needs an even out_channels of at most 2 x {dims} (in_channels x kernel area: "
            f"each of the top out_channels / 2 components of the patches is used as is and negated); "
            f"{conv!r} has {nf}. Change the conv's out_channels or kernel_size."
        )
    if x.ndim != 4 or x.shape[1] != conv.in_channels or not x.is_floating_point():
        raise ValueError(
            f"whiten_conv_ needs float inputs N x {conv.in_channels} x H x W, normalised like the net's "
            f"inputs; got {x.dtype} {tuple(x.shape)}."
        )
    span = [d * (k - 1) + 1 for d, k in zip(conv.dilation, conv.kernel_size)]
    if len(x) == 0 or x.shape[-2] < span[0] or x.shape[-1] < span[1]:
        raise ValueError(
            f"whiten_conv_ needs patches to measure: {tuple(x.shape)} inputs hold none of "
            f"{span[0]} x {span[1]} pixels. Pass images at least that large."
        )
    total, outer, n = torch.zeros(dims, dtype=torch.float64), torch.zeros(dims, dims, dtype=torch.float64), 0
    for xb in x.split(chunk):
        p = (
            nn.functional.unfold(xb.to("cpu", torch.float64), (kh, kw), dilation=conv.dilation)
            .transpose(1, 2)
            .reshape(-1, dims)
        )
        total, outer, n = total + p.sum(0), outer + p.T @ p, n + len(p)
    mean = total / n
    ev, vec = torch.linalg.eigh(outer / n - torch.outer(mean, mean))  # ascending eigenvalues
    ev, vec = ev.flip(0)[: nf // 2].clamp(min=0), vec.flip(1)[:, : nf // 2]
    w = (vec / (ev + eps).sqrt()).T.reshape(nf // 2, conv.in_channels, kh, kw)
    conv.weight.copy_(torch.cat([w, -w]).to(conv.weight))
    if conv.bias is not None:
        conv.bias.zero_()
    for prm in conv.parameters():
        prm.requires_grad_(not freeze)
    return conv


# ---- parameter groups --------------------------------------------------------------------------


def _params(mods: Iterable[nn.Module | nn.Parameter]) -> list[nn.Parameter]:
    out: list[nn.Parameter] = []
    for m in mods:
        out += [m] if isinstance(m, nn.Parameter) else list(m.parameters())
    return out


def _groups(model: nn.Module, *groups: Iterable[nn.Module | nn.Parameter]) -> list[list[nn.Parameter]]:
    """Turn module lists into parameter groups; parameters no group names go to the first group."""
    seen: set[int] = set()
    out = []
    for g in groups:
        ps = [p for p in _params(g) if id(p) not in seen]
        seen.update(id(p) for p in ps)
        out.append(ps)
    out[0] = [p for p in model.parameters() if id(p) not in seen] + out[0]
    return [g for g in out if g]


def _body_head(model: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
    children = list(model.children())
    if isinstance(model, nn.Sequential) and len(children) == 2:
        return children[0], [children[1]]
    return nn.Sequential(*children[:-1]), children[-1:]


def default_split(model: nn.Module) -> list[list[nn.Parameter]]:
    """Split `Sequential(body, head)` into fastai's 2 groups: the body, then the head."""
    body, head = _body_head(model)
    return _groups(model, [body], head)


def _halves_split(model: nn.Module) -> list[list[nn.Parameter]]:
    """Split `Sequential(body, head)` into 3 groups: first half of the body, second half, head.

    The split of the registered torchvision families fastai has no entry for (MobileNet, EfficientNet,
    ConvNeXt, ShuffleNet), so that `fine_tune`'s discriminative lrs span three groups as for ResNets.
    """
    body, head = _body_head(model)
    mods = list(body.children())
    while len(mods) < 4 and any(next(m.children(), None) is not None for m in mods):
        mods = [c for m in mods for c in (list(m.children()) or [m])]
    k = max(1, len(mods) // 2)
    return _groups(model, mods[:k], mods[k:], head)


def _split_at(k: int, inner: bool) -> Callable[[nn.Module], list[list[nn.Parameter]]]:
    """Split at child `k` of the body (`inner`: of the body's first child) / the rest / the head."""

    def split(m: nn.Module) -> list[list[nn.Parameter]]:
        sm: Any = m  # Sequential(body, head), the body a torchvision model's children
        body, head = sm[0], sm[1]
        seq = body[0] if inner else body
        rest = [seq[k:], *body[1:]] if inner else [seq[k:]]
        return _groups(m, [seq[:k]], rest, [head])

    return split


def _regnet_split(m: nn.Module) -> list[list[nn.Parameter]]:
    sm: Any = m  # Sequential(body, head), the body a torchvision RegNet's children
    stem, trunk = sm[0][0], sm[0][1]
    return _groups(m, [stem, trunk[:2]], [trunk[2:]], [sm[1]])


def _vit_split(m: nn.Module) -> list[list[nn.Parameter]]:
    sm: Any = m  # Sequential(ViTBody, head)
    body, head = sm[0], sm[1]
    layers, k = body.encoder.layers, len(body.encoder.layers) // 2
    return _groups(
        m,
        [body.conv_proj, body.class_token, body.encoder.pos_embedding, layers[:k]],
        [layers[k:], body.encoder.ln],
        [head],
    )


def _densenet_cut(model: nn.Module) -> nn.Module:
    features: Any = model.features
    return nn.Sequential(features, nn.ReLU(inplace=True))  # torchvision applies this ReLU in forward


# ---- timm architectures -----------------------------------------------------------------------

TIMM_PREFIX = "timm/"  # 'timm/efficientnet_b0' picks timm's model where torchvision has the same name


def import_timm() -> Any:
    """Import and return `timm`, or raise an ImportError that says how to install it."""
    try:
        import timm
    except ImportError as e:
        raise ImportError(
            "timm architectures need the timm package, which is not installed. "
            "Install it with `pip install fastvision[timm]` (or `pip install timm`)."
        ) from e
    return timm


class TimmBody(nn.Module):
    """A timm model built with `num_classes=0`, returning N x C x H x W feature maps (or N x C features).

    Args:
        model: the timm model.
        mode: 'map' (the model's forward, built with `global_pool=''`: every layer but pooling and
            classifier), 'features' (`model.forward_features`, for models that cannot turn pooling off) or
            'pooled' (the model's pooled forward, for transformers without a spatial feature map).
    """

    model: Any  # a timm model

    def __init__(self, model: nn.Module, mode: str = "map"):
        super().__init__()
        if mode not in ("map", "features", "pooled"):
            raise ValueError(f"TimmBody mode must be 'map', 'features' or 'pooled', got {mode!r}.")
        self.model, self.mode = model, mode
        fmt = getattr(model, "output_fmt", "NCHW")
        self.channels_last = mode != "pooled" and getattr(fmt, "value", fmt) == "NHWC"  # e.g. Swin
        hidden = getattr(model, "head_hidden_size", None)
        self.num_features = int(hidden if hidden and mode != "features" else self.model.num_features)

    @property
    def pooled(self) -> bool:
        """Whether the body already pools (the head then has no pooling layer)."""
        return self.mode == "pooled"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the features of `x` (channels first)."""
        x = self.model.forward_features(x) if self.mode == "features" else self.model(x)
        return x.permute(0, 3, 1, 2) if self.channels_last else x


def create_timm_body(name: str, n_in: int = 3, pretrained: bool = False, **kwargs: Any) -> TimmBody:
    """Build timm's `name` ('resnet10t', 'timm/convnext_atto', tags as 'resnet10t.c3_in1k') without classifier.

    As fastai: `timm.create_model(name, pretrained, num_classes=0, in_chans=n_in)`. Models whose
    pretrained config has a `pool_size` (CNNs) are built with `global_pool=''`, so the body returns the
    feature map and fastai's head pools it; transformers return their pooled features.

    Args:
        name: timm model name, optionally prefixed 'timm/'.
        n_in: input channels (3); timm adapts pretrained first-layer weights itself.
        pretrained: load timm's pretrained weights (False); `kwargs` go to `timm.create_model`.
    """
    timm = import_timm()
    name = name.removeprefix(TIMM_PREFIX)
    cfg = timm.models.get_pretrained_cfg(name)
    args = {"pretrained": pretrained, "num_classes": 0, "in_chans": n_in, **kwargs}
    if cfg is not None and cfg.pool_size is None:
        return TimmBody(timm.create_model(name, **args), "pooled")
    try:
        return TimmBody(timm.create_model(name, global_pool="", **args), "map")
    except (AssertionError, ValueError, NotImplementedError):  # e.g. efficientvit: "Cannot disable pooling"
        return TimmBody(timm.create_model(name, **args), "features")


@dataclass
class ArchMeta:
    """How to turn an architecture into `Sequential(body, head)`.

    Args:
        cut: where to cut the classifier off (see `create_body`); None for the automatic cut.
        split: `split(model) -> list of parameter lists` (stem-ish / body / head).
        stats: name of the normalisation stats in `fastvision.vision.lighting` ('imagenet_stats'), a
            `(mean, std)` pair (timm's pretrained config), or None.
        source: 'torchvision' (built with `weights=`), 'fastvision' (built with `n_in`, `n_out`, no
            pretrained weights), 'timm' (built by `create_timm_body`) or 'user'.
        builder: the function that builds the network (looked up for name strings).
    """

    cut: int | Callable | None = None
    split: Callable[[nn.Module], list[list[nn.Parameter]]] = default_split
    stats: str | tuple[list[float], list[float]] | None = None
    source: str = "user"
    builder: Callable[..., nn.Module] | None = field(default=None, repr=False)

    @property
    def norm_stats(self) -> tuple[list[float], list[float]] | None:
        """The (mean, std) lists this architecture was trained with, or None."""
        if self.stats is None or not isinstance(self.stats, str):
            return self.stats
        from . import lighting

        return getattr(lighting, self.stats)


def _tv(cut: int | Callable | None = None, split: Callable = _halves_split) -> dict[str, Any]:
    return {"cut": cut, "split": split, "stats": "imagenet_stats", "source": "torchvision"}


model_meta: dict[str, ArchMeta] = {}  # add entries for your own architectures (key: function name)
for _names, _kw in [
    ("resnet18 resnet34 resnet50 resnet101 resnet152 resnext50_32x4d resnext101_32x8d resnext101_64x4d "
     "wide_resnet50_2 wide_resnet101_2", _tv(-2, _split_at(6, inner=False))),
    ("densenet121 densenet161 densenet169 densenet201", _tv(_densenet_cut, _split_at(7, inner=True))),
    ("vgg11_bn vgg13_bn vgg16_bn vgg19_bn", _tv(-2, _split_at(22, inner=True))),
    ("alexnet", _tv(-2, _split_at(6, inner=True))),
    ("squeezenet1_0 squeezenet1_1", _tv(-1, _split_at(5, inner=True))),
    ("mobilenet_v2", _tv(-1)),
    ("shufflenet_v2_x0_5 shufflenet_v2_x1_0 shufflenet_v2_x1_5 shufflenet_v2_x2_0", _tv(-1)),
    ("mobilenet_v3_small mobilenet_v3_large efficientnet_v2_s efficientnet_v2_m efficientnet_v2_l "
     "convnext_tiny convnext_small convnext_base convnext_large "
     + " ".join(f"efficientnet_b{i}" for i in range(8)), _tv(-2)),
    (" ".join(n for n in tvm.list_models(module=tvm) if n.startswith("regnet_")), _tv(-2, _regnet_split)),
    ("vit_b_16 vit_b_32 vit_l_16 vit_l_32 vit_h_14", _tv(ViTBody, _vit_split)),
]:  # fmt: skip
    for _n in _names.split():
        model_meta[_n] = ArchMeta(builder=getattr(tvm, _n), **_kw)
model_meta["tinyvgg"] = ArchMeta(-1, _split_at(1, inner=False), None, "fastvision", TinyVGG)
model_meta["resnet_small"] = ArchMeta(-3, _split_at(2, inner=False), None, "fastvision", resnet_small)


def _close_names(name: str, timm: Any | None) -> str:
    """Say which torchvision/fastvision and timm names are close to `name` (difflib)."""
    base = name.removeprefix(TIMM_PREFIX)
    known = set(model_meta) | set(tvm.list_models(module=tvm))
    ours = difflib.get_close_matches(base, sorted(known), n=5)
    text = f"Close torchvision/fastvision names: {ours}." if ours else "No close torchvision/fastvision name."
    if timm is None:
        return text + (
            " timm is not installed: if it is a timm architecture, install timm with "
            "`pip install fastvision[timm]`."
        )
    close = [
        TIMM_PREFIX + n if n in known else n for n in difflib.get_close_matches(base, timm.list_models(), n=5)
    ]
    return text + (f" Close timm names: {close}." if close else " No close timm name.")


def _timm_meta(name: str) -> tuple[str, ArchMeta]:
    """Return `(name, meta)` for a timm model name; ValueError for names and pretrained tags timm lacks."""
    timm = import_timm()
    base = name.removeprefix(TIMM_PREFIX)
    if not timm.is_model(base):
        raise ValueError(f"Unknown timm architecture name {name!r}. {_close_names(name, timm)}")
    try:
        cfg = timm.models.get_pretrained_cfg(base)
    except RuntimeError as e:  # an unknown pretrained tag
        tags = timm.list_pretrained(base.split(".")[0] + ".*")
        raise ValueError(f"{e} Known pretrained tags: {tags[:10]}; or drop the tag for the default.") from e
    stats = (list(cfg.mean), list(cfg.std)) if cfg is not None and cfg.mean else None
    return TIMM_PREFIX + base, ArchMeta(None, default_split, stats, "timm", create_timm_body)


def arch_meta(arch: str | Callable) -> tuple[str, ArchMeta]:
    """Return `(name, meta)` for an architecture function or name; unknown ones get an automatic meta.

    Names are looked up in the registry, then torchvision, then timm (when installed): 'resnet18' is
    torchvision's, 'resnet10t' timm's, and 'timm/resnet18' timm's resnet18. Timm models are named
    'timm/<name>'. Torchvision classification models missing from the registry get the automatic cut,
    `default_split` (2 groups, as fastai) and ImageNet stats.
    """
    name = arch if isinstance(arch, str) else getattr(arch, "__name__", type(arch).__name__)
    if isinstance(arch, str) and arch.startswith(TIMM_PREFIX):
        return _timm_meta(arch)
    key = name if name in model_meta else name.lower()
    if key in model_meta:
        meta = model_meta[key]
        builder = meta.builder if isinstance(arch, str) else arch
        return key, ArchMeta(meta.cut, meta.split, meta.stats, meta.source, builder)
    if name in tvm.list_models(module=tvm) and (isinstance(arch, str) or arch is getattr(tvm, name, None)):
        return name, ArchMeta(**_tv(split=default_split), builder=tvm.get_model_builder(name))
    if not isinstance(arch, str):
        if getattr(arch, "__module__", "").startswith(
            "timm."
        ):  # a timm model function, e.g. timm.models.resnet10t
            return _timm_meta(name)
        return name, ArchMeta(builder=arch)
    try:
        timm = import_timm()
    except ImportError:
        timm = None
    if timm is not None and timm.is_model(arch):
        return _timm_meta(arch)
    raise ValueError(
        f"Unknown architecture name {arch!r}. {_close_names(arch, timm)} "
        "Pass the model function itself for other architectures."
    )
