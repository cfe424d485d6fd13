"""The Fashion-MNIST demo: the held-out validation split, the test set read once at the end, and its options."""

import math
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fastvision import demo
from fastvision.callback.core import Callback
from fastvision.data import external
from fastvision.data.external import TensorImageDataset
from fastvision.data.load import DataLoaders
from fastvision.demo import WeightEMA, fashion_mnist_dls
from fastvision.learner import Learner
from fastvision.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropy
from fastvision.memory import format_bytes
from fastvision.optimizer import SGD

has_fmnist = pytest.mark.skipif(
    not external.DEBIAN_FASHION_MNIST.exists(), reason="dataset-fashion-mnist not installed"
)


def _rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(r.numpy()) for r in x.reshape(len(x), -1)}


@has_fmnist
def test_validation_is_held_out_from_train_and_test_is_apart():
    dls = fashion_mnist_dls(bs=64, n_train=1200, n_test=300, n_valid=200, device="cpu")
    train, valid, test = (dl.dataset for dl in dls)
    assert (len(train), len(valid), len(test)) == (1000, 200, 300)
    xs, ys = external.load_fashion_mnist("train")
    xt, yt = external.load_fashion_mnist("test")
    first = _rows(xs[:1200])
    assert _rows(valid.x) <= first and _rows(train.x) <= first  # both drawn from the training file
    assert not _rows(valid.x) & _rows(train.x)  # disjoint
    assert torch.equal(test.x[:, 0], xt[:300]) and torch.equal(test.y, yt[:300])  # dls[2]: the test file
    assert not _rows(xt) & _rows(valid.x)  # no test image in the validation set
    seen = torch.cat([b[1] for b in dls.valid])  # the loader yields the held-out labels, in order
    assert torch.equal(seen.cpu(), valid.y)
    again = fashion_mnist_dls(bs=64, n_train=1200, n_test=300, n_valid=200, device="cpu")
    assert torch.equal(again.valid.dataset.x, valid.x)  # the seed fixes the draw
    other = fashion_mnist_dls(bs=64, n_train=1200, n_test=300, n_valid=200, seed=0, device="cpu")
    assert not torch.equal(other.valid.dataset.x, valid.x)


@has_fmnist
def test_without_n_valid_the_test_set_is_the_validation_set_as_before():
    dls = fashion_mnist_dls(bs=64, n_train=500, n_test=100, device="cpu", aug=False)
    assert len(dls) == 2 and len(dls.train_ds) == 500 and len(dls.valid_ds) == 100
    with pytest.raises(ValueError, match="n_valid=500, but there are 500 training images"):
        fashion_mnist_dls(bs=64, n_train=500, n_test=100, n_valid=500)


def _halves(n: int, swap: bool = False) -> TensorImageDataset:
    """Class 0: left half bright; class 1: right half bright (mirror images of each other)."""
    y = torch.arange(n) % 2
    x = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    x[y == 0, :, :, :14] = 255
    x[y == 1, :, :, 14:] = 255
    x = (x.float() + torch.randint(0, 40, x.shape)).clamp(max=255).to(torch.uint8)
    return TensorImageDataset(x, 1 - y if swap else y, [str(c) for c in range(10)])


def _tiny_dls(bs=256, n_train=None, n_test=None, seed=42, device=None, aug=True, n_valid=0):
    """Train and validation learnable; the test set the same kind of images with the labels swapped."""
    from fastvision.vision.lighting import IntToFloatTensor

    torch.manual_seed(0)
    dsets = [_halves(64), _halves(16), _halves(24, swap=True)]
    return DataLoaders.from_dsets(*dsets, bs=8, after_batch=[IntToFloatTensor()], num_workers=0, device="cpu")


@pytest.fixture
def tiny_demo(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "fashion_mnist_dls", _tiny_dls)

    def run(**kwargs):
        kwargs.setdefault("hard_keep", 1.0)  # every image every epoch: the tiny task is learnt in 3 epochs
        return demo.run_demo(epochs=3, out=tmp_path / "out", lr_max=1e-2, quick=True, **kwargs)

    return run


def test_demo_reports_the_accuracy_on_the_test_set(tiny_demo, tmp_path, capsys):
    r = tiny_demo(tta=False)
    text = capsys.readouterr().out
    assert r["valid_accuracy"] > 0.9  # learnt on held-out images labelled as in training...
    assert r["accuracy"] < 0.1  # ...so the swapped test labels are all wrong: this is the test set
    assert f"test accuracy: {r['accuracy']:.4f}" in text and "16 validation" in text and "24 test" in text
    assert len(r["interp"].targs) == 24 and r["valid_accuracy_tta"] is None
    assert r["accuracy"] == r["accuracy_no_tta"]
    assert r["peak_rss"] > 50e6  # this process: python, torch and the run (bytes)
    assert re.search(
        r"test evaluation [\d.]+ s, after training; peak memory ([\d.]+ [MG]B) \(resident\)", text
    )
    assert f"peak memory {format_bytes(r['peak_rss'])} (resident)" in text
    assert "most confused on the test set" in text and "1            -> 0            12" in text
    for f in ("lr_find.png", "confusion_matrix.png", "top_losses.png", "model.json"):
        assert (tmp_path / "out" / f).exists()


def test_demo_net_has_a_first_stage_at_the_full_28_pixels(tiny_demo):
    """The T-shirt / Shirt detail needs convolutions at 28 x 28 (docs/benchmarks.md, 2026-12-01 afternoon)."""
    model = tiny_demo(tta=False)["learn"].model
    x = torch.rand(2, 1, 28, 28)
    shapes = []
    for layer in list(model)[:-3]:  # stem, then one stage per width
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(16, 28, 28), (16, 28, 28), (32, 14, 14), (64, 7, 7), (128, 4, 4)]
    assert model[-1].in_features == 128 * 4 * 4  # the flat head sees the whole last map


def _shifted(x, dx, dy, fill):
    """Move x by (dx, dy) pixels through a padded copy: an independent reference for ShiftInputs."""
    h, w = x.shape[-2:]
    p = torch.nn.functional.pad(x, (1, 1, 1, 1), value=fill)
    return p[..., 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]


def _views(learn, fill):
    x, probs, _ = learn.get_preds(ds_idx=2, with_input=True)
    with torch.no_grad():
        model = learn.model.eval()
        flipped = model(x.flip(-1)).softmax(1)
        shifted = [
            model(_shifted(v, dx, dy, fill)).softmax(1) for dx, dy in demo.TTA_SHIFTS for v in (x, x.flip(-1))
        ]
    return probs, flipped, torch.stack(shifted).mean(0)


def test_tta_averages_flips_and_one_pixel_shifts_of_the_test_images(tiny_demo, capsys):
    r = tiny_demo(tta=True, opt="adam")
    black = demo._normalised(torch.zeros(1, 1, 1, 1)).item()
    probs, flipped, shifted = _views(r["learn"], black)
    assert (probs - flipped).abs().max() > 0.3  # mirror images are the other class here
    assert torch.allclose(r["interp"].preds, ((probs + flipped) / 2 + shifted) / 2, atol=1e-5)
    targs = r["interp"].targs
    assert r["accuracy_no_tta"] == (probs.argmax(1) == targs).float().mean().item()
    assert r["accuracy_flip_tta"] == ((probs + flipped).argmax(1) == targs).float().mean().item()
    out = capsys.readouterr().out
    assert "with TTA (flips and 1-pixel shifts;" in out and r["valid_accuracy_tta"] is not None
    assert f"{r['accuracy_flip_tta']:.4f} with flips only, {r['accuracy_no_tta']:.4f} without" in out


@pytest.mark.parametrize("dx, dy", [(1, 0), (-1, 0), (0, 1), (0, -1), (2, -1)])
def test_shift_inputs_moves_the_batch_and_fills_the_uncovered_border(dx, dy):
    x = (
        torch.arange(2 * 5 * 6, dtype=torch.float)
        .view(2, 1, 5, 6)
        .contiguous(memory_format=torch.channels_last)
    )
    cb, learn = demo.ShiftInputs(dx, dy, fill=-7.0), SimpleNamespace(xb=(x,))
    cb.learn = learn
    cb.before_batch()
    out = learn.xb[0]
    if abs(dx) < 2:
        assert torch.equal(out, _shifted(x, dx, dy, -7.0))
    assert out[0, 0, 2 + dy, 3 + dx] == x[0, 0, 2, 3] and out.is_contiguous(memory_format=torch.channels_last)
    assert (out == -7.0).sum() == 2 * (5 * 6 - (5 - abs(dy)) * (6 - abs(dx)))
    flipped = demo.ShiftInputs(dx, dy, fill=-7.0, flip=True)
    flipped.learn = SimpleNamespace(xb=(x,))
    flipped.before_batch()
    assert torch.equal(flipped.learn.xb[0], demo.ShiftInputs(dx, dy, -7.0)._shift(x.flip(-1)))
    with pytest.raises(ValueError, match=r"ShiftInputs\(dx=6, dy=0\) on 5 x 6 images: shift by less"):
        demo.ShiftInputs(6, 0)._shift(x)


def test_label_smoothing_is_the_loss_and_softens_the_predictions(tiny_demo):
    hard, soft = tiny_demo(label_smoothing=0.0, tta=False), tiny_demo(label_smoothing=0.4, tta=False)
    assert isinstance(hard["learn"].loss_func, CrossEntropyLossFlat)
    assert (
        isinstance(soft["learn"].loss_func, LabelSmoothingCrossEntropy) and soft["learn"].loss_func.eps == 0.4
    )
    assert soft["interp"].preds.max(1)[0].mean() < hard["interp"].preds.max(1)[0].mean() - 0.05


class _Weights(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, x):
        return self.bn(self.lin(x))


class _RecordWeights(Callback):
    order = 70  # after WeightEMA's: sees the weights the optimiser just wrote, and those validation sees

    def before_fit(self):
        self.steps, self.valid_seen, self.after_valid = [], [], []

    def after_step(self):
        sd = self.learn.model.state_dict()
        self.steps.append({k: v.clone() for k, v in sd.items() if v.is_floating_point()})

    def before_validate(self):
        self.valid_seen.append(self.learn.model.lin.weight.clone())

    def after_validate(self):
        self.after_valid.append(self.learn.model.lin.weight.clone())


def test_weight_ema_averages_the_weights_and_leaves_the_average_in_the_model():
    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.arange(32) % 2
    ds = torch.utils.data.TensorDataset(x, y)
    dls = DataLoaders.from_dsets(ds, ds, bs=8, device="cpu")
    model = _Weights()
    start = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), opt_func=SGD, lr=0.5)
    ema, rec = WeightEMA(decay=0.9), _RecordWeights()
    learn.fit(2, cbs=[ema, rec])
    avg, avgs = dict(start), []
    for n, w in enumerate(rec.steps, 1):  # the oracle: the same average in plain torch
        d = min(0.9, (1 + n) / (10 + n))
        avg = {k: d * avg[k] + (1 - d) * w[k] for k in avg}
        avgs.append(avg)
    got = model.state_dict()
    assert len(rec.steps) == 8 and all(torch.allclose(got[k], v, atol=1e-6) for k, v in avg.items())
    last = rec.steps[-1]["lin.weight"]
    assert not torch.allclose(got["lin.weight"], last, atol=1e-3)  # the average is not the last weights
    assert torch.allclose(rec.valid_seen[0], avgs[3]["lin.weight"], atol=1e-6)  # validation sees the average
    assert torch.equal(rec.after_valid[0], rec.steps[3]["lin.weight"])  # then the training weights are back
    ema.swap()
    assert torch.equal(model.lin.weight, last)


def test_training_callbacks_such_as_mixup_run_in_training_only(tiny_demo, capsys):
    from fastvision.callback.mixup import MixUp

    class Seen(Callback):
        def before_fit(self):
            self.lams, self.losses = [], []

        def after_loss(self):  # after MixUp's before_batch: the mixed loss is the one in use
            if not self.training:
                return
            self.lams.append(mix.lam.clone())
            self.losses.append(repr(self.learn.loss_func))

    mix, seen = MixUp(0.4), Seen()
    r = tiny_demo(tta=False, cbs=[mix, seen])
    assert len(seen.lams) == 3 * 8  # 64 training images, bs 8, 3 epochs: every training batch was mixed
    assert all(((0.5 <= lam) & (lam <= 1)).all() for lam in seen.lams)
    assert all(s.startswith("MixUp loss of") for s in seen.losses)
    assert isinstance(r["learn"].loss_func, LabelSmoothingCrossEntropy)  # put back after training
    assert "MixUp(alpha=0.4)" in capsys.readouterr().out
    assert mix not in r["learn"].cbs  # for the training run only


@pytest.mark.parametrize(
    "flags, expected",
    [([], []), (["--mixup", "0.4"], ["MixUp(alpha=0.4)"]), (["--cutmix", "1"], ["CutMix(alpha=1)"])],
)
def test_demo_command_passes_mixup_and_cutmix(monkeypatch, flags, expected):
    from fastvision.cli import main

    got = {}
    monkeypatch.setattr(demo, "run_demo", lambda **kw: got.update(kw))
    assert main(["demo", "--epochs", "2", *flags]) in (0, None)
    assert [repr(cb) for cb in got["cbs"]] == expected and got["epochs"] == 2 and got["lr_max"] is None
    main(["demo", "--lr-max", "6e-3"])
    assert got["lr_max"] == 6e-3


@has_fmnist
@pytest.mark.parametrize("aug", ["flip", "none"])
def test_aug_flip_mirrors_whole_images_and_none_leaves_them(aug):
    dls = fashion_mnist_dls(bs=64, n_train=300, n_test=50, device="cpu", aug=aug)
    train = dls.train.new(shuffle=False)  # the training transforms, in dataset order
    x, _ = train.one_batch()
    plain = dls.valid.new(train.dataset).one_batch()[0]  # the same images through validation's transforms
    same = (x - plain).abs().flatten(1).amax(1) < 1e-5
    mirrored = (x - plain.flip(-1)).abs().flatten(1).amax(1) < 1e-5
    assert bool((same | mirrored).all())  # no rotation, zoom or resampling blur
    assert bool(same.all()) if aug == "none" else 10 < int(mirrored.sum()) and 10 < int((~mirrored).sum())


def test_aug_names_the_choices_when_wrong():
    with pytest.raises(ValueError, match="aug='rotate': pass 'affine'"):
        fashion_mnist_dls(bs=64, n_train=100, n_test=10, aug="rotate")


def test_demo_passes_wd_and_aug_and_returns_the_lr_it_used(tmp_path, monkeypatch):
    seen = {}

    def dls(**kw):
        seen.update(kw)
        return _tiny_dls()

    monkeypatch.setattr(demo, "fashion_mnist_dls", dls)
    r = demo.run_demo(epochs=1, out=tmp_path / "o", quick=True, wd=0.3, aug="flip", tta=False)
    assert r["learn"].wd == 0.3 and seen["aug"] == "flip"
    assert (
        demo.LR_RANGE[0] <= r["lr_max"] <= demo.LR_RANGE[1]
    )  # the lr rule's range, what was printed and trained with
    assert max(r["learn"].recorder.lrs) == pytest.approx(r["lr_max"], rel=0.05)  # one-cycle's peak


def test_epoch_estimate_counts_the_training_batches_an_epoch_runs():
    class L:
        class dls:
            train, valid = range(200), range(20)

    assert demo._epoch_seconds(L, 0.01) == pytest.approx(0.01 * (200 + 0.35 * 20))
    assert demo._epoch_seconds(L, 0.01, keep=0.5) == pytest.approx(0.01 * (100 + 0.35 * 20))
    assert demo._epoch_seconds(L, 0.01, keep=0.33) == pytest.approx(
        0.01 * (66 + 0.35 * 20)
    )  # ceil(200 * 0.33)


def test_demo_command_passes_aug_and_wd_only_when_given(monkeypatch):
    from fastvision.cli import main

    got = {}
    monkeypatch.setattr(demo, "run_demo", lambda **kw: got.update(kw))
    main(["demo"])
    assert "aug" not in got and "wd" not in got  # run_demo's own defaults: the recipe
    main(["demo", "--aug", "flip", "--wd", "0.01"])
    assert got["aug"] == "flip" and got["wd"] == 0.01
    with pytest.raises(SystemExit):
        main(["demo", "--aug", "rotate"])


def test_a_full_disk_at_the_end_keeps_the_export_and_is_one_line(tiny_demo, tmp_path, monkeypatch, capsys):
    import errno

    import matplotlib.figure

    from fastvision.cli import main

    real = matplotlib.figure.Figure.savefig

    def full_after_lr_find(self, fname, *a, **k):
        if "lr_find" not in str(fname):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, fname, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full_after_lr_find)
    with pytest.raises(OSError, match="No space left"):
        tiny_demo(tta=False)
    assert (tmp_path / "out" / "model.json").exists()  # 10 minutes of training are not lost to a plot
    capsys.readouterr()

    def run_demo(**kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(demo, "run_demo", run_demo)
    assert main(["demo", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"fastvision demo: error: No space left on device while writing in '{tmp_path / 'd'}'. Free some space or "
        "write elsewhere."
    ]


def test_budget_run_trains_for_its_budget_with_the_schedule_over_that_time(tmp_path, monkeypatch, capsys):
    import re

    from fastvision.callback.schedule import TimeBudget

    ticks = []

    def clock():  # a machine where every step between two readings takes 10 ms: the test does not race the load
        ticks.append(len(ticks) * 0.01)
        return ticks[-1]

    budgets = []
    monkeypatch.setattr(
        demo, "TimeBudget", lambda s: budgets.append(TimeBudget(s, clock=clock)) or budgets[-1]
    )
    monkeypatch.setattr(demo, "fashion_mnist_dls", _tiny_dls)
    r = demo.run_demo(budget=1.0, out=tmp_path / "o", lr_max=1e-2, tta=False, opt="adam")
    out = capsys.readouterr().out
    m = re.search(r"training for 1 s \(about (\d+) epochs of ([\d.]+) s\)", out)
    assert m is not None
    assert r["epochs"] == len(r["learn"].recorder.values) > 1 and f"({r['epochs']} epochs, " in out
    assert budgets[0].stopped and 0.9 <= ticks[-1] - budgets[0].start <= 1.0  # it used the budget, no more
    lrs = r["learn"].recorder.lrs
    # one cycle over the budget, annealed by the end (spread over the upper-bound epoch count, it would stop
    # near its peak)
    assert max(lrs) == pytest.approx(1e-2, rel=0.1) and lrs[-1] < 1e-2 / 100


class _TrainBatches(Callback):
    def before_fit(self):
        self.per_epoch = []

    def before_train(self):
        self.per_epoch.append(0)

    def after_batch(self):
        if self.learn.training:
            self.per_epoch[-1] += 1


@pytest.mark.parametrize("keep, batches", [(0.5, 4), (1.0, 8)])
def test_hard_keep_trains_each_epoch_on_that_fraction(tiny_demo, capsys, keep, batches):
    count = _TrainBatches()
    r = tiny_demo(hard_keep=keep, cbs=[count])
    assert count.per_epoch == [batches] * r["epochs"]  # 64 training images, bs 8
    out = capsys.readouterr().out
    assert ("HardExampleSampling(keep=0.5, beta=2.0): each epoch on 50% of the training images" in out) is (
        keep < 1
    )
    assert len(r["learn"].dls.train) == 8  # the loader's own sampler is back


def test_hard_keep_out_of_range_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"hard_keep=0: pass the fraction"):
        demo.run_demo(hard_keep=0, out=tmp_path / "o", quick=True)


def test_demo_command_passes_hard_keep_only_when_given(monkeypatch, capsys):
    from fastvision.cli import main

    got = {}
    monkeypatch.setattr(demo, "run_demo", lambda **kw: got.update(kw))
    main(["demo"])
    assert "hard_keep" not in got
    main(["demo", "--hard-keep", "1"])
    assert got["hard_keep"] == 1.0
    for bad in ("0", "1.5"):
        with pytest.raises(SystemExit):
            main(["demo", "--hard-keep", bad])
    assert "must be a fraction in (0, 1], got 1.5" in capsys.readouterr().err


def test_demo_command_refuses_a_budget_that_is_not_positive_before_loading_anything(monkeypatch, capsys):
    from fastvision.cli import main

    monkeypatch.setattr(demo, "run_demo", lambda **kw: pytest.fail(f"run_demo ran with {kw}"))
    for bad in ("0", "-5"):
        with pytest.raises(SystemExit):
            main(["demo", "--budget", bad])
        assert bad in capsys.readouterr().err


def test_the_demo_trains_with_ranger_by_default_lookahead_and_a_flat_then_cosine_lr(tiny_demo, capsys):
    from fastvision.callback.core import Callback
    from fastvision.optimizer import Lookahead

    class Lrs(Callback):
        def __init__(self):
            self.lrs = []

        def after_batch(self):
            if self.learn.training:
                self.lrs.append(self.learn.opt.param_groups[0]["lr"])

    lrs = Lrs()
    r = tiny_demo(tta=False, cbs=[lrs])  # the default optimizer
    opt = r["learn"].opt
    assert isinstance(opt, Lookahead) and isinstance(opt.opt, torch.optim.RAdam)
    assert opt.param_groups[0]["betas"] == (0.9, 0.99) and opt.param_groups[0]["eps"] == 1e-5
    n_flat = sum(lr == 1e-2 for lr in lrs.lrs)
    assert lrs.lrs[0] == 1e-2 and n_flat == math.ceil(0.72 * len(lrs.lrs))  # flat for 72 %, no warm-up
    tail = lrs.lrs[n_flat - 1 :]
    assert all(a > b for a, b in zip(tail, tail[1:])) and tail[-1] < 1e-3  # then cosine towards 0
    assert r["valid_accuracy"] > 0.9
    assert "of ranger, flat then cosine, at lr 1.00e-02" in capsys.readouterr().out


def test_demo_refuses_an_unknown_optimizer_and_the_command_passes_opt_only_when_given(
    tmp_path, monkeypatch, capsys
):
    from fastvision.cli import main

    with pytest.raises(ValueError, match=r"opt='sgd': pass one of \['adam', 'ranger'\]"):
        demo.run_demo(opt="sgd", out=tmp_path / "o", quick=True)
    got = {}
    monkeypatch.setattr(demo, "run_demo", lambda **kw: got.update(kw))
    main(["demo"])
    assert "opt" not in got
    main(["demo", "--opt", "adam"])
    assert got["opt"] == "adam"


def test_the_demo_stem_is_whitened_from_the_training_images_and_stays_frozen(tiny_demo, capsys):
    from fastvision.vision.models import whiten_conv_

    r = tiny_demo(tta=False)
    stem = r["learn"].model[0][0]
    expected = whiten_conv_(nn.Conv2d(1, 16, 3, bias=False), demo._normalised(r["learn"].dls.train_ds.x))
    assert not stem.weight.requires_grad
    assert torch.allclose(stem.weight, expected.weight)  # after 3 epochs: the training images' components
    assert "whitened stem (frozen)" in capsys.readouterr().out
    plain = tiny_demo(tta=False, whiten=False)["learn"].model[0][0]
    assert plain.weight.requires_grad and not torch.allclose(plain.weight[8:], -plain.weight[:8])
    with pytest.raises(ValueError, match=r"got widths=\(32, 64\). Pass whiten=False \(--no-whiten\)"):
        tiny_demo(widths=(32, 64))
    wide = tiny_demo(tta=False, widths=(32, 64), whiten=False)["learn"].model[0][0]
    assert wide.out_channels == 32


def test_demo_command_passes_whiten_only_when_given(monkeypatch):
    from fastvision.cli import main

    got = {}
    monkeypatch.setattr(demo, "run_demo", lambda **kw: got.update(kw))
    main(["demo"])
    assert "whiten" not in got
    main(["demo", "--no-whiten"])
    assert got["whiten"] is False
