"""95% intervals over samples and the verdicts drawn from them."""
import pytest
import torch
from scipy import stats

from diffprune_core.errors import InputError
from diffprune_core.intervals import compare, formatted, mean_interval, proportion_interval


def test_mean_interval_is_students_t_interval():
    values = torch.tensor([0.80, 0.85, 0.90, 0.82, 0.88])
    interval = mean_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.double().mean().item(),
                                 scale=stats.sem(values.double().numpy()))
    assert interval["value"] == pytest.approx(0.85)
    assert (interval["low"], interval["high"]) == (pytest.approx(low), pytest.approx(high))
    with pytest.raises(InputError, match="at least 2"):
        mean_interval([0.5])


def test_proportion_interval_is_wilsons():
    # Wilson's interval of 0 successes in 10 at 95%: [0, 0.2775]; of 5 in 10: [0.2366, 0.7634]
    none = proportion_interval(0, 10)
    assert none["value"] == 0 and none["low"] == pytest.approx(0, abs=1e-12)
    assert none["high"] == pytest.approx(0.2775, abs=1e-4)
    half = proportion_interval(5, 10)
    assert (half["low"], half["high"]) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    with pytest.raises(InputError):
        proportion_interval(11, 10)


def test_compare_speaks_only_without_overlap():
    a, b = {"value": 0.9, "low": 0.85, "high": 0.95}, {"value": 0.7, "low": 0.6, "high": 0.8}
    assert compare(a, b) == "higher" and compare(b, a) == "lower"
    assert compare(a, {"value": 0.84, "low": 0.8, "high": 0.86}) == "overlapping"
    assert formatted(a) == "0.900 [0.850, 0.950]"
