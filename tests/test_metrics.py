from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from fastvision.metrics import (
    AccumMetric,
    AvgMetric,
    F1Score,
    F1ScoreMulti,
    FBeta,
    FBetaMulti,
    Jaccard,
    Metric,
    Precision,
    PrecisionMulti,
    Recall,
    RecallMulti,
    accuracy,
    accuracy_multi,
    error_rate,
    flatten_check,
    mk_metric,
    skm_to_fastai,
    top_k_accuracy,
)


def one_hot_logits(classes, n_classes=3):
    """Logits whose argmax is `classes`."""
    return F.one_hot(torch.tensor(classes), n_classes).float() * 4 - 2


def run(metric, batches):
    """Feed `(pred, targ)` batches to `metric` like the learner's validation loop and return `value`."""
    metric.reset()
    for pred, targ in batches:
        metric.accumulate(SimpleNamespace(pred=pred, yb=(targ,)))
    return metric.value


def test_accuracy_error_rate():
    pred, targ = one_hot_logits([0, 1, 2, 1]), torch.tensor([0, 1, 1, 1])
    assert accuracy(pred, targ).item() == pytest.approx(0.75)
    assert error_rate(pred, targ).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="4 predictions but 2 targets"):
        accuracy(pred, targ[:2])


def test_top_k_accuracy():
    pred = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    targ = torch.tensor([1, 0, 2])
    assert top_k_accuracy(pred, targ, k=1).item() == pytest.approx(0.0)
    assert top_k_accuracy(pred, targ, k=2).item() == pytest.approx(1 / 3)
    assert top_k_accuracy(pred, targ, k=3).item() == pytest.approx(1.0)


def test_accuracy_multi():
    pred = torch.tensor([[2.0, -2.0], [-2.0, -2.0]])
    targ = torch.tensor([[1, 1], [0, 0]])
    assert accuracy_multi(pred, targ).item() == pytest.approx(0.75)
    assert accuracy_multi(pred.sigmoid(), targ, sigmoid=False).item() == pytest.approx(0.75)
    assert accuracy_multi(pred, targ, thresh=0.99).item() == pytest.approx(0.5)


def test_flatten_check():
    a, b = flatten_check(torch.zeros(2, 3), torch.zeros(6))
    assert a.shape == b.shape == (6,)


def test_avg_metric_weights_by_batch_size_and_stays_on_device():
    pred, targ = one_hot_logits([0, 1, 2, 1]), torch.tensor([0, 1, 1, 1])
    m = AvgMetric(accuracy)
    m.reset()
    m.accumulate(SimpleNamespace(pred=pred[:3], yb=(targ[:3],)))  # 2/3 right
    m.accumulate(SimpleNamespace(pred=pred[3:], yb=(targ[3:],)))  # 1/1 right
    assert isinstance(m.total, torch.Tensor)  # summed as a tensor, read only by `value`
    assert m.count == 4
    assert isinstance(m.value, float) and m.value == pytest.approx(0.75)  # not (2/3 + 1) / 2
    assert m.name == "accuracy"
    m.reset()
    assert m.value is None


def test_accum_metric():
    pred, targ = one_hot_logits([0, 1, 2, 1]), torch.tensor([0, 1, 1, 1])

    def frac_equal(p, t):
        return (p == t).float().mean()

    m = AccumMetric(frac_equal, dim_argmax=-1)
    assert run(m, [(pred[:2], targ[:2]), (pred[2:], targ[2:])]) == pytest.approx(0.75)
    assert m.name == "frac_equal"
    soft = AccumMetric(lambda p, t: p.max(), activation="softmax", flatten=False, name="maxprob")
    assert soft.name == "maxprob"
    assert run(soft, [(pred, targ)]) == pytest.approx(F.softmax(pred, -1).max().item())
    sig = AccumMetric(lambda p, t: p.float().mean(), activation="sigmoid", thresh=0.5, flatten=False)
    assert run(sig, [(torch.tensor([[3.0, -3.0]]), torch.tensor([[1, 0]]))]) == pytest.approx(0.5)
    inverted = AccumMetric(lambda t, p: (t - p).sum(), invert_arg=True)
    assert run(inverted, [(torch.tensor([1.0]), torch.tensor([3.0]))]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="activation='relu'"):
        AccumMetric(frac_equal, activation="relu")


def test_mk_metric():
    assert isinstance(mk_metric(accuracy), AvgMetric)
    f1 = F1Score()
    assert mk_metric(f1) is f1

    class MyMetric(Metric):
        pass

    assert isinstance(mk_metric(MyMetric), MyMetric)
    assert MyMetric().name == "my_metric"
    with pytest.raises(TypeError, match="neither a Metric nor a callable"):
        mk_metric(3)


# Multiclass example worked out by hand:
#   targs 0 1 2 0 1 2 0 1, preds 0 2 1 0 0 1 0 1
#   class 0: tp 3 fp 1 fn 0 -> P .75, R 1, F1 6/7;  class 1: tp 1 fp 2 fn 2 -> 1/3 each;  class 2: tp 0 -> 0
#   micro tp 4 fp 4 fn 4 -> .5;  supports 3, 3, 2
TARGS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
PREDS = one_hot_logits([0, 2, 1, 0, 0, 1, 0, 1])


@pytest.mark.parametrize(
    "metric, expected",
    [
        (Precision(average="macro"), (0.75 + 1 / 3) / 3),
        (Recall(average="macro"), (1 + 1 / 3) / 3),
        (F1Score(average="macro"), (6 / 7 + 1 / 3) / 3),
        (F1Score(average="micro"), 0.5),
        (Precision(average="micro"), 0.5),
        (Precision(average="weighted"), (3 * 0.75 + 3 / 3) / 8),
        (Recall(average="weighted"), 0.5),
        (F1Score(average="weighted"), (3 * 6 / 7 + 3 / 3) / 8),
        (FBeta(2, average="macro"), (15 / 16 + 1 / 3) / 3),
        (F1Score(average="macro", labels=[0, 1]), (6 / 7 + 1 / 3) / 2),
        (Jaccard(average="macro"), (3 / 4 + 1 / 5) / 3),
    ],
)
def test_multiclass_scores_by_hand(metric, expected):
    assert run(metric, [(PREDS[:5], TARGS[:5]), (PREDS[5:], TARGS[5:])]) == pytest.approx(expected)


def test_binary_scores_by_hand():
    # targs 0 1 1 0 1, preds 0 1 0 1 1: for class 1 tp 2 fp 1 fn 1; for class 0 tp 1 fp 1 fn 1
    targs, preds = torch.tensor([0, 1, 1, 0, 1]), one_hot_logits([0, 1, 0, 1, 1], 2)
    assert run(F1Score(), [(preds, targs)]) == pytest.approx(2 / 3)
    assert run(Precision(), [(preds, targs)]) == pytest.approx(2 / 3)
    assert run(Recall(pos_label=0), [(preds, targs)]) == pytest.approx(0.5)
    assert F1Score().name == "f1_score" and Precision().name == "precision_score"


def test_binary_average_on_multiclass_raises():
    with pytest.raises(ValueError, match="average='binary' needs 2 classes"):
        run(F1Score(), [(PREDS, TARGS)])
    with pytest.raises(ValueError, match="average='samples' is not one of"):
        F1Score(average="samples")


# Multi-label example by hand (rows = items, columns = labels):
#   preds [[1,0,1],[0,1,1],[1,1,0],[0,0,1]]  targs [[1,0,0],[0,1,1],[1,0,0],[0,1,1]]
#   label 0: tp 2 -> 1, 1, 1;  label 1: tp 1 fp 1 fn 1 -> .5 each;  label 2: tp 2 fp 1 fn 0 -> P 2/3, R 1, F1 .8
#   micro tp 5 fp 2 fn 1;  per-sample F1: 2/3, 1, 2/3, 2/3
M_PREDS = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]]).float() * 4 - 2
M_TARGS = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 1, 1]])


@pytest.mark.parametrize(
    "metric, expected",
    [
        (F1ScoreMulti(), (1 + 0.5 + 0.8) / 3),
        (PrecisionMulti(), (1 + 0.5 + 2 / 3) / 3),
        (RecallMulti(), (1 + 0.5 + 1) / 3),
        (F1ScoreMulti(average="micro"), 10 / 13),
        (PrecisionMulti(average="micro"), 5 / 7),
        (F1ScoreMulti(average="samples"), (3 * 2 / 3 + 1) / 4),
        (F1ScoreMulti(labels=[0, 2]), (1 + 0.8) / 2),
        (FBetaMulti(1.0), (1 + 0.5 + 0.8) / 3),
    ],
)
def test_multilabel_scores_by_hand(metric, expected):
    assert run(metric, [(M_PREDS[:2], M_TARGS[:2]), (M_PREDS[2:], M_TARGS[2:])]) == pytest.approx(expected)


def test_multilabel_probabilities_without_sigmoid():
    probs = torch.sigmoid(M_PREDS)
    assert run(F1ScoreMulti(sigmoid=False), [(probs, M_TARGS)]) == pytest.approx((1 + 0.5 + 0.8) / 3)


def test_against_sklearn_if_available():
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    targs, classes = torch.randint(0, 4, (50,), generator=g), torch.randint(0, 4, (50,), generator=g)
    preds = one_hot_logits(classes.tolist(), 4)
    for average in ("macro", "micro", "weighted"):
        for ours, theirs in ((F1Score, metrics.f1_score), (Precision, metrics.precision_score)):
            expected = theirs(targs.numpy(), classes.numpy(), average=average, zero_division=0)
            assert run(ours(average=average), [(preds, targs)]) == pytest.approx(expected)


def test_skm_to_fastai_passes_numpy_targets_first():
    def balanced_hits(y_true, y_pred):
        assert type(y_true).__module__ == "numpy" and y_true.shape == y_pred.shape == (4,)
        return float((y_true == y_pred).mean())

    m = skm_to_fastai(balanced_hits)
    assert m.name == "balanced_hits"
    assert run(m, [(one_hot_logits([0, 1, 2, 1]), torch.tensor([0, 1, 1, 1]))]) == pytest.approx(0.75)
    multi = skm_to_fastai(lambda t, p: float((t == p).mean()), thresh=0.5, flatten=False)
    assert run(multi, [(torch.tensor([[3.0, -3.0]]), torch.tensor([[1, 1]]))]) == pytest.approx(0.5)


# ---- issue #12: binary (single-logit) predictions and nan --------------------------------------------------
def test_accuracy_binary_single_logit_thresholds_at_zero():
    logits = torch.tensor([-2.0, -0.5, 0.3, 1.5, 2.0, -1.0])
    targ = torch.tensor([0, 1, 1, 1, 0, 0])
    expected = ((logits > 0).long() == targ).float().mean()  # 4 of 6
    assert accuracy(logits[:, None], targ) == pytest.approx(expected.item())  # (n, 1) logits
    assert accuracy(logits, targ) == pytest.approx(expected.item())  # (n,) logits
    assert accuracy(logits[:, None], targ.float()[:, None]) == pytest.approx(expected.item())  # BCE targets
    assert error_rate(logits[:, None], targ) == pytest.approx(1 - expected.item())
    probs = torch.sigmoid(logits)
    assert accuracy(probs[:, None], targ, thresh=0.5) == pytest.approx(expected.item())


def test_binary_precision_recall_with_single_logit():
    logits = torch.tensor([[-2.0], [-0.5], [0.3], [1.5], [2.0], [-1.0]])
    targ = torch.tensor([0, 1, 1, 1, 0, 0])
    # predicted positive: items 2, 3, 4 -> tp 2, fp 1, fn 1
    assert run(Precision(), [(logits, targ)]) == pytest.approx(2 / 3)
    assert run(Recall(), [(logits, targ)]) == pytest.approx(2 / 3)
    assert run(F1Score(), [(logits.view(-1), targ)]) == pytest.approx(2 / 3)


def test_nan_predictions_count_as_wrong():
    nan = torch.full((4, 3), float("nan"))
    targ = torch.tensor([0, 0, 1, 2])
    assert accuracy(nan, targ) == 0.0  # argmax of nan is 0: it used to score 1.0 on class-0 targets
    assert error_rate(nan, targ) == 1.0
    assert top_k_accuracy(nan, targ, k=2) == 0.0
    assert accuracy(torch.full((4, 1), float("nan")), torch.zeros(4, dtype=torch.long)) == 0.0
    assert accuracy_multi(torch.full((2, 3), float("nan")), torch.zeros(2, 3)) == 0.0
    mixed = one_hot_logits([0, 0, 1, 2])
    mixed[1] = float("nan")
    assert accuracy(mixed, targ) == pytest.approx(0.75)
    assert run(Precision(average="macro"), [(nan, targ)]) == 0.0
