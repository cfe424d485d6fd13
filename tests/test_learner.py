"""Learner: plain-PyTorch workflows, construction errors, callbacks, optimizer groups, freezing, inference, checkpoints."""

import math
import os
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fastvision.checkpoint as checkpoint
from fastvision.callback.core import Callback
from fastvision.learner import Learner
from fastvision.metrics import accuracy
from fastvision.optimizer import SGD, Adam, get_hyper, n_groups
from fastvision.testing import make_tensor_data


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread hand-off costs more than it saves on a busy machine
    yield
    torch.set_num_threads(n)


class DLs:
    """The duck-typed minimum the Learner needs: `.train` and `.valid` iterables of tuples."""

    def __init__(self, train, valid):
        self.train, self.valid = train, valid


def loaders(x, y, xv, yv, bs=32):
    g = torch.Generator().manual_seed(0)
    return DLs(
        DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True, generator=g),
        DataLoader(TensorDataset(xv, yv), batch_size=bs),
    )


class TinyVGG(nn.Module):
    """A TinyVGG-like CNN (two conv blocks, a linear classifier) for 28 x 28 grey images, with BatchNorm."""

    def __init__(self, n_classes=3, hidden=8):
        super().__init__()

        def block(cin, cout):
            conv = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
            return nn.Sequential(*conv, nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(1, hidden), block(hidden, hidden))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(hidden * 7 * 7, n_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def small_learner(**kwargs):
    torch.manual_seed(0)
    x, y = torch.randn(24, 4), torch.randint(0, 3, (24,))
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    kwargs.setdefault("loss_func", nn.CrossEntropyLoss())
    return Learner(loaders(x, y, x[:8], y[:8], bs=8), model, **kwargs)


# ---- plain PyTorch workflows --------------------------------------------------------------------------------
def test_fashion_mnist_like_tinyvgg_with_torch_sgd():
    x, y = make_tensor_data(192, 3, size=28, seed=0)
    xv, yv = make_tensor_data(48, 3, size=28, seed=1)
    torch.manual_seed(0)
    learn = Learner(
        loaders(x, y, xv, yv, bs=16),
        TinyVGG(),
        loss_func=nn.CrossEntropyLoss(),
        opt_func=partial(torch.optim.SGD, momentum=0.9),
        metrics=accuracy,
    )
    before = learn.validate()[0]
    learn.fit_one_cycle(3, 0.02)
    assert isinstance(learn.opt, torch.optim.SGD)
    valid_loss, acc = learn.validate()
    assert valid_loss < before and acc > 0.6  # chance is 1/3


def test_binary_circles_mlp_with_bce_with_logits():
    rng = np.random.default_rng(0)
    n = 256
    r = np.where(rng.random(n) < 0.5, 0.5, 1.0) + rng.normal(0, 0.05, n)
    t = rng.uniform(0, 2 * np.pi, n)
    x = torch.tensor(np.stack([r * np.cos(t), r * np.sin(t)], 1), dtype=torch.float32)
    y = torch.tensor(r > 0.75, dtype=torch.float32)[:, None]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    learn = Learner(loaders(x[:192], y[:192], x[192:], y[192:]), model, loss_func=nn.BCEWithLogitsLoss())
    learn.fit_one_cycle(8, 3e-2)
    probs, targs, dec = learn.get_preds(with_decoded=True)
    assert 0 <= probs.min() and probs.max() <= 1  # sigmoid applied by default for BCEWithLogitsLoss
    assert (dec == (targs > 0.5)).float().mean() > 0.9
    assert learn.recorder.values[-1][0] < learn.recorder.values[0][0]


def test_multiclass_blobs_cross_entropy_and_functional_metric():
    rng = np.random.default_rng(1)
    centers = np.array([[0, 0], [3, 3], [-3, 3], [3, -3]])
    y = rng.integers(0, 4, 320)
    x = torch.tensor(centers[y] + rng.normal(0, 0.6, (320, 2)), dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 4))
    learn = Learner(
        loaders(x[:256], y[:256], x[256:], y[256:]),
        model,
        loss_func=nn.CrossEntropyLoss(),
        metrics=[accuracy],
    )
    learn.fit_one_cycle(4, 3e-2)
    preds, targs = learn.get_preds()
    assert torch.allclose(preds.sum(1), torch.ones(len(preds)))  # softmax applied
    assert learn.recorder.metric_names == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert learn.recorder.values[-1][2] > 0.9


def test_fastvision_dataloaders_wrap_plain_torch_loaders():
    load = pytest.importorskip("fastvision.data.load")
    x, y = make_tensor_data(32, 2, size=8)
    dls = load.DataLoaders(
        DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True),
        DataLoader(TensorDataset(x, y), batch_size=8),
    )
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), loss_func=nn.CrossEntropyLoss())
    learn.fit(1)
    assert len(learn.get_preds()[0]) == 32


class _DictDataset(torch.utils.data.Dataset):
    """A Hugging Face-style dataset: each item a dict."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "label": self.y[i]}


def test_dict_batches_and_batches_without_targets_are_refused_with_the_fix():
    load = pytest.importorskip("fastvision.data.load")
    x, y = make_tensor_data(32, 2, size=8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    ds = _DictDataset(x, y)
    learn = Learner(
        load.DataLoaders(DataLoader(ds, batch_size=8), DataLoader(ds, batch_size=8)),
        model,
        loss_func=nn.CrossEntropyLoss(),
    )
    with pytest.raises(
        TypeError, match=r"dict batches \(keys \['pixel_values', 'label'\]\).*collate_fn such as"
    ) as e:
        learn.fit(1)
    fix = eval(str(e.value).split("collate_fn such as ")[1].rstrip("."))  # the advice, as printed, works
    dls = load.DataLoaders(
        DataLoader(ds, batch_size=8, collate_fn=fix), DataLoader(ds, batch_size=8, collate_fn=fix)
    )
    Learner(dls, model, loss_func=nn.CrossEntropyLoss()).fit(1)
    x_only = load.DataLoaders(DataLoader(x, batch_size=8), DataLoader(x, batch_size=8))
    learn = Learner(x_only, model, loss_func=nn.CrossEntropyLoss())
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(
        ValueError,
        match=r"training batch has no target: the loader gives 1 element\(s\) per batch \(shaped \(8, 1, 8, 8\)\)",
    ):
        learn.fit(1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert learn.get_preds()[0].shape == (32, 2)  # predicting needs no target

    class OwnLoss(Callback):  # a loss computed without a target (e.g. self-supervised) still trains
        def after_loss(self):
            if self.learn.training:
                self.learn.loss_grad = self.learn.pred.pow(2).mean()

    learn = Learner(x_only, model, loss_func=nn.CrossEntropyLoss(), cbs=OwnLoss())
    learn.fit(1, 0.1)
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ---- construction ----------------------------------------------------------------------------------------------
def test_loss_func_inferred_or_clear_error():
    dls = small_learner().dls
    with pytest.raises(TypeError, match="pass one, e.g. `Learner\\(dls, model, loss_func="):
        Learner(dls, nn.Linear(4, 3))
    dls.loss_func = nn.CrossEntropyLoss()
    assert Learner(dls, nn.Linear(4, 3)).loss_func is dls.loss_func
    with pytest.raises(TypeError, match="torch.nn.Module"):
        Learner(dls, lambda x: x)
    with pytest.raises(TypeError, match="with `.train` and `.valid` loaders"):
        Learner([1, 2], nn.Linear(4, 3), loss_func=nn.MSELoss())


def test_default_callbacks_and_attribute_names():
    learn = small_learner()
    names = [type(c).__name__ for c in learn.cbs]
    assert names == ["TrainEvalCallback", "TerminateOnNaNCallback", "Recorder", "ProgressCallback"]
    assert (
        learn.recorder is learn.cbs[2] and learn.progress is learn.cbs[3] and learn.train_eval is learn.cbs[0]
    )
    bare = small_learner(default_cbs=False)
    assert [type(c).__name__ for c in bare.cbs] == ["TrainEvalCallback"]


def test_add_remove_and_context_managers_keep_order():
    learn = small_learner()

    class Late(Callback):
        order = 55

    class Early(Callback):
        order = -20

    late, early = Late(), Early()
    learn.add_cbs([late, early])
    assert learn.cbs[0] is early and learn.cbs.index(late) == 4 and learn.late is late
    learn.remove_cb(late)
    assert late not in learn.cbs and not hasattr(learn, "late") and late.learn is None
    with learn.added_cbs(Late) as l2:
        assert any(isinstance(c, Late) for c in l2.cbs)
    assert not any(isinstance(c, Late) for c in learn.cbs)
    with learn.removed_cbs(learn.recorder):
        assert not hasattr(learn, "recorder")
    assert learn.recorder in learn.cbs
    assert learn.ordered_cbs("after_batch")[-2:] == [learn.recorder, learn.progress]

    class Model(Callback):
        pass

    with pytest.raises(ValueError, match="rename the callback"):
        learn.add_cb(Model())


def test_misspelled_event_errors():
    with pytest.raises(AttributeError, match="Did you mean `before_fit`"):

        class Typo(Callback):
            def befor_fit(self):
                pass

    learn = small_learner()
    with pytest.raises(ValueError, match="Did you mean `after_batch`"):
        learn("after_btch")

    class Helpers(Callback):  # ordinary method names that merely resemble events are fine
        def per_batch(self):
            pass

        def before_stuff_helper(self):
            pass

    assert Helpers().per_batch() is None


def test_callback_failure_names_callback_and_event_and_chains_original():
    learn = small_learner()

    class Boom(Callback):
        def after_pred(self):
            raise ZeroDivisionError("bad maths")

    with pytest.raises(
        ZeroDivisionError, match="Exception occurred in `Boom` when calling event `after_pred`"
    ) as ei:
        learn.fit(1, cbs=[Boom()])
    assert isinstance(ei.value.__cause__, ZeroDivisionError) and "bad maths" in str(ei.value)

    class NeedsArgs(Exception):
        def __init__(self, a, b):
            super().__init__(a, b)

    class Boom2(Callback):
        def before_fit(self):
            raise NeedsArgs(1, 2)

    with pytest.raises(RuntimeError, match="`Boom2` when calling event `before_fit`") as ei:
        learn.fit(1, cbs=[Boom2()])
    assert isinstance(ei.value.__cause__, NeedsArgs)


def test_show_training_loop(capsys):
    small_learner().show_training_loop()
    out = capsys.readouterr().out
    assert "Start Fit" in out and "after_batch" in out and "Recorder" in out


# ---- optimizer and groups --------------------------------------------------------------------------------------
def test_adam_defaults_and_no_weight_decay_groups():
    learn = small_learner()
    learn.create_opt()
    opt = learn.opt
    assert isinstance(opt, torch.optim.AdamW) and n_groups(opt) == 1
    decay, no_decay = opt.param_groups
    assert decay["betas"] == (0.9, 0.99) and decay["eps"] == 1e-5 and decay["weight_decay"] == 0.01
    assert no_decay["weight_decay"] == 0 and not no_decay["do_wd"]
    bn, lin = learn.model[1], learn.model[0]
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert {id(bn.weight), id(bn.bias), id(lin.bias)} <= no_decay_ids and id(lin.weight) not in no_decay_ids
    learn.fit(1, wd=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0
    learn = small_learner(wd_bn_bias=True)
    learn.create_opt()
    assert len(learn.opt.param_groups) == 1


@pytest.mark.parametrize(
    "opt_func", [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, partial(SGD, mom=0.9, wd=1e-2), Adam]
)
def test_any_torch_optimizer_trains_with_one_cycle(opt_func):
    learn = small_learner(opt_func=opt_func)
    learn.fit_one_cycle(1, 1e-2)
    assert isinstance(learn.opt, torch.optim.Optimizer)
    assert all(math.isfinite(v) for v in learn.recorder.values[-1])


def test_sgd_without_momentum_stays_without_momentum():
    learn = small_learner(opt_func=torch.optim.SGD)
    learn.fit_one_cycle(1, 1e-2)
    assert get_hyper(learn.opt, "mom") == [0]


def test_bad_opt_func_message():
    learn = small_learner(opt_func=lambda params, lr: "not an optimizer")
    with pytest.raises(TypeError, match="expected a torch.optim.Optimizer"):
        learn.fit(1)


def three_groups(m):
    return [list(m[0].parameters()), list(m[1].parameters()), list(m[3].parameters())]


def test_freeze_unfreeze_requires_grad_and_train_bn():
    learn = small_learner(splitter=three_groups)
    learn.fit(1)
    assert len(learn.opt.state) > 0
    learn.freeze()
    m = learn.model
    assert not m[0].weight.requires_grad and m[1].weight.requires_grad and m[3].weight.requires_grad
    assert len(learn.opt.state) == 0  # fastai: freezing clears the optimizer state
    w0 = m[0].weight.detach().clone()
    learn.fit(1)
    assert torch.equal(m[0].weight, w0)  # frozen: not stepped, no weight decay
    learn.freeze_to(2)
    assert not m[0].weight.requires_grad and m[3].weight.requires_grad
    learn.unfreeze()
    assert all(p.requires_grad for p in m.parameters())
    learn = small_learner(splitter=three_groups, train_bn=False)
    learn.freeze()
    assert not learn.model[1].weight.requires_grad
    with pytest.warns(UserWarning, match="Freezing 3 groups; model has 3"):
        learn.freeze_to(3)


def test_freeze_with_one_group_warns():
    learn = small_learner()
    with pytest.warns(UserWarning, match="single parameter group|one parameter group"):
        learn.freeze()
    assert all(p.requires_grad for p in learn.model.parameters())


# ---- inference ----------------------------------------------------------------------------------------------
def test_get_preds_options_follow_dataset_order():
    learn = small_learner()
    learn.fit(1)
    x, y = learn.dls.train.dataset.tensors
    inp, preds, targs, dec, losses = learn.get_preds(
        ds_idx=0, with_input=True, with_decoded=True, with_loss=True
    )
    assert torch.equal(inp, x) and torch.equal(targs, y)  # shuffled train loader re-made in order
    assert torch.equal(dec, preds.argmax(1))
    assert losses.shape == (24,)
    expected = nn.functional.cross_entropy(learn.get_preds(ds_idx=0, act=lambda t: t)[0], y, reduction="none")
    assert torch.allclose(losses, expected, atol=1e-6)
    assert learn.loss_func.reduction == "mean"  # restored
    assert len(learn.recorder.values) == 1  # inference leaves the history alone


def test_validate_returns_loss_and_metrics():
    learn = small_learner(metrics=accuracy)
    loss, acc = learn.validate()
    preds, targs = learn.get_preds(act=lambda t: t)
    assert loss == pytest.approx(nn.functional.cross_entropy(preds, targs).item(), rel=1e-5)
    assert acc == pytest.approx((preds.argmax(1) == targs).float().mean().item())


def test_predict_with_a_tensor_and_a_vocab():
    learn = small_learner()
    learn.dls.vocab = ["a", "b", "c"]
    label, idx, probs = learn.predict(torch.randn(4))
    assert label == "abc"[int(idx)] and probs.shape == (3,) and probs.sum() == pytest.approx(1)
    with pytest.raises(TypeError, match="test_dl"):
        learn.predict("an image path")


def test_tta_on_plain_loaders_warns_and_averages():
    learn = small_learner()
    with pytest.warns(UserWarning, match="no training-time transforms"):
        preds, targs = learn.tta(n=2)
    plain = learn.get_preds()[0]
    assert torch.allclose(preds, plain, atol=1e-6) and len(targs) == 8


def test_nested_validate_inside_fit_keeps_loop_state():
    learn = small_learner(metrics=accuracy)

    class ValidateEveryEpoch(Callback):
        order = 70

        def after_train(self):
            self.res = self.learn.validate()
            self.iter_after = self.learn.train_iter

    cb = ValidateEveryEpoch()
    learn.fit(2, cbs=[cb])
    assert cb.iter_after == 6 and len(learn.recorder.values) == 2 and learn.epoch == 1


def test_summary_layout():
    learn = small_learner(splitter=three_groups)
    learn.freeze()
    s = learn.summary()
    lines = s.split("\n")
    assert lines[0] == "Sequential (Input shape: 8 x 4)"
    assert lines[1] == "=" * 76 and lines[2].startswith("Layer (type)         Output Shape         Param #")
    assert "Total params: 83" in s and "Model frozen up to parameter group #2" in s
    assert "Total trainable params: 43" in s  # BatchNorm (16) + last Linear (27)
    assert "Callbacks:\n  - TrainEvalCallback" in s and "Loss function: CrossEntropyLoss()" in s


def test_mixed_precision_methods_toggle_the_callback():
    fp16 = pytest.importorskip("fastvision.callback.fp16")
    learn = small_learner()
    learn.to_bf16()
    assert isinstance(learn.mixed_precision, fp16.MixedPrecision)
    learn.to_fp32()
    assert not any(isinstance(c, fp16.MixedPrecision) for c in learn.cbs)


# ---- checkpoints -------------------------------------------------------------------------------------------------
def test_save_load_roundtrip_with_optimizer(tmp_path):
    learn = small_learner(path=tmp_path)
    learn.fit(1)
    file = learn.save("stage1")
    assert file == tmp_path / "models" / "stage1.pth"
    state = {k: v.clone() for k, v in learn.model.state_dict().items()}
    opt_state = {k: v["exp_avg"].clone() for k, v in learn.opt.state.items()}
    learn.fit(1)
    learn.load("stage1")
    for k, v in learn.model.state_dict().items():
        assert torch.equal(v, state[k])
    for k, v in learn.opt.state.items():
        assert torch.equal(v["exp_avg"], opt_state[k])
    learn.save("weights_only", with_opt=False)
    with pytest.warns(UserWarning, match="doesn't contain an optimizer state"):
        learn.load("weights_only")
    fresh = small_learner(path=tmp_path)
    fresh.load("stage1")
    assert torch.equal(fresh.model[0].weight, state["0.weight"])


def test_load_missing_file_lists_checkpoints(tmp_path):
    learn = small_learner(path=tmp_path)
    learn.save("good")
    with pytest.raises(FileNotFoundError, match=r"No checkpoint at .*gdoo\.pth.*\['good'\]"):
        learn.load("gdoo")


def test_save_is_atomic(tmp_path, monkeypatch):
    learn = small_learner(path=tmp_path)
    file = learn.save("model")
    good = file.read_bytes()

    def failing_save(obj, f):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    learn.fit(1)
    with pytest.raises(OSError, match="disk full"):
        learn.save("model")
    assert file.read_bytes() == good  # the old checkpoint is intact
    assert os.listdir(file.parent) == ["model.pth"]  # and no temp file is left behind


def test_show_results_titles_and_colours():
    import matplotlib

    matplotlib.use("Agg")
    x, y = make_tensor_data(12, 3, size=8)
    learn = Learner(
        loaders(x, y, x, y, bs=6),
        nn.Sequential(nn.Flatten(), nn.Linear(64, 3)),
        loss_func=nn.CrossEntropyLoss(),
    )
    learn.dls.vocab = ["dark", "mid", "light"]
    fig = learn.show_results(max_n=4)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == 4
    preds = learn.get_preds(with_decoded=True)[2][:4]
    for ax, p, t in zip(titled, preds, y[:4]):
        names = learn.dls.vocab
        assert ax.get_title() == f"{names[p]}/{names[t]}"
        assert ax.title.get_color() == ("green" if p == t else "red")


def test_callback_assigning_a_learner_attribute_warns():
    learn = small_learner()

    class Shadow(Callback):
        def before_fit(self):
            self.epoch = 5  # meant self.learn.epoch

    with pytest.warns(UserWarning, match="shadows `learn.epoch`"):
        learn.fit(1, cbs=[Shadow()])
    assert learn.epoch == 0


# ---- issue #12: nothing silently wrong --------------------------------------------------------------------
def tensor_dls(n_train=24, n_valid=8, n_classes=3, bs=8, **kwargs):
    from torch.utils.data import TensorDataset

    from fastvision.data.load import DataLoaders

    torch.manual_seed(0)
    x, y = torch.randn(n_train + n_valid, 4), torch.randint(0, n_classes, (n_train + n_valid,))
    return DataLoaders.from_dsets(
        TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:]), bs=bs, **kwargs
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"lr": float("nan")}, "lr=nan"),
        ({"lr": float("inf")}, "lr=inf"),
        ({"lr": -1e-3}, "lr=-0.001"),
        ({"lr": "abc"}, "lr='abc'"),
        ({"lr": slice(1e-4, float("nan"))}, "lr=slice"),
        ({"lr": [1e-3, None]}, r"lr=\[0.001, None\]"),
    ],
)
def test_fit_rejects_bad_lr_before_any_step(kwargs, match):
    learn = small_learner()
    before = [p.detach().clone() for p in learn.model.parameters()]
    with pytest.raises(ValueError, match=match):
        learn.fit(1, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))
    with pytest.raises(ValueError, match="lr_max=nan"):
        learn.fit_one_cycle(1, float("nan"))
    with pytest.raises(ValueError, match="base_lr=-1"):
        learn.fine_tune(1, base_lr=-1)


def test_fit_rejects_bad_n_epoch_and_constructor_lr():
    learn = small_learner()
    with pytest.raises(ValueError, match="n_epoch=-1 must be an int >= 0"):
        learn.fit(-1)
    with pytest.raises(ValueError, match="n_epoch=1.5"):
        learn.fit(1.5)
    with pytest.raises(ValueError, match="lr=nan"):
        small_learner(lr=float("nan"))
    learn.lr = float("inf")
    with pytest.raises(ValueError, match="learn.lr=inf"):
        learn.fit(1)


def test_bs_larger_than_training_set_with_drop_last_raises():
    dls = tensor_dls(n_train=20, bs=64)
    learn = Learner(dls, nn.Linear(4, 3), loss_func=nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match=r"20 training items with bs=64 and drop_last=True.*bs<=20"):
        learn.fit(1)
    with learn.no_logging():
        Learner(
            tensor_dls(n_train=20, bs=64, drop_last=False), nn.Linear(4, 3), loss_func=nn.CrossEntropyLoss()
        ).fit(1)


def test_single_class_vocab_warns():
    x, y = torch.randn(16, 4), torch.zeros(16, dtype=torch.long)
    dls = loaders(x, y, x[:8], y[:8], bs=8)
    dls.vocab = ["cat"]
    with pytest.warns(UserWarning, match=r"single class \(\['cat'\]\)"):
        Learner(dls, nn.Linear(4, 1), loss_func=nn.CrossEntropyLoss())


def test_softmax_output_with_cross_entropy_warns_once():
    model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))
    with pytest.warns(UserWarning, match="ends with Softmax.*expects raw logits") as rec:
        learn = Learner(tensor_dls(), model, loss_func=nn.CrossEntropyLoss())
        with learn.no_logging():
            learn.fit(1)
    assert len([w for w in rec if "raw logits" in str(w.message)]) == 1
    with pytest.warns(UserWarning, match="ends with Sigmoid"):
        Learner(tensor_dls(), nn.Sequential(nn.Linear(4, 1), nn.Sigmoid()), loss_func=nn.BCEWithLogitsLoss())


def test_bce_with_logits_shape_mismatch_names_the_flat_loss():
    x, y = torch.randn(16, 2), torch.randint(0, 2, (16,)).float()
    learn = Learner(loaders(x, y, x[:8], y[:8], bs=8), nn.Linear(2, 1), loss_func=nn.BCEWithLogitsLoss())
    with pytest.raises(
        ValueError, match=r"shape \(8, 1\) and targets of shape \(8,\).*BCEWithLogitsLossFlat\(\)"
    ):
        learn.fit(1)


def test_passed_recorder_replaces_the_default_one(capsys):
    from fastvision.callback.recorder import Recorder

    rec = Recorder(train_metrics=True)
    learn = small_learner(cbs=rec, metrics=accuracy)
    assert [type(c).__name__ for c in learn.cbs].count("Recorder") == 1 and learn.recorder is rec
    learn.fit(1)
    out = capsys.readouterr().out
    assert (
        out.count("train_accuracy") == 1 and len([ln for ln in out.splitlines() if ln.startswith("0 ")]) == 1
    )
    other = Recorder()
    with learn.added_cbs(other):
        assert learn.recorder is other and rec not in learn.cbs
    assert learn.recorder is rec and [type(c).__name__ for c in learn.cbs].count("Recorder") == 1


def test_callback_overriding_call_sees_every_event():
    seen = []

    class VerboseCallback(Callback):  # fastai's documented idiom
        def __call__(self, event_name):
            seen.append(event_name)
            super().__call__(event_name)

    learn = small_learner(cbs=VerboseCallback())
    with learn.no_logging():
        learn.fit(1)
    assert seen[0] == "after_create" and seen[1] == "before_fit" and seen[-1] == "after_fit"
    assert {"before_batch", "after_loss", "before_validate", "after_epoch"} <= set(seen)


def test_predict_errors_are_short(tmp_path):
    from fastvision.data.block import CategoryBlock, DataBlock
    from fastvision.data.items import get_image_files, parent_label
    from fastvision.testing import make_image_folder
    from fastvision.vision.block import ImageBlock
    from fastvision.vision.resize import Resize

    path = make_image_folder(tmp_path / "img", n_per_class=3, layout="parent")
    dblock = DataBlock(
        blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label, item_tfms=Resize(8)
    )
    dls = dblock.dataloaders(path, bs=2, num_workers=0)
    learn = Learner(
        dls, nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)), loss_func=nn.CrossEntropyLoss()
    )
    upload = b"\x00\x01" * (2**20)  # 2 MB that is not an image
    with pytest.raises(Exception) as info:
        learn.predict(upload)
    assert len(str(info.value)) < 1000 and "\\x00\\x01\\x00" not in str(info.value)
    with pytest.raises(Exception) as info:
        learn.predict("hello")
    msg = str(info.value)
    assert len(msg) < 500 and msg.count("hello") == 1


def test_predict_cuts_an_error_that_repeats_the_item():
    """Issue #13: an error quoting the item's repr (a 9 MB upload) is cut to a short message naming its type/size."""

    class ReprDLs(DLs):
        def test_dl(self, items):
            raise ValueError(f"cannot process {items[0]!r}")

    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    base = loaders(x, y, x[:8], y[:8], bs=8)
    learn = Learner(ReprDLs(base.train, base.valid), nn.Linear(4, 3), loss_func=nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match=r"predict could not process a bytes object of 9.0 MB") as info:
        learn.predict(b"\x89PNG" + b"\x00" * (9 * 2**20 - 4))
    assert len(str(info.value)) < 1000 and info.value.__cause__ is None
    with pytest.raises(
        ValueError, match=r"^cannot process 'hello'$"
    ):  # short messages pass through untouched
        learn.predict("hello")


def test_binary_single_logit_predict_and_accuracy():
    """Issue #12.2: a one-output BCE classifier gets its class name from a 2-entry vocab and a true accuracy."""
    from fastvision.losses import BCEWithLogitsLossFlat

    torch.manual_seed(0)
    x = torch.randn(32, 2)
    y = (x[:, 0] > 0).long()
    learn = Learner(
        loaders(x, y, x[:16], y[:16], bs=8),
        nn.Linear(2, 1),
        loss_func=BCEWithLogitsLossFlat(),
        metrics=accuracy,
    )
    learn.dls.vocab = ["neg", "pos"]
    with learn.no_logging():
        learn.fit(3, lr=0.1)
    with torch.no_grad():
        logits = learn.model.eval()(x[:16])
    assert learn.validate()[1] == pytest.approx(((logits[:, 0] > 0).long() == y[:16]).float().mean().item())
    item = torch.tensor([3.0, 0.0])
    label, dec, prob = learn.predict(item)
    with torch.no_grad():
        assert label == ("pos" if float(learn.model(item[None])) > 0 else "neg")


# ---- issue 14.5: integer images reaching a float model -------------------------------------------------------
def _uint8_learner(model):
    x = torch.randint(0, 256, (8, 1, 4, 4), dtype=torch.uint8)  # what fastvision's ToTensor gives
    y = torch.randint(0, 2, (8,))
    dls = DLs(DataLoader(TensorDataset(x, y), batch_size=4), DataLoader(TensorDataset(x, y), batch_size=4))
    return Learner(dls, model, loss_func=nn.CrossEntropyLoss())


@pytest.mark.parametrize("first", [nn.Linear(16, 2), nn.Conv2d(1, 2, 4)])
def test_uint8_batch_to_a_float_model_names_int_to_float_and_the_import_order(first):
    body = [nn.Flatten(), first] if isinstance(first, nn.Linear) else [first, nn.Flatten()]
    learn = _uint8_learner(nn.Sequential(*body))
    w0 = [p.detach().clone() for p in learn.model.parameters()]
    with pytest.raises(TypeError, match=r"xb\[0\] is a torch.uint8 tensor of shape \(4, 1, 4, 4\)") as info:
        learn.fit(1)
    msg = str(info.value)
    assert "IntToFloatTensor()" in msg and "from fastvision.all import *" in msg and "ToTensor" in msg
    assert isinstance(info.value.__cause__, RuntimeError)  # torch's own message is chained
    assert all(torch.equal(a, b) for a, b in zip(w0, learn.model.parameters()))  # raised at the first batch
    with pytest.raises(TypeError, match="IntToFloatTensor"):
        learn.get_preds()


def test_a_model_that_takes_uint8_itself_still_trains():
    class Scale(nn.Module):
        def forward(self, x):
            return x.float() / 255

    learn = _uint8_learner(nn.Sequential(Scale(), nn.Flatten(), nn.Linear(16, 2)))
    with learn.no_logging():
        learn.fit(1)
    assert len(learn.recorder.values) == 1


# ---- issue 11: one run-mode signal, no private access from outside learner.py ------------------------------
def test_run_mode_is_the_only_signal():
    learn = small_learner()
    assert learn.run_mode is None and not learn.is_fitting
    assert not hasattr(learn, "mode") and not hasattr(learn, "in_lr_find")


def test_no_module_outside_learner_py_touches_a_learners_private_attributes():
    import re
    from pathlib import Path

    import fastvision

    root = Path(fastvision.__file__).parent
    private = re.compile(r"\blearn(?:er)?\._[a-z]\w*")
    found = {
        f"{p.relative_to(root)}:{i}": m.group(0)
        for p in root.rglob("*.py")
        if p.name != "learner.py" or p.parent != root
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if (m := private.search(line))
    }
    assert not found, f"private Learner attributes used outside learner.py: {found}"


def test_show_results_works_when_only_the_learner_was_imported(tmp_path):
    """A plain-PyTorch user imports `fastvision.learner` alone; the image grid comes in when first needed."""
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('Agg'); import sys, torch; from torch import nn\n"
        "from torch.utils.data import DataLoader, TensorDataset\n"
        "from fastvision.learner import Learner\n"
        "assert 'fastvision.vision' not in sys.modules\n"
        "class D: pass\n"
        "d = D(); ds = TensorDataset(torch.rand(6, 1, 8, 8), torch.arange(6) % 2)\n"
        "d.train = d.valid = DataLoader(ds, batch_size=3)\n"
        "learn = Learner(d, nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), loss_func=nn.CrossEntropyLoss())\n"
        "learn.show_results(max_n=4)\n"
        "print('grid drawn')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert r.returncode == 0 and "grid drawn" in r.stdout, r.stderr[-2000:]
