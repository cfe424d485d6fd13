import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fastvision.compare import ComparisonTable, TrainTimer, compare_learners, plot_comparison
from fastvision.data.load import DataLoaders
from fastvision.learner import Learner
from fastvision.losses import CrossEntropyLossFlat
from fastvision.metrics import accuracy, error_rate
from fastvision.testing import make_tensor_data


def dls():
    x, y = make_tensor_data(48, 3, size=8, channels=1, seed=0)
    return DataLoaders.from_dsets(
        TensorDataset(x[:32], y[:32]), TensorDataset(x[32:], y[32:]), bs=8, num_workers=0, device="cpu"
    )


def learner(hidden, cbs=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 3))
    return Learner(dls(), model, loss_func=CrossEntropyLossFlat(), metrics=[error_rate, accuracy], cbs=cbs)


@pytest.fixture(scope="module")
def trained():
    small, big = learner(2, cbs=TrainTimer()), learner(32, cbs=TrainTimer())
    with small.no_logging(), small.no_bar():
        small.fit(1, 1e-3)
    with big.no_logging(), big.no_bar():
        big.fit_one_cycle(2, 1e-2)
        big.fit(1, 1e-3)  # the timer adds up all fits
    return {"small": small, "big": big}


def test_table_holds_the_recorded_metrics_params_and_times(trained):
    table = compare_learners(trained)
    assert table.columns == [
        "model",
        "train_loss",
        "valid_loss",
        "error_rate",
        "accuracy",
        "params",
        "epochs",
        "time",
    ]
    assert table.metric == "error_rate" and not table.higher_is_better
    for row in table.rows:
        learn = trained[row["model"]]
        last = learn.recorder.values[-1]
        assert row["valid_loss"] == pytest.approx(last[1]) and row["error_rate"] == pytest.approx(last[2])
        assert row["params"] == sum(p.numel() for p in learn.model.parameters())
        timer = next(c for c in learn.cbs if isinstance(c, TrainTimer))
        assert row["time"] == pytest.approx(timer.total) and row["time"] > 0
    assert [r["epochs"] for r in sorted(table.rows, key=lambda r: r["model"])] == [3, 1]  # big, small
    errors = table.column("error_rate")
    assert errors == sorted(errors) and table.best == table.rows[0]["model"]


def test_ranking_direction_follows_the_metric_or_the_caller(trained):
    acc = compare_learners(trained, metric="accuracy")
    assert acc.higher_is_better and acc.column("accuracy") == sorted(acc.column("accuracy"), reverse=True)
    loss = compare_learners(trained, metric="valid_loss")
    assert loss.column("valid_loss") == sorted(loss.column("valid_loss"))
    flipped = compare_learners(trained, metric="valid_loss", higher_is_better=True)
    assert flipped.column("model") == loss.column("model")[::-1]


def test_text_and_markdown_tables(trained):
    table = compare_learners(trained, times={"small": 75.0})
    text = str(table).splitlines()
    assert text[0].split() == table.columns and set(text[1]) <= {"-", " "}
    small = next(line for line in text[2:] if line.startswith("small"))
    assert "01:15" in small and f"{trained['small'].recorder.values[-1][2]:.4f}" in small
    md = table.to_markdown().splitlines()
    assert md[0] == "| " + " | ".join(table.columns) + " |" and len(md) == 2 + len(trained)
    assert table._repr_markdown_() == table.to_markdown()


def test_a_list_and_learners_without_timer(trained):
    plain = learner(4)
    with plain.no_logging(), plain.no_bar():
        plain.fit(1, 1e-3)
    table = compare_learners([trained["small"], plain])
    assert sorted(table.column("model")) == ["Sequential", "Sequential_1"]
    row = next(r for r in table.rows if r["model"] == "Sequential_1")
    assert row["time"] is None and row["epochs"] == 1
    line = next(ln for ln in str(table).splitlines() if ln.startswith("Sequential_1"))
    assert line.split()[-1] == "-"  # no time recorded


def test_plot_has_one_bar_per_model_in_table_order(trained):
    table = compare_learners(trained, metric="accuracy")
    fig = plot_comparison(table)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx(table.column("accuracy"))
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == table.column("model")
    assert ax.get_ylabel() == "accuracy" and "higher is better" in ax.get_title()
    fig2 = plot_comparison(trained, metric="valid_loss")
    assert "lower is better" in fig2.axes[0].get_title() and len(fig2.axes[0].patches) == 2
    plt.close("all")


def test_errors_name_the_problem(trained):
    with pytest.raises(ValueError, match="'fresh' has no recorded epoch"):
        compare_learners({"fresh": learner(2), **trained})
    with pytest.raises(ValueError, match=r"no metric 'f1'; the recorded columns are \['train_loss'"):
        compare_learners(trained, metric="f1")
    with pytest.raises(ValueError, match="at least one learner"):
        compare_learners({})
    assert isinstance(compare_learners(trained), ComparisonTable)


def test_timer_ignores_lr_find_and_validate(trained):
    learn = learner(2, cbs=TrainTimer())
    with learn.no_logging(), learn.no_bar():
        learn.validate()
        learn.lr_find(num_it=5, show_plot=False)
        timer = next(c for c in learn.cbs if isinstance(c, TrainTimer))
        assert timer.epoch_times == []
        learn.fit(2, 1e-3)
    assert len(timer.epoch_times) == 2 and all(t > 0 for t in timer.epoch_times)
