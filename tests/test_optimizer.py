"""RAdam, Lookahead and ranger: the algorithm against a hand computation, and inside a Learner."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastvision.learner import Learner
from fastvision.optimizer import Lookahead, RAdam, get_hyper, ranger, set_hyper


def _quadratic_steps(opt, w, target, n):
    for _ in range(n):
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        opt.step()


def test_lookahead_synchronises_every_k_steps_like_the_paper():
    torch.manual_seed(0)
    target = torch.randn(5)
    w = nn.Parameter(torch.zeros(5))
    ref = nn.Parameter(torch.zeros(5))  # the same SGD run by hand, with the slow weights kept here
    opt = Lookahead(torch.optim.SGD([w], lr=0.1), k=3, alpha=0.3)
    inner = torch.optim.SGD([ref], lr=0.1)
    slow = ref.detach().clone()
    for i in range(1, 8):
        _quadratic_steps(opt, w, target, 1)
        _quadratic_steps(inner, ref, target, 1)
        if i % 3 == 0:
            with torch.no_grad():
                slow += 0.3 * (ref - slow)
                ref.copy_(slow)
        assert torch.allclose(w, ref, atol=1e-6), f"step {i}"
    assert opt.state[w]["lookahead_step"] == 7
    assert torch.allclose(opt.state[w]["slow"], slow)


def test_lookahead_differs_from_its_inner_optimizer():
    target = torch.ones(3)
    w1, w2 = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(3))
    _quadratic_steps(Lookahead(torch.optim.SGD([w1], lr=0.1), k=2), w1, target, 4)
    _quadratic_steps(torch.optim.SGD([w2], lr=0.1), w2, target, 4)
    assert not torch.allclose(w1, w2)


def test_lookahead_rejects_bad_arguments_with_the_fix():
    w = nn.Parameter(torch.zeros(2))
    with pytest.raises(TypeError, match="torch.optim.Optimizer; got list"):
        Lookahead([w])
    with pytest.raises(ValueError, match=r"k=0.*>= 1"):
        Lookahead(torch.optim.SGD([w], lr=0.1), k=0)
    with pytest.raises(ValueError, match=r"alpha=1.5.*\(0, 1\]"):
        Lookahead(torch.optim.SGD([w], lr=0.1), alpha=1.5)
    with pytest.raises(NotImplementedError, match="no closure"):
        Lookahead(torch.optim.SGD([w], lr=0.1)).step(lambda: 0.0)


def test_ranger_has_fastai_defaults_and_shares_hyperparameters():
    w = nn.Parameter(torch.zeros(2))
    opt = ranger([w], lr=3e-3)
    assert isinstance(opt, Lookahead) and isinstance(opt.opt, torch.optim.RAdam)
    assert (opt.k, opt.alpha) == (6, 0.5)
    g = opt.param_groups[0]
    assert g["betas"] == (0.95, 0.99) and g["eps"] == 1e-6 and g["weight_decay"] == 0.01
    assert g["decoupled_weight_decay"] and g["lr"] == 3e-3
    set_hyper(opt, "lr", 1e-2)
    set_hyper(opt, "mom", 0.85)
    assert opt.opt.param_groups[0]["lr"] == 1e-2 and get_hyper(opt, "mom") == [0.85]
    r = RAdam([w])
    assert r.param_groups[0]["weight_decay"] == 0.0 and r.param_groups[0]["eps"] == 1e-5


def _learner(opt_func, tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long()
    g = torch.Generator().manual_seed(0)
    train = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=g)
    valid = DataLoader(TensorDataset(x[:16], y[:16]), batch_size=8)

    class DLs:
        pass

    dls = DLs()
    dls.train, dls.valid = train, valid
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    return Learner(dls, model, loss_func=nn.CrossEntropyLoss(), opt_func=opt_func, path=tmp_path)


def test_ranger_trains_a_learner_with_flat_cos_and_checkpoints_its_slow_weights(tmp_path):
    learn = _learner(ranger, tmp_path)
    learn.fit_flat_cos(3, 1e-2)
    losses = [v[0] for v in learn.recorder.values]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    w = learn.model[0].weight
    assert learn.opt.state[w]["lookahead_step"] == 24  # 3 epochs of 8 batches
    assert torch.equal(learn.opt.state[w]["slow"], w.detach())  # the 24th step synchronised them
    learn.fit(1, 1e-2)  # 8 more steps: 30 synchronised, 31 and 32 did not
    slow, fast = learn.opt.state[w]["slow"].clone(), w.detach().clone()
    assert not torch.equal(slow, fast)
    learn.save("ranger")
    learn.fit(1, 1e-2)
    learn.load("ranger")
    assert torch.equal(learn.opt.state[w]["slow"], slow) and torch.equal(w, fast)  # saved with the optimizer
    learn.freeze_to(0)  # clearing the state restarts the slow weights from the current ones
    assert "slow" not in learn.opt.state.get(w, {})
    learn.fit(1, 1e-2)
    assert learn.opt.state[w]["lookahead_step"] == 8
