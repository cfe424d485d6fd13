"""The shared helpers of fastvision/utils.py: each is written once and used everywhere."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from fastvision.utils import (
    format_time,
    get_rng_states,
    listify,
    set_rng_states,
    set_seed,
    to_device,
    unwrap_model,
)


def test_to_device_keeps_tuples_lists_and_dicts():
    x, y = torch.zeros(2), torch.ones(2)
    b = (x, [y, (x,)], {"a": y})
    out = to_device(b, "meta")
    assert type(out) is tuple and type(out[1]) is list and type(out[1][1]) is tuple and type(out[2]) is dict
    assert (
        out[0].device.type == "meta" and out[1][0].device.type == "meta" and out[2]["a"].device.type == "meta"
    )
    assert to_device([x, 3, "s"], "meta")[1:] == [3, "s"]  # non-tensors pass through


def test_to_device_returns_a_batch_already_there_unchanged():
    b = [torch.zeros(2), torch.ones(2)]
    assert to_device(b, "cpu") is b and to_device(b, torch.device("cpu")) is b
    assert to_device(b, None) is b
    t = torch.zeros(1)
    assert to_device(t, "cpu") is t


def test_listify():
    assert listify(None) == [] and listify(3) == [3] and listify((1, 2)) == [1, 2] and listify([1]) == [1]
    assert listify("ab") == ["ab"]


def test_unwrap_model_sees_through_data_parallel_and_compile():
    m = nn.Linear(2, 2)
    assert unwrap_model(nn.DataParallel(torch.compile(m, backend="eager"))) is m
    assert unwrap_model(m) is m


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    state = get_rng_states()
    torch.save(state, tmp_path / "rng.pth")
    first = (torch.rand(3), random.random(), np.random.rand())
    set_rng_states(torch.load(tmp_path / "rng.pth", weights_only=True))
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]


@pytest.mark.parametrize("t,want", [(0, "00:00"), (59.9, "00:59"), (61, "01:01"), (3725, "1:02:05")])
def test_format_time(t, want):
    assert format_time(t) == want


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_set_seed_repeats_python_numpy_and_torch_draws_and_refuses_a_non_int():
    set_seed(7)
    a = _draws()
    b = _draws()
    set_seed(7)
    assert _draws() == a and _draws() == b and a != b
    set_seed(8)
    assert _draws() != a
    set_seed(2**40)  # beyond NumPy's 32-bit seeds: folded, not refused
    with pytest.raises(TypeError, match="must be an int, got '7'"):
        set_seed("7")
    old = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        set_seed(1, reproducible=True)
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old
