"""HardExampleSampling: draws by loss rank, records the training losses it was given, restores the loader."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fastvision.callback.core import Callback
from fastvision.callback.hard import HardExampleSampling, LossWeightedSampler
from fastvision.data.load import DataLoaders
from fastvision.learner import Learner
from fastvision.losses import CrossEntropyLossFlat


def _sampler(n=100, bs=8, keep=0.5, beta=2.0, drop_last=False, seed=0):
    return LossWeightedSampler(n, bs, keep, beta, drop_last, torch.Generator().manual_seed(seed))


def test_sampler_draws_keep_without_replacement():
    s = _sampler(n=100, bs=8, keep=0.5)
    batches = list(s)
    idxs = [i for b in batches for i in b]
    assert len(batches) == len(s) == 7  # 50 items: 6 full batches and one of 2
    assert len(idxs) == len(set(idxs)) == 50
    assert all(0 <= i < 100 for i in idxs)
    assert len(list(_sampler(n=100, bs=8, keep=0.5, drop_last=True))) == len(_sampler(drop_last=True)) == 6


def test_weights_rank_losses_and_unseen_items_first():
    s = _sampler(n=5, bs=2, beta=1.0)
    assert torch.equal(s.weights(), torch.ones(5))  # nothing seen: uniform
    s.losses[:4] = torch.tensor([0.3, 0.1, 0.9, 0.5])
    assert torch.allclose(s.weights(), torch.tensor([0.4, 0.2, 0.8, 0.6, 1.0]))
    s.beta = 2.0
    assert torch.allclose(s.weights(), torch.tensor([0.4, 0.2, 0.8, 0.6, 1.0]) ** 2)


def test_high_losses_are_drawn_more_often():
    s = _sampler(n=200, bs=16, keep=0.25, beta=2.0)
    s.losses = torch.arange(200, dtype=torch.float)  # item i has the i-th smallest loss
    counts = torch.zeros(200)
    for _ in range(20):
        for b in s:
            counts[b] += 1
    assert counts[-50:].sum() > 4 * counts[:50].sum()
    assert counts[:50].sum() > 0  # easy items are still drawn now and then


def test_record_matches_batches_in_order_and_skips_mismatches():
    s = _sampler(n=20, bs=4, keep=1.0)
    it = iter(s)
    b1, b2 = next(it), next(it)  # a loader prefetching one batch
    s.record(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert s.losses[b1].tolist() == [1.0, 2.0, 3.0, 4.0]
    s.record(torch.tensor([5.0, 6.0, 7.0]))  # the loader dropped an unreadable item: not matched
    assert torch.isinf(s.losses[b2]).all()
    assert not s.pending
    s.record(torch.tensor([1.0]))  # nothing pending: ignored


@pytest.mark.parametrize(
    "kw, msg", [({"keep": 0.0}, "keep=0.0"), ({"keep": 1.5}, "keep=1.5"), ({"beta": -1.0}, "beta=-1.0")]
)
def test_bad_arguments_name_the_value(kw, msg):
    with pytest.raises(ValueError, match=msg):
        LossWeightedSampler(10, 2, **{"keep": 0.5, "beta": 2.0, **kw})
    with pytest.raises(ValueError, match="less than one batch"):
        LossWeightedSampler(10, 8, keep=0.5, drop_last=True)


def _learner(n=64, bs=8, lr_zero=False):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
    dls = DataLoaders.from_dsets(TensorDataset(x, y), TensorDataset(x[:16], y[:16]), bs=bs, seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    return Learner(dls, model, loss_func=CrossEntropyLossFlat(), lr=0.0 if lr_zero else 1e-2), x, y


class _Count(Callback):
    def before_fit(self):
        self.batches, self.items = [], []

    def before_epoch(self):
        self.batches.append(0)

    def after_batch(self):
        if self.learn.training:
            self.batches[-1] += 1
            self.items.append(len(self.learn.yb[0]))


def test_fit_trains_on_keep_of_the_items_and_restores_the_sampler():
    learn, _, _ = _learner(n=64, bs=8)
    old = learn.dls.train.batch_sampler
    hard, count = HardExampleSampling(keep=0.5), _Count()
    learn.fit(3, cbs=[hard, count])
    assert count.batches == [4, 4, 4]  # 32 of 64 items per epoch
    assert sum(count.items) == 96
    assert learn.dls.train.batch_sampler is old
    assert len(learn.dls.train) == 8
    assert torch.isfinite(hard.sampler.losses).sum() >= 32


def test_recorded_losses_are_the_training_losses_of_those_items():
    learn, x, y = _learner(n=64, bs=8, lr_zero=True)  # lr 0: the model never changes
    hard = HardExampleSampling(keep=0.75, beta=1.0)
    learn.fit(2, cbs=hard)
    seen = torch.isfinite(hard.sampler.losses)
    assert seen.sum() >= 48
    learn.model.train()
    with torch.no_grad():
        expected = nn.functional.cross_entropy(learn.model(x), y, reduction="none")
    assert torch.allclose(hard.sampler.losses[seen], expected[seen], atol=1e-6)


def test_sampler_put_back_after_an_error():
    learn, _, _ = _learner()
    old = learn.dls.train.batch_sampler

    class Boom(Callback):
        def after_batch(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        learn.fit(1, cbs=[HardExampleSampling(), Boom()])
    assert learn.dls.train.batch_sampler is old


def test_needs_a_fastvision_loader():
    class Plain:
        def __init__(self, dl):
            self.train, self.valid = dl, dl

    dl = torch.utils.data.DataLoader(
        TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,))), batch_size=4
    )
    learn = Learner(Plain(dl), nn.Linear(4, 3), loss_func=CrossEntropyLossFlat())
    learn.dls = Plain(dl)
    with pytest.raises(TypeError, match="needs a fastvision DataLoader"):
        learn.fit(1, cbs=HardExampleSampling())
