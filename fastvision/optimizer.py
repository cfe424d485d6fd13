"""Optimizers and parameter groups: fastai-default `Adam`/`SGD` built on `torch.optim`, hyper-parameter helpers.

The Learner's optimizer is always a real `torch.optim.Optimizer`. `param_groups_for` builds its
groups: one *logical* group per splitter group, each split in up to two torch groups, the second
holding norm-layer parameters and biases with `weight_decay=0` (unless `wd_bn_bias`). Every torch
group carries two extra keys, `group` (the logical index) and `do_wd`, so `set_hyper(opt, 'lr', ...)`
addresses logical groups and never puts weight decay back on the no-decay parameters.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "Adam",
    "SGD",
    "RAdam",
    "Lookahead",
    "ranger",
    "trainable_params",
    "norm_types",
    "even_mults",
    "spread_hyper",
    "param_groups_for",
    "n_groups",
    "set_hyper",
    "get_hyper",
    "build_optimizer",
    "freeze_groups",
]

norm_types = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
)


def _fast_flags(params: Iterable[Any]) -> dict[str, bool]:
    """`fused=True` when every parameter is a float tensor on CUDA, else torch's default (foreach on CUDA)."""
    ps = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    if ps and all(p.is_cuda and p.is_floating_point() for p in ps):
        return {"fused": True}
    return {}


DEFAULT_LR = 1e-3  # fastai's `defaults.lr`: the Learner's and the optimizers' default learning rate


def Adam(  # noqa: N802 - fastai's public name
    params: Iterable[Any],
    lr: float = DEFAULT_LR,
    mom: float = 0.9,
    sqr_mom: float = 0.99,
    eps: float = 1e-5,
    wd: float = 0.01,
    decouple_wd: bool = True,
) -> torch.optim.Optimizer:
    """Return fastai's Adam: `torch.optim.AdamW` (or `Adam` with L2 when not `decouple_wd`), fused on CUDA.

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate (1e-3).
        mom: the first beta (0.9); the one-cycle schedule drives it.
        sqr_mom: the second beta (0.99).
        eps: 1e-5 (fastai's default, not torch's 1e-8).
        wd: weight decay 0.01, decoupled (`p *= 1 - lr*wd`) unless `decouple_wd=False`.
    """
    params = list(params)
    cls = torch.optim.AdamW if decouple_wd else torch.optim.Adam
    return cls(params, lr=lr, betas=(mom, sqr_mom), eps=eps, weight_decay=wd, **_fast_flags(params))


class _DecoupledSGD(torch.optim.SGD):
    """`torch.optim.SGD` whose `weight_decay` is decoupled (`p *= 1 - lr*wd` before the update)."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Decay the weights that have a gradient, then take torch's SGD step without L2."""
        saved = []
        for g in self.param_groups:
            wd = g["weight_decay"]
            ps = [p for p in g["params"] if p.grad is not None]
            if wd and ps:
                torch._foreach_mul_(ps, 1 - g["lr"] * wd)
            saved.append(wd)
            g["weight_decay"] = 0.0
        try:
            return super().step(closure)
        finally:
            for g, wd in zip(self.param_groups, saved):
                g["weight_decay"] = wd


def SGD(  # noqa: N802 - fastai's public name
    params: Iterable[Any], lr: float = DEFAULT_LR, mom: float = 0.0, wd: float = 0.0, decouple_wd: bool = True
) -> torch.optim.Optimizer:
    """Return SGD with fastai's defaults (no momentum, no weight decay); decoupled decay when `wd` is set."""
    cls = _DecoupledSGD if decouple_wd else torch.optim.SGD
    return cls(list(params), lr=lr, momentum=mom, weight_decay=wd)


def RAdam(  # noqa: N802 - fastai's public name
    params: Iterable[Any],
    lr: float = DEFAULT_LR,
    mom: float = 0.9,
    sqr_mom: float = 0.99,
    eps: float = 1e-5,
    wd: float = 0.0,
    decouple_wd: bool = True,
) -> torch.optim.Optimizer:
    """Return fastai's RAdam: `torch.optim.RAdam`, which rectifies Adam's variance in the first steps.

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate (1e-3).
        mom: the first beta (0.9).
        sqr_mom: the second beta (0.99).
        eps: 1e-5.
        wd: weight decay (0), decoupled unless `decouple_wd=False`.
    """
    return torch.optim.RAdam(
        list(params),
        lr=lr,
        betas=(mom, sqr_mom),
        eps=eps,
        weight_decay=wd,
        decoupled_weight_decay=decouple_wd,
    )


class Lookahead(torch.optim.Optimizer):
    """Lookahead (Zhang et al., 2019) around a torch optimizer: every `k` steps of `opt` (the fast weights),
    slow weights move `alpha` of the way towards them and the fast weights restart from there.

    The wrapper shares `opt`'s `param_groups` and `state`, so hyper-parameter schedules, freezing and
    `state_dict` see one optimizer. Each parameter's slow copy lives in `opt.state[p]['slow']` (with its
    step count): it is saved with the optimizer, and clearing the state (`freeze`, `unfreeze`) restarts
    it from the current weights.

    Args:
        opt: the inner optimizer (a `torch.optim.Optimizer`).
        k: inner steps between synchronisations (6).
        alpha: how far the slow weights move towards the fast ones at each synchronisation (0.5).
    """

    def __init__(self, opt: torch.optim.Optimizer, k: int = 6, alpha: float = 0.5):
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"Lookahead wraps a torch.optim.Optimizer; got {type(opt).__name__}.")
        if not (isinstance(k, int) and k >= 1):
            raise ValueError(
                f"Lookahead(k={k!r}): pass the number of inner steps between synchronisations, >= 1."
            )
        if not 0 < alpha <= 1:
            raise ValueError(f"Lookahead(alpha={alpha!r}): pass the slow weights' step, in (0, 1].")
        self.opt, self.k, self.alpha = opt, k, alpha

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # noqa: D102 - the inner optimizer's
        return self.opt.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.opt.param_groups = value

    @property
    def state(self) -> Any:  # noqa: D102 - the inner optimizer's
        return self.opt.state

    @state.setter
    def state(self, value: Any) -> None:
        self.opt.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # noqa: D102 - the inner optimizer's
        return self.opt.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.opt.defaults = value

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients (the inner optimizer's `zero_grad`)."""
        self.opt.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group to the inner optimizer."""
        self.opt.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict; the slow weights are part of its per-parameter state."""
        return self.opt.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict written by `state_dict` (slow weights included)."""
        self.opt.load_state_dict(state_dict)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Take the inner step; every `k`-th step of a parameter, synchronise it with its slow copy."""
        if closure is not None:
            raise NotImplementedError(
                "Lookahead.step takes no closure: compute the loss and gradients first."
            )
        stepped = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        fresh = {p: p.detach().clone() for p in stepped if "slow" not in self.state.get(p, {})}
        loss = self.opt.step()
        fast, slow = [], []
        for p in stepped:
            st = self.state[p]
            if p in fresh:  # the slow weights start where the first step started
                st["slow"], st["lookahead_step"] = fresh[p], 0
            st["lookahead_step"] += 1
            if st["lookahead_step"] % self.k == 0:
                fast.append(p.data)
                slow.append(st["slow"])
        if fast:
            torch._foreach_lerp_(slow, fast, self.alpha)
            torch._foreach_copy_(fast, slow)
        return loss

    def __repr__(self) -> str:
        return f"Lookahead(k={self.k}, alpha={self.alpha}, {self.opt!r})"


def ranger(
    params: Iterable[Any],
    lr: float = DEFAULT_LR,
    mom: float = 0.95,
    sqr_mom: float = 0.99,
    eps: float = 1e-6,
    wd: float = 0.01,
    k: int = 6,
    alpha: float = 0.5,
    decouple_wd: bool = True,
) -> Lookahead:
    """Return fastai's `ranger`: `Lookahead(RAdam(...), k, alpha)`, with fastai's defaults.

    Usually trained with `fit_flat_cos` (a flat lr, then cosine annealing), as in fastai.
    """
    return Lookahead(RAdam(params, lr, mom, sqr_mom, eps, wd, decouple_wd), k=k, alpha=alpha)


def trainable_params(model: nn.Module) -> list[nn.Parameter]:
    """Return the parameters of `model` that require grad (the default splitter: one group)."""
    return [p for p in model.parameters() if p.requires_grad]


def even_mults(start: float, stop: float, n: int) -> list[float]:
    """Return `n` values from `start` to `stop`, evenly spaced on a log scale."""
    if n == 1:
        return [stop]
    mult = (stop / start) ** (1 / (n - 1))
    return [start * mult**i for i in range(n)]


def spread_hyper(value: Any, n: int) -> list[Any]:
    """Expand a hyper-parameter to one value per group: number, `slice(hi)`, `slice(lo, hi)` or a sequence.

    `slice(hi)` gives `hi/10` to every group but the last, which gets `hi`; `slice(lo, hi)` is a
    geometric progression from `lo` to `hi`; a list or array must have one value per group.
    """
    if isinstance(value, slice):
        if value.start:
            return even_mults(value.start, value.stop, n)
        return [value.stop / 10] * (n - 1) + [value.stop]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        value = value.tolist() if value.ndim else value.item()
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise ValueError(
                f"Got {len(value)} values ({value}) for {n} parameter groups; pass one value per group, "
                "a single number, or a slice (see `spread_hyper`)."
            )
        return list(value)
    return [value] * n


def param_groups_for(
    model: nn.Module, groups: Sequence[Any], wd_bn_bias: bool = False
) -> list[dict[str, Any]]:
    """Turn splitter output into torch param-group dicts tagged with `group` (logical index) and `do_wd`.

    `groups` is a flat list of parameters (one group) or a list of lists. Norm-layer parameters and
    biases go to a second torch group per logical group with `weight_decay=0`, unless `wd_bn_bias`.
    """
    groups = list(groups)
    if groups and isinstance(groups[0], torch.Tensor):
        groups = [groups]
    no_wd: set[int] = set()
    if not wd_bn_bias:
        for m in model.modules():
            is_norm = isinstance(m, norm_types)
            for n, p in m.named_parameters(recurse=False):
                if is_norm or n == "bias":
                    no_wd.add(id(p))
    out = []
    for i, ps in enumerate(groups):
        ps = list(ps)
        decay = [p for p in ps if id(p) not in no_wd]
        plain = [p for p in ps if id(p) in no_wd]
        if decay or not plain:
            out.append({"params": decay, "group": i, "do_wd": True})
        if plain:
            out.append({"params": plain, "group": i, "do_wd": False, "weight_decay": 0.0})
    return out


def n_groups(opt: torch.optim.Optimizer) -> int:
    """Return the number of logical parameter groups of `opt` (torch groups without a `group` tag count one each)."""
    return max(pg.get("group", i) for i, pg in enumerate(opt.param_groups)) + 1


def _set_one(pg: dict[str, Any], name: str, v: Any) -> None:
    if name == "mom":
        if "betas" in pg:
            pg["betas"] = (v, *tuple(pg["betas"])[1:])
        elif pg.get("momentum", 0):  # an SGD built without momentum stays without it, as in fastai
            pg["momentum"] = v
    elif name == "sqr_mom":
        if "betas" in pg:
            pg["betas"] = (pg["betas"][0], v)
        elif "alpha" in pg:
            pg["alpha"] = v
    elif name == "wd":
        pg["weight_decay"] = v if pg.get("do_wd", True) else 0.0
    else:
        pg[name] = v


def set_hyper(opt: torch.optim.Optimizer, name: str, value: Any) -> None:
    """Set hyper-parameter `name` ('lr', 'mom', 'sqr_mom', 'wd' or any group key) per logical group.

    `value` is spread with `spread_hyper`; 'mom' maps to `betas[0]` or `momentum`, 'wd' to
    `weight_decay` (kept at 0 on `do_wd=False` groups).
    """
    vals = spread_hyper(value, n_groups(opt))
    for i, pg in enumerate(opt.param_groups):
        _set_one(pg, name, vals[pg.get("group", i)])


def get_hyper(opt: torch.optim.Optimizer, name: str) -> list[Any]:
    """Return hyper-parameter `name` for each logical group (read from its first torch group)."""
    out: dict[int, Any] = {}
    for i, pg in enumerate(opt.param_groups):
        g = pg.get("group", i)
        if g in out:
            continue
        if name == "mom":
            out[g] = pg["betas"][0] if "betas" in pg else pg.get("momentum")
        elif name == "sqr_mom":
            out[g] = pg["betas"][1] if "betas" in pg else pg.get("alpha")
        elif name == "wd":
            out[g] = pg.get("weight_decay")
        else:
            out[g] = pg.get(name)
    return [out[g] for g in sorted(out)]


def build_optimizer(
    model: nn.Module,
    splitter: Callable[[nn.Module], Any],
    opt_func: Callable[..., torch.optim.Optimizer],
    lr: float,
    wd_bn_bias: bool = False,
    train_bn: bool = True,
) -> tuple[torch.optim.Optimizer, list[list[nn.Parameter]], set[int]]:
    """Build `opt_func(param_groups_for(...), lr=lr)`; return it, the logical groups, and the ids of params to keep trainable.

    The kept-trainable ids are the norm-layer parameters when `train_bn` (see `freeze_groups`).
    """
    pgs = param_groups_for(model, splitter(model), wd_bn_bias)
    n = max(pg["group"] for pg in pgs) + 1 if pgs else 0
    groups = [[p for pg in pgs if pg["group"] == i for p in pg["params"]] for i in range(n)]
    opt = opt_func(pgs, lr=lr)
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(
            f"opt_func returned {type(opt).__name__}, expected a torch.optim.Optimizer; pass a torch.optim "
            "class (torch.optim.SGD), a factory returning one, or fastvision's Adam/SGD."
        )
    for pg in opt.param_groups:  # in case a factory rebuilt the groups and dropped our weight_decay=0
        if not pg.get("do_wd", True) and "weight_decay" in pg:
            pg["weight_decay"] = 0.0
    force_train: set[int] = set()
    if train_bn:
        for m in model.modules():
            if isinstance(m, norm_types):
                force_train.update(id(p) for p in m.parameters(recurse=False))
    return opt, groups, force_train


def freeze_groups(
    groups: Sequence[Sequence[nn.Parameter]], n: int, force_train: AbstractSet[int] = frozenset()
) -> None:
    """Set `requires_grad=False` on groups `[:n]` (negative counts from the end) except `force_train` ids; True elsewhere."""
    g = len(groups)
    idx = n if n >= 0 else max(g + n, 0)
    if idx >= g:
        warnings.warn(f"Freezing {idx} groups; model has {g}; whole model is frozen.", stacklevel=3)
    for i, ps in enumerate(groups):
        for p in ps:
            p.requires_grad_(i >= idx or id(p) in force_train)
