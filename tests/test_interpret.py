import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from fastvision.data.load import DataLoader
from fastvision.interpret import ClassificationInterpretation
from fastvision.vision.lighting import IntToFloatTensor

TARGS = [0, 0, 0, 1, 1, 2, 2, 2]
DECODED = [0, 1, 1, 1, 0, 2, 0, 1]
LOSSES = [0.1, 2.0, 1.5, 0.2, 1.8, 0.05, 2.5, 1.1]


class ImageDS(torch.utils.data.Dataset):
    """Item i is a 3x8x8 uint8 image filled with 10*i, labelled TARGS[i]."""

    def __len__(self):
        return len(TARGS)

    def __getitem__(self, i):
        return torch.full((3, 8, 8), 10 * i, dtype=torch.uint8), TARGS[i]


class FakeLearner:
    """Returns fixed predictions; counts how often inference runs."""

    def __init__(self, preds, targs, decoded, losses, vocab):
        self.out, self.calls, self.kwargs = (preds, targs, decoded, losses), 0, None
        dl = DataLoader(ImageDS(), bs=4, num_workers=0, after_batch=[IntToFloatTensor()], device="cpu")
        self.dls = type("Dls", (), {"vocab": vocab, "__getitem__": lambda s, i: dl})()

    def get_preds(self, **kwargs):
        self.calls += 1
        self.kwargs = kwargs
        return self.out


def single_label():
    probs = torch.full((8, 3), 0.2)
    probs[torch.arange(8), torch.tensor(DECODED)] = 0.6
    return FakeLearner(
        probs, torch.tensor(TARGS), torch.tensor(DECODED), torch.tensor(LOSSES), ["a", "b", "c"]
    )


def test_from_learner_runs_inference_once_with_losses():
    learn = single_label()
    interp = ClassificationInterpretation.from_learner(learn)
    assert learn.kwargs["with_loss"] and learn.kwargs["with_decoded"] and learn.kwargs["ds_idx"] == 1
    interp.confusion_matrix(), interp.most_confused(), interp.top_losses(3), interp.classification_report()
    interp.plot_confusion_matrix(), interp.plot_top_losses(2)
    assert learn.calls == 1
    assert not hasattr(interp, "inputs")  # only preds, targets, decoded, losses are kept


def test_confusion_matrix_and_most_confused_by_hand():
    interp = ClassificationInterpretation.from_learner(single_label())
    cm = interp.confusion_matrix()
    assert cm.dtype.kind == "i"
    np.testing.assert_array_equal(cm, [[1, 2, 0], [1, 1, 0], [1, 1, 1]])
    assert interp.most_confused() == [("a", "b", 2), ("b", "a", 1), ("c", "a", 1), ("c", "b", 1)]
    assert interp.most_confused(min_val=2) == [("a", "b", 2)]


def test_decoded_defaults_to_argmax():
    learn = single_label()
    learn.out = (learn.out[0], learn.out[1], None, learn.out[3])
    np.testing.assert_array_equal(
        ClassificationInterpretation.from_learner(learn).confusion_matrix()[0], [1, 2, 0]
    )


def test_top_losses():
    interp = ClassificationInterpretation.from_learner(single_label())
    vals, idx = interp.top_losses(3)
    assert vals.tolist() == pytest.approx([2.5, 2.0, 1.8]) and idx.tolist() == [6, 1, 4]
    vals, idx = interp.top_losses(2, largest=False)
    assert idx.tolist() == [5, 0]
    assert len(interp.top_losses()[0]) == 8


def test_classification_report_by_hand():
    report = ClassificationInterpretation.from_learner(single_label()).classification_report()
    lines = report.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    # a: P 1/3, R 1/3; b: P 1/4, R 1/2, F1 1/3; c: P 1, R 1/3, F1 1/2
    assert lines[2] == "           a       0.33      0.33      0.33         3"
    assert lines[3] == "           b       0.25      0.50      0.33         2"
    assert lines[4] == "           c       1.00      0.33      0.50         3"
    assert lines[6].split() == ["accuracy", "0.38", "8"]
    assert lines[7].split() == ["macro", "avg", "0.53", "0.39", "0.39", "8"]
    assert lines[8].split()[:3] == ["weighted", "avg", "0.56"]


def test_plot_top_losses_reloads_only_those_items():
    interp = ClassificationInterpretation.from_learner(single_label())
    imgs = interp.load_inputs([6, 1])
    assert imgs.shape == (2, 3, 8, 8) and imgs[:, 0, 0, 0].tolist() == [60, 10]
    fig = interp.plot_top_losses(2)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["a/c / 2.50 / 0.60", "b/a / 2.00 / 0.60"]
    fig = interp.plot_top_losses([0, 2])  # ranks
    assert [ax.get_title() for ax in fig.axes if ax.get_title()][1] == "a/b / 1.80 / 0.60"


def test_plot_confusion_matrix():
    interp = ClassificationInterpretation.from_learner(single_label())
    fig = interp.plot_confusion_matrix(normalize=True, figsize=(4, 4))
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert (
        ax.get_ylabel() == "Actual"
        and ax.get_xlabel() == "Predicted"
        and ax.get_title() == "Confusion matrix"
    )
    assert "0.67" in [t.get_text() for t in ax.texts]  # row a: 2 of 3 predicted b


def test_multi_label_gets_per_class_matrices():
    targs = torch.tensor([[1, 0], [1, 1], [0, 1], [0, 0]]).float()
    probs = torch.tensor([[0.9, 0.2], [0.4, 0.8], [0.3, 0.7], [0.6, 0.1]])
    learn = FakeLearner(probs, targs, probs > 0.5, torch.tensor([0.5, 0.1, 0.9, 0.3]), ["x", "y"])
    interp = ClassificationInterpretation.from_learner(learn)
    np.testing.assert_array_equal(interp.confusion_matrix(), [[[1, 1], [1, 1]], [[2, 0], [0, 2]]])
    with pytest.raises(ValueError, match="single-label"):
        interp.most_confused()
    assert "micro avg" in interp.classification_report()
    assert len(interp.plot_confusion_matrix().axes) == 2
    assert interp.plot_top_losses(1).axes[0].get_title() == "y/y / 0.90 / 0.70"


def test_vocab_size_mismatch_is_reported():
    learn = single_label()
    learn.dls.vocab = ["a", "b"]
    with pytest.raises(ValueError, match="vocab has 2 classes but the predictions have 3"):
        ClassificationInterpretation.from_learner(learn)


def test_binary_single_column_interpretation():
    """Issue #12: one sigmoid probability per item (n, 1) gives a 2 x 2 confusion matrix."""
    probs = torch.tensor([[0.1], [0.8], [0.6], [0.3], [0.9], [0.2], [0.7], [0.4]])
    targs = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    decoded = probs > 0.5
    learn = FakeLearner(probs, targs.float(), decoded, torch.tensor(LOSSES), None)
    interp = ClassificationInterpretation.from_learner(learn)
    assert interp.vocab == ["0", "1"]
    # actual 0: predicted 0,1,0,0 ; actual 1: predicted 1,0,1,1
    assert interp.confusion_matrix().tolist() == [[3, 1], [1, 3]]
    assert interp.most_confused() == [("0", "1", 1), ("1", "0", 1)]
    assert "precision" in interp.classification_report()
    interp.plot_confusion_matrix()
    named = ClassificationInterpretation.from_learner(
        FakeLearner(probs.view(-1), targs, None, torch.tensor(LOSSES), ["cat", "dog"])
    )
    assert named.vocab == ["cat", "dog"] and named.confusion_matrix().tolist() == [[3, 1], [1, 3]]


def test_most_confused_min_val_zero_lists_zero_counts():
    """Issue #12 (fastai parity): min_val=0 lists every off-diagonal pair, zeros included."""
    interp = ClassificationInterpretation.from_learner(single_label())
    cells = interp.most_confused(min_val=0)
    assert len(cells) == 6 and all(a != p for a, p, _ in cells)
    assert ("b", "c", 0) in cells and cells[-1][2] == 0
